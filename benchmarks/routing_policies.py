"""The routing policies ``benchmarks/routing_competence.py`` compares, built from the gateway's own classes.

Each is a ``RouterConfig`` run through ``gateway.routing.build.build_policy``, exactly as the
gateway would serve it; the cascade is composed on top by the benchmark (it needs the student's
recorded logprobs). The retired support router is read out of git history for the before/after
comparison.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.common import REPO

OUTCOMES = REPO / ".tierwise" / "routing_competence"
NEAR_ACCEPTANCE = 0.995  # the gate's uncertain band: fixed before measuring, not tuned on any split


RETIRED_ROUTER = ("15b6ddf", "artifacts/router/support_router.skops", 0.139)  # retired by #12: from git history


def retired_support_router() -> Path | None:
    """The support router the defaults served before issue #12 (trained partly on Banking77 *test*
    outcomes, so retired), read out of git history for the before/after comparison."""
    commit, path, _ = RETIRED_ROUTER
    out = OUTCOMES / "retired_support_router.skops"
    if not out.is_file():
        shown = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=REPO, capture_output=True)
        if shown.returncode != 0:
            return None
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(shown.stdout)
    return out


def load_policies(confidence_path: Path | None) -> tuple[dict[str, Callable], dict]:
    """``{name: route(messages) -> tier}`` built from the gateway's own policy classes, and notes."""
    from gateway.config import CompetenceGateConfig, RouterConfig
    from gateway.routing.build import build_policy

    index = str(REPO / "artifacts" / "tiers" / "student" / "competence.skops")
    gate = CompetenceGateConfig(artifact=index, tier="flagship")
    band = CompetenceGateConfig(artifact=index, tier="flagship", near_tier="teacher", near_acceptance=NEAR_ACCEPTANCE)
    configs = {
        "competence_gate": RouterConfig(policy="fixed", default_tier="student", competence=gate),
        "competence+outcome": RouterConfig(policy="outcome", competence=gate),
        "competence~band": RouterConfig(policy="fixed", default_tier="student", competence=band),
        "competence~band+outcome": RouterConfig(policy="outcome", competence=band),
    }
    retired = retired_support_router()
    if retired is not None:
        configs = {"support_router": RouterConfig(policy="trained", artifact=str(retired),
                                                  threshold=RETIRED_ROUTER[2]), **configs}
    policies = {name: build_policy(cfg) for name, cfg in configs.items()}
    outcome = policies["competence+outcome"].inner
    notes = {
        "support_router": f"the router the defaults served before #12 ({RETIRED_ROUTER[1]} at {RETIRED_ROUTER[0]}, "
                          f"threshold {RETIRED_ROUTER[2]}), retired: it was trained on Banking77 *test* outcomes "
                          "(half of them), so its Banking77 numbers here are optimistic.",
        "competence_gate": f"threshold {policies['competence_gate'].threshold:.4f}: the index's own, chosen on a "
                           "10 % validation split of Banking77 train (95 % acceptance); out of scope -> flagship",
        "competence~band": f"the same gate with an uncertain band up to distance "
                           f"{policies['competence~band'].near_threshold:.4f} (the index's validation prompts at "
                           f"{NEAR_ACCEPTANCE} acceptance, fixed before measuring): band -> the support teacher, "
                           "beyond -> flagship",
        "competence+outcome": f"router on our own outcomes (artifacts/router/support_outcome_router.skops: text + "
                              f"competence distance, 800 Banking77 *train* prompts); P(agree) < "
                              f"{1 - outcome.threshold:.4f} -> teacher (threshold_for(quality=0.98) on out-of-fold "
                              "probabilities)",
    }
    routes = {name: (lambda p: (lambda m: p.route(m).tier))(policy) for name, policy in policies.items()}
    return routes, notes


