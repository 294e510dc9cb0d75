"""registryd.auth: scopes, headers, keys, access rules, htpasswd, tokens.

Everything real: bcrypt runs in the reactor's thread pool, tokens are
signed and verified with real keys, htpasswd lines are what ``htpasswd -B``
writes.
"""

import base64
import json
import os
import time

import jwt
import pytest
import pytest_twisted
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.web.test.requesthelper import DummyRequest
from zope.interface.verify import verifyObject

from registryd import errors
from registryd.auth import headers, keys
from registryd.auth.access import AccessRules, AuthenticatedUsers, Rule
from registryd.auth.authorizers import (
    BasicAuthorizer,
    BearerAuthorizer,
    OpenAuthorizer,
    OpenGrant,
    PolicyGrant,
    TokenGrant,
)
from registryd.auth.htpasswd import HtpasswdChecker, HtpasswdError, HtpasswdFile, parse_htpasswd
from registryd.auth.issuer import TokenIssuer
from registryd.auth.scope import Access, AccessSet, ScopeInvalid, parse_scope, parse_scopes
from registryd.auth.token import LEEWAY, InvalidToken, TokenVerifier
from registryd.interfaces import IAccessPolicy, IAuthorizer, IGrant
from tests import certs

# Written by `htpasswd -nbB alice wonderland` and `htpasswd -nbB -C 4 bob builder`.
ALICE = "alice:$2y$05$PycBSUOjqvPLzhT6YjpAKuzt7V1wNOQVjs8NEy5jOODS3euN/ejFO"
BOB = "bob:$2y$04$DuUXqxPUk055sPD4HQQSIOl8U8YnFZIW359Q.lATKQAmsF333pXX."


# --- scopes -------------------------------------------------------------------


def test_scope_round_trip_and_port_in_name():
    access = parse_scope("repository:samalba/my-app:pull,push")
    assert access == Access("repository", "samalba/my-app", {"pull", "push"})
    assert access.scope() == "repository:samalba/my-app:pull,push"
    with_port = parse_scope("repository:localhost:5000/app:pull")
    assert with_port.name == "localhost:5000/app" and with_port.actions == {"pull"}
    assert parse_scope("repository(plugin):a/b:pull").type == "repository"
    assert Access.catalog().scope() == "registry:catalog:*"


@pytest.mark.parametrize(
    "text",
    [
        "repository",
        "repository:name",
        "Repository:a:pull",
        "repository::pull",
        "repository:a:b:c:pull",
        "repository:a:PULL",
        "repo sitory:a:pull",
    ],
)
def test_malformed_scopes_are_refused(text):
    with pytest.raises(ScopeInvalid):
        parse_scope(text)


def test_scopes_may_be_space_separated():
    found = parse_scopes(["repository:a:pull repository:b:push", "", "registry:catalog:*"])
    assert [a.scope() for a in found] == [
        "repository:a:pull",
        "repository:b:push",
        "registry:catalog:*",
    ]


def test_access_set_star_and_missing():
    granted = AccessSet([Access.repository("a", "pull"), Access.repository("b", "*")])
    assert granted.allows("repository", "a", "pull")
    assert not granted.allows("repository", "a", "push")
    assert granted.allows("repository", "b", "delete")
    missing = granted.missing(
        [Access.repository("a", "pull", "push"), Access.repository("b", "push")]
    )
    assert missing == [Access.repository("a", "push")]


# --- headers ------------------------------------------------------------------


def request_with(*values):
    request = DummyRequest([b""])
    for value in values:
        request.requestHeaders.addRawHeader(b"authorization", value)
    return request


def basic(user, password):
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


def test_authorization_header_parsing():
    assert headers.authorization(request_with()) is None
    scheme, value = headers.authorization(request_with(basic("alice", "pw:with:colons")))
    assert scheme == "basic"
    credentials = headers.basic_credentials(value)
    assert (credentials.username, credentials.password) == (b"alice", b"pw:with:colons")
    assert headers.authorization(request_with(b"bEaReR abc.def.ghi")) == ("bearer", "abc.def.ghi")


