"""The web interface in a real browser: Debian's chromium driven by
Playwright for Python, against registryd under twistd.

Images, an index and referrers are pushed over the API; then the browser
signs in, browses to an image, its layers and referrers, sees the
protected (immutable) tag marked, copies a pull command, deletes a tag
after confirming, and the tag is gone from the API; it deletes a whole
repository after confirming, and is refused one holding a protected tag.
An anonymous visitor sees nothing, a pull-only user is offered no delete
and refused one.  Every request the browser makes is recorded: none may
leave the registry's origin, and no Content-Security-Policy violation may
be reported.  Screenshots of each page go to ``tests/artifacts/``
(``REGISTRYD_TEST_ARTIFACTS`` to put them elsewhere).

Chromium is the system's (``/usr/bin/chromium``; ``.ci/run`` installs it);
Playwright never downloads a browser.
"""

import base64
import json
import os
from pathlib import Path

import pytest

from tests.e2e import tools
from tests.e2e.test_auth_tls import write_htpasswd

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(
    os.environ.get("REGISTRYD_TEST_ARTIFACTS") or Path(__file__).resolve().parents[1] / "artifacts"
)

ACCESS = {
    "groups": {"admins": ["alice"]},
    "rules": [
        {"repositories": ["**"], "groups": ["admins"], "actions": ["*"]},
        {"repositories": ["team/**"], "users": ["bob"], "actions": ["pull"]},
    ],
}
SIGNATURE = "application/vnd.dev.cosign.artifact.sig.v1+json"
SBOM = "application/spdx+json"
#: How long a page may take to appear; generous, for a busy machine.
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def playwright():
    """Playwright, once chromium and the playwright package are there
    (skipped without them locally, failed under CI=true, as every tool)."""
    tools.require_tool(CHROMIUM)
    try:
        from playwright import sync_api
    except ImportError:
        tools.require_tool("playwright (pip install playwright)")
    with sync_api.sync_playwright() as running:
        yield running


@pytest.fixture
def browser(playwright):
    launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield launched
    launched.close()


class Visit:
    """A browser context on the registry at ``origin`` that records every
    request, refuses (and records) any that would leave the origin, and
    records Content-Security-Policy violations the page reports."""

    def __init__(self, browser, origin):
        self.origin = origin
        self.context = browser.new_context(viewport={"width": 1200, "height": 800})
        self.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=origin)
        self.requested = []
        self.outside = []
        self.console_errors = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.page.on("console", self._console)

    def _route(self, route):
        url = route.request.url
        self.requested.append(url)
        if url == self.origin or url.startswith(self.origin + "/"):
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def _console(self, message):
        if message.type == "error":
            self.console_errors.append(message.text)

    def screenshot(self, name):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"ui-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def sign_in(self, user, password):
        self.page.goto(self.origin + "/ui/login")
        self.page.fill("#username", user)
        self.page.fill("#password", password)
        self.page.click("#sign-in-button")
        self.page.wait_for_selector("#current-user")

    def check_stayed_home(self):
        assert self.requested, "the browser made no request"
        assert self.outside == [], f"requests left the origin: {self.outside}"
        assert not [e for e in self.console_errors if "Content Security Policy" in e], (
            self.console_errors
        )

    def close(self):
        self.context.close()


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def push_artifact(url, name, subject, artifact_type, payload):
    """An OCI 1.1 artifact manifest referring to ``subject`` (a signature,
    an SBOM); its digest."""
    empty = tools.push_blob(url, name, b"{}")
    layer = tools.push_blob(url, name, payload)
    manifest = {
        "schemaVersion": 2,
        "mediaType": tools.OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": artifact_type, "digest": layer, "size": len(payload)}],
        "subject": {
            "mediaType": tools.OCI_MANIFEST,
            "digest": subject["digest"],
            "size": len(subject["manifest"]),
        },
        "annotations": {"org.opencontainers.image.created": "2026-12-03T00:00:00Z"},
    }
    body = json.dumps(manifest).encode()
    tools.put_manifest(url, name, tools.sha256_digest(body), body, tools.OCI_MANIFEST)
    return tools.sha256_digest(body)


def push_index(url, name, tag, images):
    """An OCI index of ``images`` ({"os/arch": image}) tagged ``tag``."""
    for image in images.values():
        tools.push_image(url, name, image["digest"], image)
    index = {
        "schemaVersion": 2,
        "mediaType": tools.OCI_INDEX,
        "manifests": [
            {
                "mediaType": tools.OCI_MANIFEST,
                "digest": image["digest"],
                "size": len(image["manifest"]),
                "platform": {"os": platform.split("/")[0], "architecture": platform.split("/")[1]},
            }
            for platform, image in images.items()
        ],
    }
    tools.put_manifest(url, name, tag, json.dumps(index).encode(), tools.OCI_INDEX)


