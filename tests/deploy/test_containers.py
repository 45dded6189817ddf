"""The gateway images, built and run for real with podman (marker `containers`).

Builds ``tierwise/gateway`` (and ``tierwise/gateway-litellm`` on top of it) with
scripts/build_images.sh (cached Debian bases and wheelhouse: seconds when warm) and runs them
read-only, as UID 10001, on the host network against the stub upstream on this machine, the
machine's PostgreSQL (a fresh database per test) and Redis. Skips with the reason where podman
is missing or cannot run containers.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import httpx
import pytest
import yaml

from podman_support import (GATEWAY_IMAGE, GRACEFUL_EXIT, LITELLM_IMAGE, REDIS_URL, build, fresh_database,
                            image_size_bytes, ledger_rows, podman, require_podman, run_gateway, wait_ready)
from support.processes import free_port, start_stub

pytestmark = pytest.mark.containers
ADMIN = "tw-containers-admin-key"
PRICE = {"input_per_million": 1.0, "output_per_million": 2.0}
# The size target is the guard: the image's size depends only on the lock and the
# Dockerfile (deploy/README.md and benchmarks/results/deploy_images.json have the figures).
MAX_IMAGE_MB = 400
MAX_LITELLM_IMAGE_MB = 600
# Start to ready is a benchmark figure (benchmarks/deploy_images.py; target 5 s); under CI's
# load this bound only catches a hang.
MAX_READY_S = 60


def gateway_config(stub_url: str, ledger_url: str, litellm: bool = False, **extra) -> dict:
    """Two tiers on the stub, the trained router from the image between them, Postgres ledger,
    Redis limits, auth on. ``hosted`` is a url: tier, or with ``litellm`` a litellm: tier
    (litellm's OpenAI client pointed at the stub)."""
    hosted = ({"litellm": {"model": "openai/stub", "api_base": stub_url + "/v1", "api_key_env": "STUB_KEY"}}
              if litellm else {"url": {"base_url": stub_url + "/v1"}})
    return {
        "model_list": [
            {"model_name": "teacher", "role": "teacher", "price": PRICE, "url": {"base_url": stub_url + "/v1"}},
            {"model_name": "hosted", "role": "student", "price": PRICE, "fallbacks": ["teacher"], **hosted},
        ],
        "router": {"policy": "trained", "artifact": "{project_root}/artifacts/router/mmlu_router.skops",
                   "threshold": 0.5, "strong_tier": "teacher", "weak_tier": "hosted"},
        "ledger": {"url": ledger_url},
        "auth": {"enabled": True, "admin_key_env": "TIERWISE_ADMIN_KEY", "cache_ttl_s": 0.5},
        "limits": {"redis_url": REDIS_URL},
        "state_dir": "/var/lib/tierwise",
        **extra,
    }


ENV = {"TIERWISE_ADMIN_KEY": ADMIN, "STUB_KEY": "sk-stub"}


@pytest.fixture(scope="module")
def gateway_image() -> str:
    require_podman()
    seconds = build("gateway", timeout_s=1500)
    print(f"\nscripts/build_images.sh gateway: {seconds:.1f} s")
    return GATEWAY_IMAGE


@pytest.fixture(scope="module")
def litellm_image(gateway_image) -> str:
    seconds = build("litellm", timeout_s=1500)
    print(f"\nscripts/build_images.sh litellm: {seconds:.1f} s")
    return LITELLM_IMAGE


@pytest.fixture(scope="module")
def stub(tmp_path_factory):
    server = start_stub(tmp_path_factory.mktemp("stub"), tokens=8)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def slow_stub(tmp_path_factory):
    """Each answer takes 16 x 100 ms: requests are still in flight when SIGTERM arrives."""
    server = start_stub(tmp_path_factory.mktemp("slow-stub"), tokens=16, token_delay_ms=100)
    yield server
    server.stop()


@pytest.fixture
def containers():
    started = []
    yield started
    for c in started:
        c.remove()


def chat(url: str, key: str, model: str, content: str = "how do I reset my card pin?") -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, timeout=30,
                      json={"model": model, "messages": [{"role": "user", "content": content}]})


