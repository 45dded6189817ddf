"""No lost rows: one row per request under load, after SIGKILL, after SIGTERM, and with two
replicas writing one Postgres ledger."""

from __future__ import annotations

import asyncio
import signal
import time

import aiohttp
import pytest

from support.configs import stub_config
from support.ledger import ledger_rows
from support.processes import start_gateway, start_stub

pytestmark = pytest.mark.slow

BODY = {"model": "auto", "messages": [{"role": "user", "content": "how do I top up"}]}


async def fire(urls: list[str], total: int, concurrency: int, stream_every: int = 4,
               stop_after_s: float | None = None) -> tuple[list[str], int]:
    """Send requests round-robin over ``urls``; return the ids of responses that completed."""
    completed: list[str] = []
    failures = 0
    sent = 0
    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        async def worker() -> None:
            nonlocal sent, failures
            while sent < total and (stop_after_s is None or time.monotonic() - started < stop_after_s):
                i = sent
                sent += 1
                body = {**BODY, "stream": i % stream_every == 0}
                try:
                    async with session.post(urls[i % len(urls)] + "/v1/chat/completions", json=body) as resp:
                        text = await resp.text()
                        if resp.status == 200 and (not body["stream"] or text.rstrip().endswith("[DONE]")):
                            completed.append(resp.headers["x-request-id"])
                        else:
                            failures += 1
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    failures += 1
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return completed, failures


def ledger_ids(url: str) -> list[str]:
    return [row["request_id"] for row in ledger_rows(url)]


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return request.getfixturevalue("postgres_url")


def test_2000_requests_at_concurrency_128_give_2000_rows(stub, tmp_path, ledger_url):
    gw = start_gateway(stub_config(stub.url, ledger_url), tmp_path, timeout_s=60)
    try:
        completed, failures = asyncio.run(fire([gw.url], 2000, 128))
    finally:
        gw.stop()
    assert failures == 0 and len(completed) == 2000
    ids = ledger_ids(ledger_url)
    assert len(ids) == 2000 and set(ids) == set(completed)


def test_sigkill_mid_load_keeps_every_completed_response(stub, tmp_path, ledger_url):
    gw = start_gateway(stub_config(stub.url, ledger_url), tmp_path, timeout_s=60)

    async def load_then_kill():
        load = asyncio.create_task(fire([gw.url], 100_000, 32, stop_after_s=20))
        await asyncio.sleep(2.0)
        gw.proc.send_signal(signal.SIGKILL)
        return await load

    completed, failures = asyncio.run(load_then_kill())
    gw.proc.wait()
    assert len(completed) > 100 and failures > 0  # the kill really happened mid-load
    missing = set(completed) - set(ledger_ids(ledger_url))
    assert not missing, f"{len(missing)} completed responses have no ledger row"


def test_sigterm_lets_in_flight_streams_finish_and_books_them(tmp_path, ledger_url):
    slow = start_stub(tmp_path, tokens=20, token_delay_ms=50)  # each stream takes about 1 s
    gw = start_gateway(stub_config(slow.url, ledger_url), tmp_path, timeout_s=60)

    async def load_then_term():
        load = asyncio.create_task(fire([gw.url], 24, 24, stream_every=1))
        await asyncio.sleep(0.4)
        gw.proc.send_signal(signal.SIGTERM)
        return await load

    try:
        completed, failures = asyncio.run(load_then_term())
        gw.proc.wait(30)
    finally:
        slow.stop()
    assert failures == 0 and len(completed) == 24
    assert set(ledger_ids(ledger_url)) == set(completed)


def test_two_replicas_one_postgres_ledger(stub, tmp_path, postgres_url):
    config = stub_config(stub.url, postgres_url)
    a = start_gateway(config, tmp_path, timeout_s=60)
    b = start_gateway(config, tmp_path, timeout_s=60)
    try:
        completed, failures = asyncio.run(fire([a.url, b.url], 1000, 64))
    finally:
        a.stop()
        b.stop()
    ids = ledger_ids(postgres_url)
    assert failures == 0 and len(ids) == 1000 and set(ids) == set(completed)
