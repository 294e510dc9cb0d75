"""Hypothesis properties of every parser of client and operator input.

One group per parser: repository names, tags, references, digests, upload
ids, ``Range``, ``Content-Range``, media types, numbers in headers and
queries, durations, scopes.  Each group checks that the parser

(a) never raises anything but its typed error, whatever the text;
(b) accepts exactly the language of the spec's grammar: text generated
    from the grammar (``from_regex(..., fullmatch=True)``) is accepted, and
    arbitrary text it accepts fullmatches the grammar, which is written out
    here from the spec, not imported from the code under test;
(c) round-trips where a formatter exists.

The grammars are the OCI distribution spec's (names, tags, digests), RFC
9110's byte ranges, RFC 6838's media type names, Go's time.ParseDuration and
Distribution's resource scope grammar.
"""

import re
import uuid

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from twisted.internet import defer

from registryd import errors
from registryd.auth.scope import Access, ScopeInvalid, parse_scope
from registryd.config import ConfigError
from registryd.config import parse_duration as _duration
from registryd.digest import Digest
from registryd.http.api.base import MAX_DECIMAL, decimal
from registryd.http.api.blobs import parse_range
from registryd.http.api.uploads import parse_content_range
from registryd.manifests.fields import get_media_type
from registryd.manifests.mediatypes import normalize
from registryd.names import (
    check_repository_name,
    check_upload_id,
    is_valid_tag,
    new_upload_id,
    valid_tags,
)
from registryd.storage.drivers.memory import InMemoryDriver
from registryd.storage.manifest_store import check_tag
from registryd.storage.registry import Registry

# Moderate counts keep the module to seconds on a busy machine; no deadline,
# since a loaded machine is slow, not wrong.
PROPERTIES = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

# The spec's grammars, as the spec writes them.
NAME = r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*"
TAG = r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}"
DIGEST = r"[a-z0-9]+([+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+"
ENCODED = {"sha256": r"[a-f0-9]{64}", "sha512": r"[a-f0-9]{128}"}
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
RESTRICTED_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"  # RFC 6838 4.2
MEDIA_TYPE = rf"{RESTRICTED_NAME}/{RESTRICTED_NAME}"
CHUNK_RANGE = r"[0-9]+-[0-9]+"  # OCI spec: Content-Range of a chunk


def bounded(grammar):
    """``grammar`` with its repeats bounded (``*`` at most 3 times, ``+`` at
    most 8), for generating: from_regex of nested unbounded repeats is slow
    and yields names mostly over the 255-character limit.  A sublanguage,
    so every string generated is in the grammar (checked where used)."""
    return re.sub(
        r"(?<![\\\[])([*+])(?![^\[]*\])",
        lambda m: "{0,3}" if m.group(1) == "*" else "{1,8}",
        grammar,
    )


#: Text that is mostly near the grammars: their alphabets, separators,
#: whitespace, controls and some of everything else.
nearby = st.text(
    alphabet=st.sampled_from("abz09AZ._-_/:+=*\n\r\t \x00\x7f\u00b2\u0661\u00b5\u03bcsmhnu(),;")
    | st.characters(),
    max_size=80,
)
anything = nearby | st.text(max_size=80)


def registered_digests():
    """``sha256:`` and 64, ``sha512:`` and 128 lowercase hex digits: the
    ENCODED grammars, generated directly (from_regex of 128 repeats is slow)."""
    return st.sampled_from([("sha256", 64), ("sha512", 128)]).flatmap(
        lambda form: st.text("0123456789abcdef", min_size=form[1], max_size=form[1]).map(
            lambda hex: f"{form[0]}:{hex}"
        )
    )


def outcome(function, *args):
    """``function(*args)``'s result, or the exception it raised."""
    try:
        return function(*args)
    except Exception as error:  # noqa: BLE001 - the property inspects it
        return error


def accepts_within(grammar, parser, text, error):
    """(a) and (b) for a validator that returns its input: ``parser(text)``
    returns ``text`` or raises ``error``, nothing else; when it returns,
    ``grammar`` fullmatches ``text``.  Whether it accepted."""
    result = outcome(parser, text)
    if isinstance(result, Exception):
        assert isinstance(result, error), repr(result)
        return False
    assert result == text and re.fullmatch(grammar, text)
    return True


