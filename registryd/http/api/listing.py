"""Paginated listings: ``/v2/<name>/tags/list`` and ``/v2/_catalog``.

Both are lexically sorted and take ``n`` (page size) and ``last`` (the last
entry of the previous page); when more entries remain, an RFC 5988 ``Link:
<...>; rel="next"`` header names the next page, as Distribution does.
"""

import bisect
import json
from urllib.parse import urlencode

from registryd import errors
from registryd.http.api.base import decimal, query_arg, respond

#: Catalog page size when the client does not ask (Distribution's default
#: catalog.maxentries); tag lists are whole unless ``n`` is given.
DEFAULT_CATALOG_PAGE = 1000


def paginate(entries, request, default_page=None, max_tags=None):
    """Return (page, next_last) from sorted ``entries`` and the request's
    n/last; at most ``max_tags`` (tags.maxtags) per page, if given."""
    n, last = _page_arguments(request, default_page)
    if max_tags is not None:
        n = max_tags if n is None else min(n, max_tags)
    start = bisect.bisect_right(entries, last) if last else 0
    if n is None:
        return entries[start:], None
    page = entries[start : start + n]
    more = start + n < len(entries)
    return page, (page[-1] if more and page else None)


def link_header(path, n, last):
    """The RFC 5988 ``Link`` to the page after ``last``."""
    return f'<{path}?{urlencode({"n": n, "last": last})}>; rel="next"'


def max_tags(ctx):
    """tags.maxtags, or None when not configured."""
    return _limits(ctx)[1]


def _limits(ctx):
    """(catalog.maxentries, tags.maxtags), each None when not configured."""
    listing = ctx.listing
    if listing is None:
        return None, None
    return listing.max_catalog_entries, listing.max_tags


def respond_tags_page(ctx, request, repository, endpoint, page, next_last, entries):
    """A tags listing's answer (tags/list, and registryd's details listing
    at ``endpoint`` under the repository): ``entries`` for the ``page`` of
    tag names, with a ``Link`` to the next page when ``next_last`` is set."""
    headers = []
    if next_last is not None:
        path = ctx.urls.local(f"/v2/{repository.name}/{endpoint}")
        headers.append(("Link", link_header(path, len(page), next_last)))
    body = json.dumps({"name": repository.name, "tags": entries}).encode("utf-8")
    return respond(request, 200, headers, body, content_type="application/json")


async def list_tags(ctx, request, name):
    repository = ctx.registry.repository(name)
    tags = await repository.tags.all()
    page, next_last = paginate(tags, request, max_tags=max_tags(ctx))
    return respond_tags_page(ctx, request, repository, "tags/list", page, next_last, page)


def _page_arguments(request, default_page=None):
    """The request's (n, last), as :func:`paginate` reads them."""
    n = query_arg(request, "n")
    if n is not None:
        number = decimal(n)
        if number is None:
            raise errors.PaginationNumberInvalid(detail={"n": n[:100]})
        n = number
    else:
        n = default_page
    return n, query_arg(request, "last") or None


async def catalog(ctx, request):
    max_entries, _ = _limits(ctx)
    default = (
        DEFAULT_CATALOG_PAGE if max_entries is None else min(DEFAULT_CATALOG_PAGE, max_entries)
    )
    n, last = _page_arguments(request, default)
    if max_entries is not None and n > max_entries:
        raise errors.PaginationNumberInvalid(
            f"n may be at most {max_entries} (catalog.maxentries)", detail={"n": n}
        )
    grant = request.context.grant
    # Only what the caller may read (registryd.auth); the walk covers just
    # this page (Registry.repository_page), not the whole tree.
    page, more = await ctx.registry.repository_page(
        last, n, include=grant.may_list if grant is not None else None
    )
    next_last = page[-1] if more and page else None
    headers = []
    if next_last is not None:
        headers.append(("Link", link_header(ctx.urls.local("/v2/_catalog"), len(page), next_last)))
    body = json.dumps({"repositories": page}).encode("utf-8")
    return respond(request, 200, headers, body, content_type="application/json")
