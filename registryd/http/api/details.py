"""``GET /v2/<name>/_registryd/tags``: the tags list with what tools and
the web UI show about each tag.

Paginated exactly as ``tags/list`` (``n``, ``last``, a ``Link`` to the
next page; registryd.http.api.listing).  Each entry::

    {"tag": "v1", "digest": "sha256:...", "mediaType": "...",
     "size": 12345,                  # the manifest, its blobs, and for an
                                     # index its child manifests and theirs
     "platforms": ["linux/amd64"],   # an index's children; an image's config
     "pushed": "2026-12-03T15:00:00Z",
     "pulled": "2026-12-03T15:05:00Z" or null,
     "protected": false}             # lifecycle.immutable; with "rule" if true

What each entry says is computed by registryd.lifecycle.details, which
the web interface's repository page shares.
"""

from registryd.http.api.listing import max_tags, paginate, respond_tags_page
from registryd.lifecycle.details import describe_tags


async def list_tag_details(ctx, request, name):
    repository = ctx.registry.repository(name)
    tags = await repository.tags.all()
    page, next_last = paginate(tags, request, max_tags=max_tags(ctx))
    described = await describe_tags(repository, page, ctx.pulls, ctx.registry.immutable_tags)
    entries = [found.to_dict() for found in described]
    return respond_tags_page(ctx, request, repository, "_registryd/tags", page, next_last, entries)
