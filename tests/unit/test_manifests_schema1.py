"""Docker schema 1 signed manifests: libtrust JWS verification and signing."""

import base64
import datetime
import json
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from registryd.digest import Digest
from registryd.errors import DigestInvalid, ManifestInvalid, ManifestUnverified
from registryd.manifests import mediatypes as mt
from registryd.manifests import parse_manifest, sign_schema1
from registryd.manifests.schema1 import b64url_encode, key_id, public_key_jwk

LAYER1 = str(Digest.of(b"layer1"))
LAYER2 = str(Digest.of(b"layer2"))

# A manifest signed by libtrust itself (Docker's signer), from the public
# test data of an open-source registry client: checks interoperability of
# the payload reconstruction, the signing input, r||s decoding and key IDs.
LIBTRUST_SIGNED = b"""{
   "schemaVersion": 1,
   "name": "nm/is",
   "tag": "latest",
   "architecture": "",
   "fsLayers": [
      {
         "blobSum": "sha256:b2c5513bd934a7efb412c0dd965600b8cb00575b585eaff1cb980b69037fe6cd"
      },
      {
         "blobSum": "sha256:2dde6f11a89463bf20dba3b47d8b3b6de7cdcc19e50634e95a18dd95c278768d"
      }
   ],
   "history": [
      {
         "v1Compatibility": "{\\"size\\":18407936}"
      },
      {
         "v1Compatibility": "{\\"size\\":19387392}"
      }
   ],
   "signatures": [
      {
         "header": {
            "jwk": {
               "crv": "P-256",
               "kid": "5HTY:A24B:L6PG:TQ3G:GMAK:QGKZ:ICD4:S7ZJ:P5JX:UTMP:XZLK:ZXVH",
               "kty": "EC",
               "x": "j5YnDSyrVIt3NquUKvcZIpbfeD8HLZ7BVBFL4WutRBM",
               "y": "PBgFAZ3nNakYN3H9enhrdUrQ_HPYzb8oX5rtJxJo1Y8"
            },
            "alg": "ES256"
         },
         "signature": "1rXiEmWnf9eL7m7Wy3K4l25-Zv2XXl5GgqhM_yjT0ujPmTn0uwfHcCWlweHa9gput3sECj507eQyGpBOF5rD6Q",
         "protected": "eyJmb3JtYXRMZW5ndGgiOjQ4NSwiZm9ybWF0VGFpbCI6IkNuMCIsInRpbWUiOiIyMDE2LTA3LTI2VDExOjQ2OjQ2WiJ9"
      }
   ]
}"""


def schema1(**overrides):
    doc = {
        "schemaVersion": 1,
        "name": "library/busybox",
        "tag": "latest",
        "architecture": "amd64",
        "fsLayers": [{"blobSum": LAYER1}, {"blobSum": LAYER2}, {"blobSum": LAYER1}],
        "history": [{"v1Compatibility": json.dumps({"id": str(i)})} for i in range(3)],
    }
    doc.update(overrides)
    return {key: value for key, value in doc.items() if value is not None}


@pytest.fixture(scope="module")
def key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def other_key():
    return ec.generate_private_key(ec.SECP256R1())


def parse(body, content_type=mt.DOCKER_SCHEMA1_SIGNED):
    return parse_manifest(body, content_type)


def payload_of(body):
    """The manifest without its signatures, as libtrust rebuilds it."""
    head, _, _ = body.partition(b',\n   "signatures": ')
    return head + b"\n}"


def signature_blocks(body):
    return json.loads(body)["signatures"]


def with_signatures(body, blocks):
    """``body`` re-assembled with other signature blocks, as libtrust does."""
    head, _, _ = body.partition(b',\n   "signatures": ')
    return (
        head
        + b',\n   "signatures": '
        + json.dumps(blocks, indent=3).replace("\n", "\n   ").encode()
        + b"\n}"
    )


