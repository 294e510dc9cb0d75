"""registryd.config's schema: every key declared once, walkable, and the
sample file and README kept equal to it; all of a file's errors at once;
one duration rule; hostile input gives ConfigError and nothing else."""

import os
import re
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registryd.config import (
    Config,
    ConfigError,
    ConfigErrors,
    load_config,
    parse_config,
)
from registryd.config.reference import (
    README_BEGIN,
    README_END,
    markdown_reference,
    readme_summary,
)
from registryd.config.schema import ListOf, SectionOf, find_key, iter_keys
from registryd.config.types import Duration

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")


def error_lines(text):
    import yaml

    from registryd.config.load import Loader

    with pytest.raises(ConfigError) as info:
        parse_config(yaml.load(textwrap.dedent(text), Loader=Loader))
    return str(info.value).split("\n"), info.value


# --- the walker -------------------------------------------------------------------


def test_every_key_path_is_listed_once_with_a_type_and_a_doc():
    paths = [info.path for info in iter_keys(Config)]
    assert len(paths) == len(set(paths))
    for expected in (
        "version",
        "storage.delete.enabled",
        "storage.maintenance.uploadpurging.age",
        "http.tls.ciphersuites",
        "health.http[].uri",
        "notifications.endpoints[].ignore.actions",
        "auth.access.rules[].repositories",
        "middleware.storage[].options.baseurl",
        "catalog.maxentries",
        "proxy.ttl",
        "gc.graceperiod",
        "manhole.host_key",
        "workers",
    ):
        assert expected in paths
    for info in iter_keys(Config):
        if not info.key.not_yet:
            assert info.key.type is not None and info.key.type.name, info.path
            assert info.key.doc, info.path


def test_secrets_are_marked_and_not_shown():
    secret = {info.path for info in iter_keys(Config) if info.key.secret}
    assert secret == {"proxy.password", "redis.password", "ui.sessionkey"}
    config = parse_config(
        {
            "version": 0.1,
            "storage": {"inmemory": None},
            "proxy": {"remoteurl": "https://h", "username": "u", "password": "hunter2"},
        }
    )
    assert "hunter2" not in repr(config)


def test_every_duration_key_reads_by_the_one_rule():
    """Every key whose value is a time span is read by types.Duration (the
    one rule), not by a parser of its own."""
    spans = re.compile(
        r"(^|\.)(timeout|interval|age|ttl|graceperiod|backoff|draintimeout|\w*expiration)$"
    )
    keys = [info for info in iter_keys(Config) if spans.search(info.path)]
    assert len(keys) >= 12
    for info in keys:
        assert info.key.type.name.startswith("duration"), info.path


def test_markdown_reference_has_a_row_per_key():
    rows = markdown_reference(Config).splitlines()[2:]
    assert len(rows) == len(list(iter_keys(Config)))
    assert "| `storage.maintenance.uploadpurging.age` | duration | `168h` |" in markdown_reference(
        Config
    )


