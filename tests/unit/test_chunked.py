"""registryd.http.chunked.ChunkedDecoder against Twisted's decoder: on any
body, well-formed or not, split into socket reads anywhere, both hand on the
same bytes, end at the same place with the same rest, and refuse the same
bodies (with Twisted's exception, which the channel answers with 400)."""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.web import http

from registryd import compat
from registryd.http.chunked import ChunkedDecoder


def run(decoder_class, reads):
    """Feed ``reads`` to a decoder; what it handed on, its rest and how it
    stopped (None, 'malformed', 'after-end')."""
    body = []
    rest = []
    decoder = decoder_class(body.append, rest.append)
    stopped = None
    for data in reads:
        try:
            decoder.dataReceived(data)
        except compat.MalformedChunkedData:
            stopped = "malformed"
            break
        except RuntimeError:
            stopped = "after-end"
            break
    try:
        decoder.noMoreData()
        complete = True
    except compat.ChunkedDataLoss:
        complete = False
    return b"".join(body), rest, stopped, complete


def twisted_decoder(data_callback, finish_callback):
    return http._ChunkedTransferDecoder(data_callback, finish_callback)


def split(data, cuts):
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    return [data[start:end] for start, end in zip([0, *points], [*points, len(data)])]


def assert_agree(data, cuts):
    reads = split(data, cuts)
    ours = run(ChunkedDecoder, reads)
    theirs = run(twisted_decoder, reads)
    assert ours == theirs, (reads, ours, theirs)


_chunk = st.binary(min_size=1, max_size=300).map(lambda body: b"%x\r\n%s\r\n" % (len(body), body))
_well_formed = st.builds(
    lambda chunks, trailers, rest: b"".join(chunks) + b"0\r\n" + trailers + b"\r\n" + rest,
    st.lists(_chunk, max_size=8),
    st.sampled_from([b"", b"X-Trailer: 1\r\n", b"A: b\r\nC: d\r\n"]),
    st.sampled_from([b"", b"GET /v2/ HTTP/1.1\r\n\r\n"]),
)
_cuts = st.lists(st.integers(min_value=0, max_value=10_000), max_size=12)


@settings(max_examples=400, deadline=None)
@given(_well_formed, _cuts)
def test_well_formed_bodies_decode_alike_on_any_split(data, cuts):
    assert_agree(data, cuts)
    assert run(ChunkedDecoder, split(data, cuts))[3]  # and it is complete


_pieces = st.sampled_from(
    [
        b"\r\n",
        b"\r",
        b"\n",
        b";",
        b"0",
        b"a",
        b"F",
        b"10",
        b"x",
        b"-1",
        b"0x1",
        b" ",
        b"\t",
        b";ext=1",
        b";\x01",
        b"abc",
        b"0\r\n",
        b"5\r\nhello\r\n",
        b"1\r\nz",
        b"\x00",
        b"\xff",
        b"G",
    ]
)


@settings(max_examples=1500, deadline=None)
@given(st.lists(_pieces | st.binary(max_size=20), max_size=30), _cuts)
def test_hostile_bodies_decode_or_fail_alike_on_any_split(pieces, cuts):
    assert_agree(b"".join(pieces), cuts)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1000, max_value=1100),
    st.integers(min_value=0, max_value=3),
    _cuts,
)
def test_long_size_lines_are_refused_alike(padding, ending, cuts):
    line = b"1;" + b"a" * padding + [b"", b"\r", b"\r\n", b"\r\nx\r\n"][ending]
    assert_agree(line, cuts)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=60_000, max_value=70_000), _cuts)
def test_long_trailers_are_refused_alike(size, cuts):
    data = b"1\r\nx\r\n0\r\n" + (b"T: " + b"v" * size + b"\r\n") + b"\r\n"
    assert_agree(data, cuts)
    assert_agree(b"0\r\n" + b"A: b\r\n" * (size // 6), cuts)


def test_a_read_of_body_only_is_handed_on_without_a_copy():
    body = []
    decoder = ChunkedDecoder(body.append, lambda rest: None)
    decoder.dataReceived(b"100000\r\n")
    data = b"x" * 65536
    decoder.dataReceived(data)
    assert body[0] is data


def test_the_body_before_a_malformation_is_handed_on():
    body = []
    decoder = ChunkedDecoder(body.append, lambda rest: None)
    try:
        decoder.dataReceived(b"3\r\nabc\r\n2\r\nde!!")
    except compat.MalformedChunkedData:
        pass
    else:
        raise AssertionError("not refused")
    assert b"".join(body) == b"abcde"