def es256_block(key, protected, payload):
    """A hand-made signature block over ``payload`` with any protected header."""
    protected = b64url_encode(json.dumps(protected).encode())
    der = key.sign(
        protected.encode() + b"." + b64url_encode(payload).encode(), ec.ECDSA(hashes.SHA256())
    )
    r, s = decode_dss_signature(der)
    return {
        "header": {"jwk": public_key_jwk(key.public_key()), "alg": "ES256"},
        "signature": b64url_encode(r.to_bytes(32, "big") + s.to_bytes(32, "big")),
        "protected": protected,
    }


# Interoperability with libtrust


def test_manifest_signed_by_libtrust():
    manifest = parse(LIBTRUST_SIGNED)
    assert manifest.media_type == mt.DOCKER_SCHEMA1_SIGNED
    assert manifest.name == "nm/is" and manifest.tag == "latest"
    assert [str(b.digest) for b in manifest.blobs] == [
        "sha256:b2c5513bd934a7efb412c0dd965600b8cb00575b585eaff1cb980b69037fe6cd",
        "sha256:2dde6f11a89463bf20dba3b47d8b3b6de7cdcc19e50634e95a18dd95c278768d",
    ]
    assert manifest.body == LIBTRUST_SIGNED
    assert manifest.digest_body == payload_of(LIBTRUST_SIGNED)
    assert manifest.digest() == Digest.of(payload_of(LIBTRUST_SIGNED))


def test_libtrust_manifest_tampered():
    tampered = LIBTRUST_SIGNED.replace(b'"tag": "latest"', b'"tag": "lateST"')
    with pytest.raises(ManifestUnverified, match="invalid signature"):
        parse(tampered)


def test_key_id_matches_libtrust():
    jwk = json.loads(LIBTRUST_SIGNED)["signatures"][0]["header"]["jwk"]
    x = int.from_bytes(base64.urlsafe_b64decode(jwk["x"] + "="), "big")
    y = int.from_bytes(base64.urlsafe_b64decode(jwk["y"] + "="), "big")
    public = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    assert key_id(public) == jwk["kid"]
    assert public_key_jwk(public) == jwk


# Signing and verifying


def test_sign_and_parse(key):
    body = sign_schema1(schema1(), key)
    manifest = parse(body)
    assert manifest.media_type == mt.DOCKER_SCHEMA1_SIGNED
    assert manifest.body == body
    assert manifest.name == "library/busybox" and manifest.tag == "latest"
    # fsLayers repeat a blob; it must exist once.
    assert [str(b.digest) for b in manifest.blobs] == [LAYER1, LAYER2]
    assert all(b.media_type == mt.DOCKER_SCHEMA1_LAYER and b.size is None for b in manifest.blobs)
    assert manifest.manifests == [] and manifest.subject is None
    assert manifest.artifact_type is None
    # Named by the payload: the manifest without signatures.
    assert manifest.digest_body == json.dumps(schema1(), indent=3).encode()
    assert manifest.digest_body == payload_of(body)
    assert manifest.digest() == Digest.of(manifest.digest_body)
    assert manifest.digest() != Digest.of(body)


def test_signed_layout_is_libtrust_pretty_jws(key):
    when = datetime.datetime(2016, 7, 26, 11, 46, 46, tzinfo=datetime.timezone.utc)
    body = sign_schema1(schema1(), key, timestamp=when)
    assert body.endswith(b"\n   ]\n}")
    assert b'\n   "signatures": [\n      {\n         "header": {\n            "jwk": {' in body
    block = signature_blocks(body)[0]
    assert list(block) == ["header", "signature", "protected"]
    assert list(block["header"]) == ["jwk", "alg"]
    assert block["header"]["alg"] == "ES256"
    assert re.match(r"^([A-Z2-7]{4}:){11}[A-Z2-7]{4}$", block["header"]["jwk"]["kid"])
    protected = json.loads(base64.urlsafe_b64decode(block["protected"] + "=="))
    assert protected == {
        "formatLength": len(payload_of(body)) - 2,
        "formatTail": "Cn0",  # "\n}"
        "time": "2016-07-26T11:46:46Z",
    }


