"""The web interface over a real socket: what each user sees, the guards
on every state change (POST only, Origin, CSRF token, SameSite session),
the security headers, and hostile input answered with a page, never a
500.  (The browser's view is in tests/e2e/test_ui_browser.py.)
"""

import json
import os
import re
from http.cookies import SimpleCookie
from urllib.parse import quote, urlencode

import pytest_twisted
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from registryd.ui.app import CONTENT_SECURITY_POLICY
from tests.integration.test_auth_api import (
    ACCESS,
    ALICE,
    BOB,
    EXAMPLES,
    HTPASSWD,
    basic,
    push_image,
    token_server_auth,
)
from tests.support import exchange, raw_request_bytes, run_examples


async def serve_ui(tmp_path, auth=None, lifecycle=None):
    """registryd composed from a configuration (deletes on, ``auth`` as
    the auth section, ``lifecycle`` as the lifecycle section), as twistd
    runs it, on a free loopback port."""
    from tests.service_support import start_service

    document = {
        "version": 0.1,
        "storage": {
            "filesystem": {"rootdirectory": str(tmp_path / "registry-data")},
            "delete": {"enabled": True},
        },
    }
    if auth is not None:
        document["auth"] = auth
    if lifecycle is not None:
        document["lifecycle"] = lifecycle
    text = (
        yaml.safe_dump(document).replace("{", "{{").replace("}", "}}")
    )  # start_service formats it
    return await start_service(tmp_path, text + 'http:\n  addr: "127.0.0.1:{port}"\n')


def port_of(running):
    return int(running.url.rsplit(":", 1)[1])


@pytest_twisted.async_yield_fixture
async def open_ui(tmp_path):
    running = await serve_ui(tmp_path)
    yield running
    await running.stop()


@pytest_twisted.async_yield_fixture
async def basic_ui(tmp_path):
    path = tmp_path / "htpasswd"
    path.write_text(HTPASSWD)
    running = await serve_ui(
        tmp_path, {"htpasswd": {"realm": "registryd test", "path": str(path)}, "access": ACCESS}
    )
    alice = basic(*ALICE)
    for name in ("public/app", "team/app", "alice/private"):
        await push_image(running, name, "1.0", alice)
    yield running
    await running.stop()


#: team/**'s v* tags immutable, and a quota on everything (so usage is shown).
LIFECYCLE = {
    "immutable": [{"repository": "team/**", "tags": ["v*"]}],
    "quotas": [{"repository": "**", "bytes": "1GiB"}],
}


@pytest_twisted.async_yield_fixture
async def lifecycle_ui(tmp_path):
    path = tmp_path / "htpasswd"
    path.write_text(HTPASSWD)
    running = await serve_ui(
        tmp_path,
        {"htpasswd": {"realm": "registryd test", "path": str(path)}, "access": ACCESS},
        LIFECYCLE,
    )
    alice = basic(*ALICE)
    for name, tag in (
        ("public/app", "1.0"),
        ("team/app", "1.0"),
        ("team/app", "v1"),
        ("alice/private", "1.0"),
    ):
        await push_image(running, name, tag, alice)
    yield running
    await running.stop()


class Visitor:
    """A browser's part of the conversation: it keeps the session cookie
    and sends its page's Origin with a form."""

    def __init__(self, running, origin=None):
        self.running = running
        self.cookie = None
        self.origin = running.url if origin is None else origin
        self.set_cookies = []

    async def get(self, path, headers=None):
        return await self.request("GET", path, headers)

    async def request(self, method, path, headers=None, data=None):
        headers = dict(headers or {})
        if self.cookie is not None:
            headers["Cookie"] = self.cookie
        response = await self.running.client.request(
            method, self.running.url + path, headers=headers, data=data, allow_redirects=False
        )
        body = await response.content()
        for value in response.headers.getRawHeaders("set-cookie", []):
            self.set_cookies.append(value)
            morsel = SimpleCookie(value)["registryd_session"]
            self.cookie = f"registryd_session={morsel.value}"
        return response.code, response.headers, body.decode("utf-8")

    async def csrf(self, path="/ui/"):
        _, _, page = await self.get(path)
        return re.search(r'name="csrf" value="([^"]+)"', page).group(1)

    async def post(self, path, fields, origin=True):
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if origin:
            headers["Origin"] = self.origin
        return await self.request("POST", path, headers, urlencode(fields).encode())

    async def sign_in(self, user, password):
        csrf = await self.csrf("/ui/login")
        status, headers, _ = await self.post(
            "/ui/login", {"csrf": csrf, "username": user, "password": password}
        )
        assert status == 303, status
        return headers


