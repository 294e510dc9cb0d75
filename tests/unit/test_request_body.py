"""registryd.http.web.RequestBody: a body that trickles in (``docker push``
gzipping while it sends) reaches the upload handler in gathered pieces of
``gather`` bytes, never as each socket read brought it, and no byte is lost,
reordered or held back at the end or on a broken connection."""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from registryd.http.web import BodyConnectionLost, RequestBody

KIB = 1024
READ = 1024 * KIB  # what an upload asks for per step (registryd.storage.upload_sinks.CHUNK_SIZE)


def new_body():
    transport = StringTransport()
    return RequestBody(transport, None), transport


def read(body):
    return defer.ensureDeferred(body.read(READ))


def result_of(deferred):
    results = []
    deferred.addBoth(results.append)
    assert results, "the read is still waiting"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def test_a_trickling_body_is_handed_on_in_gathered_pieces():
    body, _ = new_body()
    pending = read(body)
    piece = b"x" * (64 * KIB)
    for _ in range(RequestBody.gather // len(piece) - 1):
        body._received(piece)
        assert not pending.called  # 64 KiB reads are not handed on one by one
    body._received(piece)
    assert len(result_of(pending)) == RequestBody.gather


def test_a_waiting_reader_is_woken_once_its_piece_is_gathered():
    """Each socket read does not wake the waiting reader only for it to
    wait again: that cost every read of a push a Deferred and a coroutine
    step on the reactor thread."""
    body, _ = new_body()
    wake_ups = []
    real_wake = body._wake

    def wake():
        wake_ups.append(body._waiter is not None)
        real_wake()

    body._wake = wake
    pending = read(body)
    piece = b"x" * (16 * KIB)
    for _ in range(RequestBody.gather // len(piece)):
        body._received(piece)
    assert len(result_of(pending)) == RequestBody.gather
    assert wake_ups.count(True) == 1


def test_the_end_and_a_broken_connection_release_what_was_gathered():
    body, _ = new_body()
    pending = read(body)
    body._received(b"a" * (100 * KIB))
    assert not pending.called
    body._finish()
    assert result_of(pending) == b"a" * (100 * KIB)
    assert result_of(read(body)) == b""

    body, _ = new_body()
    pending = read(body)
    body._received(b"b" * (100 * KIB))
    body._fail(Failure(ConnectionLost()))
    assert result_of(pending) == b"b" * (100 * KIB)  # kept: the client resumes after them
    failed = read(body)
    try:
        result_of(failed)
    except BodyConnectionLost:
        pass
    else:
        raise AssertionError("a read after the break should raise BodyConnectionLost")


def test_an_empty_piece_is_not_the_end():
    body, _ = new_body()
    pending = read(body)
    body._received(b"")
    assert not pending.called
    body._received(b"z" * 10)
    body._finish()
    assert result_of(pending) == b"z" * 10


@settings(max_examples=200, deadline=None)
@given(
    pieces=st.lists(st.integers(min_value=0, max_value=300 * KIB), max_size=40),
    reads_between=st.lists(st.booleans(), max_size=40),
    broken=st.booleans(),
)
def test_every_byte_arrives_once_in_order_and_the_reader_never_starves(
    pieces, reads_between, broken
):
    """Whatever the piece sizes and however reads interleave with them:
    the reads return exactly the bytes pushed, in order; every read short
    of ``gather`` is the last before the end (or the break); and while a
    read waits, the connection is never left paused (no deadlock)."""
    body, transport = new_body()
    sent = bytearray()
    got = []
    pending = None

    def collect():
        nonlocal pending
        while pending is not None and pending.called:
            data = result_of(pending)
            got.append(data)
            pending = read(body) if data else None

    pending = read(body)
    for index, size in enumerate(pieces):
        data = bytes([index % 251]) * size
        sent += data
        body._received(data)
        if index < len(reads_between) and reads_between[index]:
            collect()
        if pending is not None and not pending.called:
            assert transport.producerState == "producing"
    if broken:
        body._fail(Failure(ConnectionLost()))
    else:
        body._finish()
    try:
        collect()
        while pending is not None:
            data = result_of(pending)
            got.append(data)
            pending = read(body) if data else None
    except BodyConnectionLost:
        assert broken
    assert b"".join(got) == bytes(sent)
    sizes = [len(data) for data in got if data]
    assert all(size >= RequestBody.gather for size in sizes[:-1]), sizes