def test_sign_ignores_existing_signatures(key):
    body = sign_schema1(schema1(signatures=[{"stale": True}]), key)
    assert len(signature_blocks(body)) == 1
    parse(body)


@pytest.mark.parametrize(
    "content_type",
    [
        mt.DOCKER_SCHEMA1_SIGNED,
        mt.DOCKER_SCHEMA1,
        None,
        "application/json",
    ],
)
def test_content_types(key, content_type):
    assert parse(sign_schema1(schema1(), key), content_type).media_type == mt.DOCKER_SCHEMA1_SIGNED


@pytest.mark.parametrize(
    "curve,alg",
    [
        (ec.SECP256R1, "ES256"),
        (ec.SECP384R1, "ES384"),
        (ec.SECP521R1, "ES512"),
    ],
)
def test_ec_curves(curve, alg):
    body = sign_schema1(schema1(), ec.generate_private_key(curve()))
    assert signature_blocks(body)[0]["header"]["alg"] == alg
    parse(body)


def test_rsa():
    body = sign_schema1(schema1(), rsa.generate_private_key(public_exponent=65537, key_size=2048))
    header = signature_blocks(body)[0]["header"]
    assert header["alg"] == "RS256" and header["jwk"]["kty"] == "RSA"
    parse(body)


def test_x5c_chain(key):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "signer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    body = sign_schema1(schema1(), key, chain=[cert])
    header = signature_blocks(body)[0]["header"]
    assert "jwk" not in header and len(header["x5c"]) == 1
    parse(body)


def test_x5c_must_be_a_certificate(key):
    body = sign_schema1(schema1(), key)
    block = signature_blocks(body)[0]
    block["header"]["x5c"] = ["bm90IGEgY2VydA=="]
    with pytest.raises(ManifestInvalid, match=r"x5c\[0\] is not a base64 DER certificate"):
        parse(with_signatures(body, [block]))


def test_two_signatures(key, other_key):
    manifest = schema1()
    first = signature_blocks(sign_schema1(manifest, key))
    second_body = sign_schema1(manifest, other_key)
    second = signature_blocks(second_body)
    parse(with_signatures(second_body, first + second))


def test_one_bad_signature_of_two(key, other_key):
    body = sign_schema1(schema1(), key)
    good = signature_blocks(body)[0]
    bad = signature_blocks(sign_schema1(schema1(tag="other"), other_key))[0]
    with pytest.raises(ManifestUnverified, match=r"signatures\[1\]: invalid signature"):
        parse(with_signatures(body, [good, bad]))


# Rejections


def test_tampered_payload(key):
    body = sign_schema1(schema1(), key)
    tampered = body.replace(b'"tag": "latest"', b'"tag": "stable"')
    with pytest.raises(ManifestUnverified, match="invalid signature") as caught:
        parse(tampered)
    assert caught.value.code == "MANIFEST_UNVERIFIED" and caught.value.status == 400


def test_tampered_layer(key):
    body = sign_schema1(schema1(), key)
    evil = str(Digest.of(b"evil"))
    with pytest.raises(ManifestUnverified):
        parse(body.replace(LAYER2.encode(), evil.encode()))


def test_unsigned_content_outside_the_payload(key):
    # Keys smuggled after the signatures are not signed: refused, not served.
    body = sign_schema1(schema1(), key)
    smuggled = body[:-2] + b',\n   "extra": [1]\n}'
    with pytest.raises(ManifestInvalid, match="outside the signed payload"):
        parse(smuggled)


