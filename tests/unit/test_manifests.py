"""Manifest parsing and validation (OCI, Docker schema 2) and reference checks.

Docker schema 1 signatures have their own module, test_manifests_schema1.py.
"""

import json

import pytest
import pytest_twisted
from twisted.internet import defer

from registryd.digest import Digest
from registryd.errors import (
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    PayloadTooLarge,
    Unavailable,
)
from registryd.manifests import Descriptor, Manifest, parse_manifest, verify_references
from registryd.manifests import mediatypes as mt


def digest_of(text):
    return str(Digest.of(text.encode()))


CONFIG = digest_of("config")
LAYER1 = digest_of("layer1")
LAYER2 = digest_of("layer2")
CHILD1 = digest_of("child1")
CHILD2 = digest_of("child2")
SUBJECT = digest_of("subject")
EMPTY = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"


def desc(media_type, digest, size=10, **extra):
    return {"mediaType": media_type, "digest": digest, "size": size, **extra}


def oci_manifest(**overrides):
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": desc(mt.OCI_IMAGE_CONFIG, CONFIG),
        "layers": [desc(mt.OCI_LAYER_GZIP, LAYER1), desc(mt.OCI_LAYER_GZIP, LAYER2)],
    }
    doc.update(overrides)
    return {key: value for key, value in doc.items() if value is not None}


def oci_index(**overrides):
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [
            desc(mt.OCI_MANIFEST, CHILD1, platform={"architecture": "amd64", "os": "linux"}),
            desc(
                mt.OCI_MANIFEST,
                CHILD2,
                platform={"architecture": "arm64", "os": "linux", "variant": "v8"},
            ),
        ],
    }
    doc.update(overrides)
    return {key: value for key, value in doc.items() if value is not None}


def docker_manifest(**overrides):
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.DOCKER_MANIFEST,
        "config": desc(mt.DOCKER_IMAGE_CONFIG, CONFIG),
        "layers": [desc(mt.DOCKER_LAYER, LAYER1), desc(mt.DOCKER_LAYER, LAYER2)],
    }
    doc.update(overrides)
    return {key: value for key, value in doc.items() if value is not None}


def docker_list(**overrides):
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.DOCKER_MANIFEST_LIST,
        "manifests": [
            desc(mt.DOCKER_MANIFEST, CHILD1, platform={"architecture": "amd64", "os": "linux"}),
            desc(mt.DOCKER_MANIFEST, CHILD2, platform={"architecture": "ppc64le", "os": "linux"}),
        ],
    }
    doc.update(overrides)
    return {key: value for key, value in doc.items() if value is not None}


def encode(doc):
    return json.dumps(doc, indent=2).encode()


def parse(doc, content_type="default", **kwargs):
    if content_type == "default":
        content_type = doc.get("mediaType")
    return parse_manifest(encode(doc), content_type, **kwargs)


def digests(descriptors):
    return [str(d.digest) for d in descriptors]


def assert_json_error(error):
    """Every error must render as the spec's JSON body."""
    body = json.loads(error.body())
    assert body["errors"][0]["code"] == error.code
    return body["errors"][0]


# OCI image manifest


def test_oci_manifest():
    body = encode(oci_manifest(annotations={"org.example": "yes"}))
    manifest = parse_manifest(body, mt.OCI_MANIFEST)
    assert isinstance(manifest, Manifest)
    assert manifest.media_type == mt.OCI_MANIFEST
    assert manifest.body is body
    assert manifest.digest_body == body
    assert manifest.digest() == Digest.of(body)
    assert manifest.digest("sha512") == Digest.of(body, "sha512")
    assert digests(manifest.blobs) == [CONFIG, LAYER1, LAYER2]
    assert manifest.manifests == []
    assert manifest.subject is None
    assert manifest.annotations == {"org.example": "yes"}
    assert manifest.config == Descriptor(mt.OCI_IMAGE_CONFIG, Digest.parse(CONFIG), 10)
    # No artifactType: the config's media type (distribution spec, referrers).
    assert manifest.artifact_type == mt.OCI_IMAGE_CONFIG