def listed(page):
    return re.findall(r'<li><a href="/ui/repositories/([^"]+)">', page)


async def tags_of(running, name):
    response = await running.client.get(running.v2(f"{name}/tags/list"), headers=basic(*ALICE))
    return json.loads(await response.content())["tags"]


@pytest_twisted.ensureDeferred
async def test_root_leads_a_browser_to_the_ui_and_api_clients_to_their_404(open_ui):
    visitor = Visitor(open_ui)
    status, headers, _ = await visitor.get(
        "/", {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    )
    assert (status, headers.getRawHeaders("location")) == (302, ["/ui/"])
    status, headers, body = await visitor.get("/", {"Accept": "application/json"})
    assert status == 404
    assert headers.getRawHeaders("content-type") == ["application/json"]
    assert json.loads(body)["errors"][0]["detail"] == {"path": "/"}
    for method in ("POST", "DELETE"):
        status, _, body = await visitor.request(method, "/", {"Accept": "text/html"})
        assert (status, json.loads(body)["errors"][0]["code"]) == (404, "UNSUPPORTED")
    status, headers, _ = await visitor.get("/ui")
    assert (status, headers.getRawHeaders("location")) == (301, ["/ui/"])
    status, _, page = await visitor.get("/ui/")
    assert status == 200 and "<h1>Repositories</h1>" in page


@pytest_twisted.ensureDeferred
async def test_pages_carry_a_strict_policy_and_reference_only_their_origin(open_ui):
    await push_image(open_ui, "team/app", "1.0", {})
    _, _, page = await Visitor(open_ui).get("/ui/repositories/team/app")
    digest = re.search(r"/-/manifests/(sha256:[0-9a-f]{64})", page).group(1)
    visitor = Visitor(open_ui)
    for path, status in [
        ("/ui/", 200),
        ("/ui/?q=team", 200),
        ("/ui/repositories/team/app", 200),
        (f"/ui/repositories/team/app/-/manifests/{digest}", 200),
        ("/ui/login", 200),
        ("/ui/repositories/team/app/-/delete?reference=1.0", 200),
        ("/ui/repositories/no/such", 404),
        ("/ui/nothing-here", 404),
        ("/ui/repositories/UPPER", 400),
    ]:
        answered, headers, page = await visitor.get(path)
        assert answered == status, (path, answered)
        assert headers.getRawHeaders("content-security-policy") == [CONTENT_SECURITY_POLICY]
        assert (
            "default-src 'self'" in CONTENT_SECURITY_POLICY
            and "unsafe" not in CONTENT_SECURITY_POLICY
        )
        assert headers.getRawHeaders("x-frame-options") == ["DENY"]
        assert headers.getRawHeaders("cache-control") == ["no-store"]
        # Scripts and styles come from files; every link stays on this host.
        assert re.findall(r"<script(?![^>]*\ssrc=)", page) == [], path
        assert " style=" not in page and "<style" not in page, path
        for url in re.findall(r'(?:src|href|action)="([^"]*)"', page):
            assert url.startswith("/ui/"), (path, url)
    for name in ("ui.css", "ui.js"):
        status, headers, _ = await visitor.get(f"/ui/static/{name}")
        assert status == 200
        assert headers.getRawHeaders("cache-control") == ["public, max-age=31536000, immutable"]
    status, _, _ = await visitor.get("/ui/static/../app.py")
    assert status == 404


@pytest_twisted.ensureDeferred
async def test_each_user_sees_only_what_they_may_pull(basic_ui):
    anonymous = Visitor(basic_ui)
    _, _, page = await anonymous.get("/ui/")
    assert listed(page) == ["public/app"]  # ACCESS: anonymous pulls of public/**
    status, _, page = await anonymous.get("/ui/repositories/team/app")
    assert status == 404 and "1.0" not in page

    bob = Visitor(basic_ui)
    await bob.sign_in(*BOB)
    _, _, page = await bob.get("/ui/")
    assert listed(page) == ["public/app", "team/app"]
    status, _, _ = await bob.get("/ui/repositories/alice/private")
    assert status == 404
    status, _, _ = await bob.get("/ui/repositories/alice/private/-/manifests/1.0")
    assert status == 404

    alice = Visitor(basic_ui)
    await alice.sign_in(*ALICE)
    _, _, page = await alice.get("/ui/")
    assert listed(page) == ["alice/private", "public/app", "team/app"]
    _, _, page = await alice.get("/ui/?q=app")
    assert listed(page) == ["public/app", "team/app"]
    _, _, page = await alice.get("/ui/?q=priv")
    assert listed(page) == ["alice/private"]


@pytest_twisted.ensureDeferred
async def test_a_state_change_needs_a_post_from_this_origin_with_the_session_token(basic_ui):
    alice = Visitor(basic_ui)
    csrf = await alice.csrf("/ui/login")
    form = {"csrf": csrf, "username": ALICE[0], "password": ALICE[1]}
    # No Origin, another origin, a wrong token: refused, nobody signed in.
    for visitor_origin, fields, send_origin in [
        (None, form, False),
        ("http://evil.example", form, True),
        (None, {**form, "csrf": "x" + csrf}, True),
        (None, {k: v for k, v in form.items() if k != "csrf"}, True),
    ]:
        alice.origin = visitor_origin or basic_ui.url
        status, _, page = await alice.post("/ui/login", fields, origin=send_origin)
        assert status == 403, (visitor_origin, fields)
        assert 'id="current-user"' not in page
    alice.origin = basic_ui.url
    headers = await alice.sign_in(*ALICE)
    cookie = headers.getRawHeaders("set-cookie")[0]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui/" in cookie

    # The pre-sign-in token is dead: sign-in starts a new session.
    status, _, _ = await alice.post(
        "/ui/repositories/team/app/-/delete", {"csrf": csrf, "reference": "1.0"}
    )
    assert status == 403
    # A GET only asks for confirmation.
    status, _, page = await alice.get("/ui/repositories/team/app/-/delete?reference=1.0")
    assert status == 200 and 'id="confirm-delete"' in page
    assert await tags_of(basic_ui, "team/app") == ["1.0"]
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    alice.origin = "http://evil.example"
    status, _, _ = await alice.post(
        "/ui/repositories/team/app/-/delete", {"csrf": token, "reference": "1.0"}
    )
    assert status == 403
    assert await tags_of(basic_ui, "team/app") == ["1.0"]
    alice.origin = basic_ui.url
    status, headers, _ = await alice.post(
        "/ui/repositories/team/app/-/delete", {"csrf": token, "reference": "1.0"}
    )
    assert (status, headers.getRawHeaders("location")) == (303, ["/ui/repositories/team/app"])
    assert await tags_of(basic_ui, "team/app") == []


@pytest_twisted.ensureDeferred
async def test_a_pull_only_user_is_offered_no_delete_and_refused_one(basic_ui):
    """Neither of a tag nor of the repository ('Delete' is in neither link)."""
    bob = Visitor(basic_ui)
    await bob.sign_in(*BOB)
    _, _, page = await bob.get("/ui/repositories/team/app")
    assert "Delete" not in page
    status, _, _ = await bob.get("/ui/repositories/team/app/-/delete?reference=1.0")
    assert status == 403
    token = await bob.csrf()
    status, _, page = await bob.post(
        "/ui/repositories/team/app/-/delete", {"csrf": token, "reference": "1.0"}
    )
    assert status == 403 and "may not delete" in page
    # Nor the whole repository.
    status, _, _ = await bob.get("/ui/repositories/team/app/-/remove")
    assert status == 403
    status, _, page = await bob.post("/ui/repositories/team/app/-/remove", {"csrf": token})
    assert status == 403 and "may not delete" in page
    assert await tags_of(basic_ui, "team/app") == ["1.0"]


@pytest_twisted.ensureDeferred
async def test_signing_in_is_braked_with_the_api_s_brake(basic_ui):
    """Wrong passwords through the form meet the same brake as through
    the API: soon 429, also for the API from the same address."""
    guesser = Visitor(basic_ui)
    statuses = []
    for _ in range(20):  # the wait doubles after 5 failures: a 429 must come
        token = await guesser.csrf("/ui/login")
        status, headers, page = await guesser.post(
            "/ui/login", {"csrf": token, "username": "alice", "password": "guess"}
        )
        statuses.append(status)
        if status == 429:
            assert headers.getRawHeaders("retry-after")
            assert 'id="login-error"' in page
            break
    assert statuses[:5] == [401] * 5 and statuses[-1] == 429, statuses
    response = await basic_ui.client.get(
        basic_ui.v2("team/app/tags/list"), headers=basic("alice", "guess")
    )
    assert response.code == 429
    await response.content()


@pytest_twisted.ensureDeferred
async def test_a_password_change_ends_the_session(basic_ui, tmp_path):
    from twisted.internet import reactor, task

    alice = Visitor(basic_ui)
    await alice.sign_in(*ALICE)
    (tmp_path / "htpasswd").write_text(HTPASSWD.replace("$2y$05$Pyc", "$2y$05$Qyc"))
    os.utime(tmp_path / "htpasswd", (0, 0))  # a new mtime, whatever the clock's resolution
    pages = []

    async def signed_out():
        _, _, page = await alice.get("/ui/")
        pages.append(page)
        return 'id="current-user"' not in page

    deadline = reactor.seconds() + 30
    while not await signed_out():  # the file is checked at most once a second
        assert reactor.seconds() < deadline, "still signed in after the password changed"
        await task.deferLater(reactor, 0.1, lambda: None)
    assert listed(pages[-1]) == ["public/app"]


@pytest_twisted.async_yield_fixture
async def token_ui(tmp_path):
    running = await serve_ui(tmp_path, token_server_auth(tmp_path))
    yield running
    await running.stop()


@pytest_twisted.ensureDeferred
async def test_with_the_built_in_token_server_users_sign_in_the_same_way(token_ui):
    bob = Visitor(token_ui)
    _, _, page = await bob.get("/ui/")
    assert listed(page) == [] and 'href="/ui/login"' in page
    csrf = await bob.csrf("/ui/login")
    status, _, page = await bob.post(
        "/ui/login", {"csrf": csrf, "username": "bob", "password": "wrong"}
    )
    assert status == 401 and "invalid username or password" in page
    await bob.sign_in(*BOB)
    _, _, page = await bob.get("/ui/")
    assert 'id="current-user">bob<' in page


# Hostile input: whatever the path, query or form, a page with a 4xx
# status (or a redirect), never a 500 or a traceback.

UI_PATHS = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=80).map(
        lambda text: "/ui/" + quote(text, safe="/?&=:@-._~%")
    ),
    st.builds(
        lambda name, tail: f"/ui/repositories/{name}{tail}",
        st.from_regex(r"[a-zA-Z0-9._/%-]{0,40}", fullmatch=True),
        st.sampled_from(
            [
                "",
                "/-/manifests/",
                "/-/manifests/sha256:",
                "/-/delete",
                "/-/delete?reference=",
                "/-/manifests/%00",
                "?last=%ff",
                "/-/remove",
                "/-/remove?csrf=%ff",
            ]
        ),
    ),
)