def test_unsigned(key):
    body = json.dumps(schema1(), indent=3).encode()
    with pytest.raises(ManifestUnverified, match="not signed") as caught:
        parse(body, mt.DOCKER_SCHEMA1)
    assert caught.value.code == "MANIFEST_UNVERIFIED"


def test_empty_signatures(key):
    body = json.dumps(schema1(signatures=[]), indent=3).encode()
    with pytest.raises(ManifestUnverified, match="not signed"):
        parse(body)


def test_signatures_must_be_a_list():
    body = json.dumps(schema1(signatures={}), indent=3).encode()
    with pytest.raises(ManifestInvalid, match="signatures must be an array"):
        parse(body)


def test_wrong_key(key, other_key):
    body = sign_schema1(schema1(), key)
    block = signature_blocks(body)[0]
    block["header"]["jwk"] = public_key_jwk(other_key.public_key())
    with pytest.raises(ManifestUnverified, match="invalid signature"):
        parse(with_signatures(body, [block]))


def test_key_id_must_match_the_key(key, other_key):
    body = sign_schema1(schema1(), key)
    block = signature_blocks(body)[0]
    block["header"]["jwk"]["kid"] = key_id(other_key.public_key())
    with pytest.raises(ManifestInvalid, match="kid .* does not match the key"):
        parse(with_signatures(body, [block]))


def test_key_id_is_optional(key):
    body = sign_schema1(schema1(), key)
    block = signature_blocks(body)[0]
    del block["header"]["jwk"]["kid"]
    parse(with_signatures(body, [block]))


@pytest.mark.parametrize("alg", ["ES384", "RS256", "HS256", "none"])
def test_algorithm_must_suit_the_key(key, alg):
    body = sign_schema1(schema1(), key)
    block = signature_blocks(body)[0]
    block["header"]["alg"] = alg
    with pytest.raises(ManifestUnverified, match="P-256 key signs with ES256"):
        parse(with_signatures(body, [block]))


def test_rsa_key_refuses_other_algorithms():
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    body = sign_schema1(schema1(), rsa_key)
    block = signature_blocks(body)[0]
    block["header"]["alg"] = "PS256"
    with pytest.raises(ManifestUnverified, match="RSA key signs with"):
        parse(with_signatures(body, [block]))


def test_signature_length(key):
    body = sign_schema1(schema1(), key)
    block = signature_blocks(body)[0]
    block["signature"] = b64url_encode(b"\x01" * 63)
    with pytest.raises(ManifestUnverified, match="must be 64 octets"):
        parse(with_signatures(body, [block]))


def test_no_public_key(key):
    body = sign_schema1(schema1(), key)
    block = signature_blocks(body)[0]
    del block["header"]["jwk"]
    with pytest.raises(ManifestUnverified, match="no public key"):
        parse(with_signatures(body, [block]))


@pytest.mark.parametrize(
    "jwk_change,error,message",
    [
        ({"kty": "oct"}, ManifestUnverified, "unsupported key type 'oct'"),
        ({"crv": "P-192"}, ManifestUnverified, "unsupported elliptic curve"),
        ({"x": "AAAA"}, ManifestInvalid, "must be 32 octets"),
        ({"x": "not base64!"}, ManifestInvalid, "not valid base64url"),
        ({"y": b64url_encode(b"\x01" * 32), "kid": None}, ManifestInvalid, "not a point on P-256"),
    ],
)
def test_malformed_jwk(key, jwk_change, error, message):
    body = sign_schema1(schema1(), key)
    block = signature_blocks(body)[0]
    block["header"]["jwk"].update(jwk_change)
    block["header"]["jwk"] = {k: v for k, v in block["header"]["jwk"].items() if v is not None}
    with pytest.raises(error, match=message):
        parse(with_signatures(body, [block]))


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("protected", "!!!", r"protected is not valid base64url"),
        ("protected", b64url_encode(b"[1]"), r"protected must be a JSON object"),
        ("signature", "a", r"signature is not valid base64url"),
        ("header", "jwk", r"header must be an object"),
    ],
)
def test_malformed_signature_block(key, field, value, message):
    body = sign_schema1(schema1(), key)
    block = signature_blocks(body)[0]
    block[field] = value
    with pytest.raises(ManifestInvalid, match=message):
        parse(with_signatures(body, [block]))


