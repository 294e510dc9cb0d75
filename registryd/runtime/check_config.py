"""``registryd check-config [FILE]``: would the registry start with this
configuration?  For CI and for ``docker run ... registryd check-config``.

It runs every check ``twistd registryd`` runs before it starts (the file's
keys and values, ``REGISTRY_*`` overrides, listen and debug endpoint
strings, TLS, htpasswd and token files, the manhole's keys, the storage
driver's parameters), then checks that the directories registryd writes
(a local storage root, notification journals) exist or can be created and
are writable by this user.  It binds no port and writes nothing, except
the manhole's SSH host key, which start-up's check generates when missing.

On success it prints the effective configuration, the file with the
environment's overrides applied and secrets masked, as YAML, with the
variables that applied (and those ignored) as comments.  Exit status: 0
valid, 1 invalid (one line on stderr per problem), 2 bad usage.
"""

import argparse
import os
import sys


def _parser():
    parser = argparse.ArgumentParser(
        prog="registryd check-config",
        description="Check a configuration file with the REGISTRY_* environment overrides "
        "as registryd would at start-up; print the effective configuration "
        "(secrets masked). Exit status 0 valid, 1 invalid.",
    )
    parser.add_argument(
        "config",
        nargs="?",
        metavar="FILE",
        help="YAML configuration (default: none, registryd's defaults)",
    )
    parser.add_argument(
        "--quiet", "-q", action="store_true", help="print nothing when the configuration is valid"
    )
    return parser


def run(argv, out=None, err=None):
    out = out or sys.stdout
    err = err or sys.stderr
    options = _parser().parse_args(argv)
    problems, advice = _problems(options.config)
    if problems:
        for problem in problems:
            print(f"registryd check-config: {problem}", file=err)
        return 1
    for line in advice:  # valid, but risky: said even with --quiet
        print(f"registryd check-config: warning: {line}", file=err)
    if not options.quiet:
        print(effective_configuration(options.config), file=out, end="")
    return 0


def _problems(path):
    """(one line per reason registryd would not start, or []; the start-up
    warnings of a configuration that would start)."""
    from twisted.python import usage

    from registryd.runtime.tap import Options

    options = Options()
    try:
        options.check(["--config", path] if path else [])
    except usage.UsageError as error:  # one line per problem
        return str(error).splitlines() or [str(error)], ()
    problems = []
    where = f"configuration {path}: " if path else ""
    for key, directory in _writable_directories(options.checked.config, options.checked.driver):
        problem = _directory_problem(directory)
        if problem:
            problems.append(f"{where}{key} {directory}: {problem}")
    return problems, options.checked.advice


def _writable_directories(config, driver):
    """(key, directory) pairs registryd will write into."""
    root = getattr(driver, "root", None)
    if isinstance(root, str):
        yield f"storage.{config.storage.driver}.rootdirectory", root
    notifications = config.notifications
    if notifications.enabled_endpoints and notifications.journal_directory:
        yield "notifications.journal.directory", notifications.journal_directory


def _directory_problem(directory):
    """Why registryd could not write in ``directory``, or None: it must be a
    writable directory, or creatable in its nearest existing ancestor."""
    path = os.path.abspath(directory)
    if os.path.exists(path):
        if not os.path.isdir(path):
            return "exists and is not a directory"
        if not os.access(path, os.W_OK | os.X_OK):
            return "is not writable by this user"
        return None
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return f"cannot be created: {parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be created: {parent} is not writable by this user"
    return None


def effective_configuration(path, environ=None):
    """The configuration registryd runs with, as YAML text: the file (or
    the defaults) with the environment's overrides, secrets masked."""
    import yaml

    from registryd.config import environment, environment_keys, read_document

    mapping, overrides = read_document(path, environ)
    lines = [f"# registryd configuration: {path or '(defaults)'}"]
    lines += [f"# {item.variable} sets {item.path}" for item in overrides.applied]
    lines += [f"# {name} ignored: it names no configuration key" for name in overrides.ignored]
    secret_keys = environment_keys()[1]
    body = yaml.safe_dump(
        environment.masked(mapping, secret_keys), default_flow_style=False, sort_keys=False
    )
    return "\n".join(lines) + "\n" + body
