"""A flywheel candidate behind its cascade, on live held-out traffic (issue #13).

The flywheel's offline gate judges a candidate on its dataset's test split, against the teacher's
own answers. This replays what the gate cannot see: Banking77 **test** messages (gold intents),
through a gateway serving the candidate as the support workload's tier behind its cascade. So
it measures, on traffic the loop never captured, whether the offline estimate holds: the share
answered by the student, intent accuracy (gold) routed vs all-teacher, agreement with the
teacher's first line, and compute-priced cost.

The candidate is put in place through the runtime control API (register, canary at 100 % with
its cascade and competence index, promote), as an operator would, **whatever its offline gate
said**: this is a measurement, not the flywheel's decision (``benchmarks/flywheel.py`` runs the
loop with its gates). The cascade is fitted by ``distill cascade --force`` on the candidate's
dataset (threshold on validation, as always).

    python -m benchmarks.flywheel_heldout --turn /tmp/flywheel-bench-*/turn-support

Writes ``benchmarks/results/flywheel_heldout.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.common import REPO, RESULTS, log
from benchmarks.flywheel import PRICE, banking, measure
from gateway.devtools.processes import model_cache, start_gateway

TIER = "support-student"


def gateway_config(cache: Path, db: str) -> dict:
    return {"model_list": [{"model_name": "teacher", "role": "teacher", "price": PRICE["teacher"],
                            "vllm": {"model": str(cache / "teacher"), "max_model_len": 1024}}],
            "router": {"policy": "fixed", "default_tier": "teacher", "strong_tier": "teacher", "weak_tier": "student"},
            "shadow": {"sample_rate": 0.0, "workload_reference_tiers": {"support": "teacher"}},
            "ledger": {"url": db}, "auth": {"enabled": False}, "server": {"runtime_poll_s": 1.0}}


def _post(gw, path: str, body: dict | None = None) -> dict:
    resp = httpx.post(gw.url + path, json=body, timeout=300)
    if resp.status_code != 200:
        raise RuntimeError(f"{path}: {resp.status_code} {resp.text[:500]}")
    return resp.json()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--turn", type=Path, required=True, help="a flywheel turn's work dir (student/model, data/support)")
    p.add_argument("--heldout", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    model, data = args.turn / "student" / "model", args.turn / "data" / "support"
    fit_file = args.turn / "cascade-forced.json"
    subprocess.run([sys.executable, "-m", "distill", "cascade", "--model", str(model), "--data", str(data), "--force",
                    "--json", str(fit_file)], cwd=REPO, check=True, capture_output=True)
    fit = json.loads(fit_file.read_text())
    log(f"cascade: threshold {fit['threshold']:.3f}, offline gate {'passed' if fit['passes'] else 'failed'} "
        f"(test: {fit['test']['share_kept']:.1%} kept, {fit['test']['routed_quality']:.1%} routed)")
    rng, train, test = random.Random(args.seed), banking("train"), banking("test")
    rng.shuffle(train)  # the flywheel benchmark shuffles train, then test, with one generator:
    rng.shuffle(test)  # the same held-out messages
    heldout = test[:args.heldout]
    work = Path(tempfile.mkdtemp(prefix="flywheel-heldout-"))
    db = f"sqlite:///{work / 'ledger.db'}"
    gw = start_gateway(gateway_config(model_cache(), db), work, timeout_s=900)
    try:
        t0 = time.perf_counter()
        _post(gw, "/v1/admin/tiers", {"model_name": TIER, "role": "student", "price": PRICE["student"],
                                      "vllm": {"model": str(model.resolve()), "max_model_len": 1024}})
        deadline = time.monotonic() + 900
        while httpx.post(gw.url + "/v1/chat/completions", timeout=300, json={
                "model": TIER, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("the candidate's vLLM did not come up")
            time.sleep(3)
        competence = model / "competence.skops"
        _post(gw, "/v1/admin/workloads/support/canary", {
            "tier": TIER, "share": 1.0, "cascade_artifact": fit["artifact"],
            **({"competence_artifact": str(competence.resolve())} if competence.is_file() else {})})
        _post(gw, "/v1/admin/workloads/support/promote")
        log(f"candidate registered, promoted behind its cascade in {time.perf_counter() - t0:.0f} s (no restart)")
        result = measure(gw, db, "support", heldout, "teacher")
    finally:
        gw.stop()
    doc = {"benchmark": "flywheel_heldout", "issue": 13, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "turn": str(args.turn), "note": "promoted by hand whatever the offline gate said: a measurement",
           "offline": {k: fit[k] for k in ("threshold", "validation", "test", "passes", "why")},
           "heldout": result, "choices": {"cascade threshold": "validation", "held-out messages": "measured only"}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "flywheel_heldout.json").write_text(json.dumps(doc, indent=2, default=str))
    shown = ("student_share", "intent_accuracy_routed", "intent_accuracy_all_teacher", "quality_vs_all_teacher",
             "agreement_with_teacher", "cost_vs_all_teacher")
    log(f"held out: {json.dumps({k: result.get(k) for k in shown})}")


if __name__ == "__main__":
    main()
