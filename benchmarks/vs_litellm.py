"""Speed race: the LiteLLM proxy and the tierwise gateway in front of the same upstream, driven by
the same load generator in one run.

Upstream: the fast stub OpenAI server (and, with ``--vllm``, a real vLLM CPU tier). Ours runs
with routing (``model: auto``), the group-commit SQLite ledger and API-key auth on; LiteLLM
runs its proxy (one process, master-key auth) from its own venv (``litellm[proxy]``, pinned
below), created on first use under ``.cache/bench/``. Concurrency 1 (paired with direct
calls to the stub: added latency p50/p99), 32 and 128 (requests/s), streaming and not.

    python -m benchmarks.vs_litellm [--vllm] [--requests 1500]

Writes benchmarks/results/vs_litellm.json and prints one summary line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from benchmarks.common import REPO
from benchmarks.common import RESULTS as RESULTS_DIR
from benchmarks.loadgen import paired_latency, run_load
from gateway.devtools.processes import ServerProcess, free_port, start_gateway, start_stub, wait_until

LITELLM_VERSION = "1.106.2"
LITELLM_VENV = REPO / ".cache" / "bench" / f"litellm-{LITELLM_VERSION}"
RESULTS = RESULTS_DIR / "vs_litellm.json"
MASTER_KEY = "sk-bench-master"
MESSAGES = [{"role": "user", "content": "My card payment was declined, why?"}]


def ensure_litellm() -> Path:
    exe = LITELLM_VENV / "bin" / "litellm"
    if not exe.exists():
        print(f"creating {LITELLM_VENV} with litellm[proxy]=={LITELLM_VERSION} (a few minutes, once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"],
                       check=True)
    return exe


def start_litellm(upstream_v1: str, tmp: Path) -> ServerProcess:
    port = free_port()
    config = {"model_list": [{"model_name": "teacher", "litellm_params": {
                  "model": "openai/tier", "api_base": upstream_v1, "api_key": "unused"}}],
              "general_settings": {"master_key": MASTER_KEY},
              "litellm_settings": {"telemetry": False, "drop_params": True}}
    path = tmp / "litellm.yaml"
    path.write_text(yaml.safe_dump(config))
    log = tmp / "litellm.log"
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    proc = subprocess.Popen([str(ensure_litellm()), "--config", str(path), "--port", str(port), "--num_workers", "1"],
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, env=env)  # noqa: SIM115
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(url + "/health/liveliness", timeout=5).status_code == 200, 180, "litellm", proc, log)
    return ServerProcess(proc, url, log)


def start_ours(upstream_v1: str, tmp: Path, max_model_len: int | None = None) -> tuple[ServerProcess, str]:
    """The gateway with auth, the trained router (if shipped) and the ledger on; returns it and a key."""
    from gateway.auth.keys import KeyStore
    from gateway.ledger.schema import make_engine

    db = f"sqlite:///{tmp / f'ours-{time.time_ns()}.db'}"
    secret = KeyStore(make_engine(db)).create("bench")[1]
    url = {"base_url": upstream_v1, "upstream_model": "tier", **({"max_model_len": max_model_len} if max_model_len else {})}
    price = {"input_per_million": 1.0, "output_per_million": 2.0}
    artifact = REPO / "artifacts" / "router" / "mmlu_router.skops"
    config = {"model_list": [{"model_name": "teacher", "role": "teacher", "price": price, "url": url},
                             {"model_name": "student", "role": "student", "price": price, "url": url}],
              "router": ({"policy": "trained", "artifact": str(artifact)} if artifact.exists()
                         else {"policy": "fixed", "default_tier": "student"}),
              "ledger": {"url": db}, "auth": {"enabled": True}, "server": {"log_level": "warning"}}
    return start_gateway(config, tmp, timeout_s=60), secret


async def race(direct: str, proxies: dict[str, tuple[str, dict, str]], paired_n: int, load_n: int,
               concurrencies: list[int], max_tokens: int) -> dict:
    """proxies: name -> (chat URL, headers, model)."""
    out: dict = {}
    for stream in (False, True):
        key = "stream" if stream else "non_stream"
        base = {"messages": MESSAGES, "max_tokens": max_tokens, "stream": stream}
        out[key] = {}
        direct_body = {**base, "model": "tier"}
        for name, (url, headers, model) in proxies.items():
            body = {**base, "model": model}
            await run_load(url, body, 4, 20, headers=headers)  # warm-up
            d, p = await paired_latency(direct, direct_body, url, body, paired_n, headers_b=headers)
            entry = {"c1": {"direct": d.summary(), "proxy": p.summary(),
                            "added_p50_ms": round(p.pct(50) - d.pct(50), 3),
                            "added_p99_ms": round(p.pct(99) - d.pct(99), 3)}}
            for c in concurrencies:
                r = await run_load(url, body, c, load_n, headers=headers)
                entry[f"c{c}"] = r.summary()
            out[key][name] = entry
        for c in concurrencies:
            out[key].setdefault("direct", {})[f"c{c}"] = (await run_load(direct, direct_body, c, load_n)).summary()
    return out


def ratios(section: dict, concurrencies: list[int]) -> dict:
    out = {}
    for mode, data in section.items():
        ours, theirs = data["tierwise"], data["litellm"]
        out[mode] = {f"rps_ratio_c{c}": round(ours[f"c{c}"]["rps"] / theirs[f"c{c}"]["rps"], 2)
                     for c in concurrencies if theirs[f"c{c}"]["rps"]}
        out[mode]["added_p50_ratio_c1"] = (round(ours["c1"]["added_p50_ms"] / theirs["c1"]["added_p50_ms"], 3)
                                           if theirs["c1"]["added_p50_ms"] > 0 else None)
    return out


def run_stub(tmp: Path, args) -> dict:
    stub = start_stub(tmp, tokens=16)
    ours, secret = start_ours(stub.url + "/v1", tmp)
    theirs = start_litellm(stub.url + "/v1", tmp)
    try:
        return asyncio.run(race(stub.url + "/v1/chat/completions", {
            "tierwise": (ours.url + "/v1/chat/completions", {"authorization": f"Bearer {secret}"}, "auto"),
            "litellm": (theirs.url + "/v1/chat/completions", {"authorization": f"Bearer {MASTER_KEY}"}, "teacher"),
        }, args.paired, args.requests, [32, 128], 16))
    finally:
        for server in (ours, theirs, stub):
            server.stop()


def run_vllm(tmp: Path, args) -> dict:
    from support.models import layer_dropped

    student = layer_dropped(6)
    port = free_port()
    supervisor = start_gateway({
        "model_list": [{"model_name": "tier", "role": "teacher", "price": {"input_per_million": 1,
                                                                           "output_per_million": 1},
                        "vllm": {"model": str(student), "port": port, "max_model_len": 512}}],
        "router": {"policy": "fixed", "default_tier": "tier"}, "auth": {"enabled": False},
        "ledger": {"url": f"sqlite:///{tmp}/sup.db"}, "server": {"log_level": "warning"}}, tmp, timeout_s=900)
    upstream = f"http://127.0.0.1:{port}/v1"
    ours, secret = start_ours(upstream, tmp, 512)
    theirs = start_litellm(upstream, tmp)
    try:
        return asyncio.run(race(upstream + "/chat/completions", {
            "tierwise": (ours.url + "/v1/chat/completions", {"authorization": f"Bearer {secret}"}, "auto"),
            "litellm": (theirs.url + "/v1/chat/completions", {"authorization": f"Bearer {MASTER_KEY}"}, "teacher"),
        }, args.vllm_paired, args.vllm_requests, [8], 16))
    finally:
        for server in (ours, theirs, supervisor):
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1500, help="requests per load run (stub)")
    parser.add_argument("--paired", type=int, default=200, help="paired requests at concurrency 1 (stub)")
    parser.add_argument("--vllm", action="store_true", help="also race in front of a real vLLM tier")
    parser.add_argument("--vllm-requests", type=int, default=48)
    parser.add_argument("--vllm-paired", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = {"benchmark": "vs_litellm", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                  "litellm": f"litellm[proxy]=={LITELLM_VERSION}, one process, master key",
                  "tierwise": "model=auto (router), SQLite ledger with commit-before-response, API-key auth",
                  "method": "same stub upstream; c1 = paired with direct stub calls (added latency); cN = closed "
                            "loop with N workers (aiohttp), all on the same 2 cores",
                  "stub": run_stub(Path(tmp), args)}
        result["stub_ratios"] = ratios(result["stub"], [32, 128])
        if args.vllm:
            result["vllm"] = run_vllm(Path(tmp), args)
            result["vllm_ratios"] = ratios(result["vllm"], [8])
    r = result["stub_ratios"]["non_stream"]
    result["targets"] = {"rps_ratio_c32>=5": r["rps_ratio_c32"] >= 5,
                         "added_p50_c1<=1/10_of_litellm": (r["added_p50_ratio_c1"] or 1) <= 0.1}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    s = result["stub"]["non_stream"]
    print(f"vs_litellm: c32 rps tierwise {s['tierwise']['c32']['rps']} vs litellm {s['litellm']['c32']['rps']} "
          f"({r['rps_ratio_c32']}x); c1 added p50 {s['tierwise']['c1']['added_p50_ms']} ms vs "
          f"{s['litellm']['c1']['added_p50_ms']} ms; stream c32 {result['stub_ratios']['stream']['rps_ratio_c32']}x")


if __name__ == "__main__":
    main()
