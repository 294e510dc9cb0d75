"""The pull-through cache's reading of what upstream announces about a
blob or manifest: whatever its headers hold (hostile input like any
other), a value or None, never an exception."""

from hypothesis import given
from hypothesis import strategies as st
from twisted.web.http_headers import Headers

from registryd.proxy.blobs import _announced_length
from registryd.proxy.manifests import _upstream_digest


class _Response:
    def __init__(self, values, name=b"content-length"):
        self.headers = Headers({name: values} if values else {})


@given(st.lists(st.binary(max_size=30), max_size=3))
def test_any_content_length_is_a_size_or_none(values):
    length = _announced_length(_Response(values))
    assert length is None or (isinstance(length, int) and length >= 0)


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_a_content_length_is_read_as_upstream_sent_it(size):
    assert _announced_length(_Response([str(size).encode()])) == size


def test_no_or_a_negative_content_length_is_unknown():
    assert _announced_length(_Response([])) is None
    assert _announced_length(_Response([b"-1"])) is None
    assert _announced_length(_Response([b"ten"])) is None


@given(st.lists(st.binary(max_size=80), max_size=3))
def test_any_docker_content_digest_is_a_digest_or_none(values):
    digest = _upstream_digest(_Response(values, b"docker-content-digest"))
    assert digest is None or str(digest) in values[0].decode("latin-1")
