"""The lifecycle section: immutable tag rules parsed with errors naming
their key, hostile values refused as ConfigErrors only (hypothesis), and
the rules' pattern matching."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registryd.config import ConfigError, parse_config
from registryd.lifecycle.immutable import ImmutableRule, ImmutableTags
from tests.unit.test_config import error_for, minimal, parse

PROPERTIES = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_no_section_means_no_rules():
    assert parse(minimal()).lifecycle.immutable == ImmutableTags()
    assert not parse(minimal()).lifecycle.immutable


def test_immutable_rules_parse_in_order_and_know_where_they_are_written():
    config = parse(
        minimal()
        + """\
lifecycle:
  immutable:
    - repository: "team/**"
      tags: ["v*", release]
    - {repository: base, tags: ["*"]}
"""
    )
    rules = config.lifecycle.immutable.rules
    assert rules == (
        ImmutableRule("team/**", ["v*", "release"], where="lifecycle.immutable[0]"),
        ImmutableRule("base", ["*"], where="lifecycle.immutable[1]"),
    )
    protection = config.lifecycle.immutable
    assert protection.rule_for("team/a/b", "v1.2") is rules[0]
    assert protection.rule_for("base", "anything") is rules[1]
    assert protection.rule_for("team/app", "latest") is None


@pytest.mark.parametrize(
    ("body", "key", "message"),
    [
        ("lifecycle: []", "lifecycle", "expected a mapping"),
        ("lifecycle: {immutables: []}", "lifecycle.immutables", "unknown key"),
        (
            "lifecycle: {immutable: {repository: a}}",
            "lifecycle.immutable",
            "expected a list of rules",
        ),
        ("lifecycle: {immutable: [{tags: [v1]}]}", "lifecycle.immutable[0].repository", "required"),
        ("lifecycle: {immutable: [{repository: a}]}", "lifecycle.immutable[0].tags", "required"),
        (
            "lifecycle: {immutable: [{repository: a, tags: []}]}",
            "lifecycle.immutable[0].tags",
            "expected a list of tag patterns",
        ),
        (
            "lifecycle: {immutable: [{repository: A, tags: [v1]}]}",
            "lifecycle.immutable[0].repository",
            "expected a repository name pattern",
        ),
        (
            "lifecycle: {immutable: [{repository: a, tags: [v1, 'v/1']}]}",
            "lifecycle.immutable[0].tags[1]",
            "expected a tag pattern",
        ),
        (
            "lifecycle: {immutable: [{repository: a, tags: [5]}]}",
            "lifecycle.immutable[0].tags[0]",
            "expected a string",
        ),
        (
            "lifecycle: {immutable: [{repository: a, tags: [v1], keep: 3}]}",
            "lifecycle.immutable[0].keep",
            "unknown key",
        ),
    ],
)
def test_bad_values_name_their_key(body, key, message):
    text = error_for(minimal() + body + "\n")
    assert text.startswith(f"{key}: ") and message in text and "\n" not in text


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["repository", "tags", "immutable", "x"]) | st.text(max_size=5),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@PROPERTIES
@given(JSONISH)
def test_any_lifecycle_value_parses_or_is_a_config_error(value):
    document = {"version": "0.1", "storage": {"inmemory": None}, "lifecycle": value}
    try:
        parse_config(document)
    except ConfigError as error:  # naming the key (a key with a newline in it spans lines)
        assert str(error).startswith("lifecycle"), str(error)


@PROPERTIES
@given(
    st.dictionaries(
        st.just("immutable"),
        st.lists(
            st.fixed_dictionaries(
                {
                    "repository": st.text(max_size=30),
                    "tags": st.lists(st.text(max_size=30), max_size=3),
                }
            ),
            max_size=3,
        ),
    )
)
def test_hostile_rule_text_parses_or_is_a_config_error(value):
    document = {"version": "0.1", "storage": {"inmemory": None}, "lifecycle": value}
    try:
        parse_config(document)
    except ConfigError:
        pass


COMPONENT = st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True)
NAME = st.lists(COMPONENT, min_size=1, max_size=4).map("/".join)
TAG = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)


@PROPERTIES
@given(NAME, TAG, NAME, TAG)
def test_a_pattern_without_wildcards_matches_only_itself(
    repository, tag, other_repository, other_tag
):
    rule = ImmutableRule(repository, [tag])
    assert rule.protects(repository, tag)
    assert rule.protects(other_repository, other_tag) == (
        other_repository == repository and other_tag == tag
    )


@PROPERTIES
@given(COMPONENT, NAME, TAG)
def test_one_star_stays_in_a_component_two_cross_them(top, below, tag):
    assert ImmutableRule(f"{top}/**", ["*"]).protects(f"{top}/{below}", tag)
    assert ImmutableRule(f"{top}/*", ["*"]).protects(f"{top}/{below}", tag) == ("/" not in below)
    assert not ImmutableRule(f"{top}/**", ["*"]).protects(top, tag)


def test_quotas_and_the_global_quota_parse():
    from registryd.lifecycle.quotas import Quota

    config = parse(
        minimal()
        + """\
