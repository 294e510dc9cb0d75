"""Authentication and access control over a real socket: htpasswd (Basic),
the built-in token server, external tokens, TLS listeners.

Every refusal is checked for its status, its ``WWW-Authenticate``
challenge and its JSON body, and that it wrote nothing to storage.
"""

import base64
import json
import os
import ssl
import time

import jwt
import pytest
import pytest_twisted
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from registryd.auth import keys
from tests import certs
from tests.support import exchange, in_reactor, make_client, raw_request_bytes, run_examples, sha256

# `htpasswd -nbB alice wonderland`, `htpasswd -nbB -C 4 bob builder`
HTPASSWD = (
    "alice:$2y$05$PycBSUOjqvPLzhT6YjpAKuzt7V1wNOQVjs8NEy5jOODS3euN/ejFO\n"
    "bob:$2y$04$DuUXqxPUk055sPD4HQQSIOl8U8YnFZIW359Q.lATKQAmsF333pXX.\n"
)
ALICE, BOB = ("alice", "wonderland"), ("bob", "builder")

ACCESS = {
    "groups": {"admins": ["alice"]},
    "rules": [
        {"repositories": ["public/**"], "anonymous": True, "actions": ["pull"]},
        {"repositories": ["**"], "groups": ["admins"], "actions": ["*"]},
        {"repositories": ["team/**"], "users": ["bob"], "actions": ["pull"]},
        {"repositories": ["${user}/**"], "users": ["*"], "actions": ["pull", "push"]},
    ],
}


class Running:
    def __init__(self, url, root, port, client, pool, app):
        self.url, self.root, self.port, self.client, self.pool, self.app = (
            url,
            root,
            port,
            client,
            pool,
            app,
        )

    def v2(self, path):
        return f"{self.url}/v2/{path}"

    def files(self):
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*"))


async def serve(tmp_path, auth=None, tls=None, listen="tcp:0:interface=127.0.0.1"):
    """registryd from a configuration (auth, http.tls sections) on a free
    loopback port, built the way RegistryService builds it."""
    from twisted.internet import endpoints, reactor

    from registryd.auth import create
    from registryd.config import parse_config
    from registryd.http import tls as tlsmodule
    from registryd.http.app import RegistryApp
    from registryd.http.web import StreamingSite
    from registryd.storage.drivers.filesystem import FilesystemDriver
    from registryd.storage.registry import Registry

    root = tmp_path / "registry-data"
    document = {
        "version": 0.1,
        "storage": {"filesystem": {"rootdirectory": str(root)}, "delete": {"enabled": True}},
    }
    if auth is not None:
        document["auth"] = auth
    if tls is not None:
        document["http"] = {"tls": tls}
    config = parse_config(yaml.safe_load(yaml.safe_dump(document)))
    registry = Registry(FilesystemDriver(str(root)), delete_enabled=True)
    authorizer, token_issuer = create(config)
    app = RegistryApp(registry, authorizer=authorizer, token_issuer=token_issuer)
    site = StreamingSite(app.resource())
    plain, options = tlsmodule.listener(listen, config.http.tls)
    port = await endpoints.serverFromString(reactor, plain).listen(tlsmodule.wrap(site, options))
    client, pool = make_client(reactor)
    scheme = "https" if options is not None else "http"
    root.mkdir(parents=True, exist_ok=True)
    return Running(f"{scheme}://127.0.0.1:{port.getHost().port}", root, port, client, pool, app)


async def stop(running):
    await running.pool.closeCachedConnections()
    await running.port.stopListening()


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def header(response, name):
    values = response.headers.getRawHeaders(name)
    return values[0] if values else None


async def error_of(response):
    body = json.loads(await response.content())
    return [(e["code"], e["message"]) for e in body["errors"]]


async def request(running, method, path, headers=None, data=None):
    url = path if path.startswith("http") else running.v2(path)
    response = await running.client.request(method, url, headers=headers or {}, data=data)
    return response


async def push_blob(running, name, data, headers):
    response = await request(running, "POST", f"{name}/blobs/uploads/", headers)
    assert response.code == 202, await response.content()
    await response.content()
    location = header(response, "Location")
    response = await request(running, "PUT", f"{location}?digest={sha256(data)}", headers, data)
    assert response.code == 201, await response.content()
    await response.content()
    return sha256(data)


