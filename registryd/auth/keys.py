"""Key material for tokens: loading PEM/JWKS files, key ids, algorithms.

Token signing keys are found by a JWT header's ``kid``.  Different token
servers compute it differently, so every trusted key is registered under
each id a server may use:

* the key's JWK thumbprint (RFC 7638), as Distribution 3 identifies the
  keys of its ``rootcertbundle``;
* the libtrust key id (``ABCD:EFGH:...``: base32 of the first 240 bits of
  the SHA-256 of the DER public key), as Distribution 2 and token servers
  built on libtrust (docker_auth...) use;
* the ``kid`` a JWKS entry names.
"""

import base64
import hashlib
import json

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

#: Asymmetric JWS algorithms registryd verifies (HMAC needs a shared secret
#: registryd has no place for; "none" is never accepted).
ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
#: Distribution's names that registryd refuses, with the reason.
UNSUPPORTED_ALGORITHMS = ("HS256", "HS384", "HS512")

_EC_ALGORITHM = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


class KeyFileError(ValueError):
    """A key or certificate file that cannot be used."""


def algorithms_for(key):
    """The JWS algorithms a public or private key can verify or sign with."""
    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        return ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        algorithm = _EC_ALGORITHM.get(key.curve.name)
        return (algorithm,) if algorithm else ()
    if isinstance(key, (ed25519.Ed25519PublicKey, ed25519.Ed25519PrivateKey)):
        return ("EdDSA",)
    return ()


def signing_algorithm(private_key):
    """The algorithm registryd signs with: RS256, ES256/384/512 or EdDSA."""
    algorithms = algorithms_for(private_key)
    if not algorithms:
        raise KeyFileError("unsupported key type: use an RSA, EC (P-256/384/521) or Ed25519 key")
    return algorithms[0]


def public_jwk(public_key):
    """The public key as a JWK dict (kty, crv/x/y or n/e)."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return RSAAlgorithm.to_jwk(public_key, as_dict=True)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return ECAlgorithm.to_jwk(public_key, as_dict=True)
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return OKPAlgorithm.to_jwk(public_key, as_dict=True)
    raise KeyFileError("unsupported key type")


_THUMBPRINT_MEMBERS = {
    "RSA": ("e", "kty", "n"),
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
}


def jwk_thumbprint(jwk):
    """RFC 7638 thumbprint (SHA-256, base64url without padding) of a JWK dict."""
    kty = jwk.get("kty")
    # A token's jwk header is any JSON: kty may be a list (unhashable).
    members = _THUMBPRINT_MEMBERS.get(kty) if isinstance(kty, str) else None
    if members is None or any(not isinstance(jwk.get(m), str) for m in members):
        raise KeyFileError(f"cannot compute the thumbprint of a {str(kty)[:40]!r} key")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def libtrust_key_id(public_key):
    """The libtrust key id of a public key (Distribution 2, docker_auth)."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode("ascii").rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


def key_ids(public_key):
    """Every id a token server may put in ``kid`` for ``public_key``."""
    return {jwk_thumbprint(public_jwk(public_key)), libtrust_key_id(public_key)}


def read_file(path):
    try:
        with open(path, "rb") as stream:
            return stream.read()
    except OSError as error:
        raise KeyFileError(f"cannot read {path}: {error.strerror or error}") from None


def load_certificates(path):
    """Every PEM certificate in the file at ``path`` (at least one)."""
    data = read_file(path)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        certificates = []
    if not certificates:
        raise KeyFileError(f"{path} holds no PEM certificate")
    return certificates


def load_private_key(path):
    data = read_file(path)
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key: {error}") from None


def load_jwks(path):
    """``[(kid or None, public key)]`` from a JWKS file (``{"keys": [...]}``)."""
    from jwt import PyJWKSet
    from jwt.exceptions import PyJWKSetError

    data = read_file(path)
    try:
        document = json.loads(data)
    except ValueError as error:
        raise KeyFileError(f"{path} is not JSON: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeyFileError(f'{path} is not a JWKS document ({{"keys": [...]}})')
    symmetric = [k for k in document["keys"] if isinstance(k, dict) and k.get("kty") == "oct"]
    if symmetric:
        raise KeyFileError(f"{path}: symmetric (oct) keys are not supported; use public keys")
    try:
        keyset = PyJWKSet.from_dict(document)
    except PyJWKSetError as error:
        raise KeyFileError(f"{path}: {error}") from None
    found = []
    for jwk in keyset.keys:
        key = jwk.key
        if hasattr(key, "public_key"):  # a private key in the set: trust its public half
            key = key.public_key()
        found.append((jwk.key_id, key))
    return found
