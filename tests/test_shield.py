"""Shielding the bucket: coalescing, caches and budgets, admission control, origin faults,
revalidation, result storage. Against the S3-protocol test server behind a counting proxy."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from proxy.signing import Signer
from proxy.workers import Workers, available_cpus
from tests import images
from tests.conftest import metric
from tests.faults import FaultProxy

Put = Callable[[str, bytes], None]


@pytest.fixture
def original(put: Put) -> str:
    put("big/1.jpg", images.jpeg(images.photo(1600, 1200)))
    return "big/1.jpg"


async def test_identical_cold_requests_do_one_fetch_and_one_transform(
    make: Any, proxy: FaultProxy, signer: Signer, original: str
) -> None:
    client = await make()
    proxy.delay = 0.3  # keep the leader in flight while the others arrive
    url = signer.url(original, w=400, f="webp")
    responses = await asyncio.gather(*(client.get(url) for _ in range(50)))
    bodies = {await r.read() for r in responses}
    assert {r.status for r in responses} == {200}
    assert len(bodies) == 1
    assert len({r.headers["ETag"] for r in responses}) == 1
    assert proxy.counts["GetObject"] == 1
    assert await metric(client, "originshield_transforms_total") == 1
    assert await metric(client, "originshield_coalesced_requests_total", stage="render") == 49


async def test_different_sizes_share_one_fetch_and_a_second_wave_none(
    make: Any, proxy: FaultProxy, signer: Signer, original: str
) -> None:
    client = await make()
    proxy.delay = 0.3
    urls = [signer.url(original, w=100 + 50 * i, f="jpeg") for i in range(10)]
    first = await asyncio.gather(*(client.get(u) for u in urls))
    assert {r.status for r in first} == {200}
    assert proxy.counts["GetObject"] == 1
    assert await metric(client, "originshield_transforms_total") == 10
    second = await asyncio.gather(*(client.get(u) for u in urls))
    assert {r.status for r in second} == {200}
    assert proxy.counts["GetObject"] == 1
    assert proxy.counts["HeadObject"] == 0
    assert await metric(client, "originshield_transforms_total") == 10
    assert (
        await metric(client, "originshield_cache_lookups_total", layer="renders", result="hit")
        == 10
    )


async def test_render_budget_in_bytes_is_respected(
    make: Any, signer: Signer, original: str
) -> None:
    budget = 30_000
    client = await make(cache__renders_bytes=str(budget))
    sizes = []
    for i in range(30):
        resp = await client.get(signer.url(original, w=200 + 10 * i, f="jpeg"))
        sizes.append(len(await resp.read()))
        held = await metric(client, "originshield_cache_bytes", layer="renders")
        assert 0 < held <= budget
    assert sum(sizes) > 3 * budget  # the budget really was under pressure
    entries = await metric(client, "originshield_cache_entries", layer="renders")
    assert 1 <= entries < 30


async def test_zero_budget_turns_the_cache_off(
    make: Any, proxy: FaultProxy, signer: Signer, original: str
) -> None:
    client = await make(cache__renders_bytes="0", cache__originals_bytes="0")
    url = signer.url(original, w=100)
    for _ in range(3):
        assert (await client.get(url)).status == 200
    assert proxy.counts["GetObject"] == 3
    assert await metric(client, "originshield_transforms_total") == 3


async def test_origin_down_serves_cached_fails_fast_and_recovers(
    make: Any, proxy: FaultProxy, signer: Signer, original: str
) -> None:
    client = await make(
        origin__connect_timeout="1", origin__read_timeout="1", origin__retries="1",
        cache__originals_bytes="0",
    )  # fmt: skip
    cached = signer.url(original, w=300, f="webp")
    assert (await client.get(cached)).status == 200
    assert (await client.get("/readyz")).status == 200
    await proxy.stop()
    again = await client.get(cached)
    assert again.status == 200
    assert "stale-if-error" in again.headers["Cache-Control"]
    started = time.monotonic()
    uncached = await client.get(signer.url(original, w=301, f="webp"))
    elapsed = time.monotonic() - started
    assert uncached.status in (502, 504)
    assert uncached.headers["Cache-Control"] == "no-store"
    assert (await uncached.text()).strip() in ("origin unreachable", "origin timeout")
    # Bounded by the configured timeouts and one retry, not hanging.
    assert elapsed < 2 * (1 + 1) + 5
    await asyncio.sleep(2.1)  # readiness re-checks the origin every 2 s
    assert (await client.get("/readyz")).status == 503
    await proxy.start()
    recovered = await client.get(signer.url(original, w=301, f="webp"))
    assert recovered.status == 200
    await asyncio.sleep(2.1)
    assert (await client.get("/readyz")).status == 200


def test_default_concurrency_follows_the_cpu_quota(tmp_path: Path) -> None:
    mine = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("50000 100000\n")  # half a CPU, as `docker run --cpus 0.5`
    assert available_cpus(cpu_max) == 1
    cpu_max.write_text("max 100000\n")  # no quota
    assert available_cpus(cpu_max) == mine
    cpu_max.write_text(f"{(mine + 4) * 100000} 100000\n")  # a quota above what it may run on
    assert available_cpus(cpu_max) == mine
    assert available_cpus(tmp_path / "absent") == mine
    workers = Workers(0, 10)
    assert workers.concurrency == 3 * available_cpus()
    workers.close()


async def test_full_queue_answers_503_with_retry_after(
    make: Any, signer: Signer, original: str
) -> None:
    client = await make(transform__concurrency="1", transform__queue="1")
    urls = [signer.url(original, w=1000 + i, f="avif", q=90) for i in range(12)]
    responses = await asyncio.wait_for(asyncio.gather(*(client.get(u) for u in urls)), 60)
    statuses = [r.status for r in responses]
    assert 503 in statuses
    assert 200 in statuses
    assert set(statuses) <= {200, 503}
    for r in responses:
        if r.status == 503:
            assert int(r.headers["Retry-After"]) >= 1
            assert r.headers["Cache-Control"] == "no-store"
    assert await metric(client, "originshield_errors_total", category="overload") == statuses.count(
        503
    )


async def test_busy_bucket_is_retried_honouring_retry_after(
    make: Any, proxy: FaultProxy, signer: Signer, original: str
) -> None:
    client = await make(origin__retries="3")
    proxy.busy_answers = 2
    proxy.retry_after = "1"
    started = time.monotonic()
    resp = await client.get(signer.url(original, w=120))
    assert resp.status == 200
    assert proxy.counts["busy"] == 2
    assert proxy.counts["GetObject"] == 3
    assert time.monotonic() - started >= 2.0  # waited as told, twice
    assert await metric(client, "originshield_origin_retries_total", action="GetObject") == 2


async def test_busy_bucket_beyond_retries_is_502(
    make: Any, proxy: FaultProxy, signer: Signer, original: str
) -> None:
    client = await make(origin__retries="1")
    proxy.busy_answers = 5
    proxy.retry_after = "0"
    resp = await client.get(signer.url(original, w=120))
    assert resp.status == 502
    assert proxy.counts["GetObject"] == 2


async def test_missing_keys_are_remembered(make: Any, proxy: FaultProxy, signer: Signer) -> None:
    client = await make()
    url = signer.url("no/such.jpg", w=100)
    for _ in range(20):
        assert (await client.get(url)).status == 404
    assert proxy.counts["GetObject"] == 1


async def test_leader_disconnect_does_not_cancel_followers(
    make: Any, proxy: FaultProxy, signer: Signer, original: str
) -> None:
    client = await make()
    proxy.delay = 0.6
    url = signer.url(original, w=222, f="webp")
    leader = asyncio.ensure_future(client.get(url))
    await asyncio.sleep(0.1)
    follower = asyncio.ensure_future(client.get(url))
    await asyncio.sleep(0.1)
    leader.cancel()  # the first client goes away mid-flight
    resp = await follower
    assert resp.status == 200
    assert images.decode(await resp.read()).width == 222
    assert proxy.counts["GetObject"] == 1
    assert await metric(client, "originshield_transforms_total") == 1


async def test_stale_original_is_revalidated_with_a_conditional_get(
    make: Any, proxy: FaultProxy, put: Put, signer: Signer, original: str
) -> None:
    client = await make(cache__revalidate_after="1")
    first = await client.get(signer.url(original, w=100, f="png"))
    assert first.status == 200
    await asyncio.sleep(1.1)
    # A new size needs the original: it is stale, so it is revalidated, not downloaded again.
    resp = await client.get(signer.url(original, w=110, f="png"))
    assert resp.status == 200
    assert proxy.counts["GetObject:conditional"] == 1
    assert await metric(client, "originshield_origin_requests_total", outcome="not_modified") == 1
    assert await metric(client, "originshield_origin_read_bytes_total") < 2 * len(
        images.jpeg(images.photo(1600, 1200))
    )

    # The object changes: a stale render is served once more while it is refreshed behind.
    put(original, images.png(images.solid(300, 300, images.RED)))
    await asyncio.sleep(1.1)
    old_etag = first.headers["ETag"]
    stale = await client.get(signer.url(original, w=100, f="png"))
    assert stale.headers["ETag"] == old_etag
    for _ in range(50):
        fresh = await client.get(signer.url(original, w=100, f="png"))
        if fresh.headers["ETag"] != old_etag:
            break
        await asyncio.sleep(0.1)
    assert fresh.headers["ETag"] != old_etag
    img = images.decode(await fresh.read())
    assert (img.width, img.height) == (100, 100)


async def test_result_storage_shares_renders_between_instances(
    make: Any, proxy: FaultProxy, bucket: tuple[str, Any], signer: Signer, original: str
) -> None:
    name, s3 = bucket
    first = await make(result_storage__enabled="true")
    url = signer.url(original, w=360, f="webp")
    resp = await first.get(url)
    assert resp.status == 200
    body = await resp.read()
    for _ in range(50):  # written after the response, in the background
        listed = s3.list_objects_v2(Bucket=name, Prefix="_originshield/renders/").get("Contents")
        if listed:
            break
        await asyncio.sleep(0.1)
    assert listed
    assert listed[0]["Key"].startswith(f"_originshield/renders/{original}/")
    assert await metric(first, "originshield_result_storage_writes_total", outcome="ok") == 1
    gets_before = proxy.counts["GetObject"]

    second = await make(result_storage__enabled="true")
    again = await second.get(url)
    assert again.status == 200
    assert again.headers["Content-Type"] == "image/webp"
    assert again.headers["ETag"] == resp.headers["ETag"]
    assert await again.read() == body
    assert await metric(second, "originshield_transforms_total") == 0
    assert (
        await metric(
            second, "originshield_cache_lookups_total", layer="result_storage", result="hit"
        )
        == 1
    )
    # One GET for the stored render; the original itself was not downloaded again.
    assert proxy.counts["GetObject"] == gets_before + 1
    # Stored renders are not servable as originals.
    stored_key = listed[0]["Key"]
    assert (await second.get(signer.url(stored_key))).status == 404


async def test_result_storage_write_failure_is_not_a_client_error(
    make: Any, proxy: FaultProxy, signer: Signer, original: str
) -> None:
    client = await make(result_storage__enabled="true", origin__retries="0")
    # The stored-render lookup and the original's fetch pass; then the bucket fails the PUT.
    url = signer.url(original, w=150, f="webp")

    async def fail_puts() -> None:
        while proxy.counts["GetObject"] < 2:
            await asyncio.sleep(0.01)
        proxy.busy_answers = 10

    watcher = asyncio.ensure_future(fail_puts())
    resp = await client.get(url)
    await watcher
    assert resp.status == 200
    for _ in range(50):
        if await metric(client, "originshield_result_storage_writes_total", outcome="error"):
            break
        await asyncio.sleep(0.1)
    assert await metric(client, "originshield_result_storage_writes_total", outcome="error") == 1