def with_trailing_newline(strategy):
    return strategy.map(lambda text: text + "\n")


# --- repository names --------------------------------------------------------


@PROPERTIES
@given(anything)
def test_name_parser_raises_only_name_invalid_and_accepts_only_the_grammar(text):
    if accepts_within(NAME, check_repository_name, text, errors.NameInvalid):
        assert len(text) <= 255


@PROPERTIES
@given(st.from_regex(bounded(NAME), fullmatch=True).filter(lambda name: len(name) <= 255))
def test_names_of_the_grammar_are_accepted(name):
    assert re.fullmatch(NAME, name)
    assert check_repository_name(name) == name


@PROPERTIES
@given(with_trailing_newline(st.from_regex(bounded(NAME), fullmatch=True)))
def test_a_name_with_a_trailing_newline_is_refused(name):
    with pytest.raises(errors.NameInvalid):
        check_repository_name(name)


# --- tags --------------------------------------------------------------------


@PROPERTIES
@given(anything)
def test_tag_parser_raises_only_tag_invalid_and_accepts_only_the_grammar(text):
    assert accepts_within(TAG, check_tag, text, errors.TagInvalid) == is_valid_tag(text)


@PROPERTIES
@given(st.from_regex(TAG, fullmatch=True))
def test_tags_of_the_grammar_are_accepted_and_not_with_a_newline(tag):
    assert check_tag(tag) == tag
    with pytest.raises(errors.TagInvalid):
        check_tag(tag + "\n")


@PROPERTIES
@given(st.lists(st.from_regex(TAG, fullmatch=True) | anything, max_size=20))
def test_valid_tags_keeps_exactly_the_valid_ones_in_order(names):
    assert valid_tags(names) == [name for name in names if re.fullmatch(TAG, name)]


# --- references (tag or digest) ----------------------------------------------


def resolve_now(reference):
    """ManifestStore.resolve on an empty in-memory registry (whose driver
    answers at once): the exception it raises."""
    store = Registry(InMemoryDriver()).repository("img/app").manifests
    result = defer.ensureDeferred(store.resolve(reference))
    failures = []
    result.addErrback(failures.append)
    assert failures, "an empty registry resolved a reference"
    return failures[0].value


@PROPERTIES
@given(anything)
def test_reference_parser_raises_only_its_typed_errors(text):
    error = resolve_now(text)
    assert isinstance(error, (errors.ManifestUnknown, errors.TagInvalid, errors.DigestInvalid))
    if isinstance(error, errors.ManifestUnknown):  # accepted as a reference
        assert re.fullmatch(TAG, text) or re.fullmatch(DIGEST, text)


@PROPERTIES
@given(st.from_regex(TAG, fullmatch=True) | registered_digests())
def test_references_of_the_grammar_are_looked_up(reference):
    assert isinstance(resolve_now(reference), errors.ManifestUnknown)
    assert isinstance(resolve_now(reference + "\n"), (errors.TagInvalid, errors.DigestInvalid))


# --- digests -----------------------------------------------------------------


@PROPERTIES
@given(anything | st.binary(max_size=200))
def test_digest_parser_raises_only_digest_invalid_and_accepts_only_the_grammar(text):
    result = outcome(Digest.parse, text)
    if isinstance(result, Exception):
        assert isinstance(result, errors.DigestInvalid)
        return
    if isinstance(text, bytes):
        text = text.decode("ascii")
    assert re.fullmatch(DIGEST, text)
    algorithm, encoded = text.split(":", 1)
    assert re.fullmatch(ENCODED[algorithm], encoded)
    assert str(result) == text  # (c) round trip


@PROPERTIES
@given(registered_digests())
def test_registered_digests_round_trip_and_variants_are_refused(text):
    assert str(Digest.parse(text)) == text
    assert str(Digest.parse(text.encode("ascii"))) == text
    algorithm, encoded = text.split(":")
    for variant in (
        text + "\n",
        text[:-1],
        text + "0",
        f"{algorithm}:{encoded.upper()}",
        "\n" + text,
    ):
        if variant != text:
            with pytest.raises(errors.DigestInvalid):
                Digest.parse(variant)


