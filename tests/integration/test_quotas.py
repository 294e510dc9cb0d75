"""lifecycle.quotas over a real socket: a push that would take a quota
over is refused with 403 DENIED naming the quota and its usage, before
anything of it is linked; usage is deduplicated across manifests and
repositories, freed by deletes, bounded in repositories too, and shown at
/v2/<name>/_registryd/usage and in metrics; two pushes racing for the last
bytes cannot both fit."""

import json

import pytest_twisted
from twisted.internet import defer

from registryd.lifecycle.quotas import Quota
from registryd.ops import metrics
from tests.integration.test_manifests_api import push_image, put_manifest
from tests.support import serving, sha256


def image_size(body):
    manifest = json.loads(body)
    return (
        len(body) + manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])
    )


async def usage(server, name):
    response = await server.client.get(server.v2(f"{name}/_registryd/usage"))
    assert response.code == 200, await response.content()
    return json.loads(await response.content())


async def status(server, path):
    response = await server.client.get(server.v2(path))
    await response.content()
    return response.code


@pytest_twisted.ensureDeferred
async def test_a_push_over_the_bytes_quota_is_refused_before_anything_is_linked(tmp_path):
    quota = Quota("team/**", bytes=10_000, where="lifecycle.quotas[0]")
    async with serving(tmp_path, quotas=[quota]) as server:
        first = await push_image(server, "team/app", layers=2)
        first_size = image_size(first)
        assert (await put_manifest(server, "team/app", "v1", first)).code == 201
        big = await push_image(server, "team/app", layers=4)
        response = await put_manifest(server, "team/app", "v2", big)
        assert response.code == 403
        [error] = json.loads(await response.content())["errors"]
        assert error["code"] == "DENIED"
        described = "lifecycle.quotas[0] (repository 'team/**', bytes 9.8 KiB)"
        assert error["message"].startswith(
            f"quota {described} exceeded: this push would make its usage "
        )
        assert error["detail"]["quota"] == described
        assert error["detail"]["maxbytes"] == 10_000
        shared_config = json.loads(big)["config"]["size"]  # push_image's config is always the same
        assert error["detail"]["bytes"] == first_size + image_size(big) - shared_config
        assert await status(server, "team/app/manifests/v2") == 404
        assert await status(server, f"team/app/manifests/{sha256(big)}") == 404
        held = await usage(server, "team/app")
        assert held["bytes"] == first_size
        assert held["quotas"] == [
            {
                "quota": described,
                "repository": "team/**",
                "bytes": first_size,
                "maxbytes": 10_000,
                "repositories": 1,
                "maxrepositories": None,
            }
        ]
        assert (
            metrics.sample("registryd_quota_used_bytes", quota="lifecycle.quotas[0]") == first_size
        )
        # Names the quota does not cover are not bound by it.
        assert (
            await put_manifest(server, "elsewhere", "v2", await push_image(server, "elsewhere", 4))
        ).code == 201
        # A delete frees the bytes.
        response = await server.client.delete(server.v2(f"team/app/manifests/{sha256(first)}"))
        assert response.code == 202
        await response.content()
        assert (await put_manifest(server, "team/app", "v2", big)).code == 201
        assert (await usage(server, "team/app"))["bytes"] == image_size(big)


@pytest_twisted.ensureDeferred
async def test_usage_is_deduplicated_across_manifests_and_repositories(tmp_path):
    quota = Quota("team/**", bytes=100_000, where="lifecycle.quotas[0]")
    async with serving(tmp_path, quotas=[quota]) as server:
        body = await push_image(server, "team/a", layers=2)
        assert (await put_manifest(server, "team/a", "v1", body)).code == 201
        manifest = json.loads(body)
        for blob in [manifest["config"]] + manifest["layers"]:  # mount every blob into team/b
            response = await server.client.post(
                server.v2(f"team/b/blobs/uploads/?mount={blob['digest']}&from=team/a")
            )
            assert response.code == 201, await response.content()
        assert (await put_manifest(server, "team/b", "v1", body)).code == 201
        retagged = dict(manifest, annotations={"note": "same blobs"})
        other = json.dumps(retagged).encode()
        assert (await put_manifest(server, "team/b", "v2", other)).code == 201
        held = await usage(server, "team/b")
        assert held["bytes"] == image_size(body) + len(other)
        assert held["quotas"][0]["bytes"] == image_size(body) + len(other)
        assert held["quotas"][0]["repositories"] == 2


@pytest_twisted.ensureDeferred
async def test_repositories_quota_and_the_global_quota(tmp_path):
    quotas = [
        Quota("team/**", repositories=2, where="lifecycle.quotas[0]"),
        Quota("**", bytes=1_000_000, where="lifecycle.quota"),
    ]
    async with serving(tmp_path, quotas=quotas) as server:
        for name in ("team/a", "team/b"):
            assert (
                await put_manifest(server, name, "v1", await push_image(server, name, 1))
            ).code == 201
        response = await put_manifest(server, "team/c", "v1", await push_image(server, "team/c", 1))
        assert response.code == 403
        [error] = json.loads(await response.content())["errors"]
        assert error["message"] == (
            "quota lifecycle.quotas[0] (repository 'team/**', repositories 2) exceeded: "
            "a new repository team/c would make 3 repositories"
        )
        assert (
            await put_manifest(server, "team/a", "v2", await push_image(server, "team/a", 1))
        ).code == 201
        response = await server.client.get(server.v2("team/c/_registryd/usage"))
        assert response.code == 404  # no such repository
        await response.content()
        held = await usage(server, "team/a")
        assert [q["quota"] for q in held["quotas"]] == [
            "lifecycle.quotas[0] (repository 'team/**', repositories 2)",
            "lifecycle.quota (repository '**', bytes 976.6 KiB)",
        ]


@pytest_twisted.ensureDeferred
async def test_two_pushes_racing_for_the_last_bytes_cannot_both_fit(tmp_path):
    async with serving(tmp_path) as server:  # the blobs first: they count for nothing yet
        bodies = [await push_image(server, "race", layers=1) for _ in range(3)]
    sizes = {image_size(body) for body in bodies}
    assert len(sizes) == 1  # push_image's images differ only in their random layers' bytes
    shared_config = json.loads(bodies[0])["config"]["size"]
    room = 2 * sizes.pop() - shared_config - 1  # one image fits, two do not
    async with serving(
        tmp_path, quotas=[Quota("**", bytes=room, where="lifecycle.quota")]
    ) as server:
        responses = await defer.gatherResults(
            [
                defer.ensureDeferred(put_manifest(server, "race", f"t{index}", body))
                for index, body in enumerate(bodies)
            ]
        )
        for response in responses:
            await response.content()
        assert sorted(response.code for response in responses) == [201, 403, 403]