@pytest_twisted.ensureDeferred
async def test_hostile_paths_and_forms_get_a_page_never_a_500(open_ui, logged_failures):
    await push_image(open_ui, "team/app", "1.0", {})
    port = port_of(open_ui)

    @EXAMPLES
    @given(UI_PATHS, st.sampled_from(["GET", "POST", "HEAD"]), st.binary(max_size=200))
    @example("/ui/repositories/team/app/-/delete?reference=1.0", "POST", b"csrf=%ff&reference=%ff")
    @example("/ui/repositories/team/app/-/remove", "POST", b"csrf=%ff")
    @example("/ui/repositories/team/app/-/remove", "GET", b"")
    @example("/ui/?q=%ff", "GET", b"")
    @example("/ui/?last=" + "z" * 300, "GET", b"")
    @example("/ui/login", "POST", b"username=\xff&password=\xfe&csrf=x")
    @example("/ui/repositories/team/app/-/manifests/sha256:" + "0" * 64, "GET", b"")
    def check(path, method, body):
        headers = [
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Origin", f"http://127.0.0.1:{port}"),
        ]
        status, _, _ = exchange(port, raw_request_bytes(port, method, path, headers, body))
        assert status < 500, (path, method, body)
        assert logged_failures == []

    await run_examples(check)
    assert await tags_of(open_ui, "team/app") == ["1.0"]


