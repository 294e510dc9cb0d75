"""Running upload digests whose state is stored: the state a hasher exports
continues the same hash, is encoded as Go's ``crypto/sha256`` and
``crypto/sha512`` encode theirs (CNCF Distribution's ``hashstates`` files),
and hostile stored bytes never raise."""

import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registryd import resumable_digest
from registryd.resumable_digest import new_resumable_hasher, restore, state_of

pytestmark = pytest.mark.skipif(
    resumable_digest._FUNCTIONS is None, reason="libcrypto's SHA functions not available"
)

ALGORITHMS = st.sampled_from(["sha256", "sha512"])
#: Go's state sizes: magic, eight chaining words, one block, the length
GO_SIZES = {"sha256": 4 + 32 + 64 + 8, "sha512": 4 + 64 + 128 + 8}
MAGIC = {"sha256": b"sha\x03", "sha512": b"sha\x07"}


@settings(max_examples=300, deadline=None)
@given(algorithm=ALGORITHMS, data=st.binary(max_size=700), split=st.integers(0, 700))
def test_a_stored_state_continues_the_same_hash(algorithm, data, split):
    first, rest = data[:split], data[split:]
    hasher = new_resumable_hasher(algorithm)
    hasher.update(first)
    state = state_of(hasher)
    assert len(state) == GO_SIZES[algorithm]
    resumed = restore(algorithm, state)
    resumed.update(rest)
    assert resumed.hexdigest() == hashlib.new(algorithm, data).hexdigest()
    # digest() leaves the hasher running, as hashlib's does
    assert hasher.hexdigest() == hashlib.new(algorithm, first).hexdigest()
    hasher.update(rest)
    assert hasher.digest() == hashlib.new(algorithm, data).digest()


def test_the_state_is_gos_encoding():
    """Worked by hand from Go's ``digest.MarshalBinary``: before a first
    whole block the chaining words are still SHA-256's initial values,
    the pending bytes follow, zero-padded to a block, then the length."""
    hasher = new_resumable_hasher("sha256")
    hasher.update(b"abc")
    initial = (
        0x6A09E667,
        0xBB67AE85,
        0x3C6EF372,
        0xA54FF53A,
        0x510E527F,
        0x9B05688C,
        0x1F83D9AB,
        0x5BE0CD19,
    )
    expected = b"sha\x03" + struct.pack(">8I", *initial) + b"abc" + bytes(61) + struct.pack(">Q", 3)
    assert state_of(hasher) == expected


def test_a_plain_hashlib_object_has_no_state_to_store():
    assert state_of(hashlib.sha256()) is None


@settings(max_examples=500, deadline=None)
@given(algorithm=ALGORITHMS, state=st.binary(max_size=260))
def test_hostile_stored_bytes_are_refused_without_raising(algorithm, state):
    assert restore(algorithm, state) is None or len(state) == GO_SIZES[algorithm]


@settings(max_examples=300, deadline=None)
@given(algorithm=ALGORITHMS, data=st.data())
def test_any_well_formed_state_restores_and_hashes(algorithm, data):
    """A state of the right size and magic with any words, bytes and a
    length below 2 EiB (a foreign or damaged file) gives a hasher that works; exported again
    it is the same, but for the unused part of the block, which Go
    zeroes."""
    body = data.draw(st.binary(min_size=GO_SIZES[algorithm] - 4, max_size=GO_SIZES[algorithm] - 4))
    state = MAGIC[algorithm] + body
    hasher = restore(algorithm, state)
    block = 64 if algorithm == "sha256" else 128
    (length,) = struct.unpack(">Q", state[-8:])
    if length >= resumable_digest.MAX_LENGTH:
        assert hasher is None  # more bytes than SHA-256 counts: not a real upload's
        return
    pending = length % block
    canonical = state[: -8 - block + pending] + bytes(block - pending) + state[-8:]
    assert hasher.state() == canonical
    hasher.update(b"more")
    assert len(hasher.digest()) == hashlib.new(algorithm).digest_size
    assert restore("sha512" if algorithm == "sha256" else "sha256", state) is None


def test_libcrypto_functions_that_disagree_with_hashlib_are_not_used():
    """The functions loaded from libcrypto are checked against hashlib
    (through the context layout, state export and restore) before any
    upload uses them.  A context that is not laid out as expected (the
    stand-in: an init that leaves its first chaining word elsewhere, as
    another ABI might) fails that check, so uploads fall back to hashlib."""
    functions = resumable_digest._load_functions()
    assert functions is not None
    assert resumable_digest._functions_agree_with_hashlib(functions)
    init, update, final = functions["sha256"]

    def misplaced_init(context):
        result = init(context)
        context[0:4] = context[4:8]
        return result

    other_abi = dict(functions, sha256=(misplaced_init, update, final))
    assert not resumable_digest._functions_agree_with_hashlib(other_abi)
