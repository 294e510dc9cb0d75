"""``GET /v2/<name>/_registryd/usage``: what a repository holds, and the
usage of every quota that applies to it (registryd.lifecycle.quotas)::

    {"name": "team/app", "bytes": 123456,
     "quotas": [{"quota": "lifecycle.quotas[0] (repository 'team/**', bytes 50.0 GiB)",
                 "repository": "team/**", "bytes": 2345678, "maxbytes": 53687091200,
                 "repositories": 3, "maxrepositories": null}]}
"""

import json

from registryd.http.api.base import respond


async def repository_usage(ctx, request, name):
    repository = ctx.registry.repository(name)
    await repository.tags.all()  # NAME_UNKNOWN for a repository without manifests
    quotas = ctx.registry.quotas
    held = await quotas.repository_usage(repository.name)
    body = json.dumps(
        {
            "name": repository.name,
            "bytes": sum(held.values()),
            "quotas": [usage.to_dict() for usage in await quotas.report(repository.name)],
        }
    ).encode("utf-8")
    return respond(request, 200, body=body, content_type="application/json")