@pytest_twisted.ensureDeferred
async def test_deleting_a_manifest_takes_its_tags(basic_ui):
    alice = Visitor(basic_ui)
    await alice.sign_in(*ALICE)
    _, _, page = await alice.get("/ui/repositories/team/app/-/manifests/1.0")
    digest = re.search(r'id="digest">(sha256:[0-9a-f]{64})<', page).group(1)
    status, _, page = await alice.get(f"/ui/repositories/team/app/-/delete?reference={digest}")
    assert status == 200 and "the tags 1.0" in page
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    status, _, _ = await alice.post(
        "/ui/repositories/team/app/-/delete", {"csrf": token, "reference": digest}
    )
    assert status == 303
    # Its only manifest gone, so is the repository: tags list NAME_UNKNOWN.
    response = await basic_ui.client.get(basic_ui.v2("team/app/tags/list"), headers=basic(*ALICE))
    assert response.code == 404
    assert json.loads(await response.content())["errors"][0]["code"] == "NAME_UNKNOWN"
    response = await basic_ui.client.head(
        basic_ui.v2(f"team/app/manifests/{digest}"), headers=basic(*ALICE)
    )
    assert response.code == 404
    status, _, _ = await alice.get(f"/ui/repositories/team/app/-/manifests/{digest}")
    assert status == 404