@PROPERTIES
@given(st.from_regex(bounded(DIGEST), fullmatch=True))
def test_digests_of_the_grammar_are_parsed_or_refused_as_unsupported(text):
    result = outcome(Digest.parse, text)
    assert isinstance(result, (Digest, errors.DigestInvalid))
    algorithm = text.split(":", 1)[0]
    assert isinstance(result, Digest) == (
        algorithm in ENCODED and bool(re.fullmatch(ENCODED[algorithm], text.split(":", 1)[1]))
    )


# --- upload ids --------------------------------------------------------------


@PROPERTIES
@given(anything | st.uuids().map(str))
def test_upload_id_parser_raises_only_blob_upload_invalid(text):
    if not accepts_within(UUID, check_upload_id, text, errors.BlobUploadInvalid):
        assert outcome(check_upload_id, text).status == 400


@PROPERTIES
@given(st.uuids())
def test_issued_upload_ids_are_accepted_and_not_with_a_newline(value):
    assert check_upload_id(str(value)) == str(value)
    with pytest.raises(errors.BlobUploadInvalid):
        check_upload_id(f"{value}\n")


def test_new_upload_ids_are_accepted():
    for _ in range(20):
        upload_id = new_upload_id()
        assert check_upload_id(upload_id) == upload_id == str(uuid.UUID(upload_id))


# --- Range (blob GET) ----------------------------------------------------------

sizes = st.integers(min_value=0, max_value=10**6)


@PROPERTIES
@given(anything | st.from_regex(r"[ \t]*[Bb][Yy][Tt][Ee][Ss][ \t]*=.*", fullmatch=True), sizes)
def test_range_parser_raises_only_range_not_satisfiable_and_stays_inside_the_blob(header, size):
    """Anything: 416 (with ``Content-Range`` only when the ranges lie
    beyond the blob), the whole blob, or one range inside it, which only
    a ``bytes`` range gives."""
    result = outcome(parse_range, header, size)
    if isinstance(result, Exception):
        assert isinstance(result, errors.RangeNotSatisfiable)
        assert result.headers in ({"Content-Range": f"bytes */{size}"}, {})
    elif result is not None:
        first, last = result
        assert 0 <= first <= last < size
        assert re.match(r"[ \t]*bytes[ \t]*=", header, re.I)


@PROPERTIES
@given(
    st.from_regex(r"[a-zA-Z][a-zA-Z0-9]{0,10}", fullmatch=True).filter(
        lambda unit: unit.lower() != "bytes"
    ),
    anything,
    sizes,
)
def test_a_range_of_another_unit_is_ignored(unit, rest, size):
    """RFC 9110 section 14.2: a unit the server does not understand MUST
    be ignored: the whole blob."""
    assert parse_range(f"{unit}={rest}", size) is None


@PROPERTIES
@given(
    st.from_regex(
        r"[0-9]*[^0-9, \t-][^,]*|[0-9]+-[0-9]+-[0-9]*|-|-[0-9]*[^0-9, \t][^,]*", fullmatch=True
    ),
    sizes,
)
def test_a_syntactically_invalid_byte_range_is_refused_as_distribution_does(spec, size):
    """Go's parseRange (Distribution serves blobs with http.ServeContent)
    answers 416 "invalid range", without ``Content-Range``, to a ``bytes``
    range that is not first-last, first- or -suffix."""
    with pytest.raises(errors.RangeNotSatisfiable) as raised:
        parse_range(f"bytes={spec}", size)
    assert raised.value.headers == {}


