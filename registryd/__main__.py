"""``python -m registryd COMMAND ...``: the ``registryd`` command
(registryd.cli): ``serve``, ``check-config``, ``gc``, ``referrers``,
``--version``."""

from registryd.cli import main

if __name__ == "__main__":
    main(prog="python -m registryd")
