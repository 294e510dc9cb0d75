"""Hypothesis properties of the parsers of operator input that had none:
the configuration's value types one by one (URLs, addresses, headers,
patterns, regular expressions...), ``workers``, the htpasswd file, the key
and certificate files (token server, external tokens, manhole), and the
storage drivers' parameters.

An operator's mistake is bad input like a client's: whatever the text,
each gives a value or its typed error in one line (``ConfigError``
naming the key, ``KeyFileError``, ``HtpasswdError``), never another
exception, which start-up would show as a traceback.
"""

import base64
import json
import os
import tempfile

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from registryd.config import ConfigError

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: What a YAML value can be, short texts shaped like the values these
#: parsers read among them.
SHAPED = st.sampled_from(
    [
        "http://",
        "https://[::1",
        "http://[::1]:99999/",
        "http://h:0/",
        "http://h:-1/",
        "http://h:x/",
        "http://user@/",
        "https://h/p?q#f",
        "ftp://h/",
        "//h",
        ":5000",
        "[::1]:5000",
        "h:65536",
        "h:",
        "[",
        "]:1",
        "a b:1",
        "(",
        "[a-",
        "*",
        "**",
        "${user}/**",
        "a\nb",
        "\x00",
        "auto",
        " 7 ",
        "٣",
        "9" * 30,
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=30),
    SHAPED,
    st.lists(SHAPED, max_size=2).map("".join),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(SCALARS, inner, max_size=3),
    max_leaves=8,
)


def one_line(error):
    text = str(error)
    assert text and "\n" not in text and "Traceback" not in text, repr(text)
    return text


def value_types():
    from registryd.config import types

    return [
        types.String(),
        types.String(nonempty=True),
        types.Boolean(),
        types.Integer(0),
        types.Choice("a", "b"),
        types.Mapping(),
        types.Pattern(r"[a-z]+", "expected letters, got {value!r}"),
        types.FilePath(),
        types.HTTPURL(),
        types.BaseURL(),
        types.HostURL(),
        types.TCPAddress(),
        types.Headers(),
        types.Regexp(),
    ]


@pytest.mark.parametrize("kind", value_types(), ids=lambda kind: type(kind).__name__)
def test_any_value_of_a_config_type_is_a_value_or_a_one_line_config_error(kind):
    """Each of the configuration's value types, fed any YAML value:
    the value, or a ConfigError that names the key, in one line."""

    @PROPERTY
    @given(VALUES)
    def check(value):
        try:
            kind.check(value, "section.key")
        except ConfigError as error:
            assert one_line(error).startswith(("section.key: ", "section.key.")), str(error)

    check()


@PROPERTY
@given(VALUES | st.integers().map(str))
@example("\u00b2")  # str.isdigit, and int() raises ValueError on it
@example("\u0663")  # str.isdigit, and int() reads it: not a number of processes
@example("1" * 5000)  # int() refuses more than 4300 digits
def test_any_workers_value_is_a_count_or_a_one_line_config_error(value):
    from registryd.config import MAX_WORKERS, parse_workers

    try:
        workers = parse_workers(value)
    except ConfigError as error:
        assert one_line(error).startswith("workers: ")
    else:
        assert isinstance(workers, int) and 1 <= workers <= max(MAX_WORKERS, os.cpu_count() or 1)


HTPASSWD_LINES = st.sampled_from(
    [
        "alice:$2y$05$PycBSUOjqvPLzhT6YjpAKuzt7V1wNOQVjs8NEy5jOODS3euN/ejFO",
        "bob:$apr1$x$y",
        "carol:{SHA}abc=",
        "dave:",
        ":$2y$05$x",
        "# comment",
        "",
        "  ",
        "é:$2b$04$\u00e9",
        "eve:$2a$",
    ]
)


@PROPERTY
@given(st.lists(HTPASSWD_LINES | st.text(max_size=40), max_size=6).map("\n".join))
def test_any_htpasswd_text_is_users_or_a_one_line_error(text):
    from registryd.auth.htpasswd import HtpasswdError, parse_htpasswd

    try:
        users = parse_htpasswd(text, "/etc/registryd/htpasswd")
    except HtpasswdError as error:
        assert one_line(error).startswith("/etc/registryd/htpasswd line ")
    else:
        assert all(isinstance(hashed, bytes) for hashed in users.values())


def pem(label, body):
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n".encode()


