"""What the gateway adds on the request path: the same upstream called directly and through the
gateway, side by side in one run.

Upstreams: a fast stub OpenAI server (isolates the gateway's own overhead) and, with
``--vllm``, a real vLLM CPU tier. Concurrency 1 (paired, alternating requests: added latency
p50/p99) and 16/64 (throughput ratio gateway/direct), streaming and not. The gateway runs
with its production settings: routing (``auto``), the SQLite ledger, metrics.

    python -m benchmarks.gateway_overhead [--vllm] [--requests 2000] [--baseline GIT_REF]

``--baseline REF`` also runs the gateway of an earlier commit (a git worktree of REF, same venv)
in front of the same stub, in the same run, so a change is judged by ratios measured side by
side rather than against an old results file from a differently loaded machine.

Writes benchmarks/results/gateway_overhead.json and prints one summary line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
import time
from pathlib import Path

from benchmarks.common import RESULTS as RESULTS_DIR
from benchmarks.loadgen import paired_latency, run_load
from gateway.devtools.processes import free_port, start_gateway, start_stub

RESULTS = RESULTS_DIR / "gateway_overhead.json"
PRICE = {"input_per_million": 1.0, "output_per_million": 1.0}


def gateway_config(upstream_v1: str, db: Path, max_model_len: int | None = None) -> dict:
    url = {"base_url": upstream_v1, "upstream_model": "tier", **({"max_model_len": max_model_len} if max_model_len else {})}
    return {"model_list": [{"model_name": "teacher", "role": "teacher", "price": PRICE, "url": url},
                           {"model_name": "student", "role": "student", "price": PRICE, "url": url}],
            "router": {"policy": "fixed", "default_tier": "student"},
            "ledger": {"url": f"sqlite:///{db}"}, "auth": {"enabled": False}, "server": {"log_level": "warning"}}


async def compare(direct: str, gateway: str, model_direct: str, messages: list, max_tokens: int,
                  paired_n: int, load_n: int, concurrencies: list[int]) -> dict:
    out: dict = {}
    for stream in (False, True):
        body = {"messages": messages, "max_tokens": max_tokens, "stream": stream}
        d_body, g_body = {**body, "model": model_direct}, {**body, "model": "auto"}
        await run_load(direct, d_body, 4, 40)  # warm both paths
        await run_load(gateway, g_body, 4, 40)
        a, b = await paired_latency(direct, d_body, gateway, g_body, paired_n)
        key = "stream" if stream else "non_stream"
        out[key] = {"c1": {"direct": a.summary(), "gateway": b.summary(),
                           "added_p50_ms": round(b.pct(50) - a.pct(50), 3),
                           "added_p99_ms": round(b.pct(99) - a.pct(99), 3)}}
        for c in concurrencies:
            d = await run_load(direct, d_body, c, load_n)
            g = await run_load(gateway, g_body, c, load_n)
            out[key][f"c{c}"] = {"direct": d.summary(), "gateway": g.summary(),
                                 "rps_ratio": round(g.rps / d.rps, 3) if d.rps else None}
    return out


def run_stub(tmp: Path, args, root: Path | None = None) -> dict:
    stub = start_stub(tmp, tokens=16)
    gw = start_gateway(gateway_config(stub.url + "/v1", tmp / f"stub-ledger-{free_port()}.db"), tmp, timeout_s=60,
                       root=root)
    try:
        return asyncio.run(compare(stub.url + "/v1/chat/completions", gw.url + "/v1/chat/completions", "tier",
                                   [{"role": "user", "content": "What is my card's limit?"}], 16,
                                   args.paired, args.requests, [16, 64]))
    finally:
        gw.stop()
        stub.stop()


def baseline_worktree(ref: str, tmp: Path) -> tuple[Path, str]:
    """A checkout of ``ref`` (a git worktree under ``tmp``) and its commit id."""
    import subprocess

    from gateway.devtools.processes import REPO

    commit = subprocess.run(["git", "rev-parse", ref], cwd=REPO, check=True, capture_output=True,
                            text=True).stdout.strip()
    path = tmp / "baseline"
    subprocess.run(["git", "worktree", "add", "--detach", str(path), commit], cwd=REPO, check=True,
                   capture_output=True)
    return path, commit


def regression(current: dict, baseline: dict) -> dict:
    """Current / baseline throughput ratios (each against direct, measured in the same run)."""
    out = {}
    for mode in ("non_stream", "stream"):
        for c in ("c16", "c64"):
            out[f"{mode}_{c}_rps_ratio"] = {"current": current[mode][c]["rps_ratio"],
                                            "baseline": baseline[mode][c]["rps_ratio"],
                                            "current_over_baseline": round(current[mode][c]["rps_ratio"]
                                                                           / baseline[mode][c]["rps_ratio"], 3)}
        out[f"{mode}_c1_added_p50_ms"] = {"current": current[mode]["c1"]["added_p50_ms"],
                                          "baseline": baseline[mode]["c1"]["added_p50_ms"]}
    return out


def run_vllm(tmp: Path, args) -> dict:
    """A real vLLM tier (the packaged teacher cut to 6 layers), started by a gateway of its own."""
    from support.models import layer_dropped

    student = layer_dropped(6)
    port = free_port()
    supervisor = start_gateway({
        "model_list": [{"model_name": "tier", "role": "teacher", "price": PRICE,
                        "vllm": {"model": str(student), "port": port, "max_model_len": 512}}],
        "router": {"policy": "fixed", "default_tier": "tier"}, "ledger": {"url": f"sqlite:///{tmp}/sup.db"},
        "auth": {"enabled": False},
        "server": {"log_level": "warning"}}, tmp, timeout_s=900)
    gw = start_gateway(gateway_config(f"http://127.0.0.1:{port}/v1", tmp / "vllm-ledger.db", 512), tmp, timeout_s=60)
    try:
        return asyncio.run(compare(f"http://127.0.0.1:{port}/v1/chat/completions", gw.url + "/v1/chat/completions",
                                   "tier", [{"role": "user", "content": "Hello!"}], 16,
                                   args.vllm_paired, args.vllm_requests, [16]))
    finally:
        gw.stop()
        supervisor.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per load run (stub)")
    parser.add_argument("--paired", type=int, default=500, help="paired requests at concurrency 1 (stub)")
    parser.add_argument("--vllm", action="store_true", help="also measure in front of a real vLLM tier")
    parser.add_argument("--vllm-requests", type=int, default=64)
    parser.add_argument("--vllm-paired", type=int, default=20)
    parser.add_argument("--baseline", help="git ref whose gateway is measured side by side (regression check)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = {"benchmark": "gateway_overhead", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "machine": {"cpus": __import__("os").cpu_count(), "platform": platform.platform()},
                  "method": "same upstream direct vs through the gateway (auto routing, SQLite ledger, metrics on); "
                            "c1 = alternating paired requests; cN = closed loop, N workers; aiohttp load "
                            "generator on the same cores",
                  "stub": run_stub(Path(tmp), args)}
        if args.baseline:
            import subprocess

            from gateway.devtools.processes import REPO

            root, commit = baseline_worktree(args.baseline, Path(tmp))
            try:  # current, baseline, current again: drift over the run cannot favour either side
                result["baseline"] = {"ref": args.baseline, "commit": commit, "stub": run_stub(Path(tmp), args, root)}
                result["stub_again"] = run_stub(Path(tmp), args)
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(root)], cwd=REPO, check=False)
            result["regression"] = {"first_run": regression(result["stub"], result["baseline"]["stub"]),
                                    "second_run": regression(result["stub_again"], result["baseline"]["stub"])}
        if args.vllm:
            result["vllm"] = run_vllm(Path(tmp), args)
    c1 = result["stub"]["non_stream"]["c1"]
    result["targets"] = {
        "added_p50_ms<=1.5": c1["added_p50_ms"] <= 1.5,
        "added_p99_ms<=5": c1["added_p99_ms"] <= 5,
        "rps_ratio_c16>=0.5": result["stub"]["non_stream"]["c16"]["rps_ratio"] >= 0.5,
        "rps_ratio_c64>=0.5": result["stub"]["non_stream"]["c64"]["rps_ratio"] >= 0.5,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    s = result["stub"]
    print(f"gateway_overhead: added p50 {c1['added_p50_ms']} ms p99 {c1['added_p99_ms']} ms (c1, stub); "
          f"rps ratio c16 {s['non_stream']['c16']['rps_ratio']} c64 {s['non_stream']['c64']['rps_ratio']}; "
          f"stream c16 {s['stream']['c16']['rps_ratio']}" + (
              f"; vLLM c1 added p50 {result['vllm']['non_stream']['c1']['added_p50_ms']} ms" if "vllm" in result else ""))


if __name__ == "__main__":
    main()
