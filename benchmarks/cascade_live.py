"""The default routing chain live through the gateway: time to first token per routing outcome.

``benchmarks/routing_competence.py`` judges every policy offline on recorded answers; the
cascade's latency there is composed from separately measured streams. This measures it for
real: a gateway process (uvicorn, real HTTP, SQLite ledger) serves the *shipped* router
section of ``gateway/defaults.yaml`` in front of running vLLM servers, and streamed requests
(Banking77 test in scope; HWU64 and MMLU out of scope) go through it. Each request's outcome
(accepted by the cascade, escalated, sent out of scope by the gate, or to the teacher in the
gate's uncertain band) is read back from the ledger by the request id.

The same messages are also sent straight to the student and to the teacher, interleaved in
chunks with the gateway's, so the comparison holds on a noisy 2-core machine:

* accepted: the gateway's TTFT vs the student's time to the end of its first line (what the
  cascade waits for; the student is asked with logprobs, as the cascade asks it) and vs its TTFT;
* escalated: the gateway's TTFT minus the teacher's own TTFT for the same message (what an
  escalation adds) vs the student's first-line time (the target: at most that).

    python -m benchmarks.cascade_live --student-url http://127.0.0.1:8101/v1 \\
        --teacher-url http://127.0.0.1:8102/v1 --flagship-url http://127.0.0.1:8103/v1

Writes ``benchmarks/results/cascade_live.json`` (4 concurrent requests: the tiers' servers
contend for 2 cores, so the gateway's mix of student, teacher and flagship calls slows each
other more than the one-server direct phases do) and, with ``--concurrency 1 --out
benchmarks/results/cascade_live_c1.json``, the same without contention: the cascade's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np

from benchmarks.common import REPO, RESULTS, log
from benchmarks.routing_competence import PRICES
from benchmarks.routing_outcomes import MAX_TOKENS, ask, sample_sets
from gateway.config import load_config
from gateway.devtools.processes import start_gateway

OUT = RESULTS / "cascade_live.json"
RAW = REPO / ".tierwise" / "routing_competence" / "cascade_live_raw.json"


async def run_chunks(targets: dict[str, tuple[str, str]], rows: list[dict], concurrency: int, chunk: int) -> dict:
    """``{target: {row id: result}}``; every target gets each chunk of rows before the next chunk starts."""
    results: dict[str, dict] = {name: {} for name in targets}
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900)) as session:
        async def one(name: str, row: dict) -> None:
            url, model = targets[name]
            async with sem:
                try:
                    # the student asked with logprobs, as the cascade asks it
                    answer = await ask(session, url, model, row["messages"], logprobs=name == "student",
                                       user=row["id"])
                    answer.pop("logprobs", None)
                    results[name][row["id"]] = answer
                except (aiohttp.ClientError, TimeoutError) as exc:
                    results[name][row["id"]] = {"error": repr(exc)}

        for start in range(0, len(rows), chunk):
            part = rows[start:start + chunk]
            for name in targets:  # in turn, so each target sees the same machine state per chunk
                await asyncio.gather(*(one(name, r) for r in part))
            log(f"{min(start + chunk, len(rows))}/{len(rows)} rows through {', '.join(targets)}")
    return results


def gateway_config(args: argparse.Namespace, ledger: Path) -> dict:
    """URL tiers on the running vLLM servers, the shipped router section, priced as the defaults."""
    shipped = load_config().router.model_dump(mode="json", exclude_none=True)

    def tier(name: str, role: str, url: str) -> dict:
        price_in, price_out = PRICES[name]
        return {"model_name": name, "role": role, "url": {"base_url": url, "max_model_len": 1024},
                "price": {"input_per_million": price_in, "output_per_million": price_out}}

    return {"model_list": [tier("flagship", "teacher", args.flagship_url), tier("teacher", "teacher", args.teacher_url),
                           tier("student", "student", args.student_url) | {"fallbacks": ["teacher"]}],
            "router": shipped, "ledger": {"url": f"sqlite:///{ledger}"}, "auth": {"enabled": False},
            "shadow": {"reference_tier": "teacher"}}


def ledger_outcomes(ledger: Path) -> dict[str, dict]:
    with sqlite3.connect(ledger) as db:
        db.row_factory = sqlite3.Row
        return {r["user"]: dict(r) for r in db.execute(
            "select user, tier, route_policy, escalated, cascade_confidence, status from ledger_requests")}


def outcome_class(row: dict) -> str:
    policy = row["route_policy"] or ""
    if policy.startswith("competence_near"):
        return "band_escalated_to_flagship" if row["escalated"] else "band_kept_by_teacher"
    if policy.startswith("competence"):
        return "out_of_scope_to_flagship"
    if row["escalated"] is None:
        return f"routed_to_{row['tier']}"
    return "escalated" if row["escalated"] else "accepted"


def pct(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    v = np.asarray(values) * 1000
    return {"p50": round(float(np.percentile(v, 50)), 1), "p90": round(float(np.percentile(v, 90)), 1), "n": len(v)}


def summarise(rows: list[dict], results: dict, booked: dict) -> dict:
    gw, student, teacher = results["gateway"], results["student"], results["teacher"]
    by_class: dict[str, list[str]] = {}
    for r in rows:
        if r["id"] in booked and gw.get(r["id"], {}).get("ttft_s") is not None:
            by_class.setdefault(outcome_class(booked[r["id"]]), []).append(r["id"])
    out: dict = {}
    for name, ids in sorted(by_class.items()):
        ok = [i for i in ids if student.get(i, {}).get("ttft_s") and teacher.get(i, {}).get("ttft_s")]
        entry = {"n": len(ids), "gateway_ttft_ms": pct([gw[i]["ttft_s"] for i in ids]),
                 "direct_student_ttft_ms": pct([student[i]["ttft_s"] for i in ok]),
                 "direct_student_first_line_ms": pct([student[i]["first_line_s"] for i in ok]),
                 "direct_teacher_ttft_ms": pct([teacher[i]["ttft_s"] for i in ok])}
        if name == "escalated":
            added = [gw[i]["ttft_s"] - teacher[i]["ttft_s"] for i in ok]
            decision = [student[i]["first_line_s"] for i in ok]
            entry["added_over_teacher_ttft_ms"] = pct(added)
            entry["student_decision_point_ms"] = pct(decision)
            entry["added_within_decision_point_p50"] = bool(np.median(added) <= np.median(decision)) if ok else None
        out[name] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student-url", required=True)
    parser.add_argument("--teacher-url", required=True, help="serves `teacher` (the support teacher)")
    parser.add_argument("--flagship-url", required=True, help="serves `flagship` (the general model)")
    parser.add_argument("--in-scope", type=int, default=200, help="Banking77 test messages")
    parser.add_argument("--out-of-scope", type=int, default=100, help="HWU64 messages (and half as many MMLU)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1, help="another sample than routing_competence's (seed 0)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    sets = sample_sets({"b77_test": args.in_scope, "hwu64": args.out_of_scope, "mmlu": args.out_of_scope // 2},
                       seed=args.seed)
    rows = [r for name in ("b77_test", "hwu64", "mmlu") for r in sets[name]]
    rows = [rows[i] for i in np.random.default_rng(args.seed).permutation(len(rows))]  # mixed traffic
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Path(tmp) / "ledger.db"
        gateway = start_gateway(gateway_config(args, ledger), Path(tmp), timeout_s=300)
        try:
            targets = {"gateway": (gateway.url + "/v1", "auto"), "student": (args.student_url, "student"),
                       "teacher": (args.teacher_url, "teacher")}
            results = asyncio.run(run_chunks(targets, rows, args.concurrency, args.chunk))
        finally:
            gateway.stop()
        RAW.parent.mkdir(parents=True, exist_ok=True)
        # the raw answers stay out of the repository, like routing_competence's
        RAW.with_name(f"{args.out.stem}_raw.json").write_text(json.dumps(results))
        booked = ledger_outcomes(ledger)
    errors = {name: sum("error" in v for v in res.values()) for name, res in results.items()}
    result = {
        "what": "the shipped routing chain (gateway/defaults.yaml router section) live through a gateway process in "
                "front of vLLM CPU servers: time to first token per routing outcome, with the same messages sent "
                "straight to the student and the teacher in interleaved chunks",
        "router": load_config().router.model_dump(mode="json", exclude_none=True),
        "sample": {name: len(sets[name]) for name in ("b77_test", "hwu64", "mmlu")}, "seed": args.seed,
        "concurrency": args.concurrency, "max_tokens": MAX_TOKENS, "errors": errors,
        "by_outcome": summarise(rows, results, booked),
        "booked": len(booked), "sent": len(rows),
        "machine": {"cpu_count": os.cpu_count(), "load_average": os.getloadavg()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log(json.dumps(result["by_outcome"], indent=1))
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