def test_oci_manifest_descriptors_keep_their_fields():
    layer = desc(
        mt.OCI_LAYER_GZIP, LAYER1, 32654, annotations={"a": "b"}, urls=["https://example.com/layer"]
    )
    manifest = parse(oci_manifest(layers=[layer]))
    parsed = manifest.blobs[1]
    assert parsed.media_type == mt.OCI_LAYER_GZIP
    assert parsed.digest == Digest.parse(LAYER1)
    assert parsed.size == 32654
    assert parsed.annotations == {"a": "b"}
    # A distributable layer with urls must still be pushed to the registry.
    assert parsed.urls == ("https://example.com/layer",)
    assert parsed.to_dict() == layer


def test_oci_manifest_without_media_type_uses_content_type():
    manifest = parse(oci_manifest(mediaType=None), mt.OCI_MANIFEST)
    assert manifest.media_type == mt.OCI_MANIFEST


@pytest.mark.parametrize("content_type", [None, "", "application/json", "application/octet-stream"])
def test_oci_manifest_without_any_media_type_is_detected(content_type):
    manifest = parse(oci_manifest(mediaType=None), content_type)
    assert manifest.media_type == mt.OCI_MANIFEST
    assert digests(manifest.blobs) == [CONFIG, LAYER1, LAYER2]


@pytest.mark.parametrize(
    "content_type", [None, "application/json", "Application/JSON; charset=utf-8"]
)
def test_generic_content_type_takes_the_body_media_type(content_type):
    assert parse(docker_manifest(), content_type).media_type == mt.DOCKER_MANIFEST
    assert parse(oci_index(), content_type).media_type == mt.OCI_INDEX


def test_content_type_parameters_are_ignored():
    manifest = parse(oci_manifest(), "application/vnd.oci.image.manifest.v1+json; charset=utf-8")
    assert manifest.media_type == mt.OCI_MANIFEST


def test_content_type_mismatch():
    with pytest.raises(ManifestInvalid) as caught:
        parse(oci_manifest(), mt.OCI_INDEX)
    assert caught.value.message == (
        f"media type in body {mt.OCI_MANIFEST} does not match Content-Type {mt.OCI_INDEX}"
    )
    assert assert_json_error(caught.value)["detail"]["contentType"] == mt.OCI_INDEX


def test_content_type_mismatch_between_docker_and_oci():
    with pytest.raises(ManifestInvalid, match="does not match Content-Type"):
        parse(docker_manifest(), mt.OCI_MANIFEST)


def test_unknown_content_type():
    with pytest.raises(ManifestInvalid, match="unsupported manifest media type 'text/plain'"):
        parse(oci_manifest(mediaType=None), "text/plain")


def test_unknown_body_media_type():
    with pytest.raises(ManifestInvalid, match="unsupported manifest media type"):
        parse(oci_manifest(mediaType="application/vnd.example.thing+json"), None)


def test_body_media_type_must_be_a_string():
    with pytest.raises(ManifestInvalid, match="mediaType must be a string"):
        parse(oci_manifest(mediaType=7), None)


def test_undetectable_manifest():
    with pytest.raises(ManifestInvalid, match="cannot determine the manifest's media type"):
        parse({"schemaVersion": 2, "layers": []}, None)


def test_missing_config():
    with pytest.raises(ManifestInvalid, match="config is required") as caught:
        parse(oci_manifest(config=None))
    assert assert_json_error(caught.value)["detail"] == {"field": "config"}


def test_config_must_be_a_descriptor():
    with pytest.raises(ManifestInvalid, match="config must be an object"):
        parse(oci_manifest(config=[]))


def test_layers_must_be_a_list():
    with pytest.raises(ManifestInvalid, match="layers must be an array"):
        parse(oci_manifest(layers={}))


@pytest.mark.parametrize("version", [None, 1, 3, "2", 2.0, True])
def test_schema_version_must_be_2(version):
    with pytest.raises(ManifestInvalid, match="schemaVersion"):
        parse(oci_manifest(schemaVersion=version))


def test_oci_manifest_with_manifests_field_is_refused():
    # CVE-2021-41190: one document must not be readable as two types.
    with pytest.raises(ManifestInvalid, match="must not have a 'manifests' field"):
        parse(oci_manifest(manifests=[]))


def test_ambiguous_document_without_media_type_is_refused():
    doc = oci_manifest(mediaType=None, manifests=[])
    with pytest.raises(ManifestInvalid, match="ambiguous"):
        parse(doc, None)


