"""Running upload digests whose state can be stored and picked up again.

An upload's running hash lived only in the memory of the process that
received its bytes (:class:`registryd.storage.uploads.HashStates`).  With
``--workers`` (or several nodes) a client's next request of the same
upload often reaches another process: the ``PUT`` that completes a layer
``docker push``, podman or skopeo streamed through one connection comes
on another of its pooled connections, and the process behind it read the
whole upload back from storage and hashed it again (measured: 20-60 MiB
per 5x20 MiB skopeo push on two processes, about 0.1 s of CPU, what made
``--workers auto`` cost more per push than one process).  Python's
``hashlib`` cannot export a hash's state, so this module runs SHA-256 and
SHA-512 through OpenSSL's low-level functions (the ones ``hashlib`` ends up
in, as fast), whose context is plain memory.  :meth:`ResumableHasher.state`
encodes it as Go's ``crypto/sha256`` and ``crypto/sha512`` do
(``MarshalBinary``), which is what CNCF Distribution stores under an
upload's ``hashstates/<algorithm>/<offset>``: either server can finish an
upload the other received.

Where libcrypto cannot be loaded, :func:`new_resumable_hasher` returns a
plain ``hashlib`` object and :func:`state_of` None: uploads then work as
before, resumed elsewhere by reading the bytes back.
"""

import ctypes
import ctypes.util
import hashlib
import struct

from registryd.digest import check_algorithm

#: Bytes hashed beyond which a stored state is refused: SHA-256 counts
#: bits in 64 bits, and nothing uploads 2 EiB.
MAX_LENGTH = 1 << 61