@pytest.fixture
def registry(registryd_factory, tmp_path):
    """registryd with htpasswd users (alice: everything; bob: pull on
    team/**), holding team/app (an image tagged 1.0 with a signature and an
    SBOM, an index tagged multi, immutable) and alice/private.  The content is pushed
    before auth is turned on (the API helpers send no credentials)."""
    root = tmp_path / "root"
    open_registry = registryd_factory(root=root)
    url = open_registry.url
    image = tools.make_image(layer_sizes=(300 * 1024, 40 * 1024))
    tools.push_image(url, "team/app", "1.0", image)
    push_artifact(url, "team/app", image, SIGNATURE, b'{"critical": {}}')
    push_artifact(url, "team/app", image, SBOM, b'{"spdxVersion": "SPDX-2.3"}')
    push_index(
        url,
        "team/app",
        "multi",
        {
            "linux/amd64": tools.make_image(layer_sizes=(20 * 1024,)),
            "linux/arm64": tools.make_image(layer_sizes=(21 * 1024,)),
        },
    )
    tools.push_image(url, "alice/private", "latest", tools.make_image(layer_sizes=(1024,)))
    open_registry.stop()
    secured = registryd_factory(
        root=root,
        ready_status=401,
        extra_config={
            "auth": {
                "htpasswd": {
                    "realm": "registryd ui",
                    "path": write_htpasswd(tmp_path / "htpasswd"),
                },
                "access": ACCESS,
            },
            "lifecycle": {"immutable": [{"repository": "team/**", "tags": ["multi"]}]},
        },
    )
    secured.image = image
    return secured


def test_browse_copy_and_delete_in_a_browser(browser, registry):
    visit = Visit(browser, registry.url)
    page = visit.page
    try:
        # A browser at / is led to the interface; signed out it shows nothing.
        page.goto(registry.url + "/")
        assert page.url == registry.url + "/ui/"
        assert page.locator("#repositories").count() == 0
        visit.screenshot("signed-out")

        visit.sign_in("alice", "wonderland")
        assert page.locator("#repositories li").all_inner_texts() == ["alice/private", "team/app"]
        page.fill("#search", "team")
        page.press("#search", "Enter")
        page.wait_for_url("**/ui/?q=team")
        assert page.locator("#repositories li").all_inner_texts() == ["team/app"]
        visit.screenshot("repositories")

        page.click("text=team/app")
        page.wait_for_selector("#tags")
        rows = page.locator("#tags tbody tr")
        assert rows.count() == 2
        tagged = page.locator('#tags tr[data-tag="1.0"]')
        assert registry.image["digest"][:19] in tagged.inner_text()
        assert "application/vnd.oci.image.manifest.v1+json" in tagged.inner_text()
        assert "linux/amd64, linux/arm64" in page.locator('#tags tr[data-tag="multi"]').inner_text()
        # The immutable tag is marked protected, the other is not; both
        # show when they were pushed.
        assert page.locator('#tags tr[data-tag="multi"] span.protected').is_visible()
        assert page.locator('#tags tr[data-tag="1.0"] span.protected').count() == 0
        assert page.locator('#tags tr[data-tag="1.0"] td.pushed').inner_text().startswith("20")
        visit.screenshot("repository")

        # The image: its config, layers with sizes, and referrers by kind.
        tagged.locator("a", has_text="1.0").click()
        page.wait_for_selector("#layers")
        assert page.inner_text("#digest") == registry.image["digest"]
        layers = page.locator("#layers tbody tr").all_inner_texts()
        assert len(layers) == 2
        assert [
            digest[:19] in row for (digest, _), row in zip(registry.image["layers"], layers)
        ] == [True, True]
        assert "kB" in layers[0]
        kinds = page.locator("#referrers td.kind").all_inner_texts()
        assert sorted(kinds) == ["SBOM", "signature"]
        visit.screenshot("manifest")

        # A pull command, copied to the clipboard by the interface's script.
        page.click('button[data-copy="pull-docker"]')
        page.wait_for_selector("text=Copied:")
        expected = f"docker pull {registry.host}/team/app@{registry.image['digest']}"
        assert page.evaluate("navigator.clipboard.readText()") == expected

        # A referrer's own page links back to its subject.
        page.locator("#referrers a").first.click()
        page.wait_for_selector("#facts")
        assert registry.image["digest"] in page.inner_text("#facts")

        # Deleting a tag: confirmed on a page of its own, then gone.
        page.goto(registry.url + "/ui/repositories/team/app")
        page.locator('#tags tr[data-tag="1.0"] a.danger').click()
        page.wait_for_selector("#confirm-delete")
        visit.screenshot("delete")
        tags = tools.http_request(
            "GET", f"{registry.url}/v2/team/app/tags/list", headers=basic("alice", "wonderland")
        ).json()["tags"]
        assert tags == ["1.0", "multi"], "showing the confirmation deleted something"
        page.click("#confirm-delete")
        page.wait_for_url("**/ui/repositories/team/app")
        assert page.locator('#tags tr[data-tag="1.0"]').count() == 0
        tags = tools.http_request(
            "GET", f"{registry.url}/v2/team/app/tags/list", headers=basic("alice", "wonderland")
        ).json()["tags"]
        assert tags == ["multi"]
        # The manifest stays, under its digest.
        manifest = tools.http_request(
            "HEAD",
            f"{registry.url}/v2/team/app/manifests/{registry.image['digest']}",
            headers=basic("alice", "wonderland"),
        )
        assert manifest.status == 200

        # Deleting team/app whole is refused: its tag multi is immutable.
        page.click("#remove-repository")
        page.wait_for_selector("#confirm-remove")
        with page.expect_navigation() as refused:
            page.click("#confirm-remove")
        assert refused.value.status == 403
        assert "is immutable by" in page.inner_text("main")
        # alice/private goes after its confirmation, from the API and the list.
        page.goto(registry.url + "/ui/repositories/alice/private")
        page.click("#remove-repository")
        page.wait_for_selector("#confirm-remove")
        visit.screenshot("remove-repository")
        page.click("#confirm-remove")
        page.wait_for_url(registry.url + "/ui/")
        assert page.locator("#repositories li").all_inner_texts() == ["team/app"]
        listed = tools.http_request(
            "GET",
            f"{registry.url}/v2/alice/private/tags/list",
            headers=basic("alice", "wonderland"),
        )
        assert listed.status == 404
        tags = tools.http_request(
            "GET", f"{registry.url}/v2/team/app/tags/list", headers=basic("alice", "wonderland")
        ).json()["tags"]
        assert tags == ["multi"]
        visit.check_stayed_home()
    finally:
        visit.close()