@pytest.mark.parametrize(
    "values",
    [
        [b"Basic"],
        [b"Basic "],
        [b"Bearer a", b"Bearer b"],
        [b"Basic \xff\xfe"],
    ],
)
def test_malformed_authorization_headers(values):
    with pytest.raises(headers.MalformedAuthorization):
        headers.authorization(request_with(*values))


@pytest.mark.parametrize(
    "value",
    [
        "!!!",
        base64.b64encode(b"no-colon").decode(),
        base64.b64encode(b":nouser").decode(),
        base64.b64encode(b"\xff:x").decode(),
    ],
)
def test_malformed_basic_credentials(value):
    with pytest.raises(headers.MalformedAuthorization):
        headers.basic_credentials(value)


def test_challenge_quotes_values():
    assert (
        headers.challenge("Bearer", realm='a"b', service="s", scope=None)
        == 'Bearer realm="a\\"b",service="s"'
    )


# --- keys ---------------------------------------------------------------------


def test_jwk_thumbprint_matches_rfc_7638_example():
    jwk = {
        "kty": "RSA",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSo"
        "c_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGj"
        "QR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-b"
        "FTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    }
    assert keys.jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_libtrust_key_id_shape():
    key_id = keys.libtrust_key_id(certs.new_key().public_key())
    parts = key_id.split(":")
    assert len(parts) == 12 and all(len(p) == 4 and p.isupper() or p.isdigit() for p in parts)


def test_algorithms_fit_key_types():
    assert keys.signing_algorithm(certs.new_key("rsa")) == "RS256"
    assert keys.signing_algorithm(certs.new_key("ec")) == "ES256"


def test_jwks_with_symmetric_keys_is_refused(tmp_path):
    path = certs.write(
        tmp_path, "jwks.json", json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}).encode()
    )
    with pytest.raises(keys.KeyFileError, match="symmetric"):
        keys.load_jwks(path)


# --- access rules -------------------------------------------------------------


def rules():
    return AccessRules(
        [
            Rule(repositories=["public/**"], anonymous=True, actions=["pull"]),
            Rule(repositories=["**"], groups=["admins"], actions=["*"]),
            Rule(repositories=["team/*"], users=["bob"], actions=["pull", "push"]),
            Rule(repositories=["${user}/**"], users=["*"], actions=["pull", "push", "delete"]),
        ],
        groups={"admins": ["alice"]},
    )


def test_access_rules():
    policy = rules()
    verifyObject(IAccessPolicy, policy)
    assert policy.actions(None, "public/x") == {"pull"}
    assert policy.actions(None, "team/x") == set()
    assert policy.actions("alice", "anything/at/all") == {"pull", "push", "delete"}
    assert policy.actions("bob", "team/x") == {"pull", "push"}
    assert policy.actions("bob", "team/x/y") == set()  # '*' stays in one component
    assert policy.actions("bob", "public/a/b") == {"pull"}
    assert policy.actions("bob", "bob/tools") == {"pull", "push", "delete"}
    assert policy.actions("bob", "alice/tools") == set()
    assert policy.actions("carol", "carol/x") == {"pull", "push", "delete"}
    assert policy.may_list_catalog(None) and policy.may_list_catalog("carol")
    assert not AccessRules(
        [Rule(repositories=["a"], users=["x"], actions=["pull"])]
    ).may_list_catalog(None)


def test_user_placeholder_cannot_be_widened_by_the_user_name():
    policy = AccessRules([Rule(repositories=["${user}/x"], users=["*"], actions=["push"])])
    assert policy.actions("a.b", "a.b/x") == {"push"}
    assert policy.actions("a.b", "azb/x") == set()  # '.' is literal, not a regex wildcard