class _Layout:
    """One algorithm's OpenSSL context (``SHA256_CTX``/``SHA512_CTX`` on a
    little-endian 64-bit machine) and Go's encoding of the same state."""

    def __init__(self, name, word, block, digest_size, go_magic, prefix):
        self.name = name
        #: ``I`` (32-bit) or ``Q`` (64-bit): the chaining words and the bit count
        self.word = word
        self.block = block
        self.digest_size = digest_size
        self.go_magic = go_magic
        self.prefix = prefix  # OpenSSL's function name prefix
        word_size = struct.calcsize(word)
        #: h[8], then the bit count as two words (low, high)
        self.count_offset = 8 * word_size
        self.data_offset = self.count_offset + 2 * word_size
        self.num_offset = self.data_offset + block
        self.context_size = self.num_offset + 8  # num, md_len (unsigned int each)
        self.go_size = len(go_magic) + 8 * word_size + block + 8

    def to_go(self, context):
        """Go's ``MarshalBinary`` of the hash that ``context`` (OpenSSL's
        bytes) holds."""
        words = struct.unpack_from(f"<8{self.word}", context, 0)
        low, high = struct.unpack_from(f"<2{self.word}", context, self.count_offset)
        bits = (high << (8 * struct.calcsize(self.word))) | low
        (pending,) = struct.unpack_from("<I", context, self.num_offset)
        data = context[self.data_offset : self.data_offset + pending]
        return b"".join(
            [
                self.go_magic,
                struct.pack(f">8{self.word}", *words),
                data,
                bytes(self.block - pending),
                struct.pack(">Q", (bits // 8) & 0xFFFFFFFFFFFFFFFF),
            ]
        )

    def from_go(self, state):
        """OpenSSL's context bytes for Go's encoding ``state``; ValueError
        when it is not one of this algorithm."""
        if len(state) != self.go_size or not state.startswith(self.go_magic):
            raise ValueError(f"not a {self.name} hash state")
        offset = len(self.go_magic)
        words = struct.unpack_from(f">8{self.word}", state, offset)
        offset += 8 * struct.calcsize(self.word)
        data = state[offset : offset + self.block]
        (length,) = struct.unpack_from(">Q", state, offset + self.block)
        if length >= MAX_LENGTH:
            raise ValueError(f"not a {self.name} hash state: length {length}")
        pending = length % self.block
        bits = length * 8
        shift = 8 * struct.calcsize(self.word)
        mask = (1 << shift) - 1
        return b"".join(
            [
                struct.pack(f"<8{self.word}", *words),
                struct.pack(f"<2{self.word}", bits & mask, bits >> shift),
                data[:pending],
                bytes(self.block - pending),
                struct.pack("<II", pending, self.digest_size),
            ]
        )


_LAYOUTS = {
    "sha256": _Layout("sha256", "I", 64, 32, b"sha\x03", "SHA256"),
    "sha512": _Layout("sha512", "Q", 128, 64, b"sha\x07", "SHA512"),
}


def _load_functions():
    """``{algorithm: (init, update, final)}`` from libcrypto, or None when
    it cannot be loaded or the machine is not one whose context layout
    :class:`_Layout` describes (little-endian, 64-bit)."""
    if struct.pack("=I", 1) != b"\x01\x00\x00\x00" or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    name = ctypes.util.find_library("crypto")
    if name is None:
        return None
    try:
        library = ctypes.CDLL(name)
        functions = {}
        for algorithm, layout in _LAYOUTS.items():
            init = getattr(library, f"{layout.prefix}_Init")
            update = getattr(library, f"{layout.prefix}_Update")
            final = getattr(library, f"{layout.prefix}_Final")
            init.argtypes = [ctypes.c_char_p]
            update.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
            final.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
            init.restype = update.restype = final.restype = ctypes.c_int
            functions[algorithm] = (init, update, final)
    except (OSError, AttributeError):
        return None
    return functions if _functions_agree_with_hashlib(functions) else None


def _functions_agree_with_hashlib(functions):
    """Whether ``functions`` hash as ``hashlib`` does, through a context
    laid out as :class:`_Layout` says, state export and restore included.

    The layout of OpenSSL's contexts is a public struct that has not
    changed in decades, but a digest is what makes a blob visible: a
    libcrypto that disagreed (another build, another ABI) must make
    uploads fall back to ``hashlib``, not accept wrong digests."""
    sample = bytes(range(256)) * 3
    try:
        for algorithm, (init, update, final) in functions.items():
            layout = _LAYOUTS[algorithm]
            context = ctypes.create_string_buffer(layout.context_size)
            init(context)
            update(context, sample[:100], 100)
            restored = ctypes.create_string_buffer(
                layout.from_go(layout.to_go(context.raw)), layout.context_size
            )
            update(restored, sample[100:], len(sample) - 100)
            out = ctypes.create_string_buffer(layout.digest_size)
            final(out, restored)
            if out.raw != hashlib.new(algorithm, sample).digest():
                return False
    except (ctypes.ArgumentError, ValueError, struct.error):
        return False
    return True


_FUNCTIONS = _load_functions()


class ResumableHasher:
    """A ``hashlib``-like running hash (``name``, ``update``, ``digest``,
    ``hexdigest``, ``copy``) of ``sha256`` or ``sha512`` whose state
    :meth:`state` exports and :meth:`restore` takes back.

    ``update`` releases the GIL while OpenSSL hashes (ctypes does, as
    ``hashlib`` does for large data), so the thread hashing an upload (its
    writer's, or a hasher thread) runs beside the reactor."""

    __slots__ = ("name", "_layout", "_context", "_update", "_final")

    def __init__(self, algorithm, context=None):
        """:param context: OpenSSL context bytes to continue from (None: a
        fresh hash)"""
        self.name = algorithm
        self._layout = _LAYOUTS[algorithm]
        init, self._update, self._final = _FUNCTIONS[algorithm]
        if context is None:
            self._context = ctypes.create_string_buffer(self._layout.context_size)
            init(self._context)
        else:
            self._context = ctypes.create_string_buffer(context, self._layout.context_size)

    @classmethod
    def restore(cls, algorithm, state):
        """The hasher whose :meth:`state` was ``state``; ValueError when
        ``state`` is not a state of ``algorithm``."""
        return cls(algorithm, _LAYOUTS[algorithm].from_go(state))

    @property
    def digest_size(self):
        return self._layout.digest_size

    def update(self, data):
        if not isinstance(data, bytes):
            data = bytes(data)
        self._update(self._context, data, len(data))

    def copy(self):
        return type(self)(self.name, self._context.raw)

    def digest(self):
        # Final consumes the context: finish a copy, keep this one running.
        context = ctypes.create_string_buffer(self._context.raw, self._layout.context_size)
        out = ctypes.create_string_buffer(self._layout.digest_size)
        self._final(out, context)
        return out.raw

    def hexdigest(self):
        return self.digest().hex()

    def state(self):
        """The state in Go's ``MarshalBinary`` encoding (Distribution's
        ``hashstates`` files)."""
        return self._layout.to_go(self._context.raw)


def new_resumable_hasher(algorithm):
    """A fresh hasher of ``algorithm`` whose state can be stored
    (:func:`state_of`), or a plain ``hashlib`` one where libcrypto's
    functions are not available."""
    check_algorithm(algorithm)
    if _FUNCTIONS is None:
        return hashlib.new(algorithm)
    return ResumableHasher(algorithm)


def state_of(hasher):
    """``hasher``'s state to store, or None when it cannot be exported."""
    return hasher.state() if isinstance(hasher, ResumableHasher) else None


def restore(algorithm, state):
    """The hasher stored as ``state``, or None when there is none to be had
    (no libcrypto here, or ``state`` is not one of ``algorithm``)."""
    if _FUNCTIONS is None or algorithm not in _LAYOUTS:
        return None
    try:
        return ResumableHasher.restore(algorithm, state)
    except ValueError:
        return None
