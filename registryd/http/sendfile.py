"""Sending a file's bytes to a plain TCP connection with ``sendfile(2)``.

Reading a blob into Python and writing it to the transport costs a copy
in, a copy out and a trip through the reactor per chunk; ``sendfile``
moves page-cache pages to the socket in the kernel.  Twisted has no
sendfile support (twisted.web's static files read 64 KiB at a time on the
reactor thread), so this module does it beside the transport, keeping the
rules that make that safe in one place:

* Only for a plain socket transport (TCP or UNIX, not TLS: the bytes
  must be encrypted in user space) whose own write buffer is empty, so
  nothing Twisted buffered (the response headers) can be overtaken.
  While a transfer runs, nothing else writes to the connection: the
  response body is ours, and twisted.web holds pipelined requests back
  until the response is finished.
* ``sendfile`` runs in a thread pool, since reading a cold file blocks on
  the disk.  Each call sends what the socket takes; when it would block,
  the thread returns and the reactor waits for the socket to be writable
  (a slow client holds no thread).  A burst is capped, so one fast
  transfer cannot keep a pool thread from other work for long.
* The transfer uses its own duplicate of the socket's descriptor: if the
  connection is closed meanwhile (the client left, a timeout), Twisted
  closes its descriptor, and the number cannot be reused for another file
  under a ``sendfile`` still running in a thread.  The duplicate is closed
  when the transfer ends.
"""

import errno
import os
import select
import socket

from twisted.internet import defer, error
from twisted.python.failure import Failure

from registryd import compat

#: Bytes one thread hand-off sends at most before going back to the pool.
BURST = 64 * 1024 * 1024
#: How long a thread waits for a full socket before leaving the wait to
#: the reactor.
THREAD_WAIT_MS = 20


def socket_transport(transport):
    """``transport`` if a response body may be sent to it with sendfile:
    a connected plain socket transport whose write buffer is known.
    None otherwise (TLS, tests' string transports, a future Twisted whose
    buffer attributes changed: the caller then writes as usual)."""
    if not hasattr(os, "sendfile"):
        return None
    sock = getattr(transport, "socket", None)
    if sock is None or not hasattr(sock, "fileno"):
        return None
    if transport.__class__.__name__ == "TLSMemoryBIOProtocol":
        return None
    from twisted.protocols.policies import ProtocolWrapper

    if isinstance(transport, ProtocolWrapper):
        # TLS (twisted.protocols.tls's BufferingTLSTransport and friends)
        # or another wrapper that transforms the bytes: its ``socket`` is
        # the raw connection underneath, not ours to write to.
        return None
    if compat.write_buffer_empty(transport) is None:
        return None
    if not getattr(transport, "connected", False) or getattr(transport, "disconnecting", True):
        return None
    return transport


def _no_delay(sock):
    """Send the body's last, partial segment at once: with Nagle's
    algorithm it waits for the client to acknowledge everything before it
    (up to a delayed-ACK timeout, 40 ms on Linux, at the end of every
    blob).  Go servers such as docker-registry set this on every
    connection.  Not a TCP socket (UNIX): nothing to do."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


class SendfileTransfer:
    """Sends ``count`` bytes of file descriptor ``file_fd`` from ``offset``
    to a socket transport.  :meth:`start` returns a Deferred that fires
    with the number of bytes sent, or fails with the socket error (also
    when stopped: :class:`error.ConnectionLost`)."""

    def __init__(self, reactor, pool, transport, file_fd, offset, count):
        self._reactor = reactor
        self._pool = pool
        self._transport = transport
        self._file_fd = file_fd
        self._offset = offset
        self._remaining = count
        self.sent = 0
        self._fd = None
        self._done = None
        self._stopped = False
        self._in_thread = False
        self._writing = False

    # IWriteDescriptor (registered with the reactor while the socket is full)

    def fileno(self):
        return -1 if self._fd is None else self._fd

    def logPrefix(self):
        return "SendfileTransfer"

    def doWrite(self):
        self._stop_writing()
        self._step()
        return None

    def connectionLost(self, reason):
        self._writing = False
        self._end(Failure(error.ConnectionLost(reason.getErrorMessage())))

    # control

    def start(self):
        self._done = defer.Deferred()
        if self._stopped:
            self._end(Failure(error.ConnectionLost("transfer stopped")))
            return self._done
        try:
            self._fd = os.dup(self._transport.socket.fileno())
        except OSError:
            self._done.errback()
            return self._done
        _no_delay(self._transport.socket)
        if self._remaining <= 0:
            self._end(None)
        else:
            self._step()
        return self._done

    def stop(self):
        """Stop soon: the connection is gone.  The Deferred fails."""
        if self._stopped:
            return
        self._stopped = True
        if not self._in_thread:
            self._stop_writing()
            self._end(Failure(error.ConnectionLost("transfer stopped")))

    # the loop

    def _step(self):
        """Wait for Twisted to flush what it buffered, then send a burst."""
        if self._stopped or self._done.called:
            return
        empty = compat.write_buffer_empty(self._transport)
        if not empty:
            # Headers still in Twisted's buffer (or the transport is gone).
            if empty is None or not self._transport.connected:
                self._end(Failure(error.ConnectionLost("transport closed")))
            else:
                self._start_writing()
            return
        self._in_thread = True
        self._pool.callInThreadWithCallback(
            lambda ok, result: self._reactor.callFromThread(self._burst_done, ok, result),
            self._send_burst,
            self._offset,
            min(self._remaining, BURST),
        )

    def _send_burst(self, offset, count):
        """In a thread: send up to ``count`` bytes; (sent, socket_full).

        A full socket is waited for here a little (a fast client drains it
        in well under that), and only handed to the reactor to wait for
        when it stays full: a slow client holds no thread."""
        sent = 0
        poller = None
        while sent < count and not self._stopped:
            try:
                n = os.sendfile(self._fd, self._file_fd, offset + sent, count - sent)
            except BlockingIOError:
                if poller is None:
                    poller = select.poll()
                    poller.register(self._fd, select.POLLOUT)
                if poller.poll(THREAD_WAIT_MS):
                    continue
                return sent, True
            except InterruptedError:
                continue
            if n == 0:
                raise EOFError("file ended before the response did")
            sent += n
        return sent, False

    def _burst_done(self, ok, result):
        self._in_thread = False
        if not ok:
            self._end(result)
            return
        sent, socket_full = result
        self.sent += sent
        self._offset += sent
        self._remaining -= sent
        if self._stopped:
            self._end(Failure(error.ConnectionLost("transfer stopped")))
        elif self._remaining <= 0:
            self._end(None)
        elif socket_full:
            self._start_writing()
        else:
            self._step()

    def _start_writing(self):
        if not self._writing:
            self._writing = True
            self._reactor.addWriter(self)

    def _stop_writing(self):
        if self._writing:
            self._writing = False
            self._reactor.removeWriter(self)

    def _end(self, failure):
        self._stop_writing()
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError:
                pass
        if self._done is not None and not self._done.called:
            if failure is None:
                self._done.callback(self.sent)
            else:
                self._done.errback(failure)


def is_disconnect(failure):
    """Whether a transfer failed because the client went away."""
    if failure.check(
        error.ConnectionLost, error.ConnectionDone, BrokenPipeError, ConnectionResetError
    ):
        return True
    value = failure.value
    return isinstance(value, OSError) and value.errno in (errno.EPIPE, errno.ECONNRESET)