def test_duplicate_blobs_are_listed_once():
    layer = desc(mt.OCI_LAYER_GZIP, LAYER1)
    manifest = parse(oci_manifest(layers=[layer, layer, desc(mt.OCI_LAYER_GZIP, CONFIG)]))
    assert digests(manifest.blobs) == [CONFIG, LAYER1]


# OCI artifacts and subject


def test_artifact_with_empty_config_and_no_layers():
    doc = oci_manifest(
        artifactType="application/vnd.example.sbom.v1",
        config=desc(mt.OCI_EMPTY, EMPTY, 2, data="e30="),
        layers=[],
        annotations={"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
    )
    manifest = parse(doc)
    assert manifest.artifact_type == "application/vnd.example.sbom.v1"
    assert digests(manifest.blobs) == [EMPTY]
    assert manifest.config.media_type == mt.OCI_EMPTY


def test_artifact_without_layers_field():
    manifest = parse(
        oci_manifest(
            layers=None,
            config=desc(mt.OCI_EMPTY, EMPTY, 2),
            artifactType="application/vnd.example.sig",
        )
    )
    assert digests(manifest.blobs) == [EMPTY]


def test_artifact_type_from_config_media_type():
    doc = oci_manifest(config=desc("application/vnd.example.config.v1+json", CONFIG))
    assert parse(doc).artifact_type == "application/vnd.example.config.v1+json"


def test_empty_artifact_type_counts_as_missing():
    assert parse(oci_manifest(artifactType="")).artifact_type == mt.OCI_IMAGE_CONFIG


def test_artifact_type_must_be_a_media_type():
    with pytest.raises(ManifestInvalid, match="artifactType is not a valid media type"):
        parse(oci_manifest(artifactType="not a media type"))


def test_subject():
    subject = desc(mt.OCI_MANIFEST, SUBJECT, 7682)
    manifest = parse(oci_manifest(subject=subject, artifactType="application/vnd.example.sig"))
    assert manifest.subject == Descriptor(mt.OCI_MANIFEST, Digest.parse(SUBJECT), 7682)
    # The subject is a weak reference: never something that must exist.
    assert SUBJECT not in digests(manifest.blobs) + digests(manifest.manifests)


def test_subject_must_be_a_valid_descriptor():
    with pytest.raises(ManifestInvalid, match="subject.size is required"):
        parse(oci_manifest(subject={"mediaType": mt.OCI_MANIFEST, "digest": SUBJECT}))
    with pytest.raises(DigestInvalid, match="subject.digest"):
        parse(oci_manifest(subject=desc(mt.OCI_MANIFEST, "sha256:abc")))


def test_referrers_descriptor():
    doc = oci_manifest(
        subject=desc(mt.OCI_MANIFEST, SUBJECT),
        artifactType="application/vnd.x",
        annotations={"k": "v"},
    )
    manifest = parse(doc)
    body = encode(doc)
    assert manifest.descriptor().to_dict() == {
        "mediaType": mt.OCI_MANIFEST,
        "digest": str(Digest.of(body)),
        "size": len(body),
        "artifactType": "application/vnd.x",
        "annotations": {"k": "v"},
    }


# Descriptors


@pytest.mark.parametrize(
    "bad_digest",
    [
        "sha256:abc",
        "sha256:" + "A" * 64,
        "not-a-digest",
        "",
    ],
)
def test_malformed_digest(bad_digest):
    with pytest.raises(DigestInvalid) as caught:
        parse(oci_manifest(layers=[desc(mt.OCI_LAYER_GZIP, bad_digest)]))
    assert caught.value.message.startswith("layers[0].digest: ")
    assert assert_json_error(caught.value)["detail"] == {
        "field": "layers[0].digest",
        "digest": bad_digest,
    }


def test_unsupported_digest_algorithm():
    with pytest.raises(DigestInvalid, match="unsupported digest algorithm 'md5'"):
        parse(oci_manifest(config=desc(mt.OCI_IMAGE_CONFIG, "md5:" + "0" * 32)))


def test_sha512_digest():
    digest = str(Digest.of(b"layer", "sha512"))
    manifest = parse(oci_manifest(layers=[desc(mt.OCI_LAYER_GZIP, digest)]))
    assert digests(manifest.blobs) == [CONFIG, digest]


def test_digest_must_be_a_string():
    with pytest.raises(ManifestInvalid, match=r"layers\[0\].digest must be a string"):
        parse(oci_manifest(layers=[desc(mt.OCI_LAYER_GZIP, 5)]))


def test_negative_size():
    with pytest.raises(ManifestInvalid, match=r"layers\[1\].size must not be negative") as caught:
        parse(
            oci_manifest(
                layers=[desc(mt.OCI_LAYER_GZIP, LAYER1), desc(mt.OCI_LAYER_GZIP, LAYER2, -1)]
            )
        )
    assert assert_json_error(caught.value)["detail"] == {"field": "layers[1].size", "size": -1}


@pytest.mark.parametrize("size", ["10", 1.5, True, None, 2**63])
def test_size_must_be_an_int64(size):
    with pytest.raises(ManifestInvalid, match="config.size"):
        parse(oci_manifest(config=desc(mt.OCI_IMAGE_CONFIG, CONFIG, size)))


def test_zero_size_is_valid():
    assert parse(oci_manifest(config=desc(mt.OCI_IMAGE_CONFIG, CONFIG, 0))).config.size == 0


def test_missing_descriptor_media_type():
    layer = {"digest": LAYER1, "size": 1}
    with pytest.raises(ManifestInvalid, match=r"layers\[0\].mediaType is required"):
        parse(oci_manifest(layers=[layer]))


@pytest.mark.parametrize("media_type", ["", "gzip", "application/", "a/b c", "a/b; x=y"])
def test_descriptor_media_type_must_follow_rfc6838(media_type):
    with pytest.raises(ManifestInvalid, match="not a valid media type|is required"):
        parse(oci_manifest(layers=[desc(media_type, LAYER1)]))


def test_unknown_layer_media_types_are_accepted():
    manifest = parse(oci_manifest(layers=[desc("application/vnd.example.blob+x", LAYER1)]))
    assert digests(manifest.blobs) == [CONFIG, LAYER1]


def test_descriptor_must_be_an_object():
    with pytest.raises(ManifestInvalid, match=r"layers\[0\] must be a descriptor object"):
        parse(oci_manifest(layers=[LAYER1]))


def test_annotations_must_be_strings():
    with pytest.raises(ManifestInvalid, match="annotations"):
        parse(oci_manifest(annotations={"a": 1}))
    with pytest.raises(ManifestInvalid, match=r"layers\[0\].annotations"):
        parse(oci_manifest(layers=[desc(mt.OCI_LAYER_GZIP, LAYER1, annotations=[])]))


def test_urls_must_be_strings():
    with pytest.raises(ManifestInvalid, match=r"layers\[0\].urls\[0\] must be a string"):
        parse(oci_manifest(layers=[desc(mt.OCI_LAYER_GZIP, LAYER1, urls=[1])]))


def test_embedded_data_must_match_the_digest():
    bad = desc(mt.OCI_EMPTY, EMPTY, 2, data="W10=")  # "[]"
    with pytest.raises(ManifestInvalid, match="config.data does not match"):
        parse(oci_manifest(config=bad))
    with pytest.raises(ManifestInvalid, match="config.data is not valid base64"):
        parse(oci_manifest(config=desc(mt.OCI_EMPTY, EMPTY, 2, data="!!")))


# Non-distributable and foreign layers


@pytest.mark.parametrize(
    "media_type",
    [
        mt.OCI_LAYER_NONDISTRIBUTABLE,
        mt.OCI_LAYER_NONDISTRIBUTABLE_GZIP,
        mt.OCI_LAYER_NONDISTRIBUTABLE_ZSTD,
        mt.DOCKER_FOREIGN_LAYER,
    ],
)
def test_non_distributable_layers_with_urls_are_not_required(media_type):
    foreign = desc(media_type, LAYER1, urls=["https://example.com/layer.tar"])
    manifest = parse(oci_manifest(layers=[foreign, desc(mt.OCI_LAYER_GZIP, LAYER2)]))
    assert digests(manifest.blobs) == [CONFIG, LAYER2]


def test_docker_foreign_layer_with_urls_is_not_required():
    foreign = desc(
        mt.DOCKER_FOREIGN_LAYER,
        LAYER1,
        urls=["https://mcr.microsoft.com/v2/windows/blobs/" + LAYER1],
    )
    manifest = parse(docker_manifest(layers=[foreign, desc(mt.DOCKER_LAYER, LAYER2)]))
    assert digests(manifest.blobs) == [CONFIG, LAYER2]


def test_foreign_layer_without_urls_is_required():
    manifest = parse(docker_manifest(layers=[desc(mt.DOCKER_FOREIGN_LAYER, LAYER1)]))
    assert digests(manifest.blobs) == [CONFIG, LAYER1]


def test_external_layers_are_listed_apart():
    foreign = desc(mt.DOCKER_FOREIGN_LAYER, LAYER1, urls=["https://ok.example/x"])
    manifest = parse(docker_manifest(layers=[foreign, desc(mt.DOCKER_LAYER, LAYER2)]))
    assert digests(manifest.external) == [LAYER1]
    entry = desc(mt.OCI_LAYER_NONDISTRIBUTABLE, LAYER2, urls=["https://ok.example/y"])
    index = parse(oci_index(manifests=[desc(mt.OCI_MANIFEST, CHILD1), entry]))
    assert digests(index.external) == [LAYER2] and digests(index.manifests) == [CHILD1]


@pytest_twisted.ensureDeferred
async def test_url_policy_as_distribution_applies_it():
    """validation.manifests.urls: an allowed URL must match an allow
    pattern (when there are any) and no deny pattern; unanchored, as Go's
    MatchString; with neither list nothing is allowed."""
    from registryd.errors import ManifestBlobUnknown
    from registryd.manifests.verify import URLPolicy

    def manifest_with(url):
        foreign = desc(mt.DOCKER_FOREIGN_LAYER, LAYER1, urls=["https://cdn.example.com/ok", url])
        return parse(docker_manifest(layers=[foreign]))

    def present(digest):
        return True

    policy = URLPolicy(
        allow=[r"^https?://([^/]+\.)*example\.com/"], deny=[r"^https?://www\.example\.com/"]
    )
    assert (
        await verify_references(
            manifest_with("https://mirror.example.com/layer"), present, present, url_policy=policy
        )
        is None
    )
    for url, reason in [
        ("https://www.example.com/layer", "matches a validation.manifests.urls.deny pattern"),
        ("https://elsewhere.test/layer", "matches no validation.manifests.urls.allow pattern"),
    ]:
        with pytest.raises(ManifestBlobUnknown) as info:
            await verify_references(manifest_with(url), present, present, url_policy=policy)
        assert reason in str(info.value)
        assert info.value.detail == {"digest": LAYER1, "url": url}
    only_deny = URLPolicy(deny=["internal"])
    assert only_deny.refusal("https://anywhere.test/x") is None
    assert only_deny.refusal("https://internal.test/x") is not None
    assert URLPolicy().refusal("https://anywhere.test/x").startswith("no URLs are allowed")
    # Without a policy (no validation.manifests.urls section) any URL goes.
    assert await verify_references(manifest_with("https://x.test/"), present, present) is None


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "/relative", "https://example.com/x#frag", "https://"]
)
def test_foreign_layer_urls_must_be_http(url):
    foreign = desc(mt.DOCKER_FOREIGN_LAYER, LAYER1, urls=["https://ok.example/x", url])
    with pytest.raises(ManifestInvalid, match=r"layers\[0\].urls\[1\] must be an absolute http"):
        parse(docker_manifest(layers=[foreign]))