def create_key(url: str, **fields) -> str:
    resp = httpx.post(url + "/v1/keys", json={"name": "containers", **fields},
                      headers={"authorization": f"Bearer {ADMIN}"}, timeout=10)
    assert resp.status_code in (200, 201), resp.text
    return resp.json()["key"]


def test_gateway_image_is_small_non_root_and_has_no_torch(gateway_image):
    size_mb = image_size_bytes(gateway_image) / 1e6
    print(f"\n{gateway_image}: {size_mb:.0f} MB")
    assert size_mb <= MAX_IMAGE_MB
    probe = podman("run", "--rm", "--read-only", gateway_image, "python", "-c",
                   "import os, importlib.util as u; print(os.getuid(), [m for m in ('torch', 'vllm', 'transformers')"
                   " if u.find_spec(m)])")
    assert probe.stdout.split() == ["10001", "[]"], probe.stdout


def test_gateway_image_refuses_a_litellm_tier_and_says_which_image_has_it(gateway_image, stub, tmp_path):
    """No litellm in the default image: a config with a litellm: tier stops at start with what
    to do (exit 2), not a ModuleNotFoundError on the first request."""
    assert podman("run", "--rm", gateway_image, "python", "-c", "import litellm", check=False).returncode != 0
    cfg = tmp_path / "litellm.yaml"
    cfg.write_text(yaml.safe_dump(gateway_config(stub.url, "sqlite:////var/lib/tierwise/ledger.db", litellm=True)))
    cfg.chmod(0o644)
    proc = podman("run", "--rm", "--read-only", "--tmpfs", "/var/lib/tierwise:rw,mode=1777", "-v",
                  f"{cfg}:/etc/tierwise/gateway.yaml:ro", "-e", f"TIERWISE_ADMIN_KEY={ADMIN}", gateway_image,
                  check=False, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "tierwise/gateway-litellm" in output and "Traceback" not in output


def test_litellm_image_serves_a_litellm_tier(litellm_image, stub, tmp_path, containers):
    size_mb = image_size_bytes(litellm_image) / 1e6
    print(f"\n{litellm_image}: {size_mb:.0f} MB")
    assert size_mb <= MAX_LITELLM_IMAGE_MB
    with fresh_database() as db:
        gw = run_gateway(gateway_config(stub.url, db, litellm=True), tmp_path, free_port(), ENV, image=litellm_image)
        containers.append(gw)
        wait_ready(gw, tiers=2, timeout_s=120)
        key = create_key(gw.url)
        resp = chat(gw.url, key, "hosted")
        assert resp.status_code == 200, resp.text
        assert resp.headers["x-tierwise-tier"] == "hosted"
        assert resp.json()["choices"][0]["message"]["content"] == " ".join(["tok"] * 8)
        assert gw.terminate() == GRACEFUL_EXIT
        rows = ledger_rows(db)
    assert [(r["tier"], r["http_status"]) for r in rows] == [("hosted", 200)]


def test_serves_health_and_chat_read_only(gateway_image, stub, tmp_path, containers):
    with fresh_database() as db:
        port = free_port()
        gw = run_gateway(gateway_config(stub.url, db), tmp_path, port, ENV)
        containers.append(gw)
        ready_s = wait_ready(gw, tiers=2, timeout_s=120)
        print(f"\ncontainer start to ready: {ready_s:.2f} s")
        assert ready_s <= MAX_READY_S
        health = httpx.get(gw.url + "/health").json()
        assert {t: s["status"] for t, s in health["tiers"].items()} == {"teacher": "ready", "hosted": "ready"}

        assert chat(gw.url, "wrong-key", "teacher").status_code == 401
        key = create_key(gw.url)
        for model in ("teacher", "hosted", "auto"):
            resp = chat(gw.url, key, model)
            assert resp.status_code == 200, resp.text
            assert resp.json()["choices"][0]["message"]["content"] == " ".join(["tok"] * 8)
        # Bad input is an OpenAI-style 4xx from the container too.
        bad = httpx.post(gw.url + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                         content=b"{not json", timeout=10)
        assert bad.status_code == 400 and "error" in bad.json()

        assert gw.exec("touch", "/app/written").returncode != 0  # read-only root file system
        assert gw.terminate() == GRACEFUL_EXIT  # SIGTERM through tini: a graceful shutdown
        rows = ledger_rows(db)
        answered = [r for r in rows if r["http_status"] == 200]
        assert len(answered) == 3 and {"teacher", "hosted"} <= {r["tier"] for r in answered}
        assert len({r["request_id"] for r in rows}) == len(rows)


async def _hammer(urls: list[str], key: str, total: int, concurrency: int) -> list[int]:
    statuses: list[int] = []
    todo = list(range(total))
    async with aiohttp.ClientSession(headers={"authorization": f"Bearer {key}"}) as session:
        async def worker() -> None:
            while todo:
                i = todo.pop()
                async with session.post(urls[i % len(urls)] + "/v1/chat/completions", json={
                        "model": "teacher", "messages": [{"role": "user", "content": f"balance {i}"}]}) as resp:
                    await resp.read()
                    statuses.append(resp.status)
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


def test_two_containers_book_every_request_once_and_share_one_limit(gateway_image, stub, tmp_path, containers):
    total, rpm = 300, 120
    with fresh_database() as db:
        config = gateway_config(stub.url, db)
        a = run_gateway(config, tmp_path, free_port(), ENV)
        containers.append(a)
        wait_ready(a, tiers=2, timeout_s=120)  # the first creates the schema; then the second
        b = run_gateway(config, tmp_path, free_port(), ENV)
        containers.append(b)
        wait_ready(b, tiers=2, timeout_s=120)
        key = create_key(a.url, rpm=rpm)
        if 60 - time.time() % 60 < 15:  # keep the burst inside one rate-limit minute
            time.sleep(60 - time.time() % 60 + 0.5)
        start = time.monotonic()
        statuses = asyncio.run(_hammer([a.url, b.url], key, total, 32))
        print(f"\n{total} requests over two containers in {time.monotonic() - start:.1f} s")
        assert a.terminate() == GRACEFUL_EXIT and b.terminate() == GRACEFUL_EXIT
        rows = ledger_rows(db)
    assert statuses.count(200) == rpm and statuses.count(429) == total - rpm  # one limit in Redis
    assert len(rows) == total and len({r["request_id"] for r in rows}) == total
    assert sum(r["http_status"] == 200 for r in rows) == rpm


def test_sigterm_drains_in_flight_requests_into_the_ledger(gateway_image, slow_stub, tmp_path, containers):
    in_flight = 12
    with fresh_database() as db:
        gw = run_gateway(gateway_config(slow_stub.url, db), tmp_path, free_port(), ENV)
        containers.append(gw)
        wait_ready(gw, tiers=2, timeout_s=120)
        key = create_key(gw.url)

        async def scenario() -> tuple[list[int], int]:
            async with aiohttp.ClientSession(headers={"authorization": f"Bearer {key}"}) as session:
                async def one(i: int) -> int:
                    async with session.post(gw.url + "/v1/chat/completions", json={
                            "model": "teacher", "messages": [{"role": "user", "content": f"q {i}"}]}) as resp:
                        await resp.read()
                        return resp.status
                tasks = [asyncio.create_task(one(i)) for i in range(in_flight)]
                await asyncio.sleep(0.5)  # all sent, none answered yet (each takes 1.6 s)
                code = await asyncio.to_thread(gw.terminate)
                return list(await asyncio.gather(*tasks)), code

        statuses, exit_code = asyncio.run(scenario())
        rows = ledger_rows(db)
    assert statuses == [200] * in_flight
    assert exit_code == GRACEFUL_EXIT
    assert len(rows) == in_flight and {r["http_status"] for r in rows} == {200}