def test_anonymous_sees_nothing_and_a_pull_only_user_cannot_delete(browser, registry):
    anonymous = Visit(browser, registry.url)
    try:
        anonymous.page.goto(registry.url + "/ui/")
        assert anonymous.page.locator("#repositories").count() == 0
        assert anonymous.page.locator("#no-repositories").is_visible()
        response = anonymous.page.goto(registry.url + "/ui/repositories/team/app")
        assert response.status == 404
        assert "team/app" not in anonymous.page.inner_text("main").replace(
            "/ui/repositories/team/app", ""
        )
        anonymous.check_stayed_home()
    finally:
        anonymous.close()

    bob = Visit(browser, registry.url)
    page = bob.page
    try:
        bob.sign_in("bob", "builder")
        assert page.locator("#repositories li").all_inner_texts() == ["team/app"]
        page.click("text=team/app")
        page.wait_for_selector("#tags")
        assert page.locator("a.danger").count() == 0
        page.locator('#tags tr[data-tag="1.0"] a', has_text="1.0").click()
        page.wait_for_selector("#layers")
        assert page.locator("#delete-manifest").count() == 0
        bob.screenshot("pull-only")
        response = page.goto(registry.url + "/ui/repositories/team/app/-/delete?reference=1.0")
        assert response.status == 403
        # Not even a hand-made form from this origin with bob's own CSRF
        # token deletes anything.
        page.goto(registry.url + "/ui/")
        status = page.evaluate("""async () => {
            const csrf = document.querySelector('input[name=csrf]').value;
            const body = new URLSearchParams({csrf: csrf, reference: '1.0'});
            const response = await fetch('/ui/repositories/team/app/-/delete', {method: 'POST', body: body});
            return response.status;
        }""")
        assert status == 403
        tags = tools.http_request(
            "GET", f"{registry.url}/v2/team/app/tags/list", headers=basic("alice", "wonderland")
        ).json()["tags"]
        assert tags == ["1.0", "multi"]
        response = page.goto(registry.url + "/ui/repositories/alice/private")
        assert response.status == 404
        bob.check_stayed_home()
    finally:
        bob.close()