# OCI index


def test_oci_index():
    subject = desc(mt.OCI_MANIFEST, SUBJECT)
    manifest = parse(oci_index(subject=subject, annotations={"a": "b"}))
    assert manifest.media_type == mt.OCI_INDEX
    assert digests(manifest.manifests) == [CHILD1, CHILD2]
    assert manifest.manifests[1].platform == {
        "architecture": "arm64",
        "os": "linux",
        "variant": "v8",
    }
    assert manifest.blobs == []
    assert manifest.config is None
    assert manifest.subject.digest == Digest.parse(SUBJECT)
    assert manifest.annotations == {"a": "b"}
    # An index without artifactType has none (distribution spec, referrers).
    assert manifest.artifact_type is None


def test_oci_index_artifact_type():
    assert parse(oci_index(artifactType="application/vnd.x")).artifact_type == "application/vnd.x"


def test_oci_index_without_media_type():
    manifest = parse(oci_index(mediaType=None), None)
    assert manifest.media_type == mt.OCI_INDEX


def test_empty_index():
    manifest = parse(oci_index(manifests=[]))
    assert manifest.manifests == [] and manifest.blobs == []


def test_index_requires_manifests():
    with pytest.raises(ManifestInvalid, match="manifests is required"):
        parse(oci_index(manifests=None))


