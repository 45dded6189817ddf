"""Scale-out on one machine: two gateway processes sharing one Postgres ledger and one Redis
limiter, under concurrent load, agree on totals and enforce one limit between them."""

from __future__ import annotations

import asyncio
import subprocess
import time

import aiohttp
import httpx
import pytest
import redis

from support.configs import stub_config
from support.processes import free_port, start_gateway, wait_until

pytestmark = pytest.mark.slow
ADMIN = "tw-scale-out-admin"
RPM = 100


@pytest.fixture
def redis_url():
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: redis.Redis(port=port).ping(), 10, "redis-server")
    yield f"redis://127.0.0.1:{port}/0"
    proc.kill()
    proc.wait()


async def hammer(urls: list[str], key: str, total: int, concurrency: int) -> list[int]:
    statuses: list[int] = []
    queue = list(range(total))
    async with aiohttp.ClientSession(headers={"authorization": f"Bearer {key}"}) as session:
        async def worker():
            while queue:
                i = queue.pop()
                async with session.post(urls[i % 2] + "/v1/chat/completions", json={
                        "model": "auto", "messages": [{"role": "user", "content": f"balance {i}"}]}) as resp:
                    await resp.read()
                    statuses.append(resp.status)
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


def test_two_replicas_one_ledger_one_limiter(stub, tmp_path, postgres_url, redis_url):
    config = stub_config(stub.url, postgres_url, auth=True, limits={"redis_url": redis_url})
    a = start_gateway(config, tmp_path, timeout_s=60, env={"TIERWISE_ADMIN_KEY": ADMIN})
    b = start_gateway(config, tmp_path, timeout_s=60, env={"TIERWISE_ADMIN_KEY": ADMIN})
    try:
        created = httpx.post(a.url + "/v1/keys", json={"name": "shared", "rpm": RPM},
                             headers={"authorization": f"Bearer {ADMIN}"}).json()
        if 60 - time.time() % 60 < 15:  # keep the burst inside one rate-limit minute
            time.sleep(60 - time.time() % 60 + 0.5)
        statuses = asyncio.run(hammer([a.url, b.url], created["key"], 300, 32))
        admin = {"authorization": f"Bearer {ADMIN}"}
        totals = [httpx.get(gw.url + "/v1/costs/summary", headers=admin).json() for gw in (a, b)]
    finally:
        a.stop()
        b.stop()
    assert sorted(set(statuses)) == [200, 429]
    assert statuses.count(200) == RPM  # one limit across both replicas, not one each
    assert statuses.count(429) == 300 - RPM
    assert totals[0] == totals[1]  # both replicas read the same ledger
    assert totals[0]["requests"] == 300
    ok = totals[0]["tiers"]["student"]
    assert ok["requests"] - ok["errors"] == RPM and ok["completion_tokens"] == RPM * 16
