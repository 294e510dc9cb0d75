"""Docker image manifest v2, schema 1, signed ("prettyjws").

A schema 1 manifest is signed with libtrust's "pretty" JSON Web Signature:
the signatures are spliced into the manifest JSON itself as a
``signatures`` array.  Each signature's base64url ``protected`` header
records ``formatLength`` and ``formatTail``, which rebuild the signed
payload from the body::

    payload = body[:formatLength] + base64url_decode(formatTail)

and the JWS signing input is ``protected + "." + base64url(payload)``.  The
payload, the manifest without its signatures, is also what Distribution
names the manifest by, so it becomes ``Manifest.digest_body``.

Verification follows libtrust's ``JSONSignature.Verify`` as Distribution
uses it: every signature must verify with the key in its header (a ``jwk``,
or the leaf of an ``x5c`` chain; like Distribution, the chain itself is not
checked against any roots, so either form proves only that the holder of
that key signed).  Failures that make a signature unverifiable are
MANIFEST_UNVERIFIED; structural problems are MANIFEST_INVALID.

All cryptography is done by the ``cryptography`` package.
"""

import base64
import binascii
import datetime
import hashlib
import json
import re

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from registryd.errors import ManifestUnverified
from registryd.manifests import fields, mediatypes
from registryd.manifests.model import Descriptor, Manifest

#: JWK curve name -> (curve class, JWS algorithm, hash, octets per coordinate).
_CURVES = {
    "P-256": (ec.SECP256R1, "ES256", hashes.SHA256, 32),
    "P-384": (ec.SECP384R1, "ES384", hashes.SHA384, 48),
    "P-521": (ec.SECP521R1, "ES512", hashes.SHA512, 66),
}
_CURVE_NAMES = {curve.name: name for name, (curve, _, _, _) in _CURVES.items()}
_RSA_ALGORITHMS = {"RS256": hashes.SHA256, "RS384": hashes.SHA384, "RS512": hashes.SHA512}

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


def b64url_encode(data):
    """JOSE base64url: URL-safe alphabet, no padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text, where):
    """Decode JOSE base64url; raise MANIFEST_INVALID naming ``where``."""
    if not isinstance(text, str) or not _BASE64URL.fullmatch(text) or len(text) % 4 == 1:
        raise fields.invalid(f"{where} is not valid base64url", where)
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise fields.invalid(f"{where} is not valid base64url", where) from None


def key_id(public_key):
    """libtrust's key ID: the SHA-256 of the DER SubjectPublicKeyInfo,
    truncated to 240 bits, base32 in twelve colon-separated groups."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode("ascii").rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


def _int_to_bytes(value, length):
    return value.to_bytes(length, "big")


