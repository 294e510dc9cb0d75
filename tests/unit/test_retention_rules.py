"""Retention rule evaluation (pure): hypothesis properties of which tags
and manifests go, checked against the rules as the README states them,
and the reasons reported."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registryd.lifecycle.retention import Keep, ManifestFacts, RetentionRule, TagFacts, evaluate
from tests.unit.test_config import error_for, minimal, parse

PROPERTIES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOW = 1_000_000.0
DAY = 86400.0

DIGESTS = [f"sha256:{index:064x}" for index in range(8)]
TAG_NAMES = ["latest", "v1", "v2", "release", "dev", "a", "b", "c"]


@st.composite
def repositories(draw):
    tags = []
    for name in draw(st.lists(st.sampled_from(TAG_NAMES), unique=True, max_size=8)):
        tags.append(
            TagFacts(
                name,
                draw(st.sampled_from(DIGESTS)),
                draw(st.none() | st.floats(NOW - 60 * DAY, NOW)),
                draw(st.none() | st.floats(NOW - 60 * DAY, NOW)),
                draw(st.none() | st.just("lifecycle.immutable[0]")),
            )
        )
    manifests = []
    for digest in draw(st.lists(st.sampled_from(DIGESTS), unique=True, max_size=8)):
        manifests.append(
            ManifestFacts(
                digest,
                draw(st.lists(st.sampled_from(DIGESTS), max_size=3)),
                draw(st.none() | st.sampled_from(DIGESTS)),
            )
        )
    return tags, manifests


KEEPS = st.builds(
    Keep,
    newest=st.none() | st.integers(1, 5),
    pushed_within=st.none() | st.sampled_from([DAY, 7 * DAY]),
    pulled_within=st.none() | st.sampled_from([DAY, 30 * DAY]),
    tags=st.lists(st.sampled_from(["v*", "release", "*"]), max_size=2),
)


@PROPERTIES
@given(repositories(), KEEPS, st.booleans())
def test_a_tag_goes_exactly_when_no_keep_clause_holds(repository, keep, delete_untagged):
    tags, manifests = repository
    rule = RetentionRule("**", keep, delete_untagged)
    tag_decisions, _ = evaluate(rule, tags, manifests, NOW)
    assert [d.name for d in tag_decisions] == sorted(t.tag for t in tags)
    newest_first = sorted(
        tags, key=lambda t: (-(t.pushed if t.pushed is not None else -1e18), t.tag)
    )
    for decision in tag_decisions:
        facts = next(t for t in tags if t.tag == decision.name)
        import fnmatch

        kept = bool(
            facts.protected
            or (keep.newest is not None and newest_first.index(facts) < keep.newest)
            or (
                keep.pushed_within is not None
                and facts.pushed is not None
                and NOW - facts.pushed <= keep.pushed_within
            )
            or (
                keep.pulled_within is not None
                and facts.pulled is not None
                and NOW - facts.pulled <= keep.pulled_within
            )
            or any(fnmatch.fnmatchcase(facts.tag, pattern) for pattern in keep.tags)
        )
        assert decision.delete == (not kept), (decision, facts)
        assert decision.digest == facts.digest


@PROPERTIES
@given(repositories(), KEEPS, st.booleans())
def test_manifests_that_stay_keep_their_children_and_referrers(repository, keep, delete_untagged):
    tags, manifests = repository
    rule = RetentionRule("**", keep, delete_untagged)
    tag_decisions, manifest_decisions = evaluate(rule, tags, manifests, NOW)
    assert [d.name for d in manifest_decisions] == sorted(m.digest for m in manifests)
    deleted = {d.name for d in manifest_decisions if d.delete}
    staying = {d.name for d in manifest_decisions if not d.delete}
    if not delete_untagged:
        assert not deleted
    tagged = {d.digest for d in tag_decisions if not d.delete}
    assert not deleted & tagged
    for facts in manifests:
        if facts.digest in staying:
            assert not deleted & set(facts.children)
        if facts.digest in deleted:
            assert facts.subject not in staying
            assert all(facts.digest not in m.children for m in manifests if m.digest in staying)
    # Deleted is everything else: untagged, no parent or subject staying.
    for digest in deleted:
        assert digest not in tagged


def test_reasons_say_which_clause_kept_a_tag_and_why_the_others_go():
    keep = Keep(newest=1, pulled_within=7 * DAY, tags=["release"])
    tags = [
        TagFacts("new", DIGESTS[0], NOW - 3600),
        TagFacts("pulled", DIGESTS[1], NOW - 30 * DAY, NOW - 2 * DAY),
        TagFacts("release", DIGESTS[2], NOW - 40 * DAY),
        TagFacts("old", DIGESTS[3], NOW - 50 * DAY, NOW - 20 * DAY),
        TagFacts("pinned", DIGESTS[4], NOW - 60 * DAY, None, "lifecycle.immutable[0] (...)"),
    ]
    manifests = [ManifestFacts(d) for d in DIGESTS[:5]] + [
        ManifestFacts(DIGESTS[5], subject=DIGESTS[0]),
        ManifestFacts(DIGESTS[6]),
    ]
    tag_decisions, manifest_decisions = evaluate(
        RetentionRule("**", keep, True), tags, manifests, NOW
    )
    assert [(d.name, d.delete, d.reason) for d in tag_decisions] == [
        ("new", False, "among the newest 1 (#1)"),
        ("old", True, "no keep clause holds: #4 newest, pushed 50d ago, pulled 20d ago"),
        ("pinned", False, "immutable by lifecycle.immutable[0] (...)"),
        ("pulled", False, "pulled within 7d (2d ago)"),
        ("release", False, "tag matches ['release']"),
    ]
    assert [(d.name, d.delete, d.reason) for d in manifest_decisions] == [
        (DIGESTS[0], False, "tagged new"),
        (DIGESTS[1], False, "tagged pulled"),
        (DIGESTS[2], False, "tagged release"),
        (DIGESTS[3], True, "untagged"),
        (DIGESTS[4], False, "tagged pinned"),
        (DIGESTS[5], False, f"referrer of {DIGESTS[0]}"),
        (DIGESTS[6], True, "untagged"),
    ]


def test_retention_config_parses():
    config = parse(
        minimal()
        + """\
