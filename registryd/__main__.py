"""``python -m registryd COMMAND ...``: the ``registryd`` command
(registryd.cli): ``serve``, ``check-config``, ``gc``, ``referrers``,
``--version``."""

import sys

from registryd.cli import run


def main(argv=None):
    """Run a subcommand; its exit status."""
    return run(sys.argv[1:] if argv is None else list(argv), prog="python -m registryd")


if __name__ == "__main__":
    sys.exit(main())