async def push_image(running, name, tag, headers):
    config = json.dumps({"architecture": "amd64", "os": "linux", "n": os.urandom(8).hex()}).encode()
    layer = os.urandom(1000)
    config_digest = await push_blob(running, name, config, headers)
    layer_digest = await push_blob(running, name, layer, headers)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest,
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    response = await request(
        running,
        "PUT",
        f"{name}/manifests/{tag}",
        {**headers, "Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        manifest,
    )
    assert response.code == 201, await response.content()
    await response.content()
    return layer_digest


# --- htpasswd -------------------------------------------------------------------


@pytest_twisted.async_yield_fixture
async def basic_registry(tmp_path):
    path = tmp_path / "htpasswd"
    path.write_text(HTPASSWD)
    running = await serve(
        tmp_path,
        auth={"htpasswd": {"realm": "registryd test", "path": str(path)}, "access": ACCESS},
    )
    yield running
    await stop(running)


async def guess_while_alice_logs_in(running, login):
    """A guesser hammers alice's account from alice's own address (the
    loopback) while alice keeps logging in with her password: every one of
    alice's logins succeeds at once and without bcrypt, the guesser gets
    401s, then 429 TOOMANYREQUESTS with Retry-After before any bcrypt; a
    guesser obeying Retry-After needs the sum of the delays (on the
    throttle's clock, advanced by the test rather than waited for)."""
    checker = (
        running.app.authorizer.checker
        if running.app.token_issuer is None
        else running.app.token_issuer.checker
    )
    throttle = checker.throttle
    # A whole number of seconds: the sums below are then exact (a float
    # such as time.monotonic()'s made 123 s of Retry-After add up to 122.99...).
    now = [float(int(time.monotonic()))]
    throttle.clock = lambda: now[0]
    start = now[0]
    response = await login(ALICE)
    assert response.code == 200
    await response.content()
    failures = refused = 0
    while failures < 12:
        runs = checker.bcrypt_runs
        response = await login(("alice", f"guess{failures}"))
        if response.code == 401:
            failures += 1
            await response.content()
        else:
            assert response.code == 429
            [(code, message)] = await error_of(response)
            assert code == "TOOMANYREQUESTS" and "too many failed logins" in message
            assert checker.bcrypt_runs == runs  # refused before bcrypt
            refused += 1
            now[0] += int(header(response, "Retry-After"))
        runs = checker.bcrypt_runs
        response = await login(ALICE)
        assert response.code == 200, await response.content()
        await response.content()
        assert checker.bcrypt_runs == runs  # known-good: no bcrypt, no brake
    assert refused == 12 - throttle.free
    assert now[0] - start >= sum(throttle.delay(n) for n in range(12)) > 0
    response = await login(BOB)  # another user from the same address
    assert response.code == 200
    await response.content()
    # not a lock-out: once the delay passed, even a password not seen
    # before (alice's, forgotten here) is checked and accepted
    checker._verified.clear()
    response = await login(ALICE)
    assert response.code == 429
    await response.content()
    now[0] += int(header(response, "Retry-After"))
    response = await login(ALICE)
    assert response.code == 200
    await response.content()
    assert len(throttle) == 0  # the success cleared the pair


@pytest_twisted.ensureDeferred
async def test_guessing_is_braked_but_never_locks_out_the_right_password(basic_registry):
    async def login(credentials):
        return await request(basic_registry, "GET", "", headers=basic(*credentials))

    await guess_while_alice_logs_in(basic_registry, login)


@pytest_twisted.ensureDeferred
async def test_basic_challenge_and_login(basic_registry):
    response = await request(basic_registry, "GET", "")
    assert response.code == 401
    assert header(response, "WWW-Authenticate") == 'Basic realm="registryd test"'
    assert header(response, "Docker-Distribution-API-Version") == "registry/2.0"
    assert await error_of(response) == [("UNAUTHORIZED", "authentication required")]
    response = await request(basic_registry, "GET", "", basic(*ALICE))
    assert response.code == 200 and json.loads(await response.content()) == {}
    assert header(response, "WWW-Authenticate") is None


@pytest.mark.parametrize(
    "headers, message",
    [
        (basic("alice", "wrong"), "invalid username or password"),
        (basic("mallory", "wonderland"), "invalid username or password"),
        ({"Authorization": "Basic !!!"}, "Basic credentials are not base64"),
        ({"Authorization": "Basic " + base64.b64encode(b"alice").decode()}, "not user:password"),
        ({"Authorization": "Basic"}, "is not '<scheme> <credentials>'"),
        ({"Authorization": "Bearer abc"}, "only Basic authentication"),
        ({"Authorization": ["Basic YTpi", "Basic YTpi"]}, "more than one Authorization header"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_credentials_are_refused_and_write_nothing(basic_registry, headers, message):
    before = basic_registry.files()
    for method, path in [
        ("GET", ""),
        ("POST", "alice/app/blobs/uploads/"),
        ("GET", "public/app/manifests/latest"),
    ]:
        response = await request(basic_registry, method, path, headers)
        assert response.code == 401, (method, path)
        assert header(response, "WWW-Authenticate") == 'Basic realm="registryd test"'
        [(code, text)] = await error_of(response)
        assert code == "UNAUTHORIZED" and message in text
    assert basic_registry.files() == before


@pytest_twisted.ensureDeferred
async def test_pull_only_user_cannot_push_and_nothing_is_written(basic_registry):
    await push_image(basic_registry, "team/app", "v1", basic(*ALICE))
    response = await request(basic_registry, "GET", "team/app/manifests/v1", basic(*BOB))
    assert response.code == 200
    await response.content()
    before = basic_registry.files()
    data = os.urandom(200_000)
    attempts = [
        ("POST", "team/app/blobs/uploads/", None),
        ("POST", f"team/app/blobs/uploads/?digest={sha256(data)}", data),  # monolithic, with body
        ("PUT", "team/app/manifests/v2", b"{}"),
        ("DELETE", "team/app/manifests/v1", None),
    ]
    for method, path, body in attempts:
        response = await request(basic_registry, method, path, basic(*BOB), body)
        assert response.code == 403, (method, path)
        assert header(response, "WWW-Authenticate") is None
        codes = await error_of(response)
        assert codes[0][0] == "DENIED"
    # and anonymous callers are asked to authenticate, also with a body
    response = await request(
        basic_registry, "POST", f"team/app/blobs/uploads/?digest={sha256(data)}", None, data
    )
    assert response.code == 401
    await response.content()
    assert basic_registry.files() == before
    # the upload id of someone else's upload is no way in either
    response = await request(basic_registry, "POST", "team/app/blobs/uploads/", basic(*ALICE))
    location = header(response, "Location")
    await response.content()
    for method in ("GET", "PATCH", "PUT", "DELETE"):
        response = await request(
            basic_registry, method, location + "?digest=" + sha256(b""), basic(*BOB), b""
        )
        assert response.code == 403, method
        await response.content()


@pytest_twisted.ensureDeferred
async def test_anonymous_pull_where_rules_allow_it(basic_registry):
    await push_image(basic_registry, "public/tools", "v1", basic(*ALICE))
    await push_image(basic_registry, "team/app", "v1", basic(*ALICE))
    response = await request(
        basic_registry,
        "GET",
        "public/tools/manifests/v1",
        {"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert response.code == 200
    await response.content()
    response = await request(basic_registry, "GET", "public/tools/tags/list")
    assert json.loads(await response.content()) == {"name": "public/tools", "tags": ["v1"]}
    response = await request(basic_registry, "HEAD", "team/app/manifests/v1")
    assert response.code == 401
    assert header(response, "WWW-Authenticate") == 'Basic realm="registryd test"'


@pytest_twisted.ensureDeferred
async def test_catalog_shows_what_the_caller_may_read(basic_registry):
    for name in ("public/tools", "team/app", "secret/db", "bob/own"):
        await push_image(basic_registry, name, "v1", basic(*ALICE))

    async def catalog(headers):
        response = await request(basic_registry, "GET", "_catalog", headers)
        assert response.code == 200
        return json.loads(await response.content())["repositories"]

    assert await catalog(basic(*ALICE)) == ["bob/own", "public/tools", "secret/db", "team/app"]
    assert await catalog(basic(*BOB)) == ["bob/own", "public/tools", "team/app"]
    assert await catalog({}) == ["public/tools"]


@pytest_twisted.ensureDeferred
async def test_mount_needs_pull_on_the_source_else_falls_back(basic_registry):
    secret = await push_image(basic_registry, "secret/db", "v1", basic(*ALICE))
    shared = await push_image(basic_registry, "team/app", "v1", basic(*ALICE))
    for query in (f"mount={secret}&from=secret/db", f"mount={secret}"):
        response = await request(
            basic_registry, "POST", f"bob/copy/blobs/uploads/?{query}", basic(*BOB)
        )
        assert response.code == 202, query  # a normal upload: nothing about secret/db leaks
        assert header(response, "Docker-Upload-UUID")
        await response.content()
    response = await request(basic_registry, "HEAD", f"bob/copy/blobs/{secret}", basic(*BOB))
    assert response.code == 404
    for query in (f"mount={shared}&from=team/app", f"mount={shared}"):
        response = await request(
            basic_registry, "POST", f"bob/copy{len(query)}/blobs/uploads/?{query}", basic(*BOB)
        )
        assert response.code == 201, query
        assert header(response, "Docker-Content-Digest") == shared
        await response.content()


@pytest_twisted.ensureDeferred
async def test_htpasswd_changes_apply_without_restart(basic_registry, tmp_path):
    path = tmp_path / "htpasswd"
    response = await request(basic_registry, "GET", "", basic(*BOB))
    assert response.code == 200
    path.write_text(HTPASSWD.splitlines()[0] + "\n")  # bob removed
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    basic_registry.app.authorizer.checker.htfile._next_check = 0  # no need to wait a second
    response = await request(basic_registry, "GET", "", basic(*BOB))
    assert response.code == 401  # although bob's success was cached
    await response.content()


# --- the built-in token server ----------------------------------------------------


def token_server_auth(tmp_path):
    """An auth section making registryd the token server of the HTPASSWD
    users under ACCESS (files written in ``tmp_path``)."""
    path = tmp_path / "htpasswd"
    path.write_text(HTPASSWD)
    key_path = certs.write(tmp_path, "token.key", certs.key_pem(certs.new_key()))
    return {
        "htpasswd": {"realm": "registryd test", "path": str(path)},
        "token": {"service": "registry.test", "issuer": "registryd-test"},
        "tokenserver": {"key": key_path},
        "access": ACCESS,
    }


@pytest_twisted.async_yield_fixture
async def token_registry(tmp_path):
    running = await serve(tmp_path, auth=token_server_auth(tmp_path))
    yield running
    await stop(running)


async def get_token(running, scopes, headers=None, **params):
    from urllib.parse import urlencode

    query = urlencode(
        [("service", "registry.test")] + [("scope", s) for s in scopes] + sorted(params.items())
    )
    response = await request(running, "GET", f"{running.url}/auth/token?{query}", headers)
    return response


async def token_for(running, scopes, credentials=None):
    response = await get_token(running, scopes, basic(*credentials) if credentials else None)
    assert response.code == 200, await response.content()
    return json.loads(await response.content())["token"]


@pytest_twisted.ensureDeferred
async def test_token_server_login_is_braked_the_same_way(token_registry):
    async def login(credentials):
        return await get_token(token_registry, [], basic(*credentials))

    await guess_while_alice_logs_in(token_registry, login)


@pytest_twisted.ensureDeferred
async def test_bearer_challenge_names_the_needed_scope(token_registry):
    realm = f"{token_registry.url}/auth/token"
    cases = [
        ("GET", "", f'Bearer realm="{realm}",service="registry.test"'),
        (
            "POST",
            "team/app/blobs/uploads/",
            f'Bearer realm="{realm}",service="registry.test",scope="repository:team/app:pull,push"',
        ),
        (
            "GET",
            "team/app/manifests/v1",
            f'Bearer realm="{realm}",service="registry.test",scope="repository:team/app:pull"',
        ),
        (
            "DELETE",
            f"team/app/blobs/{sha256(b'x')}",
            f'Bearer realm="{realm}",service="registry.test",scope="repository:team/app:delete"',
        ),
        (
            "GET",
            "_catalog",
            f'Bearer realm="{realm}",service="registry.test",scope="registry:catalog:*"',
        ),
    ]
    for method, path, expected in cases:
        response = await request(token_registry, method, path)
        assert response.code == 401
        assert header(response, "WWW-Authenticate") == expected
        assert (await error_of(response))[0][0] == "UNAUTHORIZED"


@pytest_twisted.ensureDeferred
async def test_token_flow_push_and_pull(token_registry):
    token = await token_for(token_registry, ["repository:alice/app:pull,push"], ALICE)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == "alice" and claims["aud"] == "registry.test"
    assert claims["access"] == [
        {"type": "repository", "name": "alice/app", "actions": ["pull", "push"]}
    ]
    await push_image(token_registry, "alice/app", "v1", bearer(token))
    login = await token_for(token_registry, [], ALICE)
    response = await request(token_registry, "GET", "", bearer(login))
    assert response.code == 200
    await response.content()


@pytest_twisted.ensureDeferred
async def test_token_for_a_pull_only_user_lacks_push(token_registry):
    admin = await token_for(token_registry, ["repository:team/app:pull,push"], ALICE)
    await push_image(token_registry, "team/app", "v1", bearer(admin))
    token = await token_for(token_registry, ["repository:team/app:pull,push"], BOB)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["access"] == [{"type": "repository", "name": "team/app", "actions": ["pull"]}]
    before = token_registry.files()
    response = await request(
        token_registry, "POST", "team/app/blobs/uploads/", bearer(token), b"x" * 10
    )
    assert response.code == 403
    assert header(response, "WWW-Authenticate") == (
        f'Bearer realm="{token_registry.url}/auth/token",service="registry.test",'
        'scope="repository:team/app:pull,push",error="insufficient_scope"'
    )
    assert (await error_of(response))[0][0] == "DENIED"
    assert token_registry.files() == before
    response = await request(token_registry, "GET", "team/app/tags/list", bearer(token))
    assert json.loads(await response.content())["tags"] == ["v1"]


@pytest_twisted.ensureDeferred
async def test_anonymous_tokens(token_registry):
    admin = await token_for(token_registry, ["repository:public/x:pull,push"], ALICE)
    await push_image(token_registry, "public/x", "v1", bearer(admin))
    token = await token_for(
        token_registry, ["repository:public/x:pull,push", "repository:team/a:pull"]
    )
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == ""
    assert claims["access"] == [{"type": "repository", "name": "public/x", "actions": ["pull"]}]
    response = await request(token_registry, "GET", "public/x/tags/list", bearer(token))
    assert response.code == 200
    response = await request(token_registry, "GET", "team/a/tags/list", bearer(token))
    assert response.code == 403
    await response.content()
    response = await get_token(token_registry, [], offline_token="true")
    assert "refresh_token" not in json.loads(await response.content())  # nobody to refresh for


@pytest_twisted.ensureDeferred
async def test_token_endpoint_refusals(token_registry):
    response = await get_token(token_registry, [], basic("alice", "wrong"))
    assert response.code == 401
    assert header(response, "WWW-Authenticate") == 'Basic realm="registryd test"'
    assert await error_of(response) == [("UNAUTHORIZED", "invalid username or password")]
    response = await get_token(token_registry, [], {"Authorization": "Basic %%%"})
    assert response.code == 401
    await response.content()
    response = await request(
        token_registry, "GET", f"{token_registry.url}/auth/token?service=other"
    )
    assert response.code == 400
    assert "other" in (await error_of(response))[0][1]
    response = await get_token(token_registry, ["repository:a"])
    assert response.code == 400
    await response.content()
    # Distribution's autoredirectpath spelling works too
    response = await request(
        token_registry, "GET", f"{token_registry.url}/auth/token/?service=registry.test"
    )
    assert response.code == 200 and json.loads(await response.content())["token"]


@pytest_twisted.ensureDeferred
async def test_no_token_server_without_tokenserver(basic_registry):
    response = await request(basic_registry, "GET", f"{basic_registry.url}/auth/token?service=x")
    assert response.code == 404
    assert (await error_of(response))[0][0] == "UNSUPPORTED"


async def post_form(running, **form):
    from urllib.parse import urlencode

    return await request(
        running,
        "POST",
        f"{running.url}/auth/token",
        {"Content-Type": "application/x-www-form-urlencoded"},
        urlencode(form).encode(),
    )


@pytest_twisted.ensureDeferred
async def test_oauth2_post_and_refresh_tokens(token_registry):
    response = await post_form(
        token_registry,
        grant_type="password",
        username="alice",
        password="wonderland",
        service="registry.test",
        client_id="test",
        access_type="offline",
        scope="repository:alice/x:pull,push",
    )
    assert response.code == 200, await response.content()
    body = json.loads(await response.content())
    assert body["scope"] == "repository:alice/x:pull,push"
    assert body["expires_in"] == 300 and body["access_token"]
    refresh = body["refresh_token"]
    response = await post_form(
        token_registry,
        grant_type="refresh_token",
        refresh_token=refresh,
        service="registry.test",
        client_id="test",
        scope="repository:alice/y:push repository:team/z:push",
    )
    body = json.loads(await response.content())
    assert response.code == 200
    assert body["scope"] == "repository:alice/y:push repository:team/z:push"  # alice is an admin
    assert body["refresh_token"] == refresh
    await push_image(
        token_registry,
        "alice/y",
        "v1",
        bearer(await token_for(token_registry, ["repository:alice/y:pull,push"], ALICE)),
    )
    # the refresh token is not an access token, and a forged one is refused
    response = await request(token_registry, "GET", "", bearer(refresh))
    assert response.code == 401
    assert 'error="invalid_token"' in header(response, "WWW-Authenticate")
    await response.content()
    for form, status in [
        (dict(grant_type="refresh_token", refresh_token=refresh[:-4] + "AAAA"), 401),
        (dict(grant_type="password", username="alice", password="nope"), 401),
        (dict(grant_type="password", username="alice"), 400),
        (dict(grant_type="client_credentials"), 400),
    ]:
        response = await post_form(token_registry, service="registry.test", client_id="t", **form)
        assert response.code == status, form
        await response.content()


class ForeignSigner:
    def __init__(self, key=None, issuer="registryd-test", service="registry.test"):
        self.key = key or certs.new_key()
        self.issuer, self.service = issuer, service

    def token(self, actions=("pull", "push"), name="alice/app", **claims):
        now = int(time.time())
        body = {
            "iss": self.issuer,
            "sub": "alice",
            "aud": self.service,
            "exp": now + 300,
            "nbf": now,
            "iat": now,
            "access": [{"type": "repository", "name": name, "actions": list(actions)}],
        }
        body.update(claims)
        kid = keys.jwk_thumbprint(keys.public_jwk(self.key.public_key()))
        return jwt.encode(body, self.key, algorithm="ES256", headers={"kid": kid})


@pytest_twisted.ensureDeferred
async def test_bad_tokens_are_refused_and_write_nothing(token_registry):
    issuer_key = token_registry.app.token_issuer.private_key
    own = ForeignSigner(issuer_key)
    cases = [
        (own.token(exp=int(time.time()) - 600), 401, "token has expired"),
        (own.token(aud="another-registry"), 401, "token is not for service 'registry.test' (aud)"),
        (own.token(iss="someone"), 401, "token is from an untrusted issuer (iss)"),
        (ForeignSigner().token(), 401, "token signed by an untrusted key"),
        (
            own.token(actions=["pull"]),
            403,
            "the token does not grant the access this request needs",
        ),
        (
            own.token(name="alice/other"),
            403,
            "the token does not grant the access this request needs",
        ),
        ("not a token", 401, "Bearer token has characters a token cannot have"),
        ("a.b.c", 401, "malformed token"),
    ]
    before = token_registry.files()
    for token, status, message in cases:
        response = await request(
            token_registry, "POST", "alice/app/blobs/uploads/", bearer(token), b"data" * 100
        )
        assert response.code == status, message
        challenge = header(response, "WWW-Authenticate")
        assert challenge.startswith(f'Bearer realm="{token_registry.url}/auth/token"')
        assert challenge.endswith(
            'error="invalid_token"' if status == 401 else 'error="insufficient_scope"'
        )
        code, text = (await error_of(response))[0]
        assert code == ("UNAUTHORIZED" if status == 401 else "DENIED")
        assert text.startswith(message), text
    assert token_registry.files() == before


# --- an external token server (JWKS) -------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_external_token_server_with_jwks_and_rootcertbundle(tmp_path):
    jwks_signer, bundle_signer = (
        ForeignSigner(issuer="auth.example"),
        ForeignSigner(issuer="auth.example"),
    )
    jwk = dict(keys.public_jwk(jwks_signer.key.public_key()), kid="key-1")
    jwks = certs.write(tmp_path, "jwks.json", json.dumps({"keys": [jwk]}).encode())
    bundle = certs.write(
        tmp_path, "bundle.pem", certs.cert_pem(certs.self_signed(bundle_signer.key))
    )
    running = await serve(
        tmp_path,
        auth={
            "token": {
                "realm": "https://auth.example/token",
                "service": "registry.test",
                "issuer": "auth.example",
                "jwks": jwks,
                "rootcertbundle": bundle,
            }
        },
    )
    try:
        response = await request(running, "GET", "alice/app/tags/list")
        assert header(response, "WWW-Authenticate") == (
            'Bearer realm="https://auth.example/token",service="registry.test",'
            'scope="repository:alice/app:pull"'
        )
        await response.content()
        for token in (jwks_signer.token(), bundle_signer.token()):
            response = await request(running, "GET", "alice/app/tags/list", bearer(token))
            assert response.code == 404  # authorized; the repository just does not exist
            assert (await error_of(response))[0][0] == "NAME_UNKNOWN"
        stranger = ForeignSigner(issuer="auth.example")
        response = await request(running, "GET", "alice/app/tags/list", bearer(stranger.token()))
        assert response.code == 401
        await response.content()
        response = await request(running, "GET", "_catalog", bearer(jwks_signer.token()))
        assert response.code == 403
        await response.content()
        catalog = jwks_signer.token(
            access=[{"type": "registry", "name": "catalog", "actions": ["*"]}]
        )
        response = await request(running, "GET", "_catalog", bearer(catalog))
        assert response.code == 200
        assert json.loads(await response.content()) == {"repositories": []}
    finally:
        await stop(running)


# --- TLS --------------------------------------------------------------------------------


def https_get(port, path="/v2/", context=None, headers=None):
    import http.client

    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def client_context(ca, client=None, maximum=None):
    context = ssl.create_default_context(cadata=ca.pem.decode())
    if client is not None:
        context.load_cert_chain(*client)
    if maximum is not None:
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        context.maximum_version = maximum
    return context


async def store_blob(running, name, data):
    """Put a blob straight into the registry model (no HTTP client needed)."""
    from registryd.digest import Digest

    class Body:
        length, finished, received = len(data), False, 0
        chunks = [data]

        async def read(self, size):
            return self.chunks.pop() if self.chunks else b""

    async with await running.app.registry.repository(name).uploads.start() as upload:
        await upload.append(Body())
        await upload.complete(Digest.parse(sha256(data)), None)
    return sha256(data)


@pytest_twisted.ensureDeferred
async def test_tls_listener_with_http_tls(tmp_path):
    from twisted.internet.threads import deferToThread

    ca = certs.CA()
    certificate, key = certs.server_files(tmp_path, ca)
    running = await serve(tmp_path, tls={"certificate": certificate, "key": key})
    port = running.port.getHost().port
    try:
        status, body = await deferToThread(https_get, port, context=client_context(ca))
        assert (status, body) == (200, b"{}")
        # A refusal by the HTTP channel comes out through TLS too.
        status, body = await deferToThread(
            https_get, port, context=client_context(ca), headers={"X-Big": "b" * 20000}
        )
        assert status == 431 and json.loads(body)["errors"][0]["code"] == "UNSUPPORTED"
        # A blob comes out through TLS too (not sendfile'd past it).
        data = os.urandom(3 * 1024 * 1024 + 5)
        digest = await store_blob(running, "a/b", data)
        status, body = await deferToThread(
            https_get, port, f"/v2/a/b/blobs/{digest}", client_context(ca)
        )
        assert status == 200 and body == data
        from OpenSSL import SSL

        from registryd.config import TLSConfig

        # Only TLS 1.2 and later are offered.
        from registryd.http.tls import http_tls_options

        context = http_tls_options(TLSConfig(certificate=certificate, key=key)).getContext()
        options = context.set_options(0)  # returns the options in force
        assert options & SSL.OP_NO_TLSv1 and options & SSL.OP_NO_TLSv1_1
        old = client_context(ca, maximum=ssl.TLSVersion.TLSv1_1)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await deferToThread(https_get, port, context=old)
        with pytest.raises(ssl.SSLCertVerificationError):  # another CA's client does not trust it
            await deferToThread(https_get, port, context=client_context(certs.CA("other")))
    finally:
        await stop(running)


@pytest_twisted.ensureDeferred
async def test_tls_cipher_suites(tmp_path):
    """http.tls.ciphersuites (Go's names): only the TLS 1.2 suites listed
    are accepted; TLS 1.3 is unaffected, as in Go."""
    from twisted.internet.threads import deferToThread

    ca = certs.CA()
    certificate, key = certs.server_files(tmp_path, ca)  # an ECDSA certificate
    running = await serve(
        tmp_path,
        tls={
            "certificate": certificate,
            "key": key,
            "ciphersuites": ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256"],
        },
    )
    port = running.port.getHost().port

    def tls12(cipher):
        context = client_context(ca, maximum=ssl.TLSVersion.TLSv1_2)
        context.set_ciphers(cipher)
        return context

    try:
        status, _ = await deferToThread(
            https_get, port, context=tls12("ECDHE-ECDSA-AES128-GCM-SHA256")
        )
        assert status == 200
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await deferToThread(https_get, port, context=tls12("ECDHE-ECDSA-AES256-GCM-SHA384"))
        status, _ = await deferToThread(https_get, port, context=client_context(ca))  # TLS 1.3
        assert status == 200
    finally:
        await stop(running)


def test_unavailable_cipher_suites_are_a_configuration_error(tmp_path):
    from registryd.config import ConfigError, TLSConfig
    from registryd.http.tls import http_tls_options

    certificate, key = certs.server_files(tmp_path, certs.CA())
    with pytest.raises(ConfigError) as info:
        http_tls_options(TLSConfig(certificate, key, ciphersuites=["TLS_RSA_WITH_RC4_128_SHA"]))
    assert str(info.value).startswith("http.tls.ciphersuites: none of TLS_RSA_WITH_RC4_128_SHA")
    # Only TLS 1.3 suites named: the TLS 1.2 default stays.
    assert http_tls_options(TLSConfig(certificate, key, ciphersuites=["TLS_AES_128_GCM_SHA256"]))


@pytest_twisted.ensureDeferred
async def test_tls_client_certificates(tmp_path):
    from twisted.internet.threads import deferToThread

    ca, client_ca, stranger_ca = certs.CA(), certs.CA("clients"), certs.CA("strangers")
    certificate, key = certs.server_files(tmp_path, ca)
    clientcas = certs.write(tmp_path, "clients.pem", client_ca.pem)

    def client_files(issuer, name):
        client_key, client_cert = issuer.issue(name, client=True)
        return (
            certs.write(tmp_path, f"{name}.crt", certs.cert_pem(client_cert)),
            certs.write(tmp_path, f"{name}.key", certs.key_pem(client_key)),
        )

    good, strange = client_files(client_ca, "good"), client_files(stranger_ca, "strange")
    running = await serve(
        tmp_path, tls={"certificate": certificate, "key": key, "clientcas": [clientcas]}
    )
    port = running.port.getHost().port
    try:
        status, _ = await deferToThread(https_get, port, context=client_context(ca, good))
        assert status == 200
        for identity in (None, strange):
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await deferToThread(https_get, port, context=client_context(ca, identity))
    finally:
        await stop(running)
    running = await serve(
        tmp_path,
        tls={
            "certificate": certificate,
            "key": key,
            "clientcas": [clientcas],
            "clientauth": "verify-client-cert-if-given",
        },
    )
    port = running.port.getHost().port
    try:
        for identity in (None, good):
            status, _ = await deferToThread(https_get, port, context=client_context(ca, identity))
            assert status == 200
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await deferToThread(https_get, port, context=client_context(ca, strange))
    finally:
        await stop(running)


@pytest_twisted.ensureDeferred
async def test_ssl_endpoint_strings(tmp_path):
    from twisted.internet.threads import deferToThread

    from registryd.config import ConfigError
    from registryd.http.tls import listener

    ca = certs.CA()
    certificate, key = certs.server_files(tmp_path, ca)
    running = await serve(
        tmp_path, listen=f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={certificate}"
    )
    try:
        status, body = await deferToThread(
            https_get, running.port.getHost().port, context=client_context(ca)
        )
        assert (status, body) == (200, b"{}")
    finally:
        await stop(running)
    plain, _ = listener(f"ssl:5443:privateKey={key}:certKey={certificate}:interface=\\:\\:1", None)
    assert plain == "tcp:5443:interface=\\:\\:1"
    with pytest.raises(ConfigError, match="sslmethod is not supported"):
        listener(f"ssl:5443:privateKey={key}:sslmethod=TLSv1_METHOD", None)
    with pytest.raises(ConfigError, match="cannot read"):
        listener("ssl:5443:privateKey=/nonexistent.pem", None)
    other_key = certs.write(tmp_path, "other.key", certs.key_pem(certs.new_key()))
    with pytest.raises(ConfigError, match="cannot be used with"):
        listener(f"ssl:5443:privateKey={other_key}:certKey={certificate}", None)


# --- hostile requests: never a 500 -----------------------------------------------

#: Deterministic (the same examples on every run, on a busy machine too)
#: and never timed: each example is a request over the loopback.
EXAMPLES = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

#: Any JSON value, or a long string: what a client may put in a JOSE
#: header or claim (small enough that the request's head stays under
#: the server's 16 KiB limit, so the token reaches the verifier).
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.integers(0, 2**40).map(str),  # a time as a string: "exp": "99999999999"
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
) | st.just("A" * 1500)
HEADER_FIELDS = ["alg", "kid", "crit", "typ", "x5c", "jwk", "b64", "cty", "zip"]
CLAIMS = ["iss", "aud", "exp", "nbf", "iat", "sub", "jti", "access", "token_use", "pwd"]
TOKEN68 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~+/="


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def forge(header, payload, key=None):
    """A compact JWS of any JSON ``header`` and ``payload``, ES256-signed
    with ``key`` (else a junk signature): PyJWT's encoder would refuse
    the hostile headers this is for."""
    from jwt.algorithms import ECAlgorithm

    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    signature = (
        ECAlgorithm(ECAlgorithm.SHA256).sign(signing_input.encode(), key)
        if key is not None
        else b"junk"
    )
    return f"{signing_input}.{b64url(signature)}"


@st.composite
def hostile_tokens(draw, running):
    """Tokens a client could send: JOSE headers and claims of every JSON
    type, signed by the token server's own key or not, some with a
    segment that is not base64url JSON at all."""
    issuer = running.app.token_issuer
    header = {"alg": "ES256", "kid": issuer.kid}
    for field in draw(st.lists(st.sampled_from(HEADER_FIELDS), max_size=3, unique=True)):
        header[field] = draw(
            JSON_VALUES | st.sampled_from(["none", "HS256", "RS256", "EdDSA", issuer.kid])
        )
    now = int(time.time())
    claims = {
        "iss": issuer.issuer,
        "aud": issuer.service,
        "sub": "alice",
        "exp": now + 300,
        "access": [],
        "token_use": draw(st.sampled_from(["refresh", None])),
    }
    for claim in draw(st.lists(st.sampled_from(CLAIMS), max_size=3, unique=True)):
        claims[claim] = draw(JSON_VALUES)
    payload = claims if draw(st.integers(0, 4)) else draw(JSON_VALUES)
    segments = forge(header, payload, issuer.private_key if draw(st.booleans()) else None).split(
        "."
    )
    if not draw(st.integers(0, 5)):
        segments[draw(st.integers(0, 2))] = draw(st.text(alphabet=TOKEN68, max_size=40))
    return ".".join(segments)


async def answer(running, method, url, headers, data=None):
    """``(status, WWW-Authenticate, Content-Type, JSON body or None)``."""
    response = await running.client.request(method, url, headers=headers, data=data)
    body = await response.content()
    return (
        response.code,
        header(response, "WWW-Authenticate"),
        header(response, "Content-Type"),
        json.loads(body) if body else None,
    )


def error_codes(body):
    return [error["code"] for error in body["errors"]]


def signed_with_string_exp(running, **claims):
    """A token the token server's own key signed whose ``exp`` is a
    string of digits: PyJWT checks ``int(exp)``, so it passes there."""
    issuer = running.app.token_issuer
    payload = {
        "iss": issuer.issuer,
        "aud": issuer.service,
        "sub": "alice",
        "exp": str(int(time.time()) + 3600),
        "access": [],
        **claims,
    }
    return forge({"alg": "ES256", "kid": issuer.kid}, payload, issuer.private_key)


@pytest_twisted.ensureDeferred
async def test_hostile_bearer_tokens_are_invalid_token_never_500(token_registry, logged_failures):
    """A bearer token with any JSON in its JOSE header (kid, crit, alg... of
    the wrong type) or claims, signed or not, is refused 401 invalid_token
    (403 if it verifies but grants nothing): a JSON error, no traceback."""
    url = token_registry.v2("alice/app/tags/list")

    @EXAMPLES
    @given(hostile_tokens(token_registry))
    @example(forge({"alg": ["ES256"], "kid": "x"}, {}))
    @example(forge({"alg": "ES256", "kid": ["x"]}, {}))
    @example(forge({"alg": "ES256", "kid": None, "crit": "exp"}, {}))
    @example(forge({"alg": "ES256", "jwk": {"kty": ["EC"]}}, {}))
    @example(signed_with_string_exp(token_registry))
    def check(token):
        status, challenge, content_type, body = in_reactor(
            answer, token_registry, "GET", url, bearer(token)
        )
        assert status in (401, 403), (status, body)
        assert content_type == "application/json"
        if status == 401:
            assert challenge.endswith('error="invalid_token"'), challenge
            assert error_codes(body) == ["UNAUTHORIZED"]
        else:
            assert error_codes(body) == ["DENIED"]
        assert logged_failures == []

    await run_examples(check)


@pytest_twisted.ensureDeferred
async def test_hostile_refresh_tokens_are_refused_never_500(token_registry, logged_failures):
    """The token server's refresh grant refuses the same hostile tokens
    with a JSON 401, never a 500 or a traceback."""
    from urllib.parse import urlencode

    url = f"{token_registry.url}/auth/token"

    @EXAMPLES
    @given(hostile_tokens(token_registry))
    @example(forge({"alg": {}, "kid": "x"}, {}))
    @example(forge({"alg": "ES256", "kid": 7}, {}))
    @example(forge({"alg": "ES256", "crit": [None]}, {}))
    @example(signed_with_string_exp(token_registry, token_use="refresh"))
    def check(token):
        form = urlencode(
            {
                "grant_type": "refresh_token",
                "refresh_token": token,
                "service": "registry.test",
                "client_id": "t",
            }
        ).encode()
        status, _, content_type, body = in_reactor(
            answer,
            token_registry,
            "POST",
            url,
            {"Content-Type": "application/x-www-form-urlencoded"},
            form,
        )
        assert (status, content_type) == (401, "application/json"), body
        assert error_codes(body) == ["UNAUTHORIZED"]
        assert logged_failures == []

    await run_examples(check)


SEGMENTS = [
    "v2",
    "auth",
    "token",
    "blobs",
    "uploads",
    "manifests",
    "tags",
    "list",
    "_catalog",
    "referrers",
    "alice",
    "app",
    "App",
    "latest",
    "sha256:" + "a" * 64,
    "",
    ".",
    "..",
    "%2f",
    "%2F",
    "%5c",
    "%00",
    "%ff",
    "%fe%ff",
    "%c3%28",
    "%e2%82",
    "%zz",
    "%",
    "%4",
    "%41",
    "a b",
    "\x00",
    "\x01",
    "\x7f",
    "\xe9",
    ";",
    "~",
    "*",
    "%20",
]


@st.composite
def hostile_paths(draw):
    """Request targets near and far from the API's: double and missing
    slashes, ``..``, escapes of separators and of invalid UTF-8, invalid
    escapes, control bytes, raw non-ASCII, very long ones."""
    start = draw(
        st.sampled_from(["/v2/", "/v2/", "/v2/alice/", "/v2//", "//v2/", "/v2", "/auth/", "/"])
    )
    segments = draw(st.lists(st.sampled_from(SEGMENTS), max_size=6))
    path = start + "/".join(segments) + draw(st.sampled_from(["", "/", "//"]))
    if not draw(st.integers(0, 5)):
        path += "/" + "a" * draw(st.integers(1000, 20000))
    path += draw(
        st.sampled_from(["", "?", "?n=%ff", "?scope=repository:alice/../x:pull", "?last=%"])
    )
    return path.encode("latin-1")


ANSWERS = {400, 401, 404, 405, 414, 431}
#: Host headers werkzeug's IDNA encoding or klein's UTF-8 decoding refuse,
#: and some they accept (None: the server's address).
HOSTS = [None, None, None, ".", "a..b", "x" * 64, "\xff", "[::1", "", "a b", "h:1:2", "xn--zz"]


@pytest_twisted.ensureDeferred
async def test_hostile_paths_get_json_errors_never_500(token_registry, logged_failures):
    """Whatever the request target, an unauthenticated client gets an
    answer (never a silent close), a JSON error of 400, 401, 404, 405, 414
    or 431 (never a 5xx, never a redirect; a token from /auth/token is
    the one 200), and nothing is logged as a failure; so does any Host."""
    port = token_registry.port.getHost().port

    @EXAMPLES
    @given(
        st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
        hostile_paths(),
        st.sampled_from(HOSTS),
    )
    @example("GET", b"/v2//", None)
    @example("GET", b"//v2/", None)
    @example("POST", b"/v2/alice/app/blobs/uploads", None)
    @example("GET", b"/auth//token", None)
    @example("GET", b"/v2/alice/app/tags/list/", None)
    @example("GET", b"/v2/%ff/tags/list", None)
    @example("GET", b"/v2/alice/app/manifests/%c3%28", None)
    @example("GET", b"/v2/" + b"a" * 20000, None)
    @example("GET", b"/v2/", "a..b")
    def check(method, path, host):
        request_bytes = raw_request_bytes(port, method, path, host=host)
        status, headers, body = exchange(port, request_bytes, method != "HEAD")
        assert headers.get("content-type") == "application/json", (status, headers, body)
        if status == 200:
            assert method in ("GET", "POST") and "token" in json.loads(body), body
        else:
            assert status in ANSWERS, (status, body)
            if method != "HEAD":
                assert json.loads(body)["errors"]
        assert logged_failures == []

    await run_examples(check)


@pytest_twisted.ensureDeferred
async def test_token_server_refuses_scopes_naming_invalid_repositories(token_registry):
    """A repository scope must name a repository the API would accept, or
    the request is refused (400), in both forms, and nothing is granted:
    names off the scope grammar (``alice/../secret/app`` matches alice's
    ``${user}/**`` rule as a string), and names the grammar allows but the
    API does not (a registry host prefix, uppercase in it, over 255
    characters: ``alice/aaa...`` matches ``${user}/**`` too)."""
    off_grammar = ["alice/../secret/app", "alice//app", "alice/", "/alice/app", "alice/./app"]
    api_invalid = ["Alice/app", "localhost:5000/alice/app", "alice/" + "a" * 300]
    for name in off_grammar + api_invalid:
        scope = f"repository:{name}:pull,push"
        response = await get_token(token_registry, [scope], basic(*ALICE))
        assert response.code == 400, name
        [(code, message)] = await error_of(response)
        assert message.startswith("scope 'repository:"), message
        assert code == ("NAME_INVALID" if name in api_invalid else "UNSUPPORTED"), (name, code)
        response = await post_form(
            token_registry,
            grant_type="password",
            username="alice",
            password="wonderland",
            service="registry.test",
            scope=scope,
        )
        assert response.code == 400, name
        await response.content()
    token = await token_for(token_registry, ["repository:alice/secret-app:pull"], ALICE)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["access"] == [
        {"type": "repository", "name": "alice/secret-app", "actions": ["pull"]}
    ]
