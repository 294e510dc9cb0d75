"""``registryd retention`` (also ``python -m registryd retention``): run
lifecycle.retention once.

Reads the daemon's configuration (its ``lifecycle`` rules and storage)::

    registryd retention --config /etc/registryd/registryd.yaml --dry-run
    registryd retention --config /etc/registryd/registryd.yaml --json

The report lists every tag and manifest of each repository a rule applies
to: what goes and why the others stay.  Pull times are the ones the
daemons have written to storage (they flush every few seconds).  Safe
while the registry serves: a push during the run keeps what it pushed.
Exit status: 0 done, 1 failed, 2 bad usage or configuration.
"""

import argparse
import sys


def _parser():
    parser = argparse.ArgumentParser(
        prog="registryd retention",
        description="Delete the tags and manifests lifecycle.retention's rules do not keep.",
    )
    parser.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        help="registryd YAML configuration (default: ./registry-data, filesystem)",
    )
    parser.add_argument(
        "--dry-run",
        "-d",
        action="store_true",
        help="delete nothing; print what would be deleted and why the rest stays",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def run(argv, out=None, err=None):
    out = out or sys.stdout
    err = err or sys.stderr
    options = _parser().parse_args(argv)

    from registryd.ops.command import CommandFailed, load_storage, print_report, run_job

    prog = "registryd retention"
    try:
        config, driver = load_storage(prog, options.config)
        if not config.lifecycle.retention.rules:
            raise CommandFailed(f"{prog}: no lifecycle.retention.rules in the configuration", 2)

        async def apply(registry):
            from registryd.lifecycle.pulls import NO_PULLS
            from registryd.lifecycle.retention_runner import Retention

            return await Retention(registry, config.lifecycle.retention, NO_PULLS).run(
                dry_run=options.dry_run
            )

        report = run_job(prog, config, driver, apply)
    except CommandFailed as failure:
        print(failure, file=err)
        return failure.status
    print_report(report, options.json, out)
    return 0
