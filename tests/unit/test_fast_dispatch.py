"""The fast dispatch (registryd.http.fast_dispatch) agrees with klein's
router, werkzeug, for every request target it takes, and takes the hot
ones."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect

from registryd.http.api.routing import _path_info
from registryd.http.app import RegistryApp
from registryd.http.fast_dispatch import ExactRoutes, FastRoute, compile_pattern

ROUTES = RegistryApp.exact_routes
URL_MAP = RegistryApp.app.url_map

METHODS = [b"GET", b"HEAD", b"PUT", b"POST", b"PATCH", b"DELETE", b"OPTIONS", b"get", b"BREW"]

#: segments that spell the routes' literals, and their near misses
_WORDS = [
    "v2",
    "blobs",
    "uploads",
    "manifests",
    "tags",
    "list",
    "referrers",
    "_registryd",
    "usage",
    "repository",
    "_catalog",
    "auth",
    "token",
    "ui",
    "latest",
    "sha256:" + "0" * 64,
    "a",
    "b-c",
    "x.y",
    "..",
    ".",
    "",
    "%2F",
    "%61",
    "\u00e9",
    "Tags",
]
_SEGMENT = st.one_of(
    st.sampled_from(_WORDS),
    st.text(st.sampled_from("az09._-:"), min_size=1, max_size=5),
    st.text(st.sampled_from("aZ09._-:+=@~%/?\n\u00e9 "), max_size=6),
)


def werkzeug_match(method, path):
    """(endpoint, arguments) as klein's router takes ``path``, or None."""
    try:
        adapter = URL_MAP.bind("127.0.0.1:5000", "", path_info=_path_info(path))
        rule, arguments = adapter.match(method=method.decode("latin-1"), return_rule=True)
    except (HTTPException, RequestRedirect, UnicodeDecodeError):
        return None
    return rule.endpoint, arguments


def fast_match(method, path):
    found = ROUTES.match(method, path)
    return None if found is None else (found[0].name, found[1])


#: every route's URL pattern, as klein gave them to werkzeug
_PATTERNS = sorted({rule.rule for rule in URL_MAP.iter_rules()})
_CONVERTER = re.compile(r"<(path:)?\w+>")


@st.composite
def request_targets(draw):
    """A route's pattern filled in with segments (a ``path`` converter with
    several), then perhaps bent: a segment added before or after, a
    trailing slash."""
    pattern = draw(st.sampled_from(_PATTERNS))

    def fill(converter):
        count = draw(st.integers(1, 3)) if converter.group(1) else 1
        return "/".join(draw(_SEGMENT) for _ in range(count))

    path = _CONVERTER.sub(fill, pattern)
    if draw(st.booleans()):
        path = path + draw(st.sampled_from(["/", "/x", "/" + draw(_SEGMENT)]))
    if draw(st.booleans()) and path.startswith("/v2/"):
        path = "/v2/" + draw(_SEGMENT) + "/" + path[4:]
    return path.encode("utf-8")


@settings(max_examples=2000, deadline=None)
@given(st.sampled_from([b"GET", b"HEAD", *METHODS]), request_targets())
def test_every_path_it_takes_is_routed_as_klein_routes_it(method, path):
    """Whatever the fast dispatch answers is werkzeug's route and
    arguments; a path it declines is klein's to route."""
    found = fast_match(method, path)
    if found is not None:
        assert werkzeug_match(method, path) == found


@given(st.sampled_from(METHODS), st.binary(max_size=120))
def test_any_bytes_are_matched_or_declined(method, path):
    """Hostile request targets: an answer klein agrees with, or None."""
    found = fast_match(method, path)
    if found is not None:
        assert werkzeug_match(method, path) == found


DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    "method, path, route, arguments",
    [
        (b"GET", "/v2/", "api_base", {}),
        (
            b"GET",
            "/v2/team/app/manifests/latest",
            "manifest",
            {"name": "team/app", "reference": "latest"},
        ),
        (b"HEAD", f"/v2/app/manifests/{DIGEST}", "manifest", {"name": "app", "reference": DIGEST}),
        (b"PUT", "/v2/app/manifests/v1.0", "manifest", {"name": "app", "reference": "v1.0"}),
        (b"HEAD", f"/v2/a/b/c/blobs/{DIGEST}", "blob", {"name": "a/b/c", "digest": DIGEST}),
        (b"GET", "/v2/a/tags/list", "tags", {"name": "a"}),
        (b"GET", "/v2/a/manifests/b/tags/list", "tags", {"name": "a/manifests/b"}),
        (b"GET", "/v2/_catalog", "catalog", {}),
        (b"POST", "/v2/a/blobs/uploads/", "upload_start", {"name": "a"}),
    ],
)
def test_the_hot_paths_are_taken(method, path, route, arguments):
    """The requests it exists for do not fall back to klein (and are
    routed as klein routes them)."""
    assert fast_match(method, path.encode("ascii")) == (route, arguments)
    assert werkzeug_match(method, path.encode("ascii")) == (route, arguments)


@pytest.mark.parametrize(
    "method, path",
    [
        (b"GET", b"/v2/a/manifests/l%61test"),  # percent-encoded: klein decodes
        (b"GET", b"/v2//a/manifests/latest"),  # werkzeug redirects
        (b"GET", b"/v2/a/manifests/latest/"),
        (b"BREW", b"/v2/a/manifests/latest"),  # 405 from klein
        (b"get", b"/v2/a/manifests/latest"),
        (b"GET", b"/v2"),
        (b"GET", b"/ui/"),
        (b"GET", b"/v2/\xc3\xa9/tags/list"),
    ],
)
def test_what_klein_must_answer_is_declined(method, path):
    assert fast_match(method, path) is None


def test_a_converter_it_cannot_match_is_refused():
    """A route with a converter other than werkzeug's ``path`` and
    ``string`` cannot be precompiled; adding one fails loudly, not by
    routing differently."""
    with pytest.raises(ValueError, match="converter"):
        compile_pattern("/v2/<int:n>/x")
    assert compile_pattern("/v2/<path:name>/tags/list").fullmatch("/v2/a/b/tags/list")


GET = frozenset([b"GET"])


def test_two_matching_routes_are_left_to_klein():
    """Where two patterns take a path, werkzeug's order decides: declined."""
    one = FastRoute("one", "/v2/<path:name>/x", compile_pattern("/v2/<path:name>/x"), GET, None, 3)
    two = FastRoute("two", "/v2/a/<rest>", compile_pattern("/v2/a/<rest>"), GET, None, 3)
    routes = ExactRoutes([one, two])
    assert routes.match(b"GET", b"/v2/a/x") is None
    assert routes.match(b"GET", b"/v2/b/x")[0] is one


def test_a_view_that_waits_is_resumed_as_twisted_would():
    """A view's first step runs in place; when it waits, the rest runs as
    ``Deferred.fromCoroutine`` would run it: results and failures of what
    it awaits come back into it, and cancelling cancels what it waits for."""
    from twisted.internet import defer

    from registryd.http.fast_dispatch import _resume

    first, second, seen = defer.Deferred(), defer.Deferred(), []

    async def view():
        seen.append(await first)
        try:
            await second
        except ValueError as error:
            seen.append(str(error))
        third = defer.Deferred()
        seen.append(third)
        try:
            await third
        except defer.CancelledError:
            seen.append("cancelled")
            raise
        return "unreachable"

    coroutine = view()
    running = defer.Deferred.fromCoroutine(_resume(coroutine, coroutine.send(None)))
    first.callback("one")
    second.errback(ValueError("two"))
    assert seen[:2] == ["one", "two"] and not running.called
    running.cancel()
    assert seen[3] == "cancelled" and seen[2].called
    failures = []
    running.addErrback(failures.append)
    assert failures[0].check(defer.CancelledError)


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(st.sampled_from("aZ9_-:"), max_size=8),
            st.integers(55, 70).map(lambda length: "a" * length),
            st.text(max_size=4),
        ),
        min_size=1,
        max_size=4,
    ).map(".".join),
    st.sampled_from(["", ":1", ":65535"]),
)
def test_a_host_it_takes_is_one_werkzeug_takes(host, port):
    """The fast dispatch skips werkzeug's host check (IDNA, BadHost: a 400
    from klein) only for host names werkzeug takes with any port."""
    from werkzeug.exceptions import BadHost

    from registryd.http.fast_dispatch import plain_host

    encoded = host.encode("utf-8")
    if plain_host(encoded):
        try:
            URL_MAP.bind(host + port, "")
        except BadHost:
            pytest.fail(f"werkzeug refuses {host + port!r}")
