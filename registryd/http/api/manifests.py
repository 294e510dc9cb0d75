"""``/v2/<name>/manifests/<reference>``: GET, HEAD, PUT (with ``?tag=``), DELETE."""

from registryd.http.api.base import query_args, respond


def _manifest_headers(stored):
    headers = [
        ("Docker-Content-Digest", str(stored.digest)),
        ("ETag", f'"{stored.digest}"'),
    ]
    return headers


async def get_manifest(ctx, request, name, reference):
    repository = ctx.registry.repository(name)
    accept = ", ".join(request.requestHeaders.getRawHeaders("accept") or []) or None
    stored = await repository.manifests.get(reference, accept=accept)
    body = stored.body
    if request.method == b"GET":
        ctx.events.manifest_pulled(request, repository.name, stored, reference)
    # HEAD too: clients resolve a tag with HEAD, then GET by digest.
    ctx.pulls.record(repository.name, None if ":" in reference else reference, stored.digest)
    response = respond(
        request, 200, _manifest_headers(stored), body, content_type=stored.media_type
    )
    return b"" if request.method == b"HEAD" else response


async def put_manifest(ctx, request, name, reference):
    repository = ctx.registry.repository(name)
    body = request.context.body.value()  # buffered, at most MAX_MANIFEST_SIZE
    content_type = request.getHeader("content-type")
    tags = query_args(request, "tag")
    stored = await repository.manifests.put(
        reference,
        body,
        content_type,
        tags=tags,
        allow_sparse=ctx.registry.accept_sparse_manifests,
        allow_missing_blobs=ctx.registry.accept_sparse_images,
    )
    tagged = list(dict.fromkeys(([] if ":" in reference else [reference]) + tags))
    ctx.events.manifest_pushed(request, repository.name, stored, tagged)
    headers = [
        ("Location", ctx.urls.manifest(request, repository.name, stored.digest)),
        ("Docker-Content-Digest", str(stored.digest)),
    ]
    if tagged:  # the spec's OCI-Tag: the tags this PUT set, as one RFC 9110 list
        headers.append(("OCI-Tag", ", ".join(tagged)))
    if stored.manifest.subject is not None:
        headers.append(("OCI-Subject", str(stored.manifest.subject.digest)))
    return respond(request, 201, headers)


async def delete_manifest(ctx, request, name, reference):
    repository = ctx.registry.repository(name)
    removed_tags = []
    await repository.manifests.delete(reference, removed_tags=removed_tags)
    ctx.events.manifest_deleted(request, repository.name, reference, removed_tags)
    return respond(request, 202)
