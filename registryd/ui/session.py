"""The web interface's session: who is signed in, and the CSRF token.

A session is a small signed cookie, nothing stored on the server: several
worker processes (or nodes sharing the key) accept each other's sessions,
and a restart costs nothing but a new sign-in when the key changes.

The cookie is ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no
other site's page sends it) and ``Secure`` over TLS.  It carries the user,
a random CSRF token that every state-changing form must echo, an expiry,
and a fingerprint of the user's htpasswd entry, so that changing a
password or removing a user ends their sessions (as it revokes refresh
tokens, registryd.auth.issuer).
"""

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import time

import attrs

COOKIE = b"registryd_session"

#: How long a session lasts after sign-in.
LIFETIME = 12 * 3600

#: The environment variable a main process passes its generated key to its
#: worker processes in (registryd.runtime.workers copies the environment), so a
#: session made by one process is good in all of them.
KEY_VARIABLE = "REGISTRYD_UI_SESSION_KEY"

#: A cookie longer than this is not ours; it is refused unread.
_MAX_COOKIE = 2048


def process_key(environ=os.environ):
    """The signing key of this process and its workers: generated once per
    main process (and so sessions end when registryd restarts)."""
    value = environ.get(KEY_VARIABLE)
    try:
        key = bytes.fromhex(value) if value else b""
    except ValueError:
        key = b""
    if len(key) < 32:
        key = os.urandom(32)
        environ[KEY_VARIABLE] = key.hex()
    return key


def configured_key(text):
    """The signing key for ui.sessionkey (any text of 32+ characters)."""
    return hashlib.sha256(b"registryd-ui-session-key\0" + text.encode("utf-8")).digest()


@attrs.frozen
class Session:
    #: the signed-in user, None for an anonymous visitor
    user: str | None
    #: what every POST form carries back (the CSRF token)
    csrf: str
    #: when the session ends (seconds since the epoch)
    expires: int
    #: the htpasswd entry's fingerprint at sign-in (registryd.auth.htpasswd)
    fingerprint: str | None = None


class SessionCodec:
    """Signs sessions into cookie values and reads them back.

    :param key: the HMAC-SHA256 key (:func:`process_key`).
    """

    def __init__(self, key, clock=time.time):
        self._key = key
        self._clock = clock

    def new(self, user=None, fingerprint=None):
        return Session(user, secrets.token_urlsafe(24), int(self._clock()) + LIFETIME, fingerprint)

    def encode(self, session):
        payload = json.dumps(
            [session.user, session.csrf, session.expires, session.fingerprint],
            separators=(",", ":"),
        ).encode("utf-8")
        body = base64.urlsafe_b64encode(payload).rstrip(b"=")
        return body + b"." + self._sign(body)

    def decode(self, value):
        """The session in cookie ``value`` (bytes), or None when it is
        missing, forged, malformed or expired."""
        if not value or len(value) > _MAX_COOKIE:
            return None
        body, _, signature = value.partition(b".")
        if not hmac.compare_digest(self._sign(body), signature):
            return None
        try:
            payload = json.loads(base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4)))
            user, csrf, expires, fingerprint = payload
        except (ValueError, TypeError, binascii.Error):
            return None
        if (
            not isinstance(csrf, str)
            or not isinstance(expires, int)
            or not isinstance(user, (str, type(None)))
            or not isinstance(fingerprint, (str, type(None)))
        ):
            return None
        if expires <= self._clock():
            return None
        return Session(user, csrf, expires, fingerprint)

    def _sign(self, body):
        digest = hmac.new(self._key, b"registryd-ui-session\0" + body, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=")
