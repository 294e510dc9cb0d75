"""``/v2/<name>/_registryd/repository``: DELETE removes a whole repository.

An extension path in the OCI style (``_registryd`` cannot be a name
component, so it never collides with a repository).  The removal itself is
the storage model's (``registryd.storage.removal``): tags, manifests, blob
links, the referrers index and idle uploads, leaving what pushes write
meanwhile; blobs are left to garbage collection.  A repository holding
an immutable tag (lifecycle.immutable) is refused whole.  A removal sends
Distribution's repository ``delete`` notification
(``registryd.notifications.events``).
"""

from registryd import errors
from registryd.http.api.base import respond


async def delete_repository(ctx, request, name):
    registry = ctx.registry
    if not registry.delete_enabled:
        raise errors.Unsupported("deletes are disabled (storage.delete.enabled is false)")
    repository = registry.repository(name)
    await repository.check_removable()
    report = await repository.remove()
    if not (report.tags or report.manifests or report.blob_links or report.uploads or report.kept):
        raise errors.NameUnknown(detail={"name": repository.name})
    ctx.events.repository_deleted(request, repository.name)
    return respond(request, 202)