def note_keys(policy: str) -> list[str]:
    """The notes that explain a composed policy's stages, e.g. competence~band+outcome+cascade."""
    stages = policy.split("@")[0].split("+")
    checked = stages[0].endswith("?check")
    stages[0] = stages[0].removesuffix("?check")
    keys = ["competence~band" if stages[0] == "competence~band" else stages[0]] + (["check"] if checked else [])
    if stages[0].startswith("competence") and "outcome" in stages:
        keys.append("competence+outcome")
    if "cascade" in stages:
        keys.append("cascade")
    return [("competence_gate" if k == "competence" else k) for k in keys]


def percentiles(values: list[float], scale: float = 1000.0) -> dict:
    if not values:
        return {"n": 0}
    v = np.asarray(values) * scale
    return {"p50": round(float(np.percentile(v, 50)), 3), "p90": round(float(np.percentile(v, 90)), 3),
            "p99": round(float(np.percentile(v, 99)), 3), "n": len(values)}


def latency(policies: dict, routes: dict, evaluated: dict, outcomes: dict, model) -> dict:
    """Decision time in-process (non-cascade) and the cascade's time to first token (composed)."""
    from router.confidence import logprob_features

    sample = [r for name in evaluated for r in evaluated[name][:300]]
    decision = {}
    for name, route in routes.items():
        route(sample[0]["messages"])  # warm
        times = []
        for r in sample:
            started = time.perf_counter()
            route(r["messages"])
            times.append(time.perf_counter() - started)
        decision[name] = percentiles(times)
    times = []
    for r in sample:
        tokens = outcomes[("student", r["id"])]["logprobs"]
        started = time.perf_counter()
        model.predict_proba(logprob_features(tokens).reshape(1, -1))
        times.append(time.perf_counter() - started)
    decision["cascade_confidence_only"] = percentiles(times)
    ttft: dict = {}
    for pname in ("cascade", "competence+cascade", "competence~band+cascade", "competence~band?check+cascade"):
        if pname not in policies:
            continue
        accepted, escalated, band_kept, band_escalated = [], [], [], []
        for name in evaluated:
            for r in evaluated[name]:
                tier, esc = policies[pname](r)
                s = outcomes[("student", r["id"])]
                checked = outcomes.get(("teacher_lp", r["id"]))
                if tier == "student":
                    accepted.append(s["first_line_s"])
                elif esc and tier == "flagship" and checked:  # the band check: teacher's first line, then flagship
                    flagship = outcomes.get(("flagship", r["id"]))
                    if flagship and flagship.get("ttft_s") is not None:
                        band_escalated.append(checked["first_line_s"] + flagship["ttft_s"])
                elif esc:
                    strong = outcomes.get(("teacher", r["id"])) or outcomes.get(("flagship", r["id"]))
                    if strong and strong.get("ttft_s") is not None:
                        escalated.append(s["first_line_s"] + strong["ttft_s"])
                elif pname.endswith("?check+cascade") and tier == "teacher" and checked:
                    band_kept.append(checked["first_line_s"])
        ttft[pname] = {"accepted_ms": percentiles(accepted), "escalated_ms": percentiles(escalated)}
        if pname.endswith("?check+cascade"):
            ttft[pname] |= {"band_kept_ms": percentiles(band_kept), "band_escalated_ms": percentiles(band_escalated)}
    direct = {tier: percentiles([o["ttft_s"] for (t, _), o in outcomes.items() if t == tier and o.get("ttft_s")])
              for tier in ("student", "teacher", "flagship")}
    return {"decision_ms": decision, "cascade_ttft": ttft, "direct_ttft_ms": direct,
            "how": "decision: the gateway's policy objects timed in-process, one request at a time; cascade TTFT: "
                   "composed from the measured streams (accepted: student's time to the end of its first line; "
                   "escalated: that plus the teacher's TTFT), measured at 12 concurrent streams per server on 2 "
                   "CPU cores shared with other jobs, so absolute times are inflated; not measured live through the gateway"}
