"""Per-key rate limits and budgets: in-process, and shared by two replicas through a real Redis
that the test starts and then kills."""

from __future__ import annotations

import subprocess
import time

import httpx
import pytest

from support.configs import stub_config
from support.processes import free_port, start_gateway, wait_until

CHAT = {"model": "teacher", "messages": [{"role": "user", "content": "one two three four"}]}


def post(gw, key: str):
    return httpx.post(gw.url + "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {key}"},
                      timeout=30)


def make_key(gw, admin: str, **spec) -> str:
    resp = httpx.post(gw.url + "/v1/keys", json={"name": "k", **spec}, headers={"authorization": f"Bearer {admin}"})
    assert resp.status_code == 200, resp.text
    return resp.json()["key"]


ADMIN = "tw-admin-for-limit-tests"


@pytest.fixture
def local_gateway(stub, tmp_path):
    gw = start_gateway(stub_config(stub.url, f"sqlite:///{tmp_path / 'l.db'}", auth=True), tmp_path, timeout_s=60,
                       env={"TIERWISE_ADMIN_KEY": ADMIN})
    gw.tmp = tmp_path
    yield gw
    gw.stop()


def assert_429(resp, code: str) -> None:
    assert resp.status_code == 429, resp.text
    assert resp.json()["error"]["code"] == code
    assert 1 <= int(resp.headers["retry-after"]) <= 31 * 24 * 3600


def away_from_a_minute_boundary() -> None:
    """Rate limits count per clock minute: a burst that straddles a boundary lands in two windows."""
    if time.time() % 60 > 50:
        time.sleep(61 - time.time() % 60)


def test_requests_per_minute(local_gateway):
    key = make_key(local_gateway, ADMIN, rpm=3)
    away_from_a_minute_boundary()
    assert [post(local_gateway, key).status_code for _ in range(3)] == [200, 200, 200]
    resp = post(local_gateway, key)
    assert_429(resp, "rate_limit_exceeded")
    assert resp.json()["error"]["type"] == "rate_limit_error"
    assert int(resp.headers["retry-after"]) <= 60


def test_tokens_per_minute(local_gateway):
    key = make_key(local_gateway, ADMIN, tpm=30)  # the stub spends 4 prompt + 16 completion tokens
    assert post(local_gateway, key).status_code == 200  # 20 used
    assert post(local_gateway, key).status_code == 200  # 40 used: over, but checked before the request
    assert_429(post(local_gateway, key), "rate_limit_exceeded")


def test_budget_survives_a_restart(local_gateway, stub, tmp_path):
    # One stub request on the teacher costs (4 * 3 + 16 * 15) / 1e6 = 0.000252.
    key = make_key(local_gateway, ADMIN, budget=0.0004, budget_period="day")
    assert post(local_gateway, key).status_code == 200
    assert post(local_gateway, key).status_code == 200
    resp = post(local_gateway, key)
    assert_429(resp, "budget_exceeded")
    assert resp.json()["error"]["type"] == "insufficient_quota"
    local_gateway.stop()
    again = start_gateway(stub_config(stub.url, f"sqlite:///{local_gateway.tmp / 'l.db'}", auth=True), tmp_path,
                          timeout_s=60, env={"TIERWISE_ADMIN_KEY": ADMIN})
    try:
        assert_429(post(again, key), "budget_exceeded")  # spend is re-read from the ledger
    finally:
        again.stop()


@pytest.fixture
def redis_server(tmp_path):
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    client = redis.Redis(port=port)
    wait_until(lambda: client.ping(), 10, "redis-server")
    yield proc, f"redis://127.0.0.1:{port}/0"
    proc.kill()
    proc.wait()


def test_two_replicas_share_limits_through_redis_and_survive_its_loss(stub, tmp_path, postgres_url, redis_server):
    proc, redis_url = redis_server
    config = stub_config(stub.url, postgres_url, auth=True, limits={"redis_url": redis_url})
    a = start_gateway(config, tmp_path, timeout_s=60, env={"TIERWISE_ADMIN_KEY": ADMIN})
    b = start_gateway(config, tmp_path, timeout_s=60, env={"TIERWISE_ADMIN_KEY": ADMIN})
    try:
        key = make_key(a, ADMIN, rpm=4)  # created on A, used on B at once
        away_from_a_minute_boundary()
        codes = [post(gw, key).status_code for gw in (a, b, a, b)]
        assert codes == [200, 200, 200, 200]
        assert_429(post(b, key), "rate_limit_exceeded")
        assert_429(post(a, key), "rate_limit_exceeded")
        proc.kill()
        proc.wait()
        fresh = make_key(a, ADMIN, rpm=2)
        # Redis is gone: each replica keeps enforcing on its own, and nothing fails with a 5xx.
        away_from_a_minute_boundary()
        assert [post(a, fresh).status_code for _ in range(3)] == [200, 200, 429]
        assert post(b, fresh).status_code == 200
    finally:
        a.stop()
        b.stop()
    assert "Redis unreachable" in a.log_text()
