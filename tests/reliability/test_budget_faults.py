"""Budgets and limits that hold (issue #15, items 8 and 10), through real gateway processes, a real
Redis and a TCP proxy that makes Redis hang: bursts against a tiny budget, reservations released on
every path, and a Redis that accepts connections but never answers."""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import time

import httpx
import pytest
import redis
import sqlalchemy as sa

from support.configs import stub_config
from support.faults import TcpProxy
from support.processes import free_port, start_gateway, wait_until

ADMIN = "tw-admin-for-budget-fault-tests"
CHAT = {"model": "teacher", "messages": [{"role": "user", "content": "one two three four"}]}
ONE_REQUEST = (4 * 3 + 16 * 15) / 1e6  # what the stub's answer costs on the teacher: 0.000252
BUDGET = 0.0001


@pytest.fixture
def redis_port():
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: redis.Redis(port=port).ping(), 10, "redis-server")
    yield port
    proc.kill()
    proc.wait()


def start(config: dict, tmp_path):
    return start_gateway(config, tmp_path, timeout_s=60, env={"TIERWISE_ADMIN_KEY": ADMIN})


def make_key(gw, **spec) -> tuple[str, str]:
    resp = httpx.post(gw.url + "/v1/keys", json={"name": "k", **spec}, headers={"authorization": f"Bearer {ADMIN}"},
                      timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()["id"], resp.json()["key"]


def post(gw, key: str, body: dict = CHAT) -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"},
                      timeout=30)


async def burst(urls: list[str], key: str, n: int) -> list[int]:
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=100),
                                 headers={"authorization": f"Bearer {key}"}) as client:
        resps = await asyncio.gather(*(client.post(urls[i % len(urls)] + "/v1/chat/completions", json=CHAT)
                                       for i in range(n)))
    return [r.status_code for r in resps]


def booked(db_url: str, key_id: str) -> tuple[int, float]:
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        n, cost = conn.execute(sa.text("SELECT count(*), coalesce(sum(cost), 0) FROM ledger_requests "
                                       "WHERE api_key_id=:k AND status='ok'"), {"k": key_id}).one()
    engine.dispose()
    return int(n), float(cost)


def test_burst_against_a_tiny_budget_in_process(stub, tmp_path):
    """40 at once against $0.0001: one request may overshoot (it was admitted with budget left), no more."""
    db = f"sqlite:///{tmp_path / 'l.db'}"
    gw = start(stub_config(stub.url, db, auth=True), tmp_path)
    try:
        key_id, key = make_key(gw, budget=BUDGET, budget_period="day")
        codes = asyncio.run(burst([gw.url], key, 40))
    finally:
        gw.stop()
    assert codes.count(200) == 1 and codes.count(429) == 39, codes
    assert booked(db, key_id) == (1, pytest.approx(ONE_REQUEST))


@pytest.mark.postgres
def test_burst_against_a_tiny_budget_on_two_replicas_through_redis(stub, tmp_path, postgres_url, redis_port):
    """The same burst split over two replicas sharing Redis: overshoot bounded by one request per replica."""
    config = stub_config(stub.url, postgres_url, auth=True, limits={"redis_url": f"redis://127.0.0.1:{redis_port}/0"})
    a, b = start(config, tmp_path), start(config, tmp_path)
    try:
        key_id, key = make_key(a, budget=BUDGET, budget_period="day")
        codes = asyncio.run(burst([a.url, b.url], key, 40))
    finally:
        a.stop()
        b.stop()
    assert 1 <= codes.count(200) <= 2 and codes.count(200) + codes.count(429) == 40, codes
    served, cost = booked(postgres_url, key_id)
    assert served == codes.count(200) and cost <= BUDGET + 2 * ONE_REQUEST


@pytest.mark.parametrize("backend", ["local", pytest.param("redis", marks=pytest.mark.postgres)])
def test_reservations_are_released_on_success_disconnect_and_refusal(stub, tmp_path, backend, request):
    """Reservations must not leak: after a cut stream and refused requests, the budget still admits
    exactly as many sequential requests as the spend allows."""
    limits = {}
    if backend == "redis":
        limits = {"redis_url": f"redis://127.0.0.1:{request.getfixturevalue('redis_port')}/0"}
    gw = start(stub_config(stub.url, f"sqlite:///{tmp_path / 'l.db'}", auth=True, limits=limits), tmp_path)
    try:
        _, key = make_key(gw, budget=3.5 * ONE_REQUEST, budget_period="day")
        with httpx.stream("POST", gw.url + "/v1/chat/completions", json={**CHAT, "stream": True}, timeout=30,
                          headers={"authorization": f"Bearer {key}"}) as resp:
            assert resp.status_code == 200
            next(resp.iter_bytes())  # hang up after the first event
        assert post(gw, key, {**CHAT, "model": "no-such-tier"}).status_code == 404
        assert post(gw, key, {**CHAT, "max_tokens": 5000, "model": "student"}).status_code == 400  # over its context
        time.sleep(0.5)  # the cut stream is settled off the request path
        codes = [post(gw, key).status_code for _ in range(5)]
    finally:
        gw.stop()
    # The cut stream spent at most one request's worth; 3.5 requests' budget admits 3 or 4 more, then 429.
    assert codes[:3] == [200, 200, 200] and codes[-1] == 429, codes


def test_redis_that_hangs_costs_one_timeout_not_every_request(stub, tmp_path, redis_port):
    """Item 10: Redis accepts connections but never answers. After the first timeout the limiter runs on
    local counters without waiting on Redis, and goes back to Redis once it answers again."""
    with TcpProxy("127.0.0.1", redis_port) as proxy:
        config = stub_config(stub.url, f"sqlite:///{tmp_path / 'l.db'}", auth=True,
                             limits={"redis_url": f"redis://127.0.0.1:{proxy.port}/0"})
        gw = start(config, tmp_path)
        try:
            key_id, key = make_key(gw, rpm=1000)
            baseline = []
            for _ in range(10):
                t0 = time.perf_counter()
                assert post(gw, key).status_code == 200
                baseline.append(time.perf_counter() - t0)
            proxy.hang()
            connections, t_hang = proxy.accepted, time.perf_counter()
            latencies = []
            for _ in range(20):
                t0 = time.perf_counter()
                assert post(gw, key).status_code == 200
                latencies.append(time.perf_counter() - t0)
            # Each wait on the hung Redis ends in a timeout that drops its connection: count the tries.
            tries, hung_for = proxy.accepted - connections, time.perf_counter() - t_hang
            proxy.restore()
            direct = redis.Redis(port=redis_port)
            count = lambda: int(direct.get(f"tw:rq:{key_id}:{int(time.time() // 60)}") or 0)  # noqa: E731
            before = count()

            def back_on_redis() -> bool:
                assert post(gw, key).status_code == 200
                return count() > before
            wait_until(back_on_redis, 20, "limiter back on Redis")
        finally:
            gw.stop()
    print(f"hung Redis: p50 {statistics.median(latencies) * 1000:.1f} ms (healthy "
          f"{statistics.median(baseline) * 1000:.1f} ms), {tries} Redis connections in {hung_for:.1f} s")
    # Three timeouts open the breaker; then one probe every redis_retry_s (2 s).
    assert tries <= 4 + hung_for / 2.0, f"{tries} tries of a hung Redis in {hung_for:.1f} s"
    # Only the tries before the breaker opened waited for a timeout (latency alone is too noisy on shared cores).
    assert sum(t >= 0.5 + min(baseline) for t in latencies) <= 5, latencies  # without the breaker: all 20
    assert "Redis unreachable" in gw.log_text()
