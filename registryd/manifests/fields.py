"""Strict JSON decoding and field validation shared by every manifest schema.

Every check raises MANIFEST_INVALID (or DIGEST_INVALID for a descriptor's
digest) with a message naming the JSON path of the offending field, so a
client can see exactly which part of its manifest was refused.

The JSON decoder is stricter than Python's default on purpose: duplicate
keys, NaN/Infinity and non-UTF-8 bodies are refused, because a registry and
its clients must not be able to read different documents out of the same
bytes (the lesson of CVE-2021-41190).
"""

import base64
import binascii
import json
import re
import urllib.parse

from registryd.digest import Digest
from registryd.errors import DigestInvalid, ManifestInvalid
from registryd.manifests.mediatypes import is_non_distributable
from registryd.manifests.model import Descriptor

# RFC 6838 section 4.2 restricted names, as descriptor.md requires.
_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
MEDIA_TYPE_PATTERN = rf"{_NAME}/{_NAME}"
_MEDIA_TYPE = re.compile(MEDIA_TYPE_PATTERN)  # fullmatch: no trailing newline

#: Sizes are int64 in every other implementation (Go's ``int64``).
MAX_SIZE = 2**63 - 1


def invalid(message, where=None, **detail):
    """A ManifestInvalid whose detail names the field, for one-line raises."""
    if where is not None:
        detail.setdefault("field", where)
    return ManifestInvalid(message, detail=detail or None)


