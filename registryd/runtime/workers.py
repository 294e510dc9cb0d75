"""Worker mode: several processes serving HTTP on the same sockets.

One reactor is one thread of Python: on a machine with several cores it
serves small requests (manifest GETs, blob HEADs) at the speed of one.
With ``workers: N`` (or ``--workers N``), the process twistd starts (the
*main* process) binds the listening sockets as usual and then starts N-1
*worker* processes that accept connections on the same sockets (the
descriptors are inherited; the kernel hands each new connection to one
process).  Nothing is shared in memory: every process serves the same
storage, where all authoritative state already lives (an upload's running
hash is kept in the process that received its bytes and stored beside the
upload at the end of each request (in worker mode only), so the process a client's next request
reaches continues from it: :mod:`registryd.resumable_digest`), exactly as
several nodes behind a load balancer would.

What must exist once stays in the main process: the manhole, the debug
listener (its ``/metrics`` sums the metrics of every process, which they
share through files in a private directory: prometheus_client's
multiprocess mode, see :func:`share_metrics`), upload
purging and scheduled garbage collection (as with several nodes, the
grace period protects pushes running in other processes), and the
notification journals.  A worker builds notification events as usual and
passes each encoded event line to the main process over a pipe; the main
process queues it on the endpoint of that name.

Read-only mode switched live (the manhole's ``readonly(True)``) is passed
on to every worker over its stdin, and to workers started later, so no
process keeps accepting writes.

The main process restarts a worker that exits, stops the workers when it
stops, and forwards ``SIGHUP`` (reload) to them.  A worker exits when the
main process goes away (its stdin, a pipe from the main process, closes).
"""

import argparse
import os
import signal
import socket
import sys

import attr
from twisted.application.service import Service
from twisted.internet import defer, protocol
from twisted.logger import Logger

import registryd
from registryd import compat
from registryd.notifications.events import IgnoreRules
from registryd.runtime import startup

log = Logger()

#: Seconds before a worker that exited is started again (doubling up to
#: the maximum while workers keep failing quickly).
RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 30.0
#: Seconds a stopping worker gets before SIGKILL.
STOP_TIMEOUT = 15.0

_FAMILIES = {"inet": socket.AF_INET, "inet6": socket.AF_INET6, "unix": socket.AF_UNIX}


def _family_name(address):
    kind = type(address).__name__
    if kind == "IPv6Address":
        return "inet6"
    if kind == "UNIXAddress":
        return "unix"
    return "inet"