def test_index_with_config_is_refused():
    with pytest.raises(ManifestInvalid, match="must not have a 'config' field"):
        parse(oci_index(config=desc(mt.OCI_IMAGE_CONFIG, CONFIG)))
    with pytest.raises(ManifestInvalid, match="must not have a 'layers' field"):
        parse(oci_index(layers=[]))


def test_index_entries_that_are_not_manifests_are_blobs():
    entries = [
        desc(mt.OCI_INDEX, CHILD1),
        desc(mt.DOCKER_MANIFEST, CHILD2),
        desc("application/vnd.example.data", LAYER1),
        desc(mt.OCI_LAYER_NONDISTRIBUTABLE, LAYER2, urls=["https://example.com/l"]),
    ]
    manifest = parse(oci_index(manifests=entries))
    assert digests(manifest.manifests) == [CHILD1, CHILD2]
    assert digests(manifest.blobs) == [LAYER1]


def test_index_platform_must_name_architecture_and_os():
    entry = desc(mt.OCI_MANIFEST, CHILD1, platform={"architecture": "amd64"})
    with pytest.raises(ManifestInvalid, match=r"manifests\[0\].platform.os is required"):
        parse(oci_index(manifests=[entry]))
    entry = desc(mt.OCI_MANIFEST, CHILD1, platform="linux/amd64")
    with pytest.raises(ManifestInvalid, match=r"manifests\[0\].platform must be an object"):
        parse(oci_index(manifests=[entry]))