def test_authenticated_users_policy():
    policy = AuthenticatedUsers()
    verifyObject(IAccessPolicy, policy)
    assert policy.actions("x", "a") == {"pull", "push", "delete"}
    assert policy.actions(None, "a") == set()
    assert not policy.may_list_catalog(None)


# --- htpasswd -----------------------------------------------------------------


def test_parse_htpasswd_skips_non_bcrypt_and_comments():
    users = parse_htpasswd(f"# users\n\n{ALICE}\ncarol:{{SHA}}abc=\n{BOB}\n")
    assert sorted(users) == ["alice", "bob"]
    with pytest.raises(HtpasswdError, match="line 2"):
        parse_htpasswd(f"{ALICE}\nbroken line\n")


def test_htpasswd_file_reloads_when_changed(tmp_path):
    path = tmp_path / "htpasswd"
    path.write_text(ALICE + "\n")
    now = [0.0]
    htfile = HtpasswdFile(str(path), clock=lambda: now[0])
    assert htfile.entry("alice") and htfile.entry("bob") is None
    fingerprint = htfile.fingerprint("alice")
    path.write_text(BOB + "\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert htfile.entry("bob") is None  # not re-checked within stat_interval
    now[0] += 2
    assert htfile.entry("bob") and htfile.entry("alice") is None
    assert htfile.fingerprint("alice") is None and fingerprint
    path.write_text("garbage\n")  # an invalid file keeps the last good users
    now[0] += 2
    assert htfile.entry("bob")


def test_htpasswd_file_missing_at_start(tmp_path):
    with pytest.raises(HtpasswdError, match="cannot read"):
        HtpasswdFile(str(tmp_path / "nope"))


def checker_for(tmp_path, *lines):
    path = tmp_path / "htpasswd"
    path.write_text("\n".join(lines) + "\n")
    return HtpasswdChecker(HtpasswdFile(str(path)))


@pytest_twisted.ensureDeferred
async def test_checker_accepts_htpasswd_B_entries_and_caches_success(tmp_path):
    checker = checker_for(tmp_path, ALICE, BOB)
    verifyObject(ICredentialsChecker, checker)
    assert await checker.requestAvatarId(UsernamePassword(b"alice", b"wonderland")) == "alice"
    assert checker.bcrypt_runs == 1
    for _ in range(5):
        assert await checker.requestAvatarId(UsernamePassword(b"alice", b"wonderland")) == "alice"
    assert checker.bcrypt_runs == 1  # cached
    assert await checker.requestAvatarId(UsernamePassword(b"bob", b"builder")) == "bob"
    assert checker.bcrypt_runs == 2


@pytest_twisted.ensureDeferred
async def test_checker_refuses_wrong_password_and_unknown_user_without_caching(tmp_path):
    checker = checker_for(tmp_path, ALICE)
    for user, password in [
        (b"alice", b"wrong"),
        (b"alice", b"wrong"),
        (b"nobody", b"wonderland"),
        (b"alice", b"wonderland" + b"x" * 80),
    ]:
        with pytest.raises(UnauthorizedLogin):
            await checker.requestAvatarId(UsernamePassword(user, password))
    assert checker.bcrypt_runs == 4  # failures are never cached; unknown users pay bcrypt too


@pytest_twisted.ensureDeferred
async def test_concurrent_checks_share_one_bcrypt_run(tmp_path):
    from twisted.internet import defer

    checker = checker_for(tmp_path, ALICE)
    results = await defer.gatherResults(
        [checker.requestAvatarId(UsernamePassword(b"alice", b"wonderland")) for _ in range(4)]
    )
    assert results == ["alice"] * 4 and checker.bcrypt_runs == 1


@pytest_twisted.ensureDeferred
async def test_cache_expires(tmp_path):
    now = [0.0]
    path = tmp_path / "htpasswd"
    path.write_text(ALICE + "\n")
    checker = HtpasswdChecker(HtpasswdFile(str(path)), clock=lambda: now[0])
    await checker.requestAvatarId(UsernamePassword(b"alice", b"wonderland"))
    now[0] += checker.cache_seconds + 1
    await checker.requestAvatarId(UsernamePassword(b"alice", b"wonderland"))
    assert checker.bcrypt_runs == 2


# --- tokens -------------------------------------------------------------------


class Signer:
    """Makes tokens the way a token server would."""

    def __init__(self, kind="ec", issuer="issuer", service="registry"):
        self.key = certs.new_key(kind)
        self.algorithm = keys.signing_algorithm(self.key)
        self.issuer, self.service = issuer, service
        self.kid = keys.jwk_thumbprint(keys.public_jwk(self.key.public_key()))

    def token(self, grants=(), headers=None, **claims):
        now = int(time.time())
        body = {
            "iss": self.issuer,
            "sub": "alice",
            "aud": self.service,
            "exp": now + 300,
            "nbf": now - 5,
            "iat": now,
            "jti": "x",
            "access": [{"type": t, "name": n, "actions": list(a)} for t, n, a in grants],
        }
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(
            body,
            self.key,
            algorithm=self.algorithm,
            headers=headers if headers is not None else {"kid": self.kid},
        )


def verifier_for(signer, **kwargs):
    return TokenVerifier(signer.issuer, signer.service, [(None, signer.key.public_key())], **kwargs)


def test_valid_token_by_kid_thumbprint_and_libtrust_id():
    signer = Signer()
    verifier = verifier_for(signer)
    verified = verifier.verify(signer.token([("repository", "a/b", ["pull"])]))
    assert verified.subject == "alice"
    assert verified.access.allows("repository", "a/b", "pull")
    libtrust = keys.libtrust_key_id(signer.key.public_key())
    assert verifier.verify(signer.token(headers={"kid": libtrust})).subject == "alice"
    rsa = Signer("rsa")
    assert verifier_for(rsa).verify(rsa.token(aud=["other", "registry"])).subject == "alice"


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(exp=int(time.time()) - 3600), "expired"),
        (dict(nbf=int(time.time()) + 3600), "not valid yet"),
        (dict(aud="another-registry"), "not for service"),
        (dict(iss="someone-else"), "untrusted issuer"),
        (dict(exp=None), "exp"),
        (dict(exp=str(int(time.time()) + 3600)), "exp is not a number"),
        (dict(exp=True), "expired"),
        (dict(nbf="0"), "nbf is not a number"),
        (dict(iat="0"), "iat is not a number"),
        (dict(access="everything"), "access claim"),
        (dict(access=[{"type": "repository", "name": "a", "actions": "pull"}]), "access claim"),
        (dict(token_use="refresh"), "refresh token"),
    ],
)
def test_invalid_claims(change, message):
    signer = Signer()
    with pytest.raises(InvalidToken, match=message):
        verifier_for(signer).verify(signer.token(**change))


