"""The web interface's session cookie: signed, expiring, and its parser
safe on anything a client sends."""

import base64
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from registryd.ui.session import KEY_VARIABLE, LIFETIME, SessionCodec, process_key

KEY = b"k" * 32


class Clock:
    def __init__(self, now=1_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


def test_a_session_reads_back_until_it_expires():
    clock = Clock()
    codec = SessionCodec(KEY, clock)
    session = codec.new("alice", "f1")
    value = codec.encode(session)
    assert codec.decode(value) == session
    clock.now += LIFETIME - 1
    assert codec.decode(value) == session
    clock.now += 1
    assert codec.decode(value) is None


def test_another_key_or_an_edited_payload_is_refused():
    codec = SessionCodec(KEY, Clock())
    value = codec.encode(codec.new("bob"))
    assert SessionCodec(b"x" * 32, Clock()).decode(value) is None
    body, _, signature = value.partition(b".")
    payload = json.loads(base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4)))
    payload[0] = "alice"
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=")
    assert codec.decode(forged + b"." + signature) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_any_cookie_value_is_a_session_or_none_never_an_exception(value):
    assert SessionCodec(KEY, Clock()).decode(value) is None


def signed(codec, payload):
    body = base64.urlsafe_b64encode(payload).rstrip(b"=")
    return body + b"." + codec._sign(body)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(JSON.map(lambda v: json.dumps(v).encode()), st.binary(max_size=200)))
def test_a_signed_cookie_of_the_wrong_shape_is_no_session(payload):
    """Even a payload this process signed (a key leak, a future version)
    must have exactly the session's shape to count."""
    codec = SessionCodec(KEY, Clock())
    decoded = codec.decode(signed(codec, payload))
    assert decoded is None or (isinstance(decoded.csrf, str) and isinstance(decoded.expires, int))


def test_the_key_is_made_once_and_shared_with_workers_through_the_environment():
    environ = {}
    key = process_key(environ)
    assert len(key) == 32 and environ[KEY_VARIABLE] == key.hex()
    assert process_key(environ) == key  # a worker process, same environment
    assert process_key({KEY_VARIABLE: "not hex"}) != key


def test_a_short_configured_key_is_refused_naming_the_key():
    import pytest

    from registryd.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as info:
        parse_config({"version": 0.1, "storage": {"inmemory": {}}, "ui": {"sessionkey": "short"}})
    assert str(info.value) == (
        "ui.sessionkey: expected at least 32 characters "
        "(e.g. the output of: openssl rand -hex 32), got 5"
    )
    config = parse_config({"version": 0.1, "storage": {"inmemory": {}}})
    assert (config.ui.enabled, config.ui.session_key) == (True, None)