def test_index_entry_bad_digest():
    with pytest.raises(DigestInvalid, match=r"manifests\[1\].digest"):
        parse(
            oci_index(
                manifests=[desc(mt.OCI_MANIFEST, CHILD1), desc(mt.OCI_MANIFEST, "sha256:xyz")]
            )
        )


# Docker schema 2 and manifest list


def test_docker_manifest():
    manifest = parse(docker_manifest())
    assert manifest.media_type == mt.DOCKER_MANIFEST
    assert digests(manifest.blobs) == [CONFIG, LAYER1, LAYER2]
    assert manifest.manifests == []
    assert manifest.subject is None
    assert manifest.artifact_type is None
    assert manifest.config.media_type == mt.DOCKER_IMAGE_CONFIG


def test_docker_manifest_requires_media_type_in_body():
    with pytest.raises(ManifestInvalid, match="mediaType is required"):
        parse(docker_manifest(mediaType=None), mt.DOCKER_MANIFEST)


def test_docker_manifest_requires_config_and_layers():
    with pytest.raises(ManifestInvalid, match="config is required"):
        parse(docker_manifest(config=None))
    with pytest.raises(ManifestInvalid, match="layers is required"):
        parse(docker_manifest(layers=None))


def test_docker_manifest_list():
    manifest = parse(docker_list())
    assert manifest.media_type == mt.DOCKER_MANIFEST_LIST
    assert digests(manifest.manifests) == [CHILD1, CHILD2]
    assert manifest.manifests[0].platform == {"architecture": "amd64", "os": "linux"}
    assert manifest.blobs == []
    assert manifest.subject is None


def test_docker_manifest_list_requires_media_type_in_body():
    with pytest.raises(ManifestInvalid, match="mediaType is required"):
        parse(docker_list(mediaType=None), mt.DOCKER_MANIFEST_LIST)


def test_docker_manifest_list_with_layers_is_refused():
    with pytest.raises(ManifestInvalid, match="must not have a 'layers' field"):
        parse(docker_list(layers=[]))


# Body-level checks


def test_too_large():
    body = encode(oci_manifest())
    with pytest.raises(PayloadTooLarge) as caught:
        parse_manifest(body, mt.OCI_MANIFEST, max_size=len(body) - 1)
    assert caught.value.status == 413
    assert assert_json_error(caught.value)["detail"] == {"size": len(body), "limit": len(body) - 1}
    assert parse_manifest(body, mt.OCI_MANIFEST, max_size=len(body)).body == body