def test_untrusted_keys_and_algorithms():
    signer, stranger = Signer(), Signer()
    verifier = verifier_for(signer)
    with pytest.raises(InvalidToken, match="untrusted key"):
        verifier.verify(stranger.token())
    with pytest.raises(InvalidToken, match="signature"):  # a trusted kid, another key
        verifier.verify(stranger.token(headers={"kid": signer.kid}))
    with pytest.raises(InvalidToken, match="names no signing key"):
        verifier.verify(signer.token(headers={}))
    unsigned = jwt.encode(
        {"iss": "issuer", "aud": "registry", "exp": int(time.time()) + 60},
        None,
        algorithm="none",
        headers={"kid": signer.kid},
    )
    with pytest.raises(InvalidToken, match="not accepted"):
        verifier.verify(unsigned)
    hmac_token = jwt.encode(
        {"iss": "issuer"}, b"k" * 32, algorithm="HS256", headers={"kid": signer.kid}
    )
    with pytest.raises(InvalidToken, match="not accepted"):
        verifier.verify(hmac_token)
    with pytest.raises(InvalidToken, match="not accepted"):
        verifier_for(signer, algorithms=["RS256"]).verify(signer.token())
    for garbage in ["", "abc", "a.b.c", "eyJhbGciOiJFUzI1NiJ9.e30"]:
        with pytest.raises(InvalidToken):
            verifier.verify(garbage)