@PROPERTIES
@given(
    sizes,
    st.integers(min_value=0, max_value=2 * 10**6),
    st.integers(min_value=0, max_value=2 * 10**6),
)
def test_range_of_the_grammar_round_trips(size, first, last):
    """``bytes=first-last`` gives (first, min(last, size - 1)) inside the
    blob, else 416; ``bytes=first-`` the rest; ``bytes=-n`` the last n."""
    header = f"bytes={first}-{last}"
    if last < first:
        with pytest.raises(errors.RangeNotSatisfiable) as raised:
            parse_range(header, size)
        assert raised.value.headers == {}  # invalid, as Go's parseRange says
    elif first >= size:
        with pytest.raises(errors.RangeNotSatisfiable) as raised:
            parse_range(header, size)
        assert raised.value.headers == {"Content-Range": f"bytes */{size}"}
    else:
        assert parse_range(header, size) == (first, min(last, size - 1))
    if first < size:
        assert parse_range(f"bytes={first}-", size) == (first, size - 1)
    if first > 0 and size > 0:
        assert parse_range(f"bytes=-{first}", size) == (max(size - first, 0), size - 1)


def test_range_numbers_beyond_int64_are_not_satisfiable():
    for header in ("bytes=0-" + "9" * 5000, "bytes=" + "9" * 5000 + "-", "bytes=-" + "9" * 30):
        with pytest.raises(errors.RangeNotSatisfiable):
            parse_range(header, 100)


# --- Content-Range (upload PATCH/PUT) ----------------------------------------


@PROPERTIES
@given(anything | st.from_regex(CHUNK_RANGE, fullmatch=True))
def test_content_range_parser_raises_only_range_invalid(header):
    result = outcome(parse_content_range, header)
    if isinstance(result, Exception):
        assert isinstance(result, errors.RangeInvalid)
    else:
        start, end = result
        assert 0 <= start <= end <= MAX_DECIMAL
        # The spec's form, optionally with RFC 9110's unit and length.
        assert re.fullmatch(rf"(bytes[ =])?{CHUNK_RANGE}(/([0-9]+|\*))?", header.strip())


@PROPERTIES
@given(
    st.integers(min_value=0, max_value=MAX_DECIMAL), st.integers(min_value=0, max_value=MAX_DECIMAL)
)
def test_content_range_of_the_grammar_round_trips(start, end):
    header = f"{start}-{end}"
    if end < start:
        with pytest.raises(errors.RangeInvalid):
            parse_content_range(header)
    else:
        assert parse_content_range(header) == (start, end)
        assert parse_content_range(f"bytes {start}-{end}/*") == (start, end)
        with pytest.raises(errors.RangeInvalid):
            parse_content_range(header + "\n0")


# --- media types -------------------------------------------------------------


@PROPERTIES
@given(anything)
def test_media_type_parser_raises_only_manifest_invalid(text):
    def media_type(value):
        return get_media_type({"mediaType": value}, "mediaType", "", True)

    accepts_within(MEDIA_TYPE, media_type, text, errors.ManifestInvalid)


@PROPERTIES
@given(st.from_regex(MEDIA_TYPE, fullmatch=True))
def test_media_types_of_the_grammar_are_accepted_and_not_with_a_newline(text):
    assert get_media_type({"mediaType": text}, "mediaType", "", True) == text
    with pytest.raises(errors.ManifestInvalid):
        get_media_type({"mediaType": text + "\n"}, "mediaType", "", True)


@PROPERTIES
@given(anything | st.binary(max_size=80))
def test_content_type_normalisation_never_raises_and_is_idempotent(value):
    bare = normalize(value)
    assert bare is None or (bare == bare.strip().lower() and ";" not in bare and bare)
    assert normalize(bare) == bare


@PROPERTIES
@given(st.from_regex(MEDIA_TYPE, fullmatch=True), st.sampled_from(["", "; charset=utf-8", " ;q=1"]))
def test_content_type_parameters_are_dropped(media_type, parameters):
    assert normalize(media_type + parameters) == media_type.lower()


# --- numbers in headers and queries (sizes, n, ranges) -----------------------


@PROPERTIES
@given(anything | st.integers(min_value=0, max_value=2**70).map(str))
def test_decimal_accepts_exactly_ascii_digits_up_to_int64(text):
    value = decimal(text)
    if value is None:
        assert not re.fullmatch(r"[0-9]+", text) or int(text) > MAX_DECIMAL
    else:
        assert re.fullmatch(r"[0-9]+", text) and value == int(text) <= MAX_DECIMAL