def test_readme_key_list_is_the_schemas():
    """README.md's key list is what `python -m registryd.config.reference
    --readme` writes: regenerate it when the schema changes."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as stream:
        readme = stream.read()
    start = readme.index(README_BEGIN)
    end = readme.index(README_END) + len(README_END) + 1
    assert readme[start:end] == readme_summary(Config)


def sample_key_paths(text):
    """Every key path in the sample, uncommented or in a commented-out
    example (``#   key: value`` lines), list items as ``[]``.

    A commented line is a key when its text after ``#`` looks like YAML
    (``name:`` followed by a space or the end); its indentation is the
    column of ``#`` plus the spaces after the first one, as if uncommented.
    """
    line_key = re.compile(r"^(?P<indent> *)(?:(?P<dash>- +))?(?P<key>[a-z_][a-z0-9_]*):(?: |$)")
    stack = []  # (indent, path)
    for raw in text.splitlines():
        stripped = raw.lstrip(" ")
        column = len(raw) - len(stripped)
        if stripped.startswith("#"):
            body = stripped[1:]
            if not body.startswith(" "):
                continue
            candidate = " " * (column + len(body) - len(body.lstrip(" ")) - 1) + body.lstrip(" ")
        else:
            candidate = raw
        match = line_key.match(candidate)
        if match is None:
            continue
        indent = len(match.group("indent"))
        if match.group("dash"):
            while stack and stack[-1][0] >= indent:
                stack.pop()
            parent = stack[-1][1] if stack else ""
            stack.append((indent, parent + "[]"))
            indent += len(match.group("dash"))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1] if stack else ""
        path = f"{parent}.{match.group('key')}" if parent else match.group("key")
        stack.append((indent, path))
        yield path


def known(path):
    """``path`` is a key, a group of keys, or a name inside a free-form
    mapping (auth.access.groups.<group>) of the schema."""
    if find_key(Config, path) or any(
        info.path.startswith(path + ".") for info in iter_keys(Config)
    ):
        return True
    parent = path.rpartition(".")[0]
    while parent:
        info = find_key(Config, parent)
        if info is not None:
            return not isinstance(info.key.type, (SectionOf, ListOf))
        parent = parent.rpartition(".")[0]
    return False


def test_every_key_in_the_sample_file_is_the_schemas():
    with open(os.path.join(ROOT, "etc", "registryd.yaml"), encoding="utf-8") as stream:
        sample = stream.read()
    paths = list(sample_key_paths(sample))
    assert "proxy.remoteurl" in paths and "auth.access.rules[].repositories" in paths  # commented
    assert "health.storagedriver.interval" in paths  # uncommented
    drivers = ("storage.filesystem", "storage.inmemory", "storage.s3")  # the drivers' own keys
    unknown = [path for path in paths if not path.startswith(drivers) and not known(path)]
    assert unknown == []
    # and the sample shows every top-level key registryd reads (but the
    # deprecated spelling of log.level)
    for info in iter_keys(Config):
        top = info.path.split(".")[0]
        if not (info.key.not_yet or info.key.ignored or top == "loglevel"):
            assert any(path.split(".")[0] == top for path in paths), top


def test_the_sample_walker_finds_unknown_keys():
    """The test above can fail: a misspelt key in a commented example is found."""
    text = "gc:\n  graceperiod: 1h\n  # intervall: 24h\nproxy:\n#   remoteurl: x\n#   tll: 1h\n"
    paths = list(sample_key_paths(text))
    assert paths == [
        "gc",
        "gc.graceperiod",
        "gc.intervall",
        "proxy",
        "proxy.remoteurl",
        "proxy.tll",
    ]
    assert not known("gc.intervall") and not known("proxy.tll") and known("gc.interval")


# --- all errors at once -----------------------------------------------------------------


def test_every_error_of_a_file_is_reported_in_document_order(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text(
        textwrap.dedent("""\
        version: 0.1
        log:
          level: loud
        storage:
          inmemory:
          delete: {enabled: 'yes'}
        http:
          addr: :5000
          tls: {certificate: /c}
        reporting: {}
        proxy:
          ttl: forever
        """)
    )
    with pytest.raises(ConfigErrors) as info:
        load_config(str(path))
    assert str(info.value).split("\n") == [
        "log.level: expected one of error, warn, info, debug, got 'loud'",
        "storage.delete.enabled: expected true or false, got 'yes'",
        "http.tls.key: required",
        (
            "reporting: not supported by registryd yet (supported here: auth, catalog, gc, health, "
            "http, lifecycle, log, loglevel, manhole, middleware, notifications, proxy, redis, storage, tags, "
            "ui, validation, version, workers)"
        ),
        "proxy.ttl: expected a duration such as 10s, 500ms or 1m30s, got 'forever'",
        "proxy.remoteurl: required: the URL of the registry to mirror",
    ]
    assert info.value.key == "log.level"  # the first one, for callers that name one
    assert [error.key for error in info.value.errors][-1] == "proxy.remoteurl"


def test_a_section_with_an_error_adds_no_consequential_errors():
    """Checks across a section's keys only run on valid values: a bad
    token section gives its own error, not also "needs auth.token"."""
    lines, _ = error_lines("""\
        version: 0.1
        storage: {inmemory: }
        auth:
          htpasswd: {realm: r, path: /p}
          token: {service: 5, issuer: i}
          tokenserver: {key: /k}
        """)
    assert lines == ["auth.token.service: expected a string, got 5"]


def test_errors_in_list_items_are_all_reported():
    lines, _ = error_lines("""\
        version: 0.1
        storage: {inmemory: }
        notifications:
          endpoints:
            - {name: a, url: 'ftp://h/'}
            - {name: '../b', url: 'http://h/'}
            - {url: 'http://h/', timeout: soon}
        """)
    assert [line.split(":")[0] for line in lines] == [
        "notifications.endpoints[0].url",
        "notifications.endpoints[1].name",
        "notifications.endpoints[2].timeout",
        "notifications.endpoints[2].name",
    ]


# --- the one duration rule -------------------------------------------------------------------

UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@given(
    st.lists(
        st.tuples(st.integers(0, 10_000), st.sampled_from(sorted(UNITS))), min_size=1, max_size=4
    )
)
def test_go_duration_strings_are_the_sum_of_their_parts(parts):
    text = "".join(f"{number}{unit}" for number, unit in parts)
    expected = sum(number * UNITS[unit] for number, unit in parts)
    for numbers in ("nanoseconds", "seconds"):
        assert Duration(numbers=numbers).check(text, "k") == pytest.approx(expected)


@given(st.integers(0, 9 * 10**9))  # Go durations end near 292 years
def test_a_number_is_read_in_the_keys_unit(number):
    assert Duration().check(number, "k") == pytest.approx(number * 1e-9)
    assert Duration(numbers="seconds").check(number, "k") == number
    assert Duration(numbers="seconds").check(str(number), "k") == number


def test_registryd_s_second_keys_take_go_durations_too():
    base = {"version": 0.1, "storage": {"inmemory": None}}
    auth = {
        "htpasswd": {"realm": "r", "path": "/p"},
        "token": {"service": "s", "issuer": "i"},
        "tokenserver": {"key": "/k", "expiration": "5m", "refreshexpiration": "720h"},
    }
    server = parse_config(dict(base, auth=auth)).auth.tokenserver
    assert (server.expiration, server.refreshexpiration) == (300, 720 * 3600)
    assert isinstance(server.expiration, int)  # it goes into JSON as expires_in
    from registryd.storage.drivers.s3_parameters import parse_parameters

    assert (
        parse_parameters(
            {"bucket": "registry", "region": "eu-west-1", "requesttimeout": "1m30s"}
        ).request_timeout
        == 90.0
    )


# --- hostile input ---------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(
        [
            "10s",
            "0",
            ":5000",
            "[::1",
            "http://[::1",
            "https://h:99999/",
            "/p/",
            "auto",
            "none",
            "redirect",
            "*",
            "**",
            "${user}/**",
            "RS256",
            "(",
            "tls1.0",
        ]
    ),
)
KEY_NAMES = sorted(
    {part.rstrip("[]") for info in iter_keys(Config) for part in info.path.split(".")}
    | {"inmemory", "filesystem", "s3", "junk"}
)
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.sampled_from(KEY_NAMES), scalars), inner, max_size=4),
    ),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(KEY_NAMES), documents, max_size=6))
def test_any_document_gives_a_config_or_config_errors_one_line_each(document):
    document = dict(document, version=0.1)
    try:
        parse_config(document)
    except ConfigError as error:
        for single in error.errors:
            assert "\n" not in str(single) and str(single).strip()


@pytest.mark.parametrize(
    ("document", "key"),
    [
        ({"a\nb": 1}, "a\nb"),
        ({"lifecycle": {"quota\r\n": 1}}, "quota\r\n"),
        ({"http": {"addr\x00": "x"}}, "addr\x00"),
    ],
)
def test_a_key_with_a_newline_is_named_quoted_on_one_line(document, key):
    """Hypothesis found it: an unknown key with a newline was echoed raw,
    splitting its error over two lines of the journal."""
    with pytest.raises(ConfigError) as raised:
        parse_config(dict(document, version=0.1))
    lines = [str(single) for single in raised.value.errors]
    assert all(line.isprintable() for line in lines), lines
    assert any(repr(key) in line for line in lines), lines


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(lambda text: text.encode()))
def test_any_file_gives_a_config_or_a_config_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("c") / "config.yml"
    path.write_bytes(data)
    try:
        load_config(str(path))
    except ConfigError:
        pass


@pytest.mark.parametrize(
    "text, key",
    [
        ("health:\n  http:\n  - {uri: 'http://[::1'}\n", "health.http[0].uri"),
        (
            "notifications:\n  endpoints:\n  - {name: a, url: 'https://[v6'}\n",
            "notifications.endpoints[0].url",
        ),
        ("proxy:\n  remoteurl: 'https://[::1/'\n", "proxy.remoteurl"),
        (
            "middleware:\n  storage:\n  - {name: redirect, options: {baseurl: 'http://[x'}}\n",
            "middleware.storage[0].options.baseurl",
        ),
    ],
)
def test_an_unparseable_url_is_a_config_error(text, key):
    """urlsplit raises ValueError for an unclosed IPv6 bracket; that is the
    operator's mistake, named, not a traceback."""
    lines, error = error_lines("version: 0.1\nstorage: {inmemory: }\n" + text)
    assert error.key == key and "Invalid IPv6 URL" in lines[0]


def test_keys_as_written_come_from_the_schema():
    """Reload messages name keys as the file spells them; the table is the
    schema's, so a new key needs no second entry anywhere."""
    from registryd.config import key_as_written

    assert key_as_written("storage.maintenance.read_only") == "storage.maintenance.readonly.enabled"
    assert key_as_written("http.debug.prometheus_enabled") == "http.debug.prometheus.enabled"
    assert key_as_written("auth.token.algorithms") == "auth.token.signingalgorithms"
    assert key_as_written("storage.redirect_base_url") == "middleware.storage"
    assert key_as_written("listing.max_tags") == "tags.maxtags"
    assert (
        key_as_written(
            "storage.parameters", parse_config({"version": 0.1, "storage": {"inmemory": None}})
        )
        == "storage.inmemory"
    )
