"""Running the retention rules (registryd.lifecycle.retention) against
storage: every ``lifecycle.retention.interval``, from the manhole's
``retention()`` and from ``python -m registryd retention``.

For each repository a rule applies to, the facts are gathered through the
storage model (tags and what they name, when each tag was pushed, pull
times from the repository's pull record plus what this process has not
written yet, each manifest's children and subject), the rule decides, and
unless it is a dry run the decisions are applied as tag and manifest
deletes; garbage collection reclaims the blobs.

A push during a run keeps what it pushed: a tag is deleted only if it
still names the digest the decision was about and was not written since
the run started, and a manifest only if no tag names it now, no push in
this process has held it since the start (the guard's collecting mode)
and its link is not newer than the start in the storage's clock
(``registryd.storage.registry.Repository.storage_time``).  Such entries are
reported as kept, with that reason.
"""

import time

import attr
from twisted.logger import Logger

from registryd import errors
from registryd.lifecycle.retention import Decision, ManifestFacts, TagFacts, evaluate
from registryd.storage.walking import gather_limited

log = Logger()

PUSHED_DURING_RUN = "written during the run: kept"


@attr.s
class RepositoryRetention:
    name = attr.ib()
    rule = attr.ib()  # where the rule is written
    tags = attr.ib()  # [Decision]
    manifests = attr.ib()  # [Decision]

    def to_dict(self):
        return {
            "repository": self.name,
            "rule": self.rule,
            "tags": [
                {
                    "tag": d.name,
                    "digest": d.digest,
                    "action": "delete" if d.delete else "keep",
                    "reason": d.reason,
                }
                for d in self.tags
            ],
            "manifests": [
                {"digest": d.name, "action": "delete" if d.delete else "keep", "reason": d.reason}
                for d in self.manifests
            ],
        }


@attr.s
class RetentionReport:
    dry_run = attr.ib()
    repositories: list = attr.ib(factory=list)

    def deleted(self):
        tags = sum(1 for r in self.repositories for d in r.tags if d.delete)
        manifests = sum(1 for r in self.repositories for d in r.manifests if d.delete)
        return tags, manifests

    def summary(self):
        tags, manifests = self.deleted()
        verb = "would delete" if self.dry_run else "deleted"
        return (
            f"retention{' (dry run)' if self.dry_run else ''}: {len(self.repositories)} "
            f"repositories, {verb} {tags} tags and {manifests} manifests"
        )

    def to_dict(self):
        tags, manifests = self.deleted()
        return {
            "dry_run": self.dry_run,
            "deleted_tags": tags,
            "deleted_manifests": manifests,
            "repositories": [r.to_dict() for r in self.repositories],
        }

    def lines(self):
        yield self.summary()
        for repository in self.repositories:
            yield f"{repository.name} ({repository.rule})"
            for d in repository.tags:
                yield f"  {'delete' if d.delete else 'keep':<6} tag      {d.name}  {d.digest}  {d.reason}"
            for d in repository.manifests:
                yield f"  {'delete' if d.delete else 'keep':<6} manifest {d.name}  {d.reason}"


class Retention:
    """Applies a ``registryd.lifecycle.retention.RetentionConfig`` to a registry."""

    def __init__(self, registry, config, pulls, clock=time.time):
        """
        :param registry: the ``registryd.storage.registry.Registry``.
        :param config: the RetentionConfig (rules, interval).
        :param pulls: the process's ``registryd.lifecycle.pulls.PullRecorder``
            (or NO_PULLS), for pulls not written to storage yet.
        """
        self._registry = registry
        self.config = config
        self._pulls = pulls
        self._clock = clock
        self.running = False
        self.last = None

    async def run(self, dry_run=False):
        report = RetentionReport(dry_run)
        self.running = True
        try:
            async with self._registry.guard.collecting():
                for name in await self._registry.repositories():
                    rule = self.config.rule_for(name)
                    if rule is None:
                        continue
                    report.repositories.append(await self._repository(name, rule, dry_run))
        finally:
            self.running = False
        self.last = report
        log.info("{summary}", summary=report.summary())
        return report

    async def _repository(self, name, rule, dry_run):
        registry = self._registry
        repository = registry.stored_repository(name)
        started = None if dry_run else await repository.storage_time()
        now = self._clock()
        tag_names = await repository.tags.enumerate()
        digests = await gather_limited(repository.tags.get, tag_names)
        pushed = await gather_limited(repository.tags.modified, tag_names)
        stored_tags, stored_manifests = await repository.pulls.read()
        pending_tags, pending_manifests = self._pulls.pending(name)

        def last_pull(tag, digest):
            times = [
                record[key]
                for record, key in (
                    (stored_tags, tag),
                    (pending_tags, tag),
                    (stored_manifests, digest),
                    (pending_manifests, digest),
                )
                if key in record
            ]
            return max(times) if times else None

        tags = []
        for tag, digest, pushed_at in zip(tag_names, digests, pushed):
            if digest is None:
                continue  # a tag without a current link: nothing to decide
            rule_protecting = registry.immutable_tags.rule_for(name, tag)
            tags.append(
                TagFacts(
                    tag,
                    str(digest),
                    pushed_at,
                    last_pull(tag, str(digest)),
                    rule_protecting.describe() if rule_protecting is not None else None,
                )
            )
        stored = {}

        async def facts(digest):
            try:
                found = await repository.manifests.get(str(digest))
            except errors.RegistryError:
                return ManifestFacts(str(digest))  # unreadable: no children known
            stored[str(digest)] = found
            subject = found.manifest.subject
            return ManifestFacts(
                str(digest),
                [str(child.digest) for child in found.manifest.manifests],
                str(subject.digest) if subject is not None else None,
            )

        manifests = await gather_limited(facts, await repository.manifests.enumerate())
        tag_decisions, manifest_decisions = evaluate(rule, tags, manifests, now)
        if not dry_run:
            tag_decisions = [await self._apply_tag(repository, d, started) for d in tag_decisions]
            named_now = {
                str(digest)
                for digest in await gather_limited(
                    repository.tags.get, await repository.tags.enumerate()
                )
                if digest is not None
            }
            manifest_decisions = [
                await self._apply_manifest(repository, d, started, named_now, stored)
                for d in manifest_decisions
            ]
        return RepositoryRetention(name, rule.where, tag_decisions, manifest_decisions)

    def _written_since(self, modified, started):
        return modified is not None and started is not None and modified > started

    async def _apply_tag(self, repository, decision, started):
        if not decision.delete:
            return decision
        current = await repository.tags.get(decision.name)
        if (
            current is None
            or str(current) != decision.digest
            or await self._registry.guard.in_use(current)
            or self._written_since(await repository.tags.modified(decision.name), started)
        ):
            return Decision(decision.name, False, PUSHED_DURING_RUN, decision.digest)
        await repository.tags.untag(decision.name)
        return decision

    async def _apply_manifest(self, repository, decision, started, named_now, stored):
        if not decision.delete:
            return decision
        digest = stored[decision.name].digest if decision.name in stored else None
        if digest is None:
            return Decision(decision.name, False, "unreadable: left to garbage collection")
        if (
            decision.name in named_now
            or await self._registry.guard.in_use(digest)
            or self._written_since(await repository.manifests.revision_modified(digest), started)
        ):
            return Decision(decision.name, False, PUSHED_DURING_RUN)
        await repository.manifests.remove(digest, stored[decision.name].manifest.subject)
        return decision
