"""The ``registryd`` command (also ``python -m registryd``).

One entry point for what an operator runs: ``registryd serve`` starts the
registry (the same service as ``twistd registryd``, in the foreground,
logging to stdout, no pid file: what a container or a supervisor wants;
``twistd`` stays the system-service path), and the offline tools are its
subcommands (``gc``, ``referrers``, ``retention``; ``registryd-gc`` and
``registryd-referrers`` remain as aliases), plus ``check-config``.

Each subcommand maps to a module with a ``run(argv) -> status`` function,
imported only when chosen, so ``registryd --help`` stays quick.
"""

import importlib
import sys

from registryd import __version__

#: name -> (module with run(argv), one-line summary)
COMMANDS = {
    "serve": ("registryd.runtime.serve_command", "run the registry (as twistd -n registryd)"),
    "check-config": (
        "registryd.runtime.check_config",
        "check a configuration (and REGISTRY_* overrides); print it",
    ),
    "gc": ("registryd.ops.gc_command", "garbage collection (same as registryd-gc)"),
    "referrers": (
        "registryd.ops.referrers_command",
        "rebuild the referrers index (same as registryd-referrers)",
    ),
    "retention": (
        "registryd.lifecycle.retention_command",
        "apply lifecycle.retention: delete the tags and manifests its rules do not keep",
    ),
}


def version():
    return f"registryd {__version__}"


def usage(prog="registryd"):
    lines = [f"usage: {prog} COMMAND [OPTIONS]", f"       {prog} --version", "", "commands:"]
    lines += [f"  {name:<14}{summary}" for name, (_, summary) in COMMANDS.items()]
    lines += [
        "",
        f"'{prog} COMMAND --help' describes a command's options.",
        "REGISTRY_* environment variables override configuration keys, as in",
        "CNCF Distribution (REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=/data).",
        "Exit status: 0 done, 1 failed (check-config: invalid), 2 bad usage.",
    ]
    return "\n".join(lines)


def main(argv=None, prog="registryd"):
    """Console script entry point: run a subcommand, exit with its status."""
    sys.exit(run(sys.argv[1:] if argv is None else list(argv), prog))


def run(argv, prog="registryd"):
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage(prog), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] in ("--version", "-V", "version"):
        print(version())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"{prog}: unknown command {name!r}\n\n{usage(prog)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return module.run(rest)
    except SystemExit as done:  # argparse's --help and usage errors
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
