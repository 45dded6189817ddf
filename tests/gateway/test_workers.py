"""``server.workers``: several gateway processes on one port (real processes, real HTTP).

Each worker has its own event loop, ledger writer and caches; what must be one stays one:
every request booked once, metrics summed over workers, limits shared through Redis, and a
vLLM tier started once (by the tier supervisor) rather than per worker.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from support.configs import stub_config
from support.models import layer_dropped
from support.processes import start_gateway, start_stub

from gateway.config import parse_config
from gateway.workers import check_shareable, split_tiers

REDIS = "redis://127.0.0.1:6379/0"
ADMIN = "tw-admin-for-worker-tests"
CHAT = {"model": "auto", "messages": [{"role": "user", "content": "one two three"}], "max_tokens": 4}


def processes() -> list[tuple[int, int, str]]:
    """(pid, parent pid, full command line) of every process, from /proc."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            out.append((int(entry.name), int(stat[stat.rindex(")") + 2:].split()[1]), args))
    return out


def children(pid: int) -> list[str]:
    """Command lines of the live descendants of ``pid``."""
    rows = processes()
    tree, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for child, ppid, args in rows:
            if ppid == parent:
                tree.append(args)
                todo.append(child)
    return tree


async def burst(url: str, n: int, headers: dict | None = None) -> list[int]:
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=32)) as client:
        replies = await asyncio.gather(*(client.post(url, json=CHAT, headers=headers) for _ in range(n)))
    return [r.status_code for r in replies]


def requests_total(metrics: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("tierwise_requests_total{"))


def test_two_workers_book_every_request_once_sum_their_metrics_and_drain_on_sigterm(stub, tmp_path):
    db = tmp_path / "ledger.db"
    config = stub_config(stub.url, f"sqlite:///{db}", server={"workers": 2})
    gw = start_gateway(config, tmp_path, timeout_s=120)
    try:
        workers = [c for c in children(gw.proc.pid) if "multiprocessing" in c]
        assert len(workers) >= 2, children(gw.proc.pid)  # two workers (and uvicorn's resource tracker)
        codes = asyncio.run(burst(gw.url + "/v1/chat/completions", 300))
        assert codes == [200] * 300
        # Any worker answers /metrics with the sum over both.
        assert {requests_total(httpx.get(gw.url + "/metrics").text) for _ in range(4)} == {300.0}
    finally:
        assert gw.stop(signal.SIGTERM) == 0
    assert not any("multiprocessing" in c for c in children(gw.proc.pid))
    rows = sqlite3.connect(db).execute("select count(*), count(distinct request_id) from ledger_requests").fetchone()
    assert rows == (300, 300)


def test_sigterm_lets_every_worker_finish_its_requests_and_book_them(tmp_path):
    slow = start_stub(tmp_path, tokens=16, token_delay_ms=60)  # ~1 s answers
    db = tmp_path / "ledger.db"
    gw = start_gateway(stub_config(slow.url, f"sqlite:///{db}", server={"workers": 2}), tmp_path, timeout_s=120)

    async def in_flight_then_sigterm() -> list[int]:
        sent = asyncio.ensure_future(burst(gw.url + "/v1/chat/completions", 24))
        await asyncio.sleep(0.4)
        gw.proc.send_signal(signal.SIGTERM)
        return await sent

    try:
        codes = asyncio.run(in_flight_then_sigterm())
        assert gw.proc.wait(60) == 0
    finally:
        gw.stop()
        slow.stop()
    assert codes == [200] * 24
    assert sqlite3.connect(db).execute("select count(*) from ledger_requests").fetchone() == (24,)


def test_workers_share_rate_limits_through_redis(stub, tmp_path):
    config = stub_config(stub.url, f"sqlite:///{tmp_path / 'ledger.db'}", auth=True, limits={"redis_url": REDIS},
                         server={"workers": 2})
    gw = start_gateway(config, tmp_path, timeout_s=120, env={"TIERWISE_ADMIN_KEY": ADMIN})
    try:
        made = httpx.post(gw.url + "/v1/keys", json={"name": "w", "rpm": 10},
                          headers={"authorization": f"Bearer {ADMIN}"})
        assert made.status_code == 200, made.text
        if time.time() % 60 > 45:  # the limit counts per clock minute
            time.sleep(61 - time.time() % 60)
        codes = asyncio.run(burst(gw.url + "/v1/chat/completions", 30,
                                  {"authorization": f"Bearer {made.json()['key']}"}))
        assert sorted(codes) == [200] * 10 + [429] * 20  # not 10 per worker
    finally:
        gw.stop()


