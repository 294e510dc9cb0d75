"""Fewer, larger socket reads of a request body that trickles in.

``docker push``, podman and skopeo gzip a layer while they send it, one
32 KiB chunk per ``write``: registryd's reactor woke for each, about 3,200
times per 100 MiB, and each wake-up (``epoll_wait``, ``recv``, Twisted's
and the HTTP parser's Python) cost more than the bytes it brought.  Once a
streamed body has brought its first MiB, :class:`ReadCoalescer` sets the socket's
``SO_RCVLOWAT``, so the kernel reports it readable only once
``low_water_mark`` bytes are waiting (or the connection ends): one read
then takes what thirty-two took.  What is left of a body of known length is
waited for whole, never more; the end of a chunked body is not known, so
a read that waits longer than ``patience`` (10 ms) lowers the mark back
to one byte and takes what is there (``tcp_set_rcvlowat`` signals the waiting
bytes at once; Linux 4.20 or later).  The kernel keeps the receive buffer
at least twice the mark, so a fast sender is never held up by it.
"""

import socket

from registryd import compat


class ReadCoalescer:
    """Sets and lowers ``SO_RCVLOWAT`` on one connection's socket while a
    request body streams in through it (:class:`registryd.http.web.RequestBody`)."""

    #: bytes the kernel waits for before it reports the socket readable:
    #: a whole read (:attr:`registryd.http.web.RequestBody.read_size`).
    #: 256 KiB left each piece of a fast sender (skopeo, podman) a hasher
    #: and a writer hand-off, with their thread wake-ups and GIL passing,
    #: per quarter MiB; 1 MiB cut the server CPU per image push by a fifth
    #: (skopeo 0.325 -> 0.26 s on two processes, docker 0.49 -> 0.38 s)
    low_water_mark = 1024 * 1024
    #: seconds a read may wait for them before it takes what has come.
    #: ``docker push`` sends about 10 MB/s per layer (it gzips five at
    #: once on shared cores): 2 ms took each 32 KiB write alone, as before,
    #: and cost a timer besides; 10 ms takes three to four.  Only the end
    #: of a large chunked body waits that long once, as nothing follows it.
    patience = 0.010
    #: body bytes received before the mark is raised: a small body (a
    #: config blob, a small layer) is read as it comes, never waited for
    after = 1024 * 1024

    def __init__(self, sock, call_later):
        """:param sock: the connection's socket (``setsockopt``)
        :param call_later: the reactor's ``callLater``, for the patience
            timer"""
        self._socket = sock
        self._call_later = call_later
        #: the mark set on the socket (1: the kernel's default)
        self._mark = 1
        self._timer = None

    @classmethod
    def for_transport(cls, transport, call_later):
        """A coalescer for ``transport``'s socket, or None when it is not a
        plain TCP connection (TLS counts encrypted bytes; tests' transports
        have no socket)."""
        if compat.socket_read_size(transport) is None:
            return None
        handle = getattr(transport, "getHandle", None)
        sock = handle() if handle is not None else None
        if not isinstance(sock, socket.socket) or sock.type != socket.SOCK_STREAM:
            return None
        return cls(sock, call_later)

    def arm(self, received, remaining=None):
        """Body bytes arrived (``received`` so far) and more are to come
        (``remaining`` of them, None when the body is chunked): wait for a
        larger read next."""
        if received < self.after:
            return
        wanted = self.low_water_mark if remaining is None else min(remaining, self.low_water_mark)
        self._set(max(wanted, 1))
        if remaining is not None:
            self._cancel_timer()  # the mark is never more than will come
        elif self._timer is None:
            self._timer = self._call_later(self.patience, self._lose_patience)
        else:
            self._timer.reset(self.patience)

    def release(self):
        """The body is over (or no longer read): the kernel's default again."""
        self._cancel_timer()
        self._set(1)

    def _lose_patience(self):
        self._timer = None
        self._set(1)

    def _cancel_timer(self):
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _set(self, mark):
        if mark == self._mark:
            return
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, mark)
        except OSError:
            # The connection is gone (its loss ends the body) or the
            # option refused: reads stay as they are.
            self._mark = 1
            return
        self._mark = mark