@pytest_twisted.ensureDeferred
async def test_the_service_serves_the_ui_unless_turned_off(tmp_path):
    """As composed from a configuration file: on by default, with
    ui.sessionkey signing sessions; ui.enabled: false leaves / and /ui/
    to the API's 404."""
    from registryd.ui.session import COOKIE, SessionCodec, configured_key
    from tests.service_support import start_service

    key = "k" * 40
    running = await start_service(
        tmp_path,
        """
        version: 0.1
        storage: {{filesystem: {{rootdirectory: {root}}}}}
        http: {{addr: "127.0.0.1:{port}"}}
        ui: {{sessionkey: {key}}}
    """,
        key=key,
    )
    try:
        response = await running.client.get(running.url + "/ui/")
        assert response.code == 200
        await response.content()
        cookie = SimpleCookie(response.headers.getRawHeaders("set-cookie")[0])[
            COOKIE.decode()
        ].value
        assert SessionCodec(configured_key(key)).decode(cookie.encode()) is not None
    finally:
        await running.stop()

    running = await start_service(
        tmp_path,
        """
        version: 0.1
        storage: {{filesystem: {{rootdirectory: {root}}}}}
        http: {{addr: "127.0.0.1:{port}"}}
        ui: {{enabled: false}}
    """,
    )
    try:
        for path, accept in [("/ui/", "text/html"), ("/", "text/html")]:
            response = await running.client.get(running.url + path, headers={"Accept": accept})
            assert response.code == 404
            assert json.loads(await response.content())["errors"][0]["code"] == "UNSUPPORTED"
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_in_read_only_mode_no_delete_is_offered_or_done(basic_ui):
    alice = Visitor(basic_ui)
    await alice.sign_in(*ALICE)
    token = await alice.csrf()
    basic_ui.service.registry.read_only = True
    _, _, page = await alice.get("/ui/repositories/team/app")
    assert "Delete" not in page
    status, _, page = await alice.post(
        "/ui/repositories/team/app/-/delete", {"csrf": token, "reference": "1.0"}
    )
    assert status == 405 and "read-only mode" in page
    status, _, page = await alice.get("/ui/repositories/team/app/-/remove")
    assert status == 405 and "read-only mode" in page
    status, _, page = await alice.post("/ui/repositories/team/app/-/remove", {"csrf": token})
    assert status == 405 and "read-only mode" in page
    assert await tags_of(basic_ui, "team/app") == ["1.0"]


async def api_json(running, path):
    response = await running.client.get(running.v2(path), headers=basic(*ALICE))
    assert response.code == 200, path
    return json.loads(await response.content())


def tag_rows(page):
    """``{tag: (pushed, pulled, protected)}`` as the repository page shows them."""
    rows = re.findall(
        r'<tr data-tag="([^"]+)">.*?<td class="pushed"><time>([^<]*)</time></td>\s*'
        r'<td class="pulled">(?:<time>([^<]*)</time>|never)</td>\s*'
        r'<td class="protected">(<span class="protected"[^>]*>protected</span>|no)</td>',
        page,
        re.S,
    )
    return {tag: (pushed, pulled or None, marked != "no") for tag, pushed, pulled, marked in rows}