def test_jwk_header_must_be_a_trusted_key():
    signer, stranger = Signer(), Signer()
    jwk = keys.public_jwk(signer.key.public_key())
    assert verifier_for(signer).verify(signer.token(headers={"jwk": jwk})).subject == "alice"
    strange = keys.public_jwk(stranger.key.public_key())
    with pytest.raises(InvalidToken, match="untrusted key"):
        verifier_for(signer).verify(stranger.token(headers={"jwk": strange}))


def x5c(*certificates):
    from cryptography.hazmat.primitives import serialization

    return [
        base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in certificates
    ]


def test_x5c_chain_to_rootcertbundle():
    ca = certs.CA("token CA")
    signer = Signer()
    _, leaf = ca.issue("token signer", key=signer.key)
    verifier = TokenVerifier("issuer", "registry", roots=[ca.certificate])
    assert verifier.verify(signer.token(headers={"x5c": x5c(leaf)})).subject == "alice"
    # via an intermediate
    intermediate_key, intermediate = ca.issue("intermediate", ca=True)
    sub = certs.CA.__new__(certs.CA)
    sub.key, sub.certificate = intermediate_key, intermediate
    _, leaf2 = sub.issue("token signer 2", key=signer.key)
    assert (
        verifier.verify(signer.token(headers={"x5c": x5c(leaf2, intermediate)})).subject == "alice"
    )
    # the self-signed signing certificate itself as the bundle (Distribution's usual set-up)
    own = certs.self_signed(signer.key)
    assert (
        TokenVerifier("issuer", "registry", roots=[own])
        .verify(signer.token(headers={"x5c": x5c(own)}))
        .subject
        == "alice"
    )
    # and by kid alone: bundle keys are trusted keys
    assert (
        TokenVerifier("issuer", "registry", roots=[own]).verify(signer.token()).subject == "alice"
    )


def test_x5c_chain_not_leading_to_a_root_is_refused():
    ca, other = certs.CA("token CA"), certs.CA("other CA")
    signer = Signer()
    _, leaf = other.issue("token signer", key=signer.key)
    verifier = TokenVerifier("issuer", "registry", roots=[ca.certificate])
    with pytest.raises(InvalidToken, match="does not lead to a trusted root"):
        verifier.verify(signer.token(headers={"x5c": x5c(leaf)}))
    with pytest.raises(InvalidToken, match="does not lead to a trusted root"):
        verifier.verify(signer.token(headers={"x5c": x5c(leaf, other.certificate)}))
    # the leaf's key must be the signing key
    _, good_leaf = ca.issue("token signer", key=certs.new_key())
    with pytest.raises(InvalidToken, match="signature"):
        verifier.verify(signer.token(headers={"x5c": x5c(good_leaf)}))
    with pytest.raises(InvalidToken, match="malformed"):
        verifier.verify(signer.token(headers={"x5c": ["not base64!"]}))
    import datetime

    _, expired = ca.issue(
        "old",
        key=signer.key,
        days=1,
        not_before=datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=3),
    )
    with pytest.raises(InvalidToken, match="expired"):
        verifier.verify(signer.token(headers={"x5c": x5c(expired)}))


# --- issuer -------------------------------------------------------------------