def test_more_than_one_worker_with_auth_needs_shared_limits(stub) -> None:
    config = parse_config(stub_config(stub.url, "sqlite:///unused.db", auth=True))
    check_shareable(config, 1)
    with pytest.raises(ValueError, match="limits.redis_url"):
        check_shareable(config, 2)
    check_shareable(parse_config(stub_config(stub.url, "sqlite:///unused.db", auth=True,
                                             limits={"redis_url": REDIS})), 2)


def test_vllm_tiers_are_reached_by_url_at_fixed_ports(stub) -> None:
    raw = stub_config(stub.url, "sqlite:///unused.db")
    raw["model_list"] = [
        {**raw["model_list"][0]},
        {"model_name": "base", "role": "other", "price": {"input_per_million": 1, "output_per_million": 1},
         "vllm": {"model": "/models/base", "max_model_len": 512, "lora_modules": {"adapter": "/models/adapter"}}},
        {"model_name": "adapter", "role": "student", "price": {"input_per_million": 1, "output_per_million": 1},
         "served_by": "base"},
    ]
    raw["model_list"][1]["fallbacks"] = ["teacher"]
    supervisor, workers = split_tiers(parse_config(raw), lambda: 8123)
    parse_config(supervisor.model_dump(mode="json"))  # valid on its own (the supervisor process loads it)
    assert [t.model_name for t in supervisor.model_list] == ["base", "adapter"]
    assert supervisor.tier("base").vllm.port == 8123
    by_name = {t.model_name: t for t in workers.model_list}
    assert by_name["teacher"].url.base_url == stub.url + "/v1"
    for name in ("base", "adapter"):
        tier = by_name[name]
        assert (tier.kind, tier.url.base_url, tier.url.upstream_model) == ("url", "http://127.0.0.1:8123/v1", name)
        assert tier.url.continuous_usage and tier.max_model_len == 512
    assert by_name["adapter"].role == "student" and by_name["adapter"].served_by is None


@pytest.mark.slow
def test_a_vllm_tier_starts_once_for_two_workers(stub, tmp_path):
    config = stub_config(stub.url, f"sqlite:///{tmp_path / 'ledger.db'}", server={"workers": 2})
    student = {k: v for k, v in config["model_list"][1].items() if k != "url"}
    config["model_list"][1] = {**student, "vllm": {"model": str(layer_dropped(6)), "max_model_len": 512}}
    gw = start_gateway(config, tmp_path, timeout_s=900)
    try:
        servers = [c for c in children(gw.proc.pid) if "vllm.entrypoints" in c]
        assert len(servers) == 1, children(gw.proc.pid)
        server_pids = [pid for pid, _, args in processes() if "vllm.entrypoints" in args and args in servers]
        # Each worker learns from its own health probe that the vLLM tier is up; until both have,
        # a request on the other falls back to the teacher (by design). Wait for that, bounded.
        deadline = time.time() + 60
        while time.time() < deadline and not all(
                httpx.post(gw.url + "/v1/chat/completions", json={**CHAT, "model": "student"},
                           timeout=120).headers.get("x-tierwise-tier") == "student" for _ in range(6)):
            time.sleep(1)
        for _ in range(4):  # served by both workers in turn, through the one vLLM process
            reply = httpx.post(gw.url + "/v1/chat/completions", json={**CHAT, "model": "student"}, timeout=120)
            assert reply.status_code == 200 and reply.headers["x-tierwise-tier"] == "student", reply.text

        # The tier supervisor dies: its vLLM server goes with it, the parent starts both again,
        # and meanwhile the student's requests are answered by its fallback.
        supervisor = next(pid for pid, ppid, args in processes() if ppid == gw.proc.pid and "supervise-tiers" in args)
        subprocess.run(["kill", "-9", str(supervisor)], check=True)
        # Its vLLM server notices and exits, not at once: a request sent meanwhile may still reach it.
        deadline = time.time() + 60
        while any(Path(f"/proc/{pid}").exists() for pid in server_pids) and time.time() < deadline:
            time.sleep(0.2)
        assert not any(Path(f"/proc/{pid}").exists() for pid in server_pids), "vLLM outlived its supervisor"
        deadline, tiers = time.time() + 600, []
        while time.time() < deadline:
            reply = httpx.post(gw.url + "/v1/chat/completions", json={**CHAT, "model": "student"}, timeout=120)
            assert reply.status_code == 200, reply.text
            tiers.append(reply.headers["x-tierwise-tier"])
            if tiers[-1] == "student":
                break
            time.sleep(1)
        assert tiers[-1] == "student" and "teacher" in tiers, tiers
        assert not Path(f"/proc/{supervisor}").exists()
        server_pids += [pid for pid, _, args in processes() if "vllm.entrypoints" in args
                        and args in children(gw.proc.pid)]
    finally:
        gw.stop()
    # Its own vLLM server is gone (other tests' servers of the same model may still run).
    deadline = time.time() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in server_pids) and time.time() < deadline:
        time.sleep(0.5)
    assert not any(Path(f"/proc/{pid}").exists() for pid in server_pids)


