"""``python -m registryd COMMAND ...``: registryd's command-line tools.

The daemon itself runs under twistd (``twistd registryd``); the commands
here are the tools that go with it.  Each maps to a module with a
``run(argv) -> status`` function, imported only when chosen.
"""

import importlib
import sys

COMMANDS = {
    "gc": ("registryd.ops.gc_command", "garbage collection (same as registryd-gc)"),
    "referrers": ("registryd.ops.referrers_command",
                  "rebuild the referrers index (same as registryd-referrers)"),
    "retention": ("registryd.lifecycle.retention_command",
                  "apply lifecycle.retention: delete the tags and manifests its rules do not keep"),
}


def usage():
    lines = ["usage: python -m registryd COMMAND [OPTIONS]", "", "commands:"]
    lines += [f"  {name:<10}{summary}" for name, (_, summary) in sorted(COMMANDS.items())]
    lines.append("")
    lines.append("'python -m registryd COMMAND --help' describes a command's options.")
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"python -m registryd: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return module.run(rest)


if __name__ == "__main__":
    sys.exit(main())