def issuer_for(tmp_path, policy=None, **kwargs):
    path = tmp_path / "htpasswd"
    path.write_text(f"{ALICE}\n{BOB}\n")
    htfile = HtpasswdFile(str(path))
    return TokenIssuer(
        certs.new_key(),
        "registryd",
        "registry",
        HtpasswdChecker(htfile),
        htfile,
        policy or rules(),
        **kwargs,
    ), path


def test_issuer_grants_the_intersection(tmp_path):
    issuer, _ = issuer_for(tmp_path)
    requested = parse_scopes(
        [
            "repository:team/x:pull,push,delete repository:secret/x:pull",
            "registry:catalog:* repository:bob/y:*",
        ]
    )
    granted = issuer.grant("bob", requested)
    assert [a.scope() for a in granted] == [
        "repository:team/x:pull,push",
        "registry:catalog:*",
        "repository:bob/y:pull,push,delete",
    ]
    assert issuer.grant(None, requested) == [Access.catalog()]  # anonymous rule exists
    assert [
        a.scope() for a in issuer.grant(None, parse_scopes(["repository:public/a:pull,push"]))
    ] == ["repository:public/a:pull"]


NAME_PARTS = [
    "alice",
    "secret",
    "app",
    "..",
    ".",
    "",
    "App",
    "a-b",
    "a__b",
    "a___b",
    "-a",
    "a.",
    "x" * 300,
    "%2e%2e",
    "\u00e9",
    "localhost:5000",
    "a\x00",
    "*",
    "${user}",
]


def test_issuer_grants_only_repository_names_the_api_accepts(tmp_path):
    """Whatever repository name a scope carries, the token server either
    refuses the request (a 400 RegistryError) or asks the policy only
    about names the API accepts: alice's ``${user}/**`` rule matches
    ``alice/../secret/app`` as a string, and must never see it."""
    from hypothesis import example, given, settings
    from hypothesis import strategies as st

    from registryd.names import check_repository_name

    issuer, _ = issuer_for(
        tmp_path, policy=AccessRules([Rule(["${user}/**"], users=["*"], actions=["pull", "push"])])
    )
    names = st.lists(st.sampled_from(NAME_PARTS), min_size=1, max_size=5).map("/".join) | st.text(
        max_size=30
    )

    @settings(max_examples=300, derandomize=True, database=None, deadline=None)
    @given(names, st.sampled_from(["pull", "push", "*", "pull,push", ""]))
    @example("alice/" + "a" * 300, "pull")  # in the scope grammar, over the API's 255
    def check(name, actions):
        try:
            requested = issuer.requested([f"repository:{name}:{actions}"])
        except errors.RegistryError as error:
            assert error.status == 400
            return
        for access in issuer.grant("alice", requested):
            assert check_repository_name(access.name) == access.name

    check()


