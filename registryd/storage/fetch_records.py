"""The pull-through cache's records of when it fetched each manifest.

Distribution keeps a scheduler state file for this; registryd keeps one
small record per cached manifest under its repository, in the layout's
style (a ``_``-directory is never taken for a repository name, and the
collector ignores it)::

    repositories/<name>/_proxy/manifests/<alg>/<hex>/fetched
        {"fetchedAt": "2026-11-26T20:25:02Z", "mediaType": "..."}

The record also keeps the media type upstream served the manifest with,
which the cache serves it with again.  ``registryd.proxy`` decides what
the records mean (expiry); this module only stores and finds them, and
the vacuum removes them.
"""

import json
from datetime import datetime, timezone

from registryd.storage import _paths as paths
from registryd.storage.errors import PathNotFound
from registryd.storage.uploads import parse_started_at
from registryd.storage.walking import digest_tree


class FetchRecords:
    """Fetch records of every repository on one driver."""

    #: the directory that marks a repository holding records
    MARKER = paths.PROXY_DIR

    def __init__(self, driver):
        self._driver = driver

    async def write(self, name, digest, media_type, now):
        """Record that manifest ``digest`` of ``name`` was fetched at POSIX
        time ``now``, served as ``media_type`` (or None)."""
        moment = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = json.dumps({"fetchedAt": moment, "mediaType": media_type}).encode("utf-8")
        await self._driver.put_content(paths.proxy_record(name, digest), body)

    async def read(self, name, digest):
        """``(fetched at, media type)``; None when there is no readable record."""
        try:
            document = json.loads(await self._driver.get_content(paths.proxy_record(name, digest)))
            fetched = parse_started_at(document["fetchedAt"])
            media_type = document.get("mediaType")
        except (PathNotFound, ValueError, KeyError, TypeError, AttributeError):
            return None
        if fetched is None:
            return None
        return fetched, media_type if isinstance(media_type, str) else None

    async def enumerate(self, name):
        """The digests repository ``name`` has records for."""
        return await digest_tree(self._driver, paths.proxy_records(name))