def share_metrics():
    """Put the metrics of this process and the workers it will start in
    one fresh private directory (prometheus_client's multiprocess mode).

    Called by the main process before anything imports prometheus_client,
    which reads ``PROMETHEUS_MULTIPROC_DIR`` once, at import; the workers
    inherit the variable.  Returns the directory (removed by the
    :class:`WorkerPool` when it stops), or None if it is too late (metrics then
    stay per process, and ``/metrics`` shows the main process's only).
    """
    import tempfile

    if "prometheus_client" in sys.modules:
        log.warn(
            "worker mode: prometheus_client was imported already; "
            "/metrics will count the main process only"
        )
        return None
    directory = tempfile.mkdtemp(prefix="registryd-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    return directory


def _package_path():
    """The directory holding the ``registryd`` package, for the workers'
    PYTHONPATH (the main process may have found it through its working
    directory or twistd's path handling)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(registryd.__file__)))


class WorkerPool(Service):
    """In the main process: starts, watches and stops the worker processes."""

    # the stub types Service.name as None, the unnamed default
    name = "workers"  # type: ignore[assignment]

    def __init__(
        self, components, count, config_path=None, listen=(), reactor=None, metrics_directory=None
    ):
        """
        :param components: the main process's
            :class:`registryd.runtime.composition.Components`: the workers share its
            listeners (started before this service), follow its registry's
            read-only switch, and hand their events to its notification
            endpoints (:class:`registryd.ops.operations.Operations`).
        :param count: processes in all, this one included.
        :param config_path: the configuration file workers read (None: the
            default configuration).
        :param listen: ``--listen`` endpoints given on the command line, if
            any (workers need them to find each listener's TLS settings).
        :param metrics_directory: from :func:`share_metrics`; removed on stop.
        """
        self._listeners = components.listeners
        self._registry = components.registry
        self._operations = components.operations
        self.count = count
        # Absolute: twistd may change directory when it daemonises.
        self.config_path = os.path.abspath(config_path) if config_path else None
        self.listen = tuple(listen)
        self._reactor = reactor
        self._sockets = []  # [(fd, family name)] of the shared listeners
        self.processes = {}  # index -> IProcessTransport
        self._delays = {}
        self._restarts = {}  # index -> IDelayedCall
        self._exited = {}  # index -> Deferred firing when it exits
        self._stopping = False
        self._previous_sighup = None
        self.metrics_directory = metrics_directory
        self._pids = {}  # index -> pid, to forget its gauges when it exits

    def _get_reactor(self):
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    def startService(self):
        super().startService()
        self._stopping = False
        self._registry.read_only_observers.append(self._send_read_only)
        self._started = defer.ensureDeferred(self._start())
        self._started.addErrback(
            lambda failure: log.failure("worker processes not started", failure)
        )

    async def _start(self):
        sockets = []
        for listener in self._listeners:
            port = compat.accept_one_at_a_time(await compat.listening_port(listener))
            sockets.append((port.fileno(), _family_name(port.getHost())))
        self._sockets = sockets
        for index in range(1, self.count):
            self._spawn(index)
        self._install_sighup()

    def _arguments(self, index):
        arguments = [sys.executable, "-m", "registryd.runtime.workers", "--index", str(index)]
        if self.config_path:
            arguments += ["--config", self.config_path]
        for endpoint in self.listen:
            arguments += ["--listen", endpoint]
        for number, (_, family) in enumerate(self._sockets):
            arguments += ["--listen-fd", f"{3 + number}:{family}"]
        arguments += ["--events-fd", str(self._events_fd)]
        return arguments

    @property
    def _events_fd(self):
        return 3 + len(self._sockets)

    def _spawn(self, index):
        if self._stopping:
            return
        self._restarts.pop(index, None)
        child_fds = {0: "w", 1: 1, 2: 2, self._events_fd: "r"}
        for number, (fd, _) in enumerate(self._sockets):
            child_fds[3 + number] = fd
        environment = dict(os.environ)
        path = environment.get("PYTHONPATH")
        environment["PYTHONPATH"] = _package_path() + (os.pathsep + path if path else "")
        self._exited[index] = defer.Deferred()
        self.processes[index] = self._get_reactor().spawnProcess(
            _WorkerProtocol(self, index),
            sys.executable,
            self._arguments(index),
            env=environment,
            childFDs=child_fds,
        )
        self._pids[index] = self.processes[index].pid
        log.info("worker {index} started (pid {pid})", index=index, pid=self._pids[index])
        self._send_read_only(self._registry.read_only, [self.processes[index]])

    def _send_read_only(self, on, processes=None):
        """Tell workers (all, or ``processes``) the read-only switch."""
        line = b"read-only on\n" if on else b"read-only off\n"
        for process in processes if processes is not None else list(self.processes.values()):
            try:
                process.write(line)
            except Exception:  # exiting: its replacement is told at start
                pass

    def _worker_exited(self, index, reason):
        self.processes.pop(index, None)
        pid = self._pids.pop(index, None)
        if pid is not None:
            from registryd.ops import metrics  # not at module level: see build_worker

            metrics.process_exited(pid)
        exited = self._exited.pop(index, None)
        if exited is not None:
            exited.callback(None)
        if self._stopping:
            return
        delay = self._delays.get(index, RESTART_DELAY)
        self._delays[index] = min(delay * 2, MAX_RESTART_DELAY)
        log.warn(
            "worker {index} exited ({reason}); starting it again in {delay:.0f}s",
            index=index,
            reason=reason.getErrorMessage(),
            delay=delay,
        )
        self._restarts[index] = self._get_reactor().callLater(delay, self._spawn, index)

    def _worker_ready(self, index):
        self._delays.pop(index, None)

    def deliver_event(self, name, line):
        """An event line a worker built for notification endpoint ``name``."""
        notifications = self._operations.notifications
        if notifications is None:
            return
        endpoint = notifications.endpoints.get(name)
        if endpoint is not None:
            endpoint.enqueue(line)

    def signal_all(self, name):
        for process in list(self.processes.values()):
            try:
                process.signalProcess(name)
            except Exception:  # already gone
                pass

    def _install_sighup(self):
        previous = signal.getsignal(signal.SIGHUP)
        if not callable(previous):
            return  # nobody reloads on SIGHUP here (not under twistd)
        reactor = self._get_reactor()

        def on_sighup(signum, frame):
            previous(signum, frame)
            reactor.callFromThread(self.signal_all, "HUP")

        self._previous_sighup = previous
        signal.signal(signal.SIGHUP, on_sighup)

    def stopService(self):
        if self._stopping:
            # Already stopping (RegistryService stops the workers while it
            # drains its own requests, then again with its children).
            return self._stopped
        self._stopped = defer.maybeDeferred(self._stop)
        return self._stopped

    def _stop(self):
        super().stopService()
        self._stopping = True
        observers = self._registry.read_only_observers
        if self._send_read_only in observers:
            observers.remove(self._send_read_only)
        if self._previous_sighup is not None:
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._previous_sighup = None
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()
        waiting = list(self._exited.values())
        self.signal_all("TERM")
        if not waiting:
            self.remove_metrics_directory()
            return None
        # Workers let their requests finish first (http.draintimeout).
        grace = max(STOP_TIMEOUT, self._operations.config.http.drain_timeout + 5)
        killer = self._get_reactor().callLater(grace, self.signal_all, "KILL")

        def stopped(result):
            if killer.active():
                killer.cancel()
            self.remove_metrics_directory()
            return None

        return defer.DeferredList(waiting).addBoth(stopped)

    def remove_metrics_directory(self):
        if self.metrics_directory is not None:
            import shutil

            shutil.rmtree(self.metrics_directory, ignore_errors=True)
            self.metrics_directory = None


class _WorkerProtocol(protocol.ProcessProtocol):
    def __init__(self, pool, index):
        self._pool = pool
        self._index = index
        self._partial_line = b""

    def childDataReceived(self, fd, data):
        self._partial_line += data
        *lines, self._partial_line = self._partial_line.split(b"\n")
        for line in lines:
            if line == b"ready":
                self._pool._worker_ready(self._index)
                continue
            name, _, event = line.partition(b"\t")
            if event:
                self._pool.deliver_event(name.decode("utf-8", "replace"), event)

    def processEnded(self, reason):
        self._pool._worker_exited(self._index, reason)


# --- in a worker process -----------------------------------------------------


class _ForwardedEndpoint:
    """A notification endpoint of the main process, as a worker sees it:
    events go to the main process, which queues them."""

    def __init__(self, name, rules, link):
        self.name = name
        self.rules = rules
        self._link = link

    def ignored(self):
        pass

    def enqueue(self, line):
        self._link.send(self.name.encode("utf-8") + b"\t" + line + b"\n")


class _MainProcessLink(protocol.Protocol):
    """stdin (a pipe from the main process) and the event pipe to it: when
    the main process goes away, so does this worker.  The main process
    sends the read-only switch as ``read-only on|off`` lines."""

    def __init__(self, reactor, set_read_only=lambda on: None):
        self._reactor = reactor
        self._set_read_only = set_read_only
        self._partial_line = b""

    def dataReceived(self, data):
        self._partial_line += data
        *lines, self._partial_line = self._partial_line.split(b"\n")
        for line in lines:
            if line in (b"read-only on", b"read-only off"):
                self._set_read_only(line == b"read-only on")
            else:
                log.warn("unknown message from the main process: {line!r}", line=line[:100])

    def send(self, data):
        if self.transport is not None:
            self.transport.write(data)

    def connectionLost(self, reason):
        stop_reactor(self._reactor)


def stop_reactor(reactor):
    """Stop ``reactor`` unless it is stopping already.

    A worker is told to stop several ways that may all arrive: the main
    process's ``SIGTERM``, the signal a supervisor sends to every process
    of the group (systemd's ``KillMode=control-group``, Ctrl-C's ``SIGINT``
    in a terminal, ``timeout``), and the end of its stdin when the main
    process is gone.  The second ``reactor.stop()`` raises
    ``ReactorNotRunning``, which Twisted logged with a traceback."""
    from twisted.internet.error import ReactorNotRunning

    try:
        reactor.stop()
    except ReactorNotRunning:
        pass  # already stopping


def stop_on_signals(reactor, signals=(signal.SIGTERM, signal.SIGINT)):
    """Make ``signals`` stop ``reactor`` however often they come.

    Replaces the handlers the running reactor installed
    (``ReactorBase.sigTerm``/``sigInt``, which call ``reactor.stop()``
    unguarded); call it once the reactor runs, after it installed them.
    Each signal is logged, as Twisted's handlers log it."""

    def handler(number, frame):
        log.info(
            "received {signal}: shutting down (pid {pid})",
            signal=signal.Signals(number).name,
            pid=os.getpid(),
        )
        reactor.callFromThread(stop_reactor, reactor)

    for number in signals:
        signal.signal(number, handler)


def worker_config(config):
    """``config`` without what runs in the main process only."""
    http = config.http
    if getattr(http, "debug", None) is not None:
        http = attr.evolve(http, debug=None)
    changes = {"http": http, "workers": 1}
    if getattr(config, "manhole", None) is not None:
        changes["manhole"] = None
    notifications = getattr(config, "notifications", None)
    if notifications is not None and notifications.enabled_endpoints:
        changes["notifications"] = type(notifications)()
    return attr.evolve(config, **changes)


def _forwarded_endpoints(config, link):
    return [
        _ForwardedEndpoint(
            endpoint.name,
            IgnoreRules(endpoint.ignored_media_types, endpoint.ignored_actions),
            link,
        )
        for endpoint in config.notifications.enabled_endpoints
    ]


def _forward_notifications(components, config, link):
    """Events for the main process's endpoints, built here by the app's
    notifier; the endpoints follow the configuration file when it is
    reloaded (SIGHUP)."""
    notifier = components.app.events
    notifier.include_references = config.notifications.include_references
    notifier.set_endpoints(_forwarded_endpoints(config, link))

    def reloaded(loaded):
        notifier.include_references = loaded.notifications.include_references
        notifier.set_endpoints(_forwarded_endpoints(loaded, link))

    components.operations.on_reload(reloaded)
    return notifier


class AdoptedPort(Service):
    """Accepts connections on an inherited listening socket."""

    def __init__(self, fd, family, factory, reactor):
        self.fd = fd
        self.family = family
        self.factory = factory
        self._reactor = reactor
        self.port = None

    def startService(self):
        super().startService()
        self.port = compat.accept_one_at_a_time(
            self._reactor.adoptStreamPort(self.fd, self.family, self.factory)
        )
        os.close(self.fd)  # the port has its own duplicate

    def stop_accepting(self):
        """Stop listening (draining: connections in progress stay)."""
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None

    def stopService(self):
        super().stopService()
        return self.stop_accepting()


def build_worker(arguments, reactor):
    """The RegistryService of a worker, serving the inherited sockets, and
    the full configuration (notification endpoints included).

    The web stack is imported only here: the main process imports this
    module for :func:`share_metrics`, which must run before anything imports
    prometheus_client (as registryd.runtime.composition does)."""
    from registryd.compat import dispatch_events_directly
    from registryd.runtime.composition import compose
    from registryd.runtime.service import RegistryService
    from registryd.runtime.tuning import tune_allocator

    try:
        checked = startup.check(arguments.config, arguments.listen)
        startup.check_storage_root(checked)  # as the main process (registryd.runtime.tap)
    except startup.StartupError as error:
        raise SystemExit(f"registryd worker {arguments.index}: {error}") from None
    full_config = checked.config

    def adopt(index, endpoint, plain, factory, secure, reactor):
        fd, family = arguments.listen_fd[index]
        adopted = AdoptedPort(fd, _FAMILIES[family], factory, reactor)
        adopted.setName(f"http {endpoint} (shared)")
        return adopted

    tune_allocator()  # as the main process (registryd.runtime.tap)
    dispatch_events_directly(reactor)
    components = compose(
        attr.evolve(checked, config=worker_config(full_config)),
        reactor=reactor,
        listen=adopt,
        singletons=False,
        config_filter=worker_config,
        processes=2,  # at least: the main process and this one
    )
    service = RegistryService(
        components,
        owns_process=True,
        reactor=reactor,
        announce=False,  # the main process said where the data is
    )
    return service, components, full_config


def _listen_fd(text):
    fd, _, family = text.partition(":")
    if not fd.isdigit() or family not in _FAMILIES:
        raise argparse.ArgumentTypeError(f"expected FD:{'|'.join(_FAMILIES)}, got {text!r}")
    return int(fd), family


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m registryd.runtime.workers",
        description="A registryd worker process (started by the main process in worker mode).",
    )
    parser.add_argument("--index", type=int, default=1)
    parser.add_argument("--config")
    parser.add_argument("--listen", action="append", default=[])
    parser.add_argument("--listen-fd", type=_listen_fd, action="append", default=[])
    parser.add_argument("--events-fd", type=int, required=True)
    arguments = parser.parse_args(argv)

    from twisted.internet import reactor, stdio
    from twisted.logger import globalLogBeginner, textFileLogObserver

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)
    service, components, full_config = build_worker(arguments, reactor)

    def set_read_only(on):
        if service.registry.read_only != on:
            service.registry.read_only = on
            log.info("read-only mode {state}", state="on" if on else "off")

    link = _MainProcessLink(reactor, set_read_only)
    stdio.StandardIO(link, stdin=0, stdout=arguments.events_fd, reactor=reactor)
    _forward_notifications(components, full_config, link)

    def start():
        stop_on_signals(reactor)
        service.privilegedStartService()
        service.startService()
        link.send(b"ready\n")
        log.info("worker {index} serving (pid {pid})", index=arguments.index, pid=os.getpid())

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()


if __name__ == "__main__":
    main()