def test_issued_tokens_verify_and_refresh_tokens_are_separate(tmp_path):
    issuer, path = issuer_for(tmp_path)
    verifier = TokenVerifier("registryd", "registry", [(issuer.kid, issuer.public_key)])
    token, issued_at, expires_in = issuer.access_token("bob", [Access.repository("team/x", "pull")])
    verified = verifier.verify(token)
    assert verified.subject == "bob" and verified.access.allows("repository", "team/x", "pull")
    assert expires_in == 300 and issued_at.endswith("Z")
    assert jwt.get_unverified_header(token)["kid"] == issuer.kid
    refresh = issuer.refresh_token("bob")
    with pytest.raises(InvalidToken, match="refresh token"):
        verifier.verify(refresh)
    assert issuer.user_from_refresh_token(refresh) == "bob"
    with pytest.raises(errors.Unauthorized):
        issuer.user_from_refresh_token(token)  # an access token is no refresh token
    # a new password revokes refresh tokens
    path.write_text(f"{ALICE}\nbob:$2y$04$Fq0s7sJ7n8m3rJkqV7Yf3eQwF0Yq2G1c2m9JrQdKxG7mY1Zb6iVnS\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    issuer.htfile._next_check = 0
    with pytest.raises(errors.Unauthorized, match="changed"):
        issuer.user_from_refresh_token(refresh)


def test_issuer_x5c_header_when_a_certificate_is_configured(tmp_path):
    key = certs.new_key()
    own = certs.self_signed(key)
    path = tmp_path / "htpasswd"
    path.write_text(ALICE + "\n")
    htfile = HtpasswdFile(str(path))
    issuer = TokenIssuer(
        key, "registryd", "registry", HtpasswdChecker(htfile), htfile, rules(), certificates=[own]
    )
    token, _, _ = issuer.access_token("alice", [])
    assert jwt.get_unverified_header(token)["x5c"] == x5c(own)
    assert TokenVerifier("registryd", "registry", roots=[own]).verify(token).subject == "alice"


# --- authorizers --------------------------------------------------------------


def test_grants_provide_the_interface():
    signer = Signer()
    verified = verifier_for(signer).verify(signer.token())
    for grant in [OpenGrant(), PolicyGrant(rules(), "bob"), TokenGrant(verified)]:
        verifyObject(IGrant, grant)


def test_token_grant_reads_beyond_the_token_only_with_the_built_in_issuer():
    signer = Signer()
    verified = verifier_for(signer).verify(
        signer.token(
            [("repository", "team/x", ["pull"]), ("registry", "catalog", ["*"])], sub="bob"
        )
    )
    external = TokenGrant(verified)
    assert external.allows("repository", "team/x", "pull")
    assert not external.allows("repository", "team/y", "pull")
    assert external.may_list("anything")  # external catalog grant: the whole catalog
    own = TokenGrant(verified, rules())
    assert own.allows("repository", "team/y", "pull") and not own.allows(
        "repository", "team/y", "push"
    )
    assert own.may_list("team/y") and not own.may_list("secret/z")


def test_authorizers_provide_the_interface(tmp_path):
    checker = checker_for(tmp_path, ALICE)
    signer = Signer()
    for authorizer in [
        OpenAuthorizer(),
        BasicAuthorizer("r", checker, rules()),
        BearerAuthorizer("https://auth", "registry", verifier_for(signer)),
    ]:
        verifyObject(IAuthorizer, authorizer)


@pytest_twisted.ensureDeferred
async def test_bearer_authorizer_challenges():
    signer = Signer()
    authorizer = BearerAuthorizer("https://auth/token", "registry", verifier_for(signer))
    needed = [Access.repository("a/b", "pull", "push")]
    with pytest.raises(errors.Unauthorized) as info:
        await authorizer.authorize(request_with(), needed)
    assert (
        info.value.headers["WWW-Authenticate"]
        == 'Bearer realm="https://auth/token",service="registry",scope="repository:a/b:pull,push"'
    )
    assert info.value.detail == [
        {"Type": "repository", "Name": "a/b", "Action": "pull"},
        {"Type": "repository", "Name": "a/b", "Action": "push"},
    ]
    with pytest.raises(errors.Unauthorized) as info:
        await authorizer.authorize(request_with(b"Bearer " + signer.token(exp=1).encode()), needed)
    assert 'error="invalid_token"' in info.value.headers["WWW-Authenticate"]
    token = signer.token([("repository", "a/b", ["pull"])])
    with pytest.raises(errors.Denied) as info:
        await authorizer.authorize(request_with(b"Bearer " + token.encode()), needed)
    assert info.value.status == 403
    assert info.value.headers["WWW-Authenticate"].endswith(
        'scope="repository:a/b:pull,push",error="insufficient_scope"'
    )
    assert info.value.detail == [{"Type": "repository", "Name": "a/b", "Action": "push"}]
    grant = await authorizer.authorize(
        request_with(b"Bearer " + token.encode()), [Access.repository("a/b", "pull")]
    )
    assert grant.user == "alice"


# --- the sample configuration ----------------------------------------------------


def sample_auth_blocks():
    """Each commented ``auth:`` example in etc/registryd.yaml, uncommented;
    the access rules go with the last (registryd as token server)."""
    sample = os.path.join(os.path.dirname(__file__), "..", "..", "etc", "registryd.yaml")
    lines = open(sample).read().splitlines()
    blocks, current = [], None
    for line in lines:
        if line == "# auth:":
            current = ["auth:"]
            blocks.append(current)
        elif current is not None and line.startswith("#   "):
            current.append(line[2:])
        elif current is not None and line.startswith("#   access:"):
            current.append(line[2:])
        else:
            current = None
    access = []
    for line in lines[lines.index("#   access:") :]:
        if not line.startswith("#   "):
            break  # the end of the auth example
        access.append(line[2:])
    blocks[-1].extend(access)
    return ["\n".join(block) for block in blocks]


def test_sample_config_auth_examples_parse():
    import yaml

    from registryd.config import parse_config

    blocks = sample_auth_blocks()
    assert len(blocks) == 3
    parsed = [
        parse_config(yaml.safe_load("version: 0.1\nstorage: {inmemory: }\n" + b)).auth
        for b in blocks
    ]
    assert parsed[0].htpasswd and not parsed[0].token
    assert parsed[1].token.jwks and not parsed[1].htpasswd
    assert parsed[2].tokenserver and len(parsed[2].access.rules) == 4


@pytest_twisted.ensureDeferred
async def test_a_cancelled_check_does_not_stop_the_others(tmp_path):
    from twisted.internet import defer

    checker = checker_for(tmp_path, ALICE)
    first = checker.requestAvatarId(UsernamePassword(b"alice", b"wonderland"))
    second = checker.requestAvatarId(UsernamePassword(b"alice", b"wonderland"))
    first.cancel()  # klein cancels a handler whose client left
    assert await second == "alice"
    with pytest.raises(defer.CancelledError):
        await first


@pytest_twisted.ensureDeferred
async def test_a_synchronous_runner_answers_too(tmp_path):
    from twisted.internet import defer

    from registryd.auth.htpasswd import _checkpw

    path = tmp_path / "htpasswd"
    path.write_text(ALICE + "\n")
    checker = HtpasswdChecker(
        HtpasswdFile(str(path)), run_in_thread=lambda f, *a: defer.succeed(f(*a))
    )
    assert await checker.requestAvatarId(UsernamePassword(b"alice", b"wonderland")) == "alice"
    assert _checkpw(b"x", b"not a hash") is False


def test_a_verified_token_is_kept_until_it_expires():
    """Clients send the same token with every request: its signature is
    checked once, and again only once its exp (plus the leeway) passed."""
    signer = Signer()
    now = [time.time()]
    verifier = verifier_for(signer, clock=lambda: now[0])
    token = signer.token([("repository", "app", ("pull",))], exp=int(now[0]) + 30)
    for purpose in ("access", "access", "access"):
        assert verifier.verify(token, purpose).access.allows("repository", "app", "pull")
    assert verifier.verifications == 1
    with pytest.raises(InvalidToken):
        verifier.verify(token, "refresh")  # kept for one purpose, not another
    assert verifier.verifications == 2
    now[0] += 30 + LEEWAY
    verifier.verify(token)  # expired by the verifier's clock: checked again
    assert verifier.verifications == 3


def test_kept_tokens_are_bounded_by_their_size(monkeypatch):
    signer = Signer()
    verifier = verifier_for(signer)
    tokens = [signer.token(jti=str(index)) for index in range(3)]
    monkeypatch.setattr(verifier, "max_kept_bytes", len(tokens[0]) * 2)
    for token in tokens:
        verifier.verify(token)
    verifier.verify(tokens[0])  # the least recently used went
    assert verifier.verifications == 4
    verifier.verify(tokens[2])
    assert verifier.verifications == 4
