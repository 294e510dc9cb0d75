"""``registryd serve``: the registry in the foreground, for containers and
supervisors.

It is ``twistd --nodaemon --pidfile= registryd OPTIONS`` (so the options,
checks, logging, SIGHUP reload and SIGTERM drain are exactly those of
``twistd registryd``): logs go to stdout, no pid file is written, and the
process stays in the foreground as a container's PID 1 should.  Run it
with ``twistd`` directly for twistd's own options (``--reactor``,
``--logfile``, ``--uid``...).
"""

import sys


def _help():
    from registryd.runtime.tap import Options

    return (
        "usage: registryd serve [--config FILE] [--listen ENDPOINT ...] [--workers N|auto]\n\n"
        "Run the registry in the foreground, logging to stdout (twistd -n registryd).\n\n"
        + str(Options()).split("\n", 1)[1]
    )


def run(argv):
    if "--help" in argv or "-h" in argv:
        print(_help())
        return 0
    from twisted.scripts import twistd

    saved = sys.argv
    sys.argv = ["registryd serve", "--nodaemon", "--pidfile=", "registryd", *argv]
    try:
        twistd.run()
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    finally:
        sys.argv = saved
    return 0