def test_default_limit_is_4_mib():
    padding = "x" * (4 * 1024 * 1024)
    with pytest.raises(PayloadTooLarge):
        parse(oci_manifest(annotations={"pad": padding}))


@pytest.mark.parametrize("body", [b"", b"not json", b"{", b'{"schemaVersion": 2,}', b"\xff\xfe{}"])
def test_not_json(body):
    with pytest.raises(ManifestInvalid) as caught:
        parse_manifest(body, mt.OCI_MANIFEST)
    assert_json_error(caught.value)


@pytest.mark.parametrize("body", [b"[]", b'"manifest"', b"2", b"null"])
def test_not_an_object(body):
    with pytest.raises(ManifestInvalid, match="must be a JSON object"):
        parse_manifest(body, mt.OCI_MANIFEST)


def test_duplicate_keys_are_refused():
    body = encode(oci_manifest())[:-1] + b', "schemaVersion": 2}'
    with pytest.raises(ManifestInvalid, match="duplicate key 'schemaVersion'"):
        parse_manifest(body, mt.OCI_MANIFEST)


def test_nan_is_refused():
    body = encode(oci_manifest())[:-1] + b', "x": NaN}'
    with pytest.raises(ManifestInvalid, match="not valid JSON"):
        parse_manifest(body, mt.OCI_MANIFEST)


def test_deeply_nested_json_is_refused_cleanly():
    body = b'{"a": ' + b"[" * 100000 + b"]" * 100000 + b"}"
    with pytest.raises(ManifestInvalid):
        parse_manifest(body, mt.OCI_MANIFEST)


def test_body_must_be_bytes():
    with pytest.raises(TypeError):
        parse_manifest("{}", mt.OCI_MANIFEST)


def test_exact_bytes_are_kept():
    body = (
        b'{"schemaVersion":2,"mediaType":"'
        + mt.OCI_MANIFEST.encode()
        + (
            b'","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"'
            + EMPTY.encode()
            + b'","size":2},   "layers":[]}\n'
        )
    )
    manifest = parse_manifest(body, mt.OCI_MANIFEST)
    assert manifest.body == body
    assert manifest.digest() == Digest.of(body)


# verify_references


def answer(known):
    """An async predicate: is the digest one of ``known``?"""
    calls = []

    async def has(digest):
        calls.append(str(digest))
        return str(digest) in known

    has.calls = calls
    return has


@pytest_twisted.ensureDeferred
async def test_verify_all_present():
    manifest = parse(oci_manifest(subject=desc(mt.OCI_MANIFEST, SUBJECT)))
    has_blob = answer({CONFIG, LAYER1, LAYER2})
    has_manifest = answer(set())
    assert await verify_references(manifest, has_blob, has_manifest) is None
    assert sorted(has_blob.calls) == sorted([CONFIG, LAYER1, LAYER2])
    # The subject is never looked up.
    assert has_manifest.calls == []


@pytest_twisted.ensureDeferred
async def test_verify_reports_every_missing_blob():
    manifest = parse(oci_manifest())
    with pytest.raises(ManifestBlobUnknown) as caught:
        await verify_references(manifest, answer({LAYER1}), answer(set()))
    error = caught.value
    assert error.detail == {"missing": [CONFIG, LAYER2]}
    assert CONFIG in error.message and LAYER2 in error.message and LAYER1 not in error.message
    assert error.status == 400
    assert assert_json_error(error)["code"] == "MANIFEST_BLOB_UNKNOWN"


@pytest_twisted.ensureDeferred
async def test_verify_index_children():
    entries = [
        desc(mt.OCI_MANIFEST, CHILD1),
        desc(mt.OCI_MANIFEST, CHILD2),
        desc("application/vnd.example.data", LAYER1),
    ]
    manifest = parse(oci_index(manifests=entries))
    has_blob = answer(set())
    with pytest.raises(ManifestBlobUnknown) as caught:
        await verify_references(manifest, has_blob, answer({CHILD1}))
    assert caught.value.detail == {"missing": [LAYER1, CHILD2]}
    # Children are looked up as manifests, not blobs.
    assert has_blob.calls == [LAYER1]


@pytest_twisted.ensureDeferred
async def test_verify_sparse_index_skips_children():
    manifest = parse(oci_index())
    has_manifest = answer(set())
    await verify_references(manifest, answer(set()), has_manifest, allow_sparse=True)
    assert has_manifest.calls == []


