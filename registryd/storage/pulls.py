"""When a repository's tags and manifests were last pulled, kept in
storage so every node sees (and adds to) the same record.

One small JSON file per repository, under its ``_registryd`` directory:
``{"tags": {tag: time}, "manifests": {digest: time}}`` (POSIX seconds).
Several nodes (and worker processes) write it, so a write never replaces
what another wrote: ``PullRecords.merge`` reads the record, takes the
latest time of each entry, writes, and reads back; if another writer's
copy replaced its own meanwhile (an entry older than what it wrote), it
merges again.  Times only grow, so any order of merges ends in the same
record.  Pulls are counted in memory and written in batches
(``registryd.lifecycle.pulls``), never while a client waits.

Nodes that share state (Redis) flush their pulls there instead
(``registryd.lifecycle.shared_pulls``), and one node at a time merges them
into this record; :meth:`PullRecords.read` gives the latest of both.  A
deleted tag's pulls are removed from both (:meth:`PullRecords.forget_tags`):
a tag pushed again under the same name starts with no pulls.
"""

import json

from registryd.shared.errors import SharedStateUnavailable
from registryd.storage import _paths as paths
from registryd.storage.errors import PathNotFound, translate_storage_errors

#: Merge attempts before giving up on one flush (the entries stay pending).
MERGE_ATTEMPTS = 5
#: The largest record read: beyond it the record is treated as empty and
#: rewritten (a repository with 100 000 tags fits easily).
MAX_RECORD_BYTES = 16 * 1024 * 1024


def _times(value):
    """The ``{name: time}`` entries of a decoded record section, dropping
    anything that is not a name with a number."""
    if not isinstance(value, dict):
        return {}
    return {
        key: float(time)
        for key, time in value.items()
        if isinstance(key, str) and isinstance(time, (int, float)) and not isinstance(time, bool)
    }


class PullRecords:
    """The pull record of repository ``name``."""

    def __init__(self, name, driver, shared=None):
        """``shared``: the nodes' shared pull times
        (:class:`registryd.lifecycle.shared_pulls.SharedPullTimes`), or None."""
        self.name = name
        self._driver = driver
        self._shared = shared

    async def read(self):
        """``(tags, manifests)``: dicts of last pull times by tag and by
        digest (str), the latest of the storage record and the nodes'
        shared pull times (storage's alone while those do not answer)."""
        tags, manifests = await self._stored()
        if self._shared is None:
            return tags, manifests
        try:
            shared_tags, shared_manifests = await self._shared.read(self.name)
        except SharedStateUnavailable:
            return tags, manifests
        return _latest(tags, shared_tags), _latest(manifests, shared_manifests)

    @translate_storage_errors
    async def _stored(self):
        """The storage record's ``(tags, manifests)``; empty when nothing
        was recorded (or the record is unreadable: it is only a hint,
        rebuilt by later pulls)."""
        try:
            content = await self._driver.get_content(paths.pull_records(self.name))
        except PathNotFound:
            return {}, {}
        if len(content) > MAX_RECORD_BYTES:
            return {}, {}
        try:
            record = json.loads(content)
        except ValueError:
            return {}, {}
        if not isinstance(record, dict):
            return {}, {}
        return _times(record.get("tags")), _times(record.get("manifests"))

    @translate_storage_errors
    async def merge(self, tags, manifests):
        """Add ``tags`` and ``manifests`` (time by tag, by digest) to the
        record, keeping the latest time of each; whether the record holds
        them afterwards."""
        for _ in range(MERGE_ATTEMPTS):
            stored_tags, stored_manifests = await self._stored()
            if _covers(stored_tags, tags) and _covers(stored_manifests, manifests):
                return True
            merged_tags = _latest(stored_tags, tags)
            merged_manifests = _latest(stored_manifests, manifests)
            body = json.dumps(
                {"tags": merged_tags, "manifests": merged_manifests}, sort_keys=True
            ).encode("ascii")
            await self._driver.put_content(paths.pull_records(self.name), body)
        stored_tags, stored_manifests = await self._stored()
        return _covers(stored_tags, tags) and _covers(stored_manifests, manifests)

    async def forget_tags(self, tags):
        """Tags ``tags`` were deleted: remove their pulls from the record
        and from the shared pull times."""
        tags = set(tags)
        if not tags:
            return
        if self._shared is not None:
            try:
                await self._shared.forget_tags(self.name, tags)
            except SharedStateUnavailable:
                pass  # they expire with the table
        await self._remove_stored(tags)

    @translate_storage_errors
    async def _remove_stored(self, tags):
        stored_tags, stored_manifests = await self._stored()
        if not tags & stored_tags.keys():
            return
        body = json.dumps(
            {
                "tags": {tag: time for tag, time in stored_tags.items() if tag not in tags},
                "manifests": stored_manifests,
            },
            sort_keys=True,
        ).encode("ascii")
        await self._driver.put_content(paths.pull_records(self.name), body)

    async def forget_repository(self):
        """The repository was removed (its record with it): drop its
        shared pull times too."""
        if self._shared is not None:
            try:
                await self._shared.forget_repository(self.name)
            except SharedStateUnavailable:
                pass  # they expire


def _latest(stored, new):
    merged = dict(stored)
    for key, time in new.items():
        if merged.get(key, float("-inf")) < time:
            merged[key] = time
    return merged


def _covers(stored, new):
    return all(stored.get(key, float("-inf")) >= time for key, time in new.items())