lifecycle:
  retention:
    interval: 24h
    rules:
      - repository: "ci/**"
        keep: {newest: 10, pushedwithin: 720h, pulledwithin: 168h, tags: [latest, "v*"]}
        untagged: delete
      - repository: "**"
        keep: {newest: 100}
"""
    )
    retention = config.lifecycle.retention
    assert retention.interval == DAY
    assert retention.rules == (
        RetentionRule(
            "ci/**",
            Keep(10, 30 * DAY, 7 * DAY, ["latest", "v*"]),
            True,
            where="lifecycle.retention.rules[0]",
        ),
        RetentionRule("**", Keep(newest=100), False, where="lifecycle.retention.rules[1]"),
    )
    assert retention.rule_for("ci/app").where == "lifecycle.retention.rules[0]"
    assert retention.rule_for("team/app").where == "lifecycle.retention.rules[1]"
    assert parse(minimal()).lifecycle.retention.rules == ()


def test_bad_retention_settings_name_their_key():
    for body, key, message in [
        (
            "lifecycle: {retention: {rules: [{repository: a}]}}",
            "lifecycle.retention.rules[0].keep",
            "required",
        ),
        (
            "lifecycle: {retention: {rules: [{repository: a, keep: {}}]}}",
            "lifecycle.retention.rules[0].keep",
            "expected at least one of newest",
        ),
        (
            "lifecycle: {retention: {rules: [{repository: a, keep: {newest: 0}}]}}",
            "lifecycle.retention.rules[0].keep.newest",
            "must be at least 1, got 0",
        ),
        (
            "lifecycle: {retention: {rules: [{repository: a, keep: {newest: 1}, untagged: drop}]}}",
            "lifecycle.retention.rules[0].untagged",
            "expected one of keep, delete",
        ),
        ("lifecycle: {retention: {interval: 0.5s}}", "lifecycle.retention.interval", "at least 1s"),
        (
            "lifecycle: {retention: {rules: [{repository: a, keep: {pulledwithin: soon}}]}}",
            "lifecycle.retention.rules[0].keep.pulledwithin",
            "",
        ),
    ]:
        text = error_for(minimal() + body + "\n")
        assert text.startswith(f"{key}: ") and message in text, text
