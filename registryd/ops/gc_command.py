"""``registryd-gc`` (also ``python -m registryd gc``): offline garbage collection.

Reads the same configuration file as the daemon, so it collects the same
storage, and runs one mark and sweep (``registryd.ops.gc``)::

    registryd-gc --config /etc/registryd/registryd.yaml --dry-run
    registryd-gc --config /etc/registryd/registryd.yaml --delete-untagged

``--config`` is required to delete anything, as Distribution's
``registry garbage-collect`` requires its configuration file: run in the
wrong directory, a default of ``./registry-data`` would quietly collect
some other (or no) registry and report success.  Only ``--dry-run`` may do
without it, looking at ``./registry-data``.

Meant for a registry that is stopped or in read-only mode, like
Distribution's ``registry garbage-collect``; the grace period
(``gc.graceperiod``, ``--grace-period``) still protects recent pushes should
one be running.  Exit status: 0 done, 1 failed, 2 bad usage or configuration.
"""

import argparse
import sys


def _parser():
    parser = argparse.ArgumentParser(
        prog="registryd-gc",
        description="Remove blobs (and with --delete-untagged, manifests) that nothing references.",
    )
    parser.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        help="registryd YAML configuration (required, except with --dry-run: ./registry-data then)",
    )
    parser.add_argument(
        "--dry-run", "-d", action="store_true", help="remove nothing; print what would be removed"
    )
    parser.add_argument(
        "--delete-untagged",
        "-m",
        action="store_true",
        help="also remove manifests that no tag reaches (keeping index "
        "children and referrers of kept manifests)",
    )
    parser.add_argument(
        "--grace-period",
        metavar="DURATION",
        help="keep blobs younger than this, e.g. 1h, 30m or 0 (default: gc.graceperiod, 1h)",
    )
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

    from registryd.config import ConfigError, parse_duration
    from registryd.ops.command import (
        CommandFailed,
        load_storage,
        print_report,
        require_config,
        run_job,
    )

    try:
        require_config("registryd-gc", options.config, options.dry_run, "delete")
        config, driver = load_storage("registryd-gc", options.config)
        grace_period = config.gc.grace_period
        if options.grace_period is not None:
            try:
                grace_period = parse_duration(options.grace_period, "--grace-period")
            except ConfigError as error:
                raise CommandFailed(f"registryd-gc: {error}", 2) from None

        async def collect(registry):
            from registryd.ops.gc import collect_garbage

            return await collect_garbage(
                registry,
                dry_run=options.dry_run,
                delete_untagged=options.delete_untagged,
                grace_period=grace_period,
            )

        report = run_job("registryd-gc", config, driver, collect)
    except CommandFailed as failure:
        print(failure, file=err)
        return failure.status
    print_report(report, options.json, out)
    return 0