@pytest.mark.parametrize(
    "protected,message",
    [
        ({"formatTail": "Cn0"}, "formatLength must be an integer"),
        ({"formatLength": -1, "formatTail": "Cn0"}, "formatLength must be an integer"),
        ({"formatLength": 10**9, "formatTail": "Cn0"}, "formatLength must be an integer"),
        ({"formatLength": "12", "formatTail": "Cn0"}, "formatLength must be an integer"),
        ({"formatLength": 10}, r"protected.formatTail is required"),
    ],
)
def test_malformed_protected_header(key, protected, message):
    body = sign_schema1(schema1(), key)
    block = es256_block(key, protected, payload_of(body))
    with pytest.raises(ManifestInvalid, match=message):
        parse(with_signatures(body, [block]))


def test_signatures_must_agree_on_the_payload(key, other_key):
    body = sign_schema1(schema1(), key)
    first = signature_blocks(body)[0]
    length = len(payload_of(body)) - 2
    # Validly signed, but over "...\n }" rather than "...\n}".
    second = es256_block(
        other_key,
        {"formatLength": length, "formatTail": b64url_encode(b"\n }")},
        payload_of(body)[:length] + b"\n }",
    )
    with pytest.raises(ManifestInvalid, match="signatures disagree on the signed payload"):
        parse(with_signatures(body, [first, second]))


def test_payload_must_be_json(key):
    body = sign_schema1(schema1(), key)
    # A signature over a cut that is not a JSON document.
    block = es256_block(key, {"formatLength": 10, "formatTail": ""}, body[:10])
    with pytest.raises(ManifestInvalid, match="signed payload is not valid JSON"):
        parse(with_signatures(body, [block]))


def test_schema_version_must_be_1(key):
    body = sign_schema1(schema1(schemaVersion=2), key)
    with pytest.raises(ManifestInvalid, match="schemaVersion must be 1"):
        parse(body)


def test_history_must_match_layers(key):
    body = sign_schema1(schema1(history=[{"v1Compatibility": "{}"}]), key)
    with pytest.raises(ManifestInvalid, match="fsLayers and history must have the same length"):
        parse(body)


@pytest.mark.parametrize("field", ["name", "tag", "fsLayers", "history"])
def test_required_fields(key, field):
    body = sign_schema1(schema1(**{field: None}), key)
    with pytest.raises(ManifestInvalid, match=f"{field} is required"):
        parse(body)


def test_bad_blob_sum(key):
    body = sign_schema1(schema1(fsLayers=[{"blobSum": "sha256:nope"}], history=[{}]), key)
    with pytest.raises(DigestInvalid, match=r"fsLayers\[0\].blobSum"):
        parse(body)


def test_history_entries_need_v1_compatibility(key):
    body = sign_schema1(schema1(fsLayers=[{"blobSum": LAYER1}], history=[{}]), key)
    with pytest.raises(ManifestInvalid, match=r"history\[0\].v1Compatibility is required"):
        parse(body)


def test_schema1_content_type_with_schema2_body():
    body = json.dumps({"schemaVersion": 2, "config": {}, "layers": []}).encode()
    with pytest.raises(ManifestInvalid, match="schemaVersion must be 1"):
        parse(body, mt.DOCKER_SCHEMA1)


def test_sign_refuses_unsupported_keys():
    with pytest.raises(ValueError):
        sign_schema1(schema1(), ec.generate_private_key(ec.SECP256K1()))
    with pytest.raises(ValueError):
        sign_schema1({}, ec.generate_private_key(ec.SECP256R1()))