@PROPERTIES
@given(st.integers(min_value=0, max_value=MAX_DECIMAL))
def test_decimal_round_trips(number):
    assert decimal(str(number)) == number


def test_decimal_refuses_what_int_would_mis_read_or_fail_on():
    for text in ("\u00b2", "\u0661", "1_000", "+1", " 1", "1\n", "9" * 5000, "", "0x10"):
        assert decimal(text) is None, text
    assert decimal("0" * 5000 + "7") == 7


# --- durations (configuration) -----------------------------------------------

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
# Go's time.ParseDuration, unsigned: ([0-9]+(\.[0-9]*)?|\.[0-9]+)unit, repeated.
GO_DURATION = r"(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h))+"


@PROPERTIES
@given(anything | st.integers() | st.floats() | st.none() | st.booleans())
def test_duration_parser_raises_only_config_error(value):
    result = outcome(_duration, value, "http.draintimeout")
    if isinstance(result, Exception):
        assert isinstance(result, ConfigError)
        assert "\n" not in str(result)  # one line
    else:
        assert 0 <= result <= (2**63 - 1) / 1e9
        if isinstance(value, str):
            assert value.strip() == "0" or re.fullmatch(GO_DURATION, value.strip())


@PROPERTIES
@given(st.from_regex(bounded(GO_DURATION), fullmatch=True))
def test_durations_of_the_grammar_are_accepted_with_their_value(text):
    expected = sum(
        float(number) * _UNITS[unit]
        for number, unit in re.findall(r"([0-9.]+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)", text)
    )
    assume(expected <= (2**63 - 1) / 1e9)
    assert _duration(text, "x") == pytest.approx(expected, rel=1e-9)


@PROPERTIES
@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(sorted(_UNITS)))
def test_durations_round_trip(number, unit):
    assert _duration(f"{number}{unit}", "x") == pytest.approx(number * _UNITS[unit], rel=1e-12)


def test_durations_beyond_go_are_refused():
    for value in ("9" * 400 + "h", "2562048h", 2**63, 10**400):
        with pytest.raises(ConfigError, match="out of range"):
            _duration(value, "x")


# --- scopes (token requests) -------------------------------------------------

# spec-auth-scope.md; the separator /[-]*/ is written -+ (same language) so
# that checking arbitrary text does not backtrack exponentially.
HOST_COMPONENT = r"([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
COMPONENT = r"[a-z0-9]+(([_.]|__|-+)[a-z0-9]+)*"
RESOURCE_NAME = rf"({HOST_COMPONENT}(\.{HOST_COMPONENT})*(:[0-9]+)?/)?{COMPONENT}(/{COMPONENT})*"
RESOURCE_TYPE = r"[a-z0-9]+(\([a-z0-9]+\))?"
ACTIONS = r"([a-z]*|\*)(,([a-z]*|\*))*"
SCOPE = rf"{RESOURCE_TYPE}:{RESOURCE_NAME}:{ACTIONS}"


@PROPERTIES
@given(anything | st.from_regex(bounded(SCOPE), fullmatch=True).map(lambda s: s + "\n"))
def test_scope_parser_raises_only_scope_invalid_and_accepts_only_the_grammar(text):
    result = outcome(parse_scope, text)
    if isinstance(result, Exception):
        assert isinstance(result, ScopeInvalid)
    else:
        assert re.fullmatch(SCOPE, text)


@PROPERTIES
@given(st.from_regex(bounded(SCOPE), fullmatch=True))
def test_scopes_of_the_grammar_are_accepted(text):
    assert re.fullmatch(SCOPE, text)
    access = parse_scope(text)
    kind, _ = text.split(":", 1)
    assert access.type == kind.split("(", 1)[0]
    assert access.name == text.split(":", 1)[1].rsplit(":", 1)[0]


@PROPERTIES
@given(
    st.from_regex(bounded(RESOURCE_NAME), fullmatch=True),
    st.sets(st.sampled_from(["pull", "push", "delete", "*"]), min_size=1),
)
def test_scopes_round_trip(name, actions):
    access = Access("repository", name, actions)
    assert parse_scope(access.scope()) == access
