"""registryd.notifications: events and envelopes, ignore rules, the retry
policy, and the journal that keeps undelivered events across restarts.

Delivery to a real receiver over HTTP is in
tests/integration/test_notifications.py.
"""

import json
import os

import pytest
import pytest_twisted

from registryd.config import EndpointConfig
from registryd.notifications.delivery import FailureTracker
from registryd.notifications.events import (
    BLOB_MEDIA_TYPE,
    EVENTS_MEDIA_TYPE,
    IgnoreRules,
    blob_target,
    build_event,
    encode_event,
    envelope,
    manifest_target,
)
from registryd.notifications.journal import (
    EVENTS_FILE,
    OFFSET_FILE,
    Journal,
    JournalLocked,
    read_journal,
)

DIGEST = "sha256:" + "ab" * 32


# --- events and envelopes -----------------------------------------------------


def test_event_has_distributions_fields():
    target = blob_target("library/test", DIGEST, 3, "http://r/v2/library/test/blobs/" + DIGEST)
    request = {"id": "r1", "addr": "127.0.0.1:5", "host": "r", "method": "GET", "useragent": "t/1"}
    source = {"addr": "node:5000", "instanceID": "i-1"}
    event = build_event("pull", target, request, "alice", source, event_id="e-1")
    assert event["id"] == "e-1"
    assert event["action"] == "pull"
    assert event["timestamp"].endswith("Z") and "T" in event["timestamp"]
    assert event["target"] == {
        "mediaType": BLOB_MEDIA_TYPE,
        "digest": DIGEST,
        "size": 3,
        "length": 3,
        "repository": "library/test",
        "url": "http://r/v2/library/test/blobs/" + DIGEST,
    }
    assert event["request"] == request
    assert event["actor"] == {"name": "alice"}
    assert event["source"] == source
    assert build_event("pull", target)["actor"] == {}  # anonymous, as Distribution encodes it
    assert build_event("pull", target)["id"] != build_event("pull", target)["id"]


def test_mount_target_names_the_source_repository():
    target = blob_target("b", DIGEST, 1, "u", from_repository="a")
    assert target["fromRepository"] == "a"
    assert "fromRepository" not in blob_target("b", DIGEST, 1, "u")


