"""``/v2/<name>/referrers/<digest>``: the OCI 1.1 referrers API.

Always 200 with an OCI image index (also for subjects never pushed), as
the spec requires of registries that support the API; ``?artifactType=``
filters and is reported in ``OCI-Filters-Applied``.
"""

import json

from registryd.digest import Digest
from registryd.http.api.base import query_arg, respond

INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"


async def list_referrers(ctx, request, name, digest):
    repository = ctx.registry.repository(name)
    subject = Digest.parse(digest)
    artifact_type = query_arg(request, "artifactType")
    descriptors = await repository.manifests.referrers(subject, artifact_type)
    headers = []
    if artifact_type is not None:
        headers.append(("OCI-Filters-Applied", "artifactType"))
    body = json.dumps(
        {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": descriptors}
    ).encode("utf-8")
    return respond(request, 200, headers, body, content_type=INDEX_MEDIA_TYPE)
