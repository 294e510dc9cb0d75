"""lifecycle.immutable over a real socket: a protected tag, once pushed,
cannot be moved nor deleted (by tag, by digest, with its repository),
re-pushing its digest succeeds, and two pushes racing for a new protected
tag cannot both win."""

import json

import pytest_twisted
from twisted.internet import defer

from registryd.lifecycle.immutable import ImmutableRule, ImmutableTags
from tests.integration.test_manifests_api import error_codes, push_image, put_manifest
from tests.support import serving, sha256

RULES = ImmutableTags(
    [
        ImmutableRule("team/**", ["v*", "release-*"], where="lifecycle.immutable[0]"),
    ]
)
RULE = "lifecycle.immutable[0] (repository 'team/**', tags ['v*', 'release-*'])"


async def denied(response):
    assert response.code == 403, await response.content()
    body = json.loads(await response.content())
    [error] = body["errors"]
    assert error["code"] == "DENIED"
    assert error["detail"]["rule"] == RULE
    return error


async def current_digest(server, name, tag):
    response = await server.client.head(server.v2(f"{name}/manifests/{tag}"))
    await response.content()
    return response.headers.getRawHeaders("Docker-Content-Digest", [None])[0]


@pytest_twisted.ensureDeferred
async def test_a_protected_tag_cannot_be_moved_or_deleted(tmp_path):
    async with serving(tmp_path, immutable_tags=RULES) as server:
        name = "team/app"
        first = await push_image(server, name)
        second = await push_image(server, name)
        assert (await put_manifest(server, name, "v1", first)).code == 201
        # Pushing the digest it names again is fine (clients retry, re-push).
        assert (await put_manifest(server, name, "v1", first)).code == 201
        error = await denied(await put_manifest(server, name, "v1", second))
        assert error["message"] == (
            f"tag 'v1' of team/app is immutable by {RULE}: it names {sha256(first)} "
            f"and cannot be moved to {sha256(second)}"
        )
        assert error["detail"]["digest"] == sha256(first)
        # Not by a PUT by digest with ?tag= either.
        response = await server.client.put(
            server.v2(f"{name}/manifests/{sha256(second)}?tag=v1&tag=latest"),
            data=second,
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        )
        await denied(response)
        assert await current_digest(server, name, "v1") == sha256(first)
        assert await current_digest(server, name, "latest") is None  # nothing of the PUT was linked
        await denied(await server.client.delete(server.v2(f"{name}/manifests/v1")))
        await denied(await server.client.delete(server.v2(f"{name}/manifests/{sha256(first)}")))
        await denied(await server.client.delete(server.v2(f"{name}/_registryd/repository")))
        assert await current_digest(server, name, "v1") == sha256(first)
        # Tags no rule names move and go as always.
        for body in (first, second):
            assert (await put_manifest(server, name, "latest", body)).code == 201
        response = await server.client.delete(server.v2(f"{name}/manifests/latest"))
        assert response.code == 202, await response.content()
        # A manifest no protected tag names can be deleted by digest.
        response = await server.client.delete(server.v2(f"{name}/manifests/{sha256(second)}"))
        assert response.code == 202, await response.content()


@pytest_twisted.ensureDeferred
async def test_rules_match_repositories_and_tags_by_pattern(tmp_path):
    async with serving(tmp_path, immutable_tags=RULES) as server:
        for name, tag, protected in [
            ("team/app", "release-1", True),
            ("team/a/b", "v2", True),
            ("team/app", "release", False),
            ("team/app", "xv1", False),
            ("other/app", "v1", False),
            ("team", "v1", False),  # 'team/**' is below team/
        ]:
            first = await push_image(server, name, layers=1)
            second = await push_image(server, name, layers=1)
            assert (await put_manifest(server, name, tag, first)).code == 201
            response = await put_manifest(server, name, tag, second)
            if protected:
                await denied(response)
            else:
                assert response.code == 201, (name, tag, await response.content())


@pytest_twisted.ensureDeferred
async def test_two_pushes_racing_for_a_new_protected_tag_cannot_both_win(tmp_path):
    async with serving(tmp_path, immutable_tags=RULES) as server:
        name = "team/race"
        bodies = [await push_image(server, name, layers=1) for _ in range(4)]
        responses = await defer.gatherResults(
            [defer.ensureDeferred(put_manifest(server, name, "v1", body)) for body in bodies]
        )
        codes = sorted(response.code for response in responses)
        for response in responses:
            await response.content()
        assert codes == [201, 403, 403, 403]
        winner = next(body for body, r in zip(bodies, responses) if r.code == 201)
        assert await current_digest(server, name, "v1") == sha256(winner)


@pytest_twisted.ensureDeferred
async def test_without_rules_tags_move_as_always(server):
    first = await push_image(server, "team/app")
    second = await push_image(server, "team/app")
    for body in (first, second):
        assert (await put_manifest(server, "team/app", "v1", body)).code == 201
    assert await error_codes(await server.client.delete(server.v2("team/app/manifests/nope"))) == [
        "MANIFEST_UNKNOWN"
    ]
