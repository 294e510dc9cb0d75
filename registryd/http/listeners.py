"""Listening services that fail in one line and say where they listen.

Every socket registryd listens on (the API, the debug listener, the
manhole) is one :class:`ListenerService`.  Like ``strports.service`` it binds in
``privilegedStartService`` and raises there when it cannot, so start-up
fails instead of running deaf; unlike it, the failure is a :class:`ListenFailed`
whose message is the one line an operator needs (``cannot listen on
tcp:5000: address already in use (another registry running?)``) rather
than Twisted's ``CannotListenError``, and once bound it logs the address it
actually got (``listening on http://127.0.0.1:5000``; with port 0, the
port the kernel chose).
"""

import errno

from twisted.application.internet import StreamServerEndpointService
from twisted.internet import endpoints
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from registryd import compat

log = Logger()

#: Why binding failed, in words, for the errors an operator meets.
_REASONS = {
    errno.EADDRINUSE: "address already in use (another registry running?)",
    errno.EACCES: "permission denied (ports below 1024 need privileges)",
    errno.EADDRNOTAVAIL: "no such address on this machine",
}


class ListenFailed(Exception):
    """A listening socket could not be opened; ``str()`` is one line."""


def _reason(error):
    socket_error = getattr(error, "socketError", None)
    number = getattr(socket_error, "errno", None)
    if number in _REASONS:
        return _REASONS[number]
    text = getattr(socket_error, "strerror", None) or str(socket_error or error)
    return " ".join(text.split()).rstrip(".").lower() or type(error).__name__


def _url(address, scheme):
    """``scheme://host:port`` for a bound address (``[host]`` for IPv6), or
    the address's own rendering for other kinds (UNIX sockets)."""
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    if host is None or port is None:
        name = getattr(address, "name", None)
        return (
            f"unix:{name.decode() if isinstance(name, bytes) else name}" if name else str(address)
        )
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


class ListenerService(StreamServerEndpointService):
    """Listens on the endpoint string ``description`` with ``factory``.

    :param description: a Twisted server endpoint string.
    :param shown: the endpoint as the operator wrote it, for errors (an
        ``ssl:`` string served as ``description`` ``tcp:`` plus TLS);
        ``description`` by default.
    :param what: how the start-up log line begins, e.g. ``"listening on"``.
    :param scheme: the URL scheme the log line shows (``http``, ``https``,
        ``ssh``).
    """

    def __init__(
        self, description, factory, reactor=None, what="listening on", scheme="http", shown=None
    ):
        if reactor is None:
            from twisted.internet import reactor
        super().__init__(endpoints.serverFromString(reactor, description), factory)
        compat.raise_listen_errors(self)  # as strports.service: fail start-up, not just log
        self.description = shown or description
        self.what = what
        self.scheme = scheme

    def privilegedStartService(self):
        try:
            super().privilegedStartService()
        except CannotListenError as error:
            raise ListenFailed(f"cannot listen on {self.description}: {_reason(error)}") from None
        compat.listening_port(self).addCallback(self._announce)

    def _announce(self, port):
        log.info("{what} {url}", what=self.what, url=_url(port.getHost(), self.scheme))
        return port