def test_a_child_that_dies_is_started_again_until_stopped():
    from gateway.workers import KeptAlive

    kept = KeptAlive([sys.executable, "-c", "import time; time.sleep(600)"], "sleeper")
    first = kept.process.pid
    try:
        subprocess.run(["kill", "-9", str(first)], check=True)
        deadline = time.time() + 15
        while (kept.process.pid == first or kept.process.poll() is not None) and time.time() < deadline:
            time.sleep(0.1)
        assert kept.process.pid != first and kept.process.poll() is None and kept.restarts == 1
    finally:
        kept.stop(timeout_s=10)
    assert kept.process.poll() is not None  # stopped, and not started again
    time.sleep(1.5)
    assert kept.restarts == 1


def test_a_child_that_keeps_failing_is_restarted_with_backoff():
    from gateway.workers import KeptAlive

    kept = KeptAlive([sys.executable, "-c", "raise SystemExit(3)"], "failing child", max_backoff_s=30)
    try:
        time.sleep(4.5)  # restarts after 1 s, then 2 s more: the next waits 4 s
        assert 1 <= kept.restarts <= 2, kept.restarts
    finally:
        kept.stop(timeout_s=10)


def test_a_killed_worker_is_replaced_and_every_answer_has_its_row(tmp_path):
    slow = start_stub(tmp_path, tokens=16, token_delay_ms=20)  # ~0.3 s answers: some in flight at the kill
    db = tmp_path / "ledger.db"
    gw = start_gateway(stub_config(slow.url, f"sqlite:///{db}", server={"workers": 2}), tmp_path, timeout_s=120)
    answered: list[str] = []

    async def load_with_a_kill() -> None:
        async def one(client: httpx.AsyncClient) -> None:
            try:
                reply = await client.post(gw.url + "/v1/chat/completions", json=CHAT)
            except httpx.TransportError:
                return  # in flight on the killed worker: no answer, so no row is owed
            if reply.status_code == 200:
                answered.append(reply.headers["x-request-id"])

        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=16)) as client:
            first = asyncio.ensure_future(asyncio.gather(*(one(client) for _ in range(60))))
            await asyncio.sleep(0.5)
            victim = next(pid for pid, args in worker_pids(gw.proc.pid) if "spawn_main" in args)
            subprocess.run(["kill", "-9", str(victim)], check=True)
            await first
            await asyncio.gather(*(one(client) for _ in range(40)))  # served again, by both workers

    try:
        asyncio.run(load_with_a_kill())
        deadline = time.time() + 30
        while len([a for _, a in worker_pids(gw.proc.pid) if "spawn_main" in a]) < 2 and time.time() < deadline:
            time.sleep(0.5)
        assert len([a for _, a in worker_pids(gw.proc.pid) if "spawn_main" in a]) == 2  # replaced
    finally:
        gw.stop()
        slow.stop()
    booked = {r[0] for r in sqlite3.connect(db).execute("select request_id from ledger_requests")}
    assert len(answered) >= 80 and set(answered) <= booked


def worker_pids(pid: int) -> list[tuple[int, str]]:
    return [(child, args) for child, ppid, args in processes() if ppid == pid]