def test_manifest_target_with_tag_and_references():
    from registryd.digest import Digest
    from registryd.manifests import parse_manifest
    from registryd.storage.manifest_store import StoredManifest

    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": DIGEST,
                "size": 2,
            },
            "layers": [],
        }
    ).encode()
    manifest = parse_manifest(body, "application/vnd.oci.image.manifest.v1+json")
    stored = StoredManifest(Digest.of(body), manifest.media_type, body, manifest)
    target = manifest_target("repo", stored, "http://r/v2/repo/manifests/x", tag="v1")
    assert target["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert target["digest"] == str(Digest.of(body))
    assert target["size"] == target["length"] == len(body)
    assert target["tag"] == "v1"
    assert "references" not in target
    target = manifest_target("repo", stored, "u", include_references=True)
    assert "tag" not in target
    assert target["references"] == [
        {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": DIGEST, "size": 2}
    ]


def test_envelope_is_the_events_json():
    lines = [
        encode_event(build_event("push", {"digest": DIGEST})),
        encode_event(build_event("pull", {})),
    ]
    assert all(b"\n" not in line for line in lines)
    document = json.loads(envelope(lines))
    assert [event["action"] for event in document["events"]] == ["push", "pull"]
    assert json.loads(envelope([])) == {"events": []}
    assert EVENTS_MEDIA_TYPE == "application/vnd.docker.distribution.events.v1+json"


def test_encoded_event_is_one_line_even_with_newlines_in_values():
    line = encode_event(build_event("push", {"tag": "a\nb", "repository": "caf\u00e9"}))
    assert b"\n" not in line
    assert json.loads(line)["target"]["repository"] == "caf\u00e9"


# --- ignore rules -------------------------------------------------------------


@pytest.mark.parametrize(
    "media_types, actions, event, ignored",
    [
        ((), (), {"action": "pull", "target": {"mediaType": BLOB_MEDIA_TYPE}}, False),
        (
            (BLOB_MEDIA_TYPE,),
            (),
            {"action": "pull", "target": {"mediaType": BLOB_MEDIA_TYPE}},
            True,
        ),
        (
            (BLOB_MEDIA_TYPE,),
            (),
            {"action": "push", "target": {"mediaType": "application/x"}},
            False,
        ),
        ((), ("pull",), {"action": "pull", "target": {"mediaType": "application/x"}}, True),
        ((), ("pull",), {"action": "push", "target": {"mediaType": "application/x"}}, False),
        # either list matches (OR)
        (
            ("application/x",),
            ("delete",),
            {"action": "push", "target": {"mediaType": "application/x"}},
            True,
        ),
        (("application/x",), ("delete",), {"action": "delete", "target": {"digest": DIGEST}}, True),
        # delete targets have no media type: media type rules never match them
        ((BLOB_MEDIA_TYPE,), (), {"action": "delete", "target": {"digest": DIGEST}}, False),
        # Distribution's "only pushes" recipe
        (
            (),
            ("pull", "delete", "mount"),
            {"action": "push", "target": {"mediaType": BLOB_MEDIA_TYPE}},
            False,
        ),
        (
            (),
            ("pull", "delete", "mount"),
            {"action": "mount", "target": {"mediaType": BLOB_MEDIA_TYPE}},
            True,
        ),
    ],
)
def test_ignore_rules(media_types, actions, event, ignored):
    assert IgnoreRules(media_types, actions).ignores(event) is ignored


# --- threshold and backoff ------------------------------------------------------


def test_failures_below_the_threshold_retry_at_once():
    tracker = FailureTracker(threshold=3, backoff=10.0)
    assert tracker.delay(now=100.0) == 0
    assert tracker.record_failure(100.0) is False
    assert tracker.delay(100.0) == 0
    assert tracker.record_failure(101.0) is False
    assert tracker.delay(101.0) == 0


def test_reaching_the_threshold_backs_off_from_the_last_failure():
    tracker = FailureTracker(threshold=2, backoff=10.0)
    tracker.record_failure(100.0)
    assert tracker.record_failure(103.0) is True  # the moment to log it, once
    assert tracker.delay(103.0) == 10.0
    assert tracker.delay(110.0) == 3.0
    assert tracker.delay(113.0) == 0
    assert tracker.record_failure(113.5) is False  # still backed off, not logged again
    assert tracker.delay(114.0) == 9.5


def test_a_success_resets_the_failures():
    tracker = FailureTracker(threshold=1, backoff=5.0)
    tracker.record_failure(0.0)
    assert tracker.delay(1.0) == 4.0
    tracker.record_success()
    assert tracker.delay(1.0) == 0
    assert tracker.recent == 0


# --- the journal ------------------------------------------------------------------


def read(path):
    with open(path, "rb") as stream:
        return stream.read()


@pytest_twisted.ensureDeferred
async def test_journal_appends_lines_and_reloads_undelivered_ones(tmp_path):
    journal = Journal(str(tmp_path))
    ends = [journal.append(encode_event({"n": n})) for n in range(3)]
    assert ends == sorted(ends) and ends[-1] == journal.size
    journal.ack(ends[0])
    await journal.close()
    assert read(tmp_path / EVENTS_FILE).count(b"\n") == 3
    assert int(read(tmp_path / OFFSET_FILE)) == ends[0]
    again = Journal(str(tmp_path))
    assert [json.loads(line)["n"] for line, _ in again.loaded] == [1, 2]
    assert [end for _, end in again.loaded] == ends[1:]
    await again.close()


@pytest_twisted.ensureDeferred
async def test_journal_empties_itself_when_everything_is_delivered(tmp_path):
    journal = Journal(str(tmp_path))
    first = journal.append(b'{"n":1}')
    second = journal.append(b'{"n":2}')
    journal.ack(first)
    journal.ack(second)
    assert journal.size == 0
    third = journal.append(b'{"n":3}')  # counted from the start of the emptied file
    assert third == len(b'{"n":3}\n')
    await journal.close()
    assert read(tmp_path / EVENTS_FILE) == b'{"n":3}\n'
    assert read(tmp_path / OFFSET_FILE) == b"0"
    again = Journal(str(tmp_path))
    assert again.loaded == [(b'{"n":3}', third)]
    await again.close()


def test_a_torn_last_line_is_dropped(tmp_path):
    (tmp_path / EVENTS_FILE).write_bytes(b'{"n":1}\n{"n":2}\n{"n":')
    entries, size = read_journal(str(tmp_path))
    assert [line for line, _ in entries] == [b'{"n":1}', b'{"n":2}']
    assert size == len(b'{"n":1}\n{"n":2}\n')
    assert read(tmp_path / EVENTS_FILE) == b'{"n":1}\n{"n":2}\n'  # appends go on cleanly


def test_damaged_lines_are_skipped_and_a_stale_offset_is_ignored(tmp_path):
    (tmp_path / EVENTS_FILE).write_bytes(b'{"n":1}\nnot json\n{"n":3}\n')
    (tmp_path / OFFSET_FILE).write_bytes(b"9999")  # beyond the file: it was emptied since
    entries, _ = read_journal(str(tmp_path))
    assert [line for line, _ in entries] == [b'{"n":1}', b'{"n":3}']


def test_an_offset_inside_a_line_skips_to_the_next_line(tmp_path):
    (tmp_path / EVENTS_FILE).write_bytes(b'{"n":1}\n{"n":2}\n')
    (tmp_path / OFFSET_FILE).write_bytes(b"3")
    entries, _ = read_journal(str(tmp_path))
    assert [line for line, _ in entries] == [b'{"n":2}']


def test_no_journal_yet(tmp_path):
    assert read_journal(str(tmp_path / "missing")) == ([], 0)


@pytest_twisted.ensureDeferred
async def test_a_journal_is_used_by_one_process_at_a_time(tmp_path):
    journal = Journal(str(tmp_path))
    with pytest.raises(JournalLocked) as info:
        Journal(str(tmp_path))
    assert str(tmp_path) in str(info.value)
    await journal.close()
    await Journal(str(tmp_path)).close()  # released


@pytest_twisted.ensureDeferred
async def test_journal_in_another_process_is_refused(tmp_path):
    """flock is per open file, so the same check holds across processes."""
    import subprocess
    import sys

    journal = Journal(str(tmp_path))
    code = (
        "import sys; from registryd.notifications.journal import Journal, JournalLocked\n"
        "try:\n    Journal(sys.argv[1])\nexcept JournalLocked:\n    sys.exit(3)\n"
    )
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=here)
    assert result.returncode == 3
    await journal.close()


@pytest_twisted.ensureDeferred
async def test_many_appends_are_coalesced_and_all_written(tmp_path):
    journal = Journal(str(tmp_path))
    lines = [encode_event({"n": n, "pad": "x" * 100}) for n in range(500)]
    for line in lines:
        journal.append(line)
    await journal.idle()
    assert read(tmp_path / EVENTS_FILE) == b"".join(line + b"\n" for line in lines)
    await journal.close()


def test_endpoint_config_defaults_are_distributions():
    endpoint = EndpointConfig(name="a", url="http://h/")
    assert (endpoint.timeout, endpoint.threshold, endpoint.backoff) == (1.0, 10, 1.0)
