"""A decoder of chunked request bodies that costs little per chunk.

``docker push``, podman and skopeo send layers with
``Transfer-Encoding: chunked``, in chunks of a few KiB to 32 KiB (Go's
``io.Copy`` writes).  Twisted's decoder (``_ChunkedTransferDecoder``)
copies every socket read into a buffer, copies each chunk out of it again,
and calls three state methods and the body callback per chunk: during an
image push that was a third of the reactor thread's Python time.  This one
walks each socket read in place, takes the chunks' bytes as ``memoryview``
slices and hands the body bytes of one read on in one callback (one
copy, none when the read is all body).

It accepts and refuses exactly what Twisted's decoder does (the chunk-size
line's syntax and 1024-byte limit, extensions, the CRLF after each chunk,
trailers up to 64 KiB), raising Twisted's own exceptions, so the channel
answers a malformed body as before: ``tests/unit/test_chunked.py`` checks
both decoders against each other on every split of generated bodies.
The private Twisted names are reached through :mod:`registryd.compat`.
"""

from registryd import compat

_CRLF = b"\r\n"
_HEX_DIGITS = b"0123456789abcdefABCDEF"
_LENGTH, _BODY, _CRLF_AFTER_BODY, _TRAILER, _FINISHED = range(5)


class ChunkedDecoder:
    """Decodes one chunked body: ``data_callback(bytes)`` gets its bytes,
    ``finish_callback(rest)`` the bytes after its end, once.

    The same interface as Twisted's ``_ChunkedTransferDecoder``
    (``dataReceived``, ``noMoreData``), which ``HTTPChannel`` drives.
    """

    #: longest chunk-size line (with extensions), as Twisted's
    max_line = compat.MAX_CHUNK_SIZE_LINE
    #: most bytes of trailer headers, as Twisted's
    max_trailers = 2**16

    def __init__(self, data_callback, finish_callback):
        self.data_callback = data_callback
        self.finish_callback = finish_callback
        self._state = _LENGTH
        #: bytes left in the chunk being read (state _BODY)
        self._length = 0
        #: the start of a line (or CRLF) whose end has not arrived yet
        self._pending = b""
        self._trailers_size = 0
        #: the read being decoded, and its body bytes not handed on yet
        self._data = None
        self._pieces = []

    def dataReceived(self, data):  # noqa: N802 (HTTPChannel's name)
        if self._state == _FINISHED and data:
            raise RuntimeError("ChunkedDecoder.dataReceived called after the last chunk")
        self._data = data
        try:
            self._decode(data, memoryview(data), self._pieces)
        finally:
            # Body bytes before a malformation are delivered, as Twisted does.
            self._deliver()
            self._data = None

    def _deliver(self):
        """Hand on the body bytes taken from the current read."""
        pieces = self._pieces
        if pieces:
            if len(pieces) == 1 and len(pieces[0]) == len(self._data):
                body = self._data  # the whole read is body: no copy
            else:
                body = b"".join(pieces)
            pieces.clear()
            self.data_callback(body)

    def _decode(self, data, view, pieces):
        position = 0
        end = len(data)
        while position < end:
            state = self._state
            if state == _BODY:
                taken = min(self._length, end - position)
                pieces.append(view[position : position + taken])
                position += taken
                self._length -= taken
                if not self._length:
                    self._state = _CRLF_AFTER_BODY
            elif state == _LENGTH:
                position = self._length_line(data, position)
            elif state == _CRLF_AFTER_BODY:
                window = self._pending + data[position : position + 2 - len(self._pending)]
                if len(window) < 2:
                    self._pending = window
                    return
                if window != _CRLF:
                    raise compat.MalformedChunkedData("Chunk did not end with CRLF")
                position += 2 - len(self._pending)
                self._pending = b""
                self._state = _LENGTH
            elif state == _TRAILER:
                position = self._trailer(data, position)
            else:  # _FINISHED: what follows belongs to the next request
                return

    def _length_line(self, data, position):
        """Parse a chunk-size line starting with ``self._pending`` then
        ``data[position:]``; the position after it (or ``len(data)`` when
        its end has not arrived)."""
        pending = self._pending
        # Twisted decides on the first max_line + 2 bytes: the line must
        # end (CRLF) before max_line.
        window = pending + data[position : position + self.max_line + 2]
        end_of_line = window.find(_CRLF)
        if end_of_line >= self.max_line or (end_of_line == -1 and len(window) > self.max_line):
            raise compat.MalformedChunkedData(
                f"Chunk size line exceeds maximum of {self.max_line} bytes."
            )
        if end_of_line == -1:
            self._pending = window
            return len(data)
        line = window[:end_of_line]
        end_of_length = line.find(b";")
        if end_of_length == -1:
            end_of_length = end_of_line
        size = line[:end_of_length]
        if not size or size.translate(None, _HEX_DIGITS):
            # Twisted's rule too: hexadecimal digits only (int() would take
            # a sign, "0x", spaces and underscores)
            raise compat.MalformedChunkedData("Chunk-size must be an integer.")
        length = int(size, 16)
        extension = line[end_of_length + 1 :]
        if extension and extension.translate(None, compat.CHUNK_EXTENSION_CHARACTERS) != b"":
            raise compat.MalformedChunkedData(
                f"Invalid characters in chunk extensions: {extension!r}."
            )
        self._pending = b""
        self._length = length
        self._state = _BODY if length else _TRAILER
        return position + end_of_line + 2 - len(pending)

    def _trailer(self, data, position):
        """Take trailer header lines up to the empty line that ends the
        body, as Twisted does (kept nowhere: registryd reads none)."""
        buffer = self._pending + data[position:]
        self._pending = b""
        while True:
            end_of_line = buffer.find(_CRLF)
            if end_of_line == -1:
                smallest = self._trailers_size + len(buffer) + (1 if buffer.endswith(b"\r") else 2)
                if smallest > self.max_trailers:
                    raise compat.MalformedChunkedData("Trailer headers data is too long.")
                self._pending = buffer
                return len(data)
            if end_of_line > 0:
                buffer = buffer[end_of_line + 2 :]
                self._trailers_size += end_of_line + 2
                if self._trailers_size > self.max_trailers:
                    raise compat.MalformedChunkedData("Trailer headers data is too long.")
                if not buffer:
                    return len(data)
                continue
            self._state = _FINISHED
            self._deliver()  # the body's last bytes come before its end
            self.finish_callback(bytes(buffer[2:]))
            return len(data)

    def noMoreData(self):  # noqa: N802 (HTTPChannel's name)
        """The connection ended: an unfinished body is data lost."""
        if self._state != _FINISHED:
            raise compat.ChunkedDataLoss(
                "Chunked decoder still expecting more data to get to the end of the body."
            )