@pytest_twisted.ensureDeferred
async def test_tags_show_pushed_and_pulled_times_and_protection_as_the_api_lists_them(lifecycle_ui):
    response = await lifecycle_ui.client.get(
        lifecycle_ui.v2("team/app/manifests/1.0"),
        headers={**basic(*ALICE), "Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert response.code == 200
    await response.content()
    alice = Visitor(lifecycle_ui)
    await alice.sign_in(*ALICE)
    status, _, page = await alice.get("/ui/repositories/team/app")
    assert status == 200
    shown = tag_rows(page)
    listed_by_api = (await api_json(lifecycle_ui, "team/app/_registryd/tags"))["tags"]
    assert shown == {
        entry["tag"]: (entry["pushed"], entry["pulled"], entry["protected"])
        for entry in listed_by_api
    }
    assert shown["1.0"][1] is not None and shown["v1"][1] is None  # pulled / never
    assert (shown["1.0"][2], shown["v1"][2]) == (False, True)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", shown["v1"][0])
    assert "lifecycle.immutable[0]" in page  # which rule protects v1


@pytest_twisted.ensureDeferred
async def test_the_repositories_list_shows_usage_only_with_quotas(lifecycle_ui, basic_ui):
    alice = Visitor(lifecycle_ui)
    await alice.sign_in(*ALICE)
    _, _, page = await alice.get("/ui/")
    shown = dict(
        re.findall(
            r'<li><a href="/ui/repositories/([^"]+)">[^<]*</a> '
            r'<span class="usage" data-bytes="(\d+)">',
            page,
        )
    )
    assert sorted(shown) == ["alice/private", "public/app", "team/app"]
    for name, held in shown.items():
        assert int(held) == (await api_json(lifecycle_ui, f"{name}/_registryd/usage"))["bytes"] > 0
    without_quotas = Visitor(basic_ui)
    await without_quotas.sign_in(*ALICE)
    _, _, page = await without_quotas.get("/ui/")
    assert len(listed(page)) == 3 and 'class="usage"' not in page


@pytest_twisted.ensureDeferred
async def test_a_repository_delete_is_confirmed_refused_while_protected_and_done(lifecycle_ui):
    alice = Visitor(lifecycle_ui)
    await alice.sign_in(*ALICE)
    _, _, page = await alice.get("/ui/repositories/team/app")
    assert 'href="/ui/repositories/team/app/-/remove"' in page
    status, _, page = await alice.get("/ui/repositories/team/app/-/remove")
    assert status == 200 and 'id="confirm-remove"' in page
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    # An immutable tag in it: refused whole, with the reason on the page.
    status, _, page = await alice.post("/ui/repositories/team/app/-/remove", {"csrf": token})
    assert status == 403 and "is immutable by" in page
    assert await tags_of(lifecycle_ui, "team/app") == ["1.0", "v1"]

    # From another origin: refused; from this one: gone, back to the list.
    alice.origin = "http://evil.example"
    status, _, _ = await alice.post("/ui/repositories/public/app/-/remove", {"csrf": token})
    assert status == 403
    assert await tags_of(lifecycle_ui, "public/app") == ["1.0"]
    alice.origin = lifecycle_ui.url
    status, headers, _ = await alice.post("/ui/repositories/public/app/-/remove", {"csrf": token})
    assert (status, headers.getRawHeaders("location")) == (303, ["/ui/"])
    response = await lifecycle_ui.client.get(
        lifecycle_ui.v2("public/app/tags/list"), headers=basic(*ALICE)
    )
    assert response.code == 404
    assert json.loads(await response.content())["errors"][0]["code"] == "NAME_UNKNOWN"
    _, _, page = await alice.get("/ui/")
    assert listed(page) == ["alice/private", "team/app"]
    # Gone is gone: its confirmation and its delete are a 404 page.
    status, _, _ = await alice.get("/ui/repositories/public/app/-/remove")
    assert status == 404
    status, _, _ = await alice.post("/ui/repositories/public/app/-/remove", {"csrf": token})
    assert status == 404