lifecycle:
  quota: {bytes: 2TiB}
  quotas:
    - {repository: "team/**", bytes: 50GiB, repositories: 100}
    - {repository: "ci/*", repositories: 5}
    - {repository: small, bytes: 1.5MB}
"""
    )
    assert config.lifecycle.quotas == (
        Quota("team/**", bytes=50 * 1024**3, repositories=100, where="lifecycle.quotas[0]"),
        Quota("ci/*", repositories=5, where="lifecycle.quotas[1]"),
        Quota("small", bytes=1_500_000, where="lifecycle.quotas[2]"),
        Quota("**", bytes=2 * 1024**4, where="lifecycle.quota"),
    )


@pytest.mark.parametrize(
    ("body", "key", "message"),
    [
        ("lifecycle: {quotas: {bytes: 1}}", "lifecycle.quotas", "expected a list of quotas"),
        ("lifecycle: {quotas: [{bytes: 1}]}", "lifecycle.quotas[0].repository", "required"),
        (
            "lifecycle: {quotas: [{repository: a}]}",
            "lifecycle.quotas[0]",
            "expected bytes, repositories or both",
        ),
        (
            "lifecycle: {quotas: [{repository: a, bytes: 5XB}]}",
            "lifecycle.quotas[0].bytes",
            "expected a size such as 500MB or 50GiB",
        ),
        (
            "lifecycle: {quotas: [{repository: a, bytes: -1}]}",
            "lifecycle.quotas[0].bytes",
            "0 or more",
        ),
        (
            "lifecycle: {quotas: [{repository: a, repositories: 0}]}",
            "lifecycle.quotas[0].repositories",
            "must be at least 1, got 0",
        ),
        (
            "lifecycle: {quota: {repository: a, bytes: 1}}",
            "lifecycle.quota.repository",
            "unknown key",
        ),
        ("lifecycle: {quota: {bytes: true}}", "lifecycle.quota.bytes", "expected a size"),
    ],
)
def test_bad_quotas_name_their_key(body, key, message):
    text = error_for(minimal() + body + "\n")
    assert text.startswith(f"{key}: ") and message in text and "\n" not in text


SIZE = r"([0-9]{1,15})(\.([0-9]{1,6}))? ?([KMGTPkmgtp][Ii]?[Bb]|[Bb])?"


@PROPERTIES
@given(st.text(max_size=30) | st.from_regex(SIZE, fullmatch=True))
def test_any_size_text_is_bytes_or_a_config_error(text):
    from registryd.config.lifecycle import parse_size

    try:
        size = parse_size(text, "lifecycle.quota.bytes")
    except ConfigError as error:
        assert error.key == "lifecycle.quota.bytes"
        return
    import re

    assert re.fullmatch(SIZE, text.strip())
    assert isinstance(size, int) and size >= 0
