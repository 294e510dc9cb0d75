"""What registryd's offline tools (``python -m registryd gc``,
``python -m registryd referrers``) share: reading the daemon's configuration
to reach the same storage, and running one job on a reactor of their own.

Exit statuses are the tools' convention: 0 done, 1 failed, 2 bad usage or
configuration.
"""

import json

from twisted.internet import defer, task

from registryd.config import ConfigError, error_lines, load_config
from registryd.shared import shared_state_for
from registryd.storage.factory import create_storage_driver
from registryd.storage.registry import Registry
from registryd.storage.shared_cache import consulted_for, shared_cache_for


class CommandFailed(Exception):
    """A tool's job could not finish: print ``message``, exit with ``status``."""

    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


def require_config(prog, config_path, dry_run, verb):
    """:class:`CommandFailed` (status 2) when a tool that would ``verb``
    (write, delete) storage is given no ``--config``: run in the wrong
    directory, a default of ``./registry-data`` would quietly work on some
    other (or no) registry and report success, so only a dry run may do
    without it, as Distribution's tools require their configuration file."""
    if config_path is None and not dry_run:
        raise CommandFailed(
            f"{prog}: --config FILE is required to {verb} (the registry's configuration, "
            "naming its storage); add --dry-run to look at ./registry-data without it",
            2,
        )


def load_storage(prog, config_path):
    """(configuration, storage driver) for ``config_path`` (None: the
    embedded default, ./registry-data); :class:`CommandFailed` (status 2) naming
    the key of every problem of a bad configuration."""
    where = f"configuration {config_path}: " if config_path else ""
    try:
        config = load_config(config_path)
        return config, create_storage_driver(config.storage)
    except ConfigError as error:  # one line per problem of the file
        lines = "\n".join(f"{prog}: {where}{line}" for line in error_lines(error))
        raise CommandFailed(lines, 2) from None


def run_job(prog, config, driver, job):
    """Run ``await job(registry)`` on a new reactor over ``driver``; its
    result, or :class:`CommandFailed` (status 1) if it failed."""
    outcome = {}

    async def work(reactor):
        # With a redis section, what the job removes is forgotten from the
        # nodes' metadata cache, as a node's own removals are.
        shared_state = shared_state_for(config, reactor) if config.redis is not None else None
        registry = Registry(
            driver,
            delete_enabled=config.storage.delete_enabled,
            immutable_tags=config.lifecycle.immutable,
            shared_state=shared_state,
            shared_cache=shared_cache_for(
                shared_state,
                reactor,
                consulted=consulted_for(config.redis.metadata_cache, driver),
            )
            if shared_state is not None
            else None,
        )
        try:
            outcome["result"] = await job(registry)
        finally:
            if shared_state is not None:
                await shared_state.close()

    def failed(failure):
        outcome["failure"] = failure.getErrorMessage()

    try:
        task.react(lambda reactor: defer.ensureDeferred(work(reactor)).addErrback(failed))
    except SystemExit as done:
        if done.code not in (0, None) and "failure" not in outcome:
            outcome["failure"] = f"exit status {done.code}"
    if "failure" in outcome or "result" not in outcome:
        raise CommandFailed(
            f"{prog}: failed, nothing more changed: {outcome.get('failure', 'no result')}", 1
        )
    return outcome["result"]


def print_report(report, as_json, out):
    """A report with ``to_dict()`` and ``lines()``, as JSON or text."""
    if as_json:
        print(json.dumps(report.to_dict(), indent=2), file=out)
    else:
        for line in report.lines():
            print(line, file=out)