def public_key_jwk(public_key):
    """The JWK libtrust writes for an EC or RSA public key (keys sorted, as
    Go marshals a map)."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        crv = _CURVE_NAMES.get(public_key.curve.name)
        if crv is None:
            raise ValueError(f"unsupported curve {public_key.curve.name}")
        size = _CURVES[crv][3]
        numbers = public_key.public_numbers()
        return {
            "crv": crv,
            "kid": key_id(public_key),
            "kty": "EC",
            "x": b64url_encode(_int_to_bytes(numbers.x, size)),
            "y": b64url_encode(_int_to_bytes(numbers.y, size)),
        }
    if isinstance(public_key, rsa.RSAPublicKey):
        numbers = public_key.public_numbers()
        return {
            "e": b64url_encode(_int_to_bytes(numbers.e, (numbers.e.bit_length() + 7) // 8)),
            "kid": key_id(public_key),
            "kty": "RSA",
            "n": b64url_encode(_int_to_bytes(numbers.n, (numbers.n.bit_length() + 7) // 8)),
        }
    raise ValueError(f"unsupported key type {type(public_key).__name__}")


def _key_from_jwk(jwk, where):
    kty = fields.get_string(jwk, "kty", where, required=True)
    if kty == "EC":
        crv = fields.get_string(jwk, "crv", where, required=True)
        if crv not in _CURVES:
            raise ManifestUnverified(
                f"{where}.crv: unsupported elliptic curve {crv!r} (supported: P-256, P-384, P-521)",
                detail={"field": f"{where}.crv", "crv": crv},
            )
        curve, _, _, size = _CURVES[crv]
        coordinates = []
        for name in ("x", "y"):
            path = f"{where}.{name}"
            raw = b64url_decode(fields.get_string(jwk, name, where, required=True), path)
            if len(raw) != size:
                raise fields.invalid(
                    f"{path} must be {size} octets for {crv}, not {len(raw)}", path
                )
            coordinates.append(int.from_bytes(raw, "big"))
        try:
            key = ec.EllipticCurvePublicNumbers(*coordinates, curve()).public_key()
        except ValueError:
            raise fields.invalid(f"{where} is not a point on {crv}", where) from None
    elif kty == "RSA":
        n, e = (
            int.from_bytes(
                b64url_decode(
                    fields.get_string(jwk, name, where, required=True), f"{where}.{name}"
                ),
                "big",
            )
            for name in ("n", "e")
        )
        try:
            key = rsa.RSAPublicNumbers(e, n).public_key()
        except ValueError as error:
            raise fields.invalid(f"{where} is not a valid RSA public key: {error}", where) from None
    else:
        raise ManifestUnverified(
            f"{where}.kty: unsupported key type {kty!r} (supported: EC, RSA)",
            detail={"field": f"{where}.kty", "kty": kty},
        )
    kid = fields.get_string(jwk, "kid", where)
    if kid is not None and kid != key_id(key):
        raise fields.invalid(f"{where}.kid {kid!r} does not match the key", f"{where}.kid")
    return key


def _key_from_chain(chain, where):
    """The public key of the leaf certificate of an ``x5c`` chain (standard
    base64 DER, RFC 7515 section 4.1.6)."""
    if not chain or not all(isinstance(cert, str) for cert in chain):
        raise fields.invalid(f"{where} must be a non-empty array of strings", where)
    try:
        der = base64.b64decode(chain[0], validate=True)
        certificate = x509.load_der_x509_certificate(der)
    except (binascii.Error, ValueError):
        raise fields.invalid(f"{where}[0] is not a base64 DER certificate", f"{where}[0]") from None
    key = certificate.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _CURVE_NAMES:
        return key
    if isinstance(key, rsa.RSAPublicKey):
        return key
    raise ManifestUnverified(
        f"{where}[0]: unsupported certificate key type", detail={"field": f"{where}[0]"}
    )


def _verify(key, algorithm, signature, signing_input, where):
    """Verify one JWS signature; raise MANIFEST_UNVERIFIED if it fails."""
    detail = {"field": where, "alg": algorithm}
    if isinstance(key, ec.EllipticCurvePublicKey):
        _, expected, hash_class, size = _CURVES[_CURVE_NAMES[key.curve.name]]
        if algorithm != expected:
            raise ManifestUnverified(
                f"{where}: a {_CURVE_NAMES[key.curve.name]} key signs with {expected}, "
                f"not {algorithm!r}",
                detail=detail,
            )
        if len(signature) != 2 * size:
            raise ManifestUnverified(
                f"{where}: {algorithm} signature must be {2 * size} octets, not {len(signature)}",
                detail=detail,
            )
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        verify = lambda: key.verify(  # noqa: E731
            encode_dss_signature(r, s), signing_input, ec.ECDSA(hash_class())
        )
    else:
        hash_class = _RSA_ALGORITHMS.get(algorithm)
        if hash_class is None:
            raise ManifestUnverified(
                f"{where}: an RSA key signs with RS256, RS384 or RS512, not {algorithm!r}",
                detail=detail,
            )
        verify = lambda: key.verify(  # noqa: E731
            signature, signing_input, padding.PKCS1v15(), hash_class()
        )
    try:
        verify()
    except InvalidSignature:
        raise ManifestUnverified(f"{where}: invalid signature", detail=detail) from None


def _signed_payload(body, signature_block, where):
    """Check one signature block; return the payload it signs."""
    if not isinstance(signature_block, dict):
        raise fields.invalid(f"{where} must be an object", where)
    header = fields.get_object(signature_block, "header", where, required=True)
    protected = fields.get_string(signature_block, "protected", where, required=True)
    signature = b64url_decode(
        fields.get_string(signature_block, "signature", where, required=True),
        f"{where}.signature",
    )
    algorithm = fields.get_string(header, "alg", f"{where}.header", required=True)

    format_header = fields.load_object(
        b64url_decode(protected, f"{where}.protected"), f"{where}.protected"
    )
    length = format_header.get("formatLength")
    if isinstance(length, bool) or not isinstance(length, int) or not 0 <= length <= len(body):
        raise fields.invalid(
            f"{where}.protected.formatLength must be an integer from 0 to the body's length",
            f"{where}.protected.formatLength",
        )
    tail = b64url_decode(
        fields.get_string(format_header, "formatTail", f"{where}.protected", required=True),
        f"{where}.protected.formatTail",
    )
    payload = body[:length] + tail

    if "x5c" in header:
        key = _key_from_chain(header["x5c"], f"{where}.header.x5c")
    elif "jwk" in header:
        key = _key_from_jwk(
            fields.get_object(header, "jwk", f"{where}.header"), f"{where}.header.jwk"
        )
    else:
        raise ManifestUnverified(
            f"{where}.header has no public key (jwk or x5c)", detail={"field": f"{where}.header"}
        )
    signing_input = protected.encode("ascii") + b"." + b64url_encode(payload).encode("ascii")
    _verify(key, algorithm, signature, signing_input, where)
    return payload


def _canonical(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def parse_schema1(body, doc):
    """Verify and parse a signed schema 1 manifest (``doc`` is ``body`` decoded)."""
    fields.check_schema_version(doc, 1)
    if "signatures" not in doc:
        raise ManifestUnverified("schema 1 manifest is not signed (no signatures)")
    blocks = fields.get_list(doc, "signatures", required=True)
    if not blocks:
        raise ManifestUnverified("schema 1 manifest is not signed (signatures is empty)")

    payloads = {_signed_payload(body, block, f"signatures[{i}]") for i, block in enumerate(blocks)}
    if len(payloads) != 1:
        raise fields.invalid(
            "signatures disagree on the signed payload (formatLength/formatTail)", "signatures"
        )
    payload = payloads.pop()

    # Everything below is read from the signed payload, and the rest of the
    # body must say the same thing: nothing unsigned can ride along.
    signed = fields.load_object(payload, "signed payload")
    unsigned = {key: value for key, value in doc.items() if key != "signatures"}
    if _canonical(signed) != _canonical(unsigned):
        raise fields.invalid("manifest content outside the signed payload differs from it")

    name = fields.get_string(signed, "name", required=True)
    tag = fields.get_string(signed, "tag", required=True)
    fields.get_string(signed, "architecture")
    layers = fields.get_list(signed, "fsLayers", required=True)
    history = fields.get_list(signed, "history", required=True)
    if len(layers) != len(history):
        raise fields.invalid(
            f"fsLayers and history must have the same length ({len(layers)} != {len(history)})",
            "history",
        )
    blobs = []
    for i, layer in enumerate(layers):
        where = f"fsLayers[{i}]"
        if not isinstance(layer, dict):
            raise fields.invalid(f"{where} must be an object", where)
        digest = fields.get_digest(layer, "blobSum", where)
        blobs.append(Descriptor(mediatypes.DOCKER_SCHEMA1_LAYER, digest, None))
    for i, entry in enumerate(history):
        where = f"history[{i}]"
        if not isinstance(entry, dict):
            raise fields.invalid(f"{where} must be an object", where)
        fields.get_string(entry, "v1Compatibility", where, required=True)

    return Manifest(
        media_type=mediatypes.DOCKER_SCHEMA1_SIGNED,
        body=body,
        digest_body=payload,
        blobs=fields.dedupe(blobs),
        manifests=[],
        name=name,
        tag=tag,
    )


def _private_key_algorithm(private_key):
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        crv = _CURVE_NAMES.get(private_key.curve.name)
        if crv is None:
            raise ValueError(f"unsupported curve {private_key.curve.name}")
        _, algorithm, hash_class, size = _CURVES[crv]

        def sign(data):
            r, s = decode_dss_signature(private_key.sign(data, ec.ECDSA(hash_class())))
            return _int_to_bytes(r, size) + _int_to_bytes(s, size)

        return algorithm, sign
    if isinstance(private_key, rsa.RSAPrivateKey):
        return "RS256", lambda data: private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    raise ValueError(f"unsupported key type {type(private_key).__name__}")


def sign_schema1(manifest_dict, private_key, *, chain=None, timestamp=None):
    """Sign a schema 1 manifest the way Docker and libtrust do; return the body.

    The manifest (without any ``signatures``) is indented with three spaces
    like Go's ``json.MarshalIndent``, signed with ``private_key`` (EC P-256 ->
    ES256, P-384 -> ES384, P-521 -> ES512, RSA -> RS256), and the signature is
    spliced back in as libtrust's ``PrettySignature`` does.  With ``chain`` (a
    list of ``x509.Certificate``, leaf first) the header carries ``x5c``
    instead of ``jwk``, as libtrust's ``SignWithChain``.  ``timestamp`` (a
    datetime) fixes the protected header's ``time``, for reproducible output.
    """
    content = {key: value for key, value in manifest_dict.items() if key != "signatures"}
    if not content:
        raise ValueError("cannot sign an empty manifest")
    payload = json.dumps(content, indent=3).encode("utf-8")
    # libtrust NewJSONSignature: the payload up to its last value, and the
    # closing brace (with whitespace) as the tail.
    format_length = len(payload.rstrip()[:-1].rstrip())
    format_tail = payload[format_length:]

    when = timestamp or datetime.datetime.now(datetime.timezone.utc)
    protected = b64url_encode(
        json.dumps(
            {
                "formatLength": format_length,
                "formatTail": b64url_encode(format_tail),
                "time": when.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode("utf-8")
    )
    algorithm, sign = _private_key_algorithm(private_key)
    signature = sign(protected.encode("ascii") + b"." + b64url_encode(payload).encode("ascii"))

    if chain:
        header = {
            "alg": algorithm,
            "x5c": [
                base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")
                for cert in chain
            ],
        }
    else:
        header = {"jwk": public_key_jwk(private_key.public_key()), "alg": algorithm}
    block = {"header": header, "signature": b64url_encode(signature), "protected": protected}
    signatures = json.dumps([block], indent=3).replace("\n", "\n   ")
    return payload[:format_length] + b',\n   "signatures": ' + signatures.encode("utf-8") + b"\n}"
