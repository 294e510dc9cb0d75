"""Content digests: parsing, validation and hashing.

A digest is ``<algorithm>:<encoded>`` (OCI image spec, descriptor.md).  The
grammar admits many algorithms; registryd computes and verifies the two
registered ones, ``sha256`` and ``sha512``, and answers any other with the
spec's ``DIGEST_INVALID`` and a message saying it is unsupported.
"""

import hashlib
import re

import attr

from registryd.errors import DigestInvalid

# descriptor.md: digest ::= algorithm ":" encoded.  Matched whole
# (fullmatch): ``$`` would let a trailing newline into a storage path.
GRAMMAR = r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+"
_GRAMMAR = re.compile(GRAMMAR)

#: Registered algorithms and the exact form of their encoded part.
ALGORITHMS = {
    "sha256": re.compile(r"[a-f0-9]{64}"),
    "sha512": re.compile(r"[a-f0-9]{128}"),
}

DEFAULT_ALGORITHM = "sha256"


def check_algorithm(algorithm):
    """Return ``algorithm`` if registryd can compute it, else raise DIGEST_INVALID."""
    if algorithm not in ALGORITHMS:
        raise DigestInvalid(
            f"unsupported digest algorithm {algorithm!r} (supported: "
            + ", ".join(sorted(ALGORITHMS))
            + ")",
            detail={"algorithm": algorithm},
        )
    return algorithm


def new_hasher(algorithm):
    """A fresh hashlib object for a supported algorithm."""
    return hashlib.new(check_algorithm(algorithm))


@attr.s(frozen=True, slots=True, str=False)
class Digest:
    """A validated digest of a supported algorithm."""

    algorithm = attr.ib()
    hex = attr.ib()

    @classmethod
    def parse(cls, text):
        """Parse and validate ``text`` (str or bytes); raise DIGEST_INVALID."""
        if isinstance(text, bytes):
            try:
                text = text.decode("ascii")
            except UnicodeDecodeError:
                raise DigestInvalid("digest is not ASCII") from None
        if not isinstance(text, str) or not _GRAMMAR.fullmatch(text):
            raise DigestInvalid(f"invalid digest {text!r}", detail={"digest": str(text)})
        algorithm, encoded = text.split(":", 1)
        check_algorithm(algorithm)
        if not ALGORITHMS[algorithm].fullmatch(encoded):
            raise DigestInvalid(
                f"invalid {algorithm} digest {text!r}: expected "
                f"{'64' if algorithm == 'sha256' else '128'} lowercase hex digits",
                detail={"digest": text},
            )
        return cls(algorithm, encoded)

    @classmethod
    def from_hasher(cls, hasher):
        return cls(hasher.name, hasher.hexdigest())

    @classmethod
    def of(cls, data, algorithm=DEFAULT_ALGORITHM):
        """The digest of some small ``bytes`` (manifests, configs)."""
        hasher = new_hasher(algorithm)
        hasher.update(data)
        return cls.from_hasher(hasher)

    def __str__(self):
        return f"{self.algorithm}:{self.hex}"
