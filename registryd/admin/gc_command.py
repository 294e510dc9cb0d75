"""``registryd-gc`` (also ``python -m registryd gc``): offline garbage collection.

Reads the same configuration file as the daemon, so it collects the same
storage, and runs one mark and sweep (``registryd.admin.gc``)::

    registryd-gc --config /etc/registryd/registryd.yaml --dry-run
    registryd-gc --config /etc/registryd/registryd.yaml --delete-untagged

Meant for a registry that is stopped or in read-only mode, like
Distribution's ``registry garbage-collect``; the grace period
(``gc.graceperiod``, ``--grace-period``) still protects recent pushes should
one be running.  Exit status: 0 done, 1 failed, 2 bad usage or configuration.
"""

import argparse
import json
import sys


def _parser():
    parser = argparse.ArgumentParser(
        prog="registryd-gc",
        description="Remove blobs (and with --delete-untagged, manifests) that nothing references.",
    )
    parser.add_argument("--config", "-c", metavar="FILE",
                        help="registryd YAML configuration (default: ./registry-data, filesystem)")
    parser.add_argument("--dry-run", "-d", action="store_true",
                        help="remove nothing; print what would be removed")
    parser.add_argument("--delete-untagged", "-m", action="store_true",
                        help="also remove manifests that no tag reaches (keeping index "
                             "children and referrers of kept manifests)")
    parser.add_argument("--grace-period", metavar="DURATION",
                        help="keep blobs younger than this, e.g. 1h, 30m or 0 "
                             "(default: gc.graceperiod, 1h)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def main(argv=None):
    """Console script entry point; returns (and exits with) the status."""
    status = run(sys.argv[1:] if argv is None else argv)
    sys.exit(status)


def run(argv, out=None, err=None):
    out = out or sys.stdout
    err = err or sys.stderr
    options = _parser().parse_args(argv)

    from registryd.config import ConfigError, _duration, load_config
    from registryd.service import create_storage_driver

    where = f"configuration {options.config}: " if options.config else ""
    try:
        config = load_config(options.config)
        driver = create_storage_driver(config.storage)
        grace_period = config.gc.grace_period
    except ConfigError as error:
        print(f"registryd-gc: {where}{error}", file=err)
        return 2
    if options.grace_period is not None:
        try:
            grace_period = _duration(options.grace_period, "--grace-period")
        except ConfigError as error:
            print(f"registryd-gc: {error}", file=err)
            return 2

    from twisted.internet import defer, task

    from registryd.admin.gc import collect_garbage
    from registryd.storage.registry import Registry

    outcome = {}

    async def collect(reactor):
        registry = Registry(driver, delete_enabled=config.storage.delete_enabled)
        outcome["report"] = await collect_garbage(
            registry, dry_run=options.dry_run, delete_untagged=options.delete_untagged,
            grace_period=grace_period,
        )

    def failed(failure):
        print(f"registryd-gc: failed, nothing more removed: {failure.getErrorMessage()}", file=err)
        outcome["failure"] = failure

    def react_main(reactor):
        return defer.ensureDeferred(collect(reactor)).addErrback(failed)

    try:
        task.react(react_main)
    except SystemExit as done:
        if done.code not in (0, None):
            return 1
    if "failure" in outcome or "report" not in outcome:
        return 1
    report = outcome["report"]
    if options.json:
        print(json.dumps(report.to_dict(), indent=2), file=out)
    else:
        for line in report.lines():
            print(line, file=out)
    return 0
