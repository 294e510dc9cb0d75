"""The route table's request plumbing: which requests stream their body
(decided from the route klein will pick), and query arguments, under
hostile input too."""

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.web.test.requesthelper import DummyRequest

from registryd import errors
from registryd.http.api.base import query_arg, query_args
from registryd.http.app import RegistryApp
from registryd.http.web import BUFFERED, STREAMED

body_mode = RegistryApp.routes.body_mode

METHODS = [
    b"GET",
    b"HEAD",
    b"POST",
    b"PATCH",
    b"PUT",
    b"DELETE",
    b"OPTIONS",
    b"BREW",
    b"post",
    b"patch",
]


@pytest.mark.parametrize(
    "method, path, mode",
    [
        (b"POST", b"/v2/a/b/blobs/uploads/", STREAMED),
        (b"POST", b"/v2/a/blobs/uploads/?digest=sha256:00&mount=x", STREAMED),
        (b"PATCH", b"/v2/a/blobs/uploads/u-1", STREAMED),
        (b"PUT", b"/v2/a/blobs/uploads/u-1?digest=sha256:00", STREAMED),
        (b"POST", b"/v2/a/blob%73/uploads/", STREAMED),  # klein decodes %73: it is the upload route
        (b"PUT", b"/v2/a/manifests/latest", BUFFERED),
        (b"POST", b"/auth/token", BUFFERED),
        (b"GET", b"/v2/a/blobs/uploads/u-1", BUFFERED),
        (b"DELETE", b"/v2/a/blobs/uploads/u-1", BUFFERED),
        (b"POST", b"/v2/a/blobs/uploads", BUFFERED),  # no route: a redirect
        (b"PATCH", b"/v2/a/blobs/uploads/u-1/more", BUFFERED),
        (b"POST", b"/v2/%ff/blobs/uploads/", BUFFERED),  # not UTF-8: no route takes it
        (b"POST", b"/elsewhere/blobs/uploads/", BUFFERED),
    ],
)
def test_body_mode_is_the_routes(method, path, mode):
    assert body_mode(method, path) == mode


@given(st.sampled_from(METHODS), st.binary(max_size=300))
def test_body_mode_of_any_request_target(method, path):
    """Whatever bytes a client sends as the request target, the answer is
    a body mode (an exception here would drop the connection unanswered)."""
    assert body_mode(method, path) in (STREAMED, BUFFERED)


_SEGMENT = st.text(
    st.characters(blacklist_characters="/?#%", blacklist_categories=("Cs",)), min_size=1, max_size=8
)
_TAILS = [
    "blobs/uploads/",
    "blobs/uploads/u-1",
    "manifests/latest",
    "blobs/sha256:00",
    "tags/list",
    "referrers/sha256:00",
    "blobs/uploads",
]


@given(
    st.sampled_from(METHODS),
    st.lists(_SEGMENT, min_size=1, max_size=3),
    st.sampled_from(_TAILS),
    st.lists(st.booleans(), min_size=60, max_size=60),
)
def test_body_mode_ignores_how_the_path_is_spelled(method, names, tail, encode):
    """klein matches the percent-decoded path, so the body mode must not
    depend on which characters a client percent-encodes (other than '/')."""
    path = "/v2/" + "/".join(names) + "/" + tail
    plain = quote(path, safe="/:@!$&'()*+,;=-._~")
    spelled = "".join(
        quote(char, safe="") if char != "/" and flag else quote(char, safe="/:@!$&'()*+,;=-._~")
        for char, flag in zip(path, encode + [False] * len(path))
    )
    assert body_mode(method, spelled.encode("ascii")) == body_mode(method, plain.encode("ascii"))


def request_with_args(args):
    request = DummyRequest([b""])
    request.args = args
    return request


@given(
    st.dictionaries(
        st.sampled_from([b"n", b"last", b"tag", b"scope"]),
        st.lists(st.binary(max_size=12), min_size=1, max_size=3),
    )
)
def test_query_arguments_of_any_bytes(args):
    """Any query argument bytes are either their UTF-8 text or a 400
    BadRequest naming the parameter; never anything else."""
    request = request_with_args(args)
    for name in ["n", "last", "tag", "scope", "absent"]:
        values = args.get(name.encode("ascii"), [])
        try:
            expected = [value.decode("utf-8") for value in values]
        except UnicodeDecodeError:
            for read in (query_args, query_arg):
                with pytest.raises(errors.BadRequest) as info:
                    read(request, name)
                assert info.value.status == 400 and name in info.value.message
            continue
        assert query_args(request, name) == expected
        assert query_arg(request, name) == (expected[0] if expected else None)
        if len(expected) > 1:
            with pytest.raises(errors.BadRequest, match="more than once"):
                query_arg(request, name, unique=True)
        else:
            assert query_arg(request, name, unique=True) == query_arg(request, name)


def test_bad_request_is_the_specs_shape():
    error = errors.BadRequest("parameter 'n' given more than once")
    assert error.status == 400
    assert error.to_dict() == {
        "code": "UNSUPPORTED",
        "message": "parameter 'n' given more than once",
    }