def _object_without_duplicates(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise invalid(f"duplicate key {key!r} in JSON object", key=key)
        seen[key] = value
    return seen


def _refuse_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def load_object(data, what="manifest"):
    """Decode ``data`` (bytes) as a strict JSON object and return the dict."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise invalid(f"{what} is not UTF-8: {e.reason} at byte {e.start}") from None
    try:
        value = json.loads(
            text,
            object_pairs_hook=_object_without_duplicates,
            parse_constant=_refuse_constant,
        )
    except (ValueError, RecursionError) as e:
        raise invalid(f"{what} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise invalid(f"{what} must be a JSON object, not {_json_type(value)}")
    return value


def _json_type(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _join(where, key):
    return f"{where}.{key}" if where else key


def _get_typed(obj, key, where, required, python_type, json_name):
    """``obj[key]`` if it is a ``python_type``, None if absent and not required."""
    path = _join(where, key)
    if key not in obj:
        if required:
            raise invalid(f"{path} is required", path)
        return None
    value = obj[key]
    if not isinstance(value, python_type):
        raise invalid(f"{path} must be {json_name}, not {_json_type(value)}", path)
    return value


def get_string(obj, key, where="", required=False):
    """``obj[key]`` as a string, None if absent and not required."""
    return _get_typed(obj, key, where, required, str, "a string")


def get_media_type(obj, key, where="", required=False):
    """A media type that must follow RFC 6838's naming rules.

    An empty string is refused when required; when optional it counts as
    absent (the specs treat an empty ``artifactType`` as missing).
    """
    path = _join(where, key)
    value = get_string(obj, key, where, required)
    if value is None or (value == "" and not required):
        return None
    if not _MEDIA_TYPE.fullmatch(value):
        raise invalid(f"{path} is not a valid media type: {value!r}", path, mediaType=value)
    return value


def get_list(obj, key, where="", required=False):
    return _get_typed(obj, key, where, required, list, "an array")


def get_object(obj, key, where="", required=False):
    return _get_typed(obj, key, where, required, dict, "an object")


def get_string_list(obj, key, where=""):
    values = get_list(obj, key, where)
    if values is None:
        return None
    for i, value in enumerate(values):
        if not isinstance(value, str):
            path = f"{_join(where, key)}[{i}]"
            raise invalid(f"{path} must be a string, not {_json_type(value)}", path)
    return values


def get_annotations(obj, where=""):
    """The optional string-to-string ``annotations`` map."""
    annotations = get_object(obj, "annotations", where)
    if annotations is None:
        return None
    for key, value in annotations.items():
        if not isinstance(value, str):
            path = f"{_join(where, 'annotations')}[{key!r}]"
            raise invalid(f"{path} must be a string, not {_json_type(value)}", path)
    return annotations


def check_schema_version(doc, expected):
    value = doc.get("schemaVersion")
    if "schemaVersion" not in doc:
        raise invalid("schemaVersion is required", "schemaVersion")
    if isinstance(value, bool) or not isinstance(value, int) or value != expected:
        raise invalid(
            f"schemaVersion must be {expected}, not {json.dumps(value)}",
            "schemaVersion",
            schemaVersion=value,
        )


def check_body_media_type(doc, expected, required):
    """The body's own ``mediaType``, if any, must be ``expected``.  Docker
    schema 2 documents must carry it (Distribution refuses them otherwise);
    OCI documents SHOULD."""
    value = get_string(doc, "mediaType", required=required)
    if value is not None and value != expected:
        raise invalid(
            f"mediaType must be {expected!r}, not {value!r}", "mediaType", mediaType=value
        )


def get_digest(obj, key, where):
    """A descriptor digest.  Malformed or of an unsupported algorithm:
    DIGEST_INVALID (the distribution spec's code for an invalid digest in a
    manifest), with the field's path in the message."""
    path = _join(where, key)
    text = get_string(obj, key, where, required=True)
    try:
        return Digest.parse(text)
    except DigestInvalid as e:
        raise DigestInvalid(
            f"{path}: {e.message}", detail={"field": path, "digest": text}
        ) from None


def _get_size(obj, where):
    path = _join(where, "size")
    if "size" not in obj:
        raise invalid(f"{path} is required", path)
    size = obj["size"]
    if isinstance(size, bool) or not isinstance(size, int):
        raise invalid(f"{path} must be an integer, not {_json_type(size)}", path)
    if size < 0:
        raise invalid(f"{path} must not be negative, got {size}", path, size=size)
    if size > MAX_SIZE:
        raise invalid(f"{path} is too large: {size}", path, size=size)
    return size


def _get_platform(obj, where):
    platform = get_object(obj, "platform", where)
    if platform is None:
        return None
    path = _join(where, "platform")
    get_string(platform, "architecture", path, required=True)
    get_string(platform, "os", path, required=True)
    get_string(platform, "os.version", path)
    get_string(platform, "variant", path)
    get_string_list(platform, "os.features", path)
    get_string_list(platform, "features", path)
    return platform


def _check_data(obj, where, digest, size):
    """descriptor.md: ``data`` is base64 and MUST be identical to the
    referenced content, so an embedded copy that disagrees is refused."""
    text = get_string(obj, "data", where)
    if text is None:
        return
    path = _join(where, "data")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(f"{path} is not valid base64", path) from None
    if len(data) != size or Digest.of(data, digest.algorithm) != digest:
        raise invalid(f"{path} does not match the descriptor's digest and size", path)


def parse_descriptor(value, where):
    """Validate one descriptor found at JSON path ``where``."""
    if not isinstance(value, dict):
        raise invalid(f"{where} must be a descriptor object, not {_json_type(value)}", where)
    media_type = get_media_type(value, "mediaType", where, required=True)
    digest = get_digest(value, "digest", where)
    size = _get_size(value, where)
    urls = get_string_list(value, "urls", where)
    annotations = get_annotations(value, where)
    artifact_type = get_media_type(value, "artifactType", where)
    platform = _get_platform(value, where)
    _check_data(value, where, digest, size)
    return Descriptor(
        media_type=media_type,
        digest=digest,
        size=size,
        urls=tuple(urls) if urls is not None else None,
        annotations=annotations,
        artifact_type=artifact_type,
        platform=platform,
    )


def parse_descriptors(doc, key, required=True):
    """The list of descriptors at ``doc[key]`` (an empty list may be valid)."""
    values = get_list(doc, key, required=required)
    if values is None:
        return None
    return [parse_descriptor(value, f"{key}[{i}]") for i, value in enumerate(values)]


def check_external_urls(descriptor, where):
    """A layer the registry will not hold must be fetchable from its urls:
    each must be an absolute http(s) URL without a fragment (the rule
    Distribution applies before skipping such a layer's existence check)."""
    for i, url in enumerate(descriptor.urls):
        try:
            parts = urllib.parse.urlsplit(url)
        except ValueError:
            parts = None
        if (
            parts is None
            or parts.scheme not in ("http", "https")
            or not parts.netloc
            or parts.fragment
        ):
            path = f"{where}.urls[{i}]"
            raise invalid(
                f"{path} must be an absolute http or https URL without a fragment: {url!r}",
                path,
                url=url,
            )


def is_external(descriptor):
    """True for a non-distributable layer that clients fetch from its urls,
    and that the registry therefore does not require to exist."""
    return bool(descriptor.urls) and is_non_distributable(descriptor.media_type)


def dedupe(descriptors):
    """Descriptors with repeated digests removed, first occurrence kept."""
    seen = set()
    out = []
    for descriptor in descriptors:
        if descriptor.digest not in seen:
            seen.add(descriptor.digest)
            out.append(descriptor)
    return out
