"""``python -m registryd referrers`` (also ``registryd-referrers``):
rebuild the referrers index from the manifests (``registryd.ops.referrers``).

Reads the same configuration file as the daemon, so it works on the same
storage::

    registryd-referrers --config /etc/registryd/registryd.yaml --dry-run
    registryd-referrers --config /etc/registryd/registryd.yaml library/app

``--config`` is required to write the index, as ``registryd-gc``
requires it to delete: without it a run in the wrong directory would
rebuild some other ``./registry-data`` and report success.  Only
``--dry-run`` may do without it, looking at ``./registry-data``.

Safe while the registry runs.  Exit status: 0 done, 1 failed, 2 bad usage,
configuration or repository name.
"""

import argparse
import sys

from registryd.errors import RegistryError
from registryd.names import check_repository_name
from registryd.ops.command import (
    CommandFailed,
    load_storage,
    print_report,
    require_config,
    run_job,
)
from registryd.ops.referrers import rebuild_referrers


def _parser():
    parser = argparse.ArgumentParser(
        prog="registryd-referrers",
        description="Rebuild the referrers index (OCI 1.1 referrers API) from the manifests' "
        "subject fields: add missing entries, remove stale ones.",
    )
    parser.add_argument(
        "repositories",
        nargs="*",
        metavar="REPOSITORY",
        help="repositories to rebuild (default: all)",
    )
    parser.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        help="registryd YAML configuration (required, except with --dry-run: ./registry-data then)",
    )
    parser.add_argument(
        "--dry-run", "-d", action="store_true", help="change nothing; print what would change"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def main(argv=None):
    """Console script entry point; returns (and exits with) the status."""
    sys.exit(run(sys.argv[1:] if argv is None else argv))


def run(argv, out=None, err=None):
    out = out or sys.stdout
    err = err or sys.stderr
    options = _parser().parse_args(argv)
    prog = "registryd-referrers"
    try:
        require_config(prog, options.config, options.dry_run, "write the index")
        for name in options.repositories:
            try:
                check_repository_name(name)
            except RegistryError as error:
                raise CommandFailed(f"{prog}: {name!r}: {error.message}", 2) from None
        config, driver = load_storage(prog, options.config)

        async def rebuild(registry):
            return await rebuild_referrers(
                registry, repositories=options.repositories or None, dry_run=options.dry_run
            )

        report = run_job(prog, config, driver, rebuild)
    except CommandFailed as failure:
        print(failure, file=err)
        return failure.status
    print_report(report, options.json, out)
    return 0
