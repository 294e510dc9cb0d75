"""registryd.http.coalesce.ReadCoalescer on real loopback TCP sockets: the
kernel reports a socket readable only once the mark's bytes wait, never
waits for more than a body of known length has left, and takes what there
is once the coalescer loses patience or is released."""

import fcntl
import select
import socket
import struct
import termios
import time

import pytest
from twisted.internet import task

from registryd.http.coalesce import ReadCoalescer

KIB = 1024
MIB = 1024 * KIB


@pytest.fixture
def connection():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        sender = socket.create_connection(listener.getsockname())
        receiver, _ = listener.accept()
    yield sender, receiver
    sender.close()
    receiver.close()


def waiting_bytes(sock):
    return struct.unpack("i", fcntl.ioctl(sock, termios.FIONREAD, b"\0\0\0\0"))[0]


def send_and_wait_for_arrival(sender, receiver, size):
    """Send ``size`` bytes and wait (a condition, generous timeout) until the
    receiver's kernel holds them, so that readability is then decided."""
    before = waiting_bytes(receiver)
    sender.sendall(b"x" * size)
    deadline = time.monotonic() + 10
    while waiting_bytes(receiver) < before + size:
        assert time.monotonic() < deadline, "the bytes never arrived"
        time.sleep(0.001)


def readable(sock):
    return bool(select.select([sock], [], [], 0)[0])


def test_a_chunked_body_is_read_once_the_mark_waits_or_patience_runs_out(connection):
    sender, receiver = connection
    clock = task.Clock()
    coalescer = ReadCoalescer(receiver, clock.callLater)
    coalescer.low_water_mark = 64 * KIB
    coalescer.arm(MIB)
    send_and_wait_for_arrival(sender, receiver, 32 * KIB)
    assert not readable(receiver), "32 KiB reported before the 64 KiB mark"
    send_and_wait_for_arrival(sender, receiver, 32 * KIB)
    assert readable(receiver)
    receiver.recv(128 * KIB)
    coalescer.arm(MIB)
    send_and_wait_for_arrival(sender, receiver, 1 * KIB)
    assert not readable(receiver)
    clock.advance(coalescer.patience)  # the sender has finished: take what came
    assert readable(receiver)
    assert clock.getDelayedCalls() == []


def test_a_body_of_known_length_is_never_waited_for_beyond_its_end(connection):
    sender, receiver = connection
    clock = task.Clock()
    coalescer = ReadCoalescer(receiver, clock.callLater)
    coalescer.arm(MIB, remaining=10 * KIB)
    send_and_wait_for_arrival(sender, receiver, 10 * KIB)
    assert readable(receiver)
    assert clock.getDelayedCalls() == []  # no timer: the mark is exact


def test_a_small_body_is_never_waited_for(connection):
    sender, receiver = connection
    clock = task.Clock()
    coalescer = ReadCoalescer(receiver, clock.callLater)
    coalescer.arm(coalescer.after - 1)
    send_and_wait_for_arrival(sender, receiver, 1)
    assert readable(receiver)
    assert clock.getDelayedCalls() == []


def test_release_restores_the_kernels_default(connection):
    sender, receiver = connection
    clock = task.Clock()
    coalescer = ReadCoalescer(receiver, clock.callLater)
    coalescer.arm(MIB)
    coalescer.release()
    assert clock.getDelayedCalls() == []
    send_and_wait_for_arrival(sender, receiver, 1)
    assert readable(receiver)
    assert receiver.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 1


def test_a_closed_socket_leaves_reads_as_they_are(connection):
    _, receiver = connection
    clock = task.Clock()
    coalescer = ReadCoalescer(receiver, clock.callLater)
    receiver.close()
    coalescer.arm(MIB)  # setsockopt fails: no exception, nothing changes
    coalescer.release()


def test_only_plain_tcp_transports_get_one():
    from twisted.internet.testing import StringTransport

    assert ReadCoalescer.for_transport(StringTransport(), task.Clock().callLater) is None