@pytest_twisted.ensureDeferred
async def test_verify_sparse_still_requires_blobs():
    manifest = parse(oci_manifest())
    with pytest.raises(ManifestBlobUnknown):
        await verify_references(manifest, answer(set()), answer(set()), allow_sparse=True)


@pytest_twisted.ensureDeferred
async def test_verify_ignores_external_layers():
    foreign = desc(mt.DOCKER_FOREIGN_LAYER, LAYER1, urls=["https://example.com/l"])
    manifest = parse(docker_manifest(layers=[foreign]))
    has_blob = answer({CONFIG})
    await verify_references(manifest, has_blob, answer(set()))
    assert has_blob.calls == [CONFIG]


@pytest_twisted.ensureDeferred
async def test_verify_runs_lookups_concurrently():
    manifest = parse(oci_manifest())
    pending = {}

    def has_blob(digest):
        pending[str(digest)] = defer.Deferred()
        return pending[str(digest)]

    verifying = defer.ensureDeferred(verify_references(manifest, has_blob, answer(set())))
    # Every lookup has started before any has answered.
    assert sorted(pending) == sorted([CONFIG, LAYER1, LAYER2])
    assert not verifying.called
    for digest, d in pending.items():
        d.callback(digest != LAYER2)
    with pytest.raises(ManifestBlobUnknown) as caught:
        await verifying
    assert caught.value.detail == {"missing": [LAYER2]}


@pytest_twisted.ensureDeferred
async def test_verify_accepts_plain_predicates():
    manifest = parse(oci_manifest())
    await verify_references(manifest, lambda digest: True, lambda digest: False)


@pytest_twisted.ensureDeferred
async def test_verify_propagates_predicate_errors():
    manifest = parse(oci_manifest())

    async def broken(digest):
        if str(digest) == LAYER1:
            raise Unavailable()
        return True

    with pytest.raises(Unavailable):
        await verify_references(manifest, broken, answer(set()))


@pytest_twisted.ensureDeferred
async def test_verify_nothing_to_check():
    manifest = parse(oci_index(manifests=[]))
    await verify_references(manifest, answer(set()), answer(set()))


@pytest_twisted.ensureDeferred
async def test_verify_message_is_bounded():
    layers = [desc(mt.OCI_LAYER_GZIP, digest_of(f"layer{i}")) for i in range(25)]
    manifest = parse(oci_manifest(layers=layers))
    with pytest.raises(ManifestBlobUnknown) as caught:
        await verify_references(manifest, answer(set()), answer(set()))
    assert len(caught.value.detail["missing"]) == 26
    assert caught.value.message.endswith("and 16 more")


def test_mediatypes():
    assert mt.is_manifest_type(mt.OCI_MANIFEST) and not mt.is_manifest_type(mt.OCI_EMPTY)
    assert mt.is_index_type(mt.DOCKER_MANIFEST_LIST) and not mt.is_index_type(mt.DOCKER_MANIFEST)
    assert set(mt.ACCEPTED_MANIFEST_MEDIA_TYPES) == mt.MANIFEST_MEDIA_TYPES
    assert not mt.MANIFEST_MEDIA_TYPES & mt.BLOB_MEDIA_TYPES
    assert mt.normalize(" Application/JSON ; charset=utf-8") == "application/json"
    assert mt.normalize(None) is None and mt.normalize("") is None
    assert mt.is_non_distributable(mt.DOCKER_FOREIGN_LAYER)
    assert not mt.is_non_distributable(mt.DOCKER_LAYER)


@pytest.mark.parametrize(
    "doc,content_type",
    [
        (oci_manifest(), mt.OCI_MANIFEST),
        (oci_manifest(mediaType=None), mt.OCI_MANIFEST),
        (oci_index(), mt.OCI_INDEX),
        (oci_index(mediaType=None), mt.OCI_INDEX),
        (docker_manifest(), mt.DOCKER_MANIFEST),
        (docker_list(), mt.DOCKER_MANIFEST_LIST),
    ],
)
def test_stored_bodies_reparse_without_content_type(doc, content_type):
    # A stored manifest is read back without its push's Content-Type.
    body = encode(doc)
    assert parse_manifest(body, None).media_type == parse_manifest(body, content_type).media_type