PEM_LABELS = [
    "PRIVATE KEY",
    "EC PRIVATE KEY",
    "RSA PRIVATE KEY",
    "ENCRYPTED PRIVATE KEY",
    "OPENSSH PRIVATE KEY",
    "DSA PRIVATE KEY",
    "CERTIFICATE",
    "PUBLIC KEY",
]
#: Key and certificate files as an operator could point a key at them:
#: any bytes, PEM armour around any base64, real DER prefixes cut short,
#: OpenSSH public key lines, JSON (JWKS) documents of any shape.
KEY_FILES = st.one_of(
    st.binary(max_size=200),
    st.builds(
        pem,
        st.sampled_from(PEM_LABELS),
        st.binary(max_size=120).map(lambda data: base64.b64encode(data).decode()),
    ),
    st.builds(pem, st.sampled_from(PEM_LABELS), st.text(max_size=60)),
    st.builds(
        lambda kind, data: f"{kind} {base64.b64encode(data).decode()} comment\n".encode(),
        st.sampled_from(["ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ssh-dss", "x"]),
        st.binary(max_size=80),
    ),
    st.builds(
        lambda document: json.dumps(document).encode(),
        st.dictionaries(
            st.sampled_from(["keys", "kty", "crv", "x", "y", "n", "e", "kid", "alg", "use"]),
            VALUES,
            max_size=4,
        )
        | st.fixed_dictionaries(
            {
                "keys": st.lists(
                    st.dictionaries(
                        st.sampled_from(["kty", "crv", "x", "y", "n", "e", "kid", "d", "alg"]),
                        st.sampled_from(["EC", "RSA", "OKP", "oct", "P-256", "Ed25519", "AQAB"])
                        | SCALARS,
                        max_size=5,
                    ),
                    max_size=2,
                )
            }
        ),
    ),
)


def written(data):
    """The path of a new file holding ``data`` (the caller removes it)."""
    handle = tempfile.NamedTemporaryFile(prefix="operator-input-", delete=False)
    with handle:
        handle.write(data)
    return handle.name


@PROPERTY
@given(KEY_FILES)
@example(pem("ENCRYPTED PRIVATE KEY", "MIIBAA=="))
@example(b'{"keys": [{"kty": "EC", "crv": "P-256", "x": 1, "y": []}]}')
def test_any_token_key_or_certificate_file_is_loaded_or_a_one_line_error(data):
    """auth.tokenserver.key and .certificate, auth.token.rootcertbundle and
    .jwks: any file gives keys or a KeyFileError in one line."""
    from registryd.auth.keys import KeyFileError, load_certificates, load_jwks, load_private_key

    path = written(data)
    try:
        for load in (load_private_key, load_certificates, load_jwks):
            try:
                load(path)
            except KeyFileError as error:
                assert path in one_line(error)
    finally:
        os.unlink(path)


@PROPERTY
@given(KEY_FILES)
@example(pem("OPENSSH PRIVATE KEY", "b3BlbnNzaC1rZXktdjEAAAAACmFlczI1Ni1jdHI="))
def test_any_manhole_key_file_is_loaded_or_a_one_line_config_error(data):
    """manhole.authorized_keys and manhole.host_key: any file gives keys or
    a ConfigError naming the key, in one line."""
    from registryd.ops.manhole import load_authorized_keys, load_or_create_host_key

    path = written(data)
    try:
        for load, key in (
            (load_authorized_keys, "manhole.authorized_keys"),
            (load_or_create_host_key, "manhole.host_key"),
        ):
            try:
                load(path)
            except ConfigError as error:
                assert one_line(error).startswith(f"{key}: ")
    finally:
        os.unlink(path)


DRIVER_PARAMETERS = {
    "filesystem": ["rootdirectory", "maxthreads", "junk"],
    "inmemory": ["junk"],
    "s3": [
        "region",
        "bucket",
        "regionendpoint",
        "forcepathstyle",
        "rootdirectory",
        "accesskey",
        "secretkey",
        "chunksize",
        "requesttimeout",
        "maxrequests",
        "secure",
        "v4auth",
        "encrypt",
        "keyid",
        "storageclass",
        "multipartcopychunksize",
        "multipartcopymaxconcurrency",
        "multipartcopythresholdsize",
        "skipverify",
        "usedualstack",
        "loglevel",
        "objectacl",
        "sessiontoken",
        "junk",
    ],
}


@st.composite
def storage_sections(draw):
    driver = draw(st.sampled_from(sorted(DRIVER_PARAMETERS)))
    names = draw(st.lists(st.sampled_from(DRIVER_PARAMETERS[driver]), unique=True, max_size=5))
    parameters = {name: draw(VALUES) for name in names}
    if driver == "filesystem":
        parameters.setdefault("rootdirectory", draw(st.sampled_from(["/", "", "\x00", "a\nb"])))
    return driver, parameters


@PROPERTY
@given(storage_sections())
@example(("s3", {"region": "us-east-1", "bucket": "b", "chunksize": "5M"}))
@example(("s3", {"region": "us-east-1", "bucket": "b", "regionendpoint": "http://[::1"}))
@example(("filesystem", {"rootdirectory": "/", "maxthreads": "9" * 5000}))
def test_any_storage_driver_parameters_make_a_driver_or_a_one_line_config_error(section):
    """A storage section's parameters are parsed by the driver, not by the
    configuration's schema: any values give a driver or a ConfigError
    naming ``storage.<driver>...``, in one line.  (Nothing is created or
    contacted: drivers make directories and S3 clients on first use.)"""
    from registryd.config.root import parse_config
    from registryd.storage.factory import create_storage_driver

    driver, parameters = section
    try:
        storage = parse_config({"version": "0.1", "storage": {driver: parameters}}).storage
    except ConfigError:
        return  # the schema refused it first (a key of the storage section)
    try:
        create_storage_driver(storage)
    except ConfigError as error:
        assert one_line(error).startswith(f"storage.{driver}"), str(error)
