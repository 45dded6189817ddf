"""Distillation quality benchmark: teacher, KD student, hard-label student, untrained init.

Two stages, because quality needs a GPU to train on and cost must be measured where tiers
are served:

``gpu``  (the `device` tool, one H100; resumable: re-running continues where it stopped;
        the code is in ``benchmarks/distill_gpu.py``)
    teacher fine-tune (LoRA) -> teacher replies on the test set -> teacher generations on
    the train messages (sequence-level KD targets) -> for each seed a KD student and a
    hard-label student (same init, data and steps) -> quality of every tier: intent
    accuracy (exact label), agreement with the teacher (label, ROUGE-L), token KL to the
    teacher on held-out text; extras when time allows (ablation without the hidden loss,
    progressive 30 -> 10 -> 6, from-scratch student). Writes results + shipped weights.

``cpu``  (this machine)
    assembles the shipped tiers, serves each with vLLM (float32) and measures decode
    throughput (1 and 8 streams) and time to first token, checks the served tiers' accuracy
    on a test subset, merges everything into ``benchmarks/results/distill_quality.json``
    and writes the RouteLLM-format correctness file.

Run from the repository root: ``python -m benchmarks.distill_quality gpu|cpu|report ...``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import time
from pathlib import Path

from benchmarks.common import REPO, RESULTS, log, require_data
from distill.assemble import assemble
from distill.data import parse_intent, read_csv
from distill.evaluate import VLLMServer, accuracy, chat_replies, intent_correct, measure_throughput
from distill.student_init import layer_drop


# ==================================================================================== CPU
def cpu_stage(args: argparse.Namespace) -> None:
    """Serve each assembled tier with vLLM on this CPU: throughput, TTFT, served accuracy."""
    import torch  # here, not at the top: the report stage needs no torch

    torch.set_num_threads(2)
    cache = Path(args.cache)
    rep = assemble(cache)
    tiers = {"teacher": rep.dirs["teacher"]}
    if "student" in rep.dirs:
        tiers["kd_student"] = rep.dirs["student"]
        init = cache / "init-untrained"
        if not (init / "config.json").is_file():
            layer_drop(rep.dirs["teacher"], init, 6)
        tiers["init_untrained"] = init
    rows = read_csv(require_data("banking77", "test.csv", root=args.data))[: args.cpu_eval_n]
    out: dict = {"hardware": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                              "python": platform.python_version(), "torch": torch.__version__,
                              "vllm": __import__("vllm").__version__, "dtype": "float32"},
                 "tiers": {}}
    try:
        out["hardware"]["cpu_model"] = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                                            if l.startswith("model name"))
    except Exception:
        pass
    for name, d in tiers.items():
        if args.only and name not in args.only:
            continue
        log(f"vLLM: {name} ({d})")
        with VLLMServer(d, name=name, log_file=Path(f"/tmp/vllm_{name}.log")) as srv:
            r = {"startup_seconds": round(srv.startup_seconds, 1), "loadavg_at_start": os.getloadavg()}
            r["throughput_1_stream"] = measure_throughput(srv.base_url, name, 1, 2, 128)
            r["throughput_8_streams"] = measure_throughput(srv.base_url, name, 8, 1, 128)
            if name != "init_untrained" and args.cpu_eval_n:
                t = time.perf_counter()
                replies = chat_replies(srv.base_url, name, [x["text"] for x in rows], 48, 8)
                r["served_eval"] = {"n": len(rows), "seconds": round(time.perf_counter() - t, 1),
                                    "intent_accuracy": accuracy(intent_correct(replies, [x["category"] for x in rows]))}
        out["tiers"][name] = r
        log(f"{name}: {json.dumps(r)}")
    (RESULTS / "distill_cpu_serving.json").write_text(json.dumps(out, indent=2))


# ================================================================================ report
def report(args) -> None:
    """Merge GPU results, CPU serving numbers and the correctness file into the final JSON."""
    gpu = json.loads(Path(args.gpu_results).read_text())
    cpu_p = RESULTS / "distill_cpu_serving.json"
    cpu = json.loads(cpu_p.read_text()) if cpu_p.is_file() else None
    st = gpu["steps"]
    seeds = [int(k.removeprefix("kd_seed")) for k in st if k.startswith("kd_seed") and k[7:].isdigit()]
    seeds = [s for s in seeds if f"hard_seed{s}" in st]

    def agg(prefix, key):
        vals = [st[f"{prefix}{s}"][key] for s in seeds]
        return {"per_seed": dict(zip(map(str, seeds), vals)), "mean": statistics.mean(vals),
                "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                "min": min(vals), "max": max(vals)} if vals else None

    teacher_acc = st["eval_teacher"]["intent_accuracy"]
    kd, hard = agg("kd_seed", "intent_accuracy"), agg("hard_seed", "intent_accuracy")
    diffs = [st[f"kd_seed{s}"]["intent_accuracy"] - st[f"hard_seed{s}"]["intent_accuracy"] for s in seeds]
    summary = {
        "teacher_intent_accuracy": teacher_acc,
        "kd_student_intent_accuracy": kd,
        "hard_label_student_intent_accuracy": hard,
        "untrained_init_intent_accuracy": st.get("init_untrained", {}).get("intent_accuracy"),
        "kd_minus_hard_points": {"per_seed": [round(100 * d, 2) for d in diffs],
                                 "mean": round(100 * statistics.mean(diffs), 2) if diffs else None,
                                 "std": round(100 * statistics.stdev(diffs), 2) if len(diffs) > 1 else None},
        "kd_retention_of_teacher": (kd["mean"] / teacher_acc) if kd else None,
        "student_layers": st.get("kd_seed0", {}).get("layers"),
        "teacher_layers": st["eval_teacher"].get("layers"),
    }
    for name in ("kd_seed0", "hard_seed0", "init_untrained"):
        if name in st:
            summary[f"{name}_agreement"] = {k: st[name].get(k) for k in ("label_agreement", "rouge_l", "token_kl_to_teacher")}
    targets = {
        "kd_keeps_97pct_of_teacher": (summary["kd_retention_of_teacher"] or 0) >= 0.97,
        "student_layers_at_most_1_5": (summary["student_layers"] or 99) <= (summary["teacher_layers"] or 0) / 5,
        "kd_beats_hard_by_1pt_mean": (summary["kd_minus_hard_points"]["mean"] or -1) >= 1.0,
    }
    baseline = {"teacher_ft": 0.913, "student_10l_kd": 0.886, "student_10l_hard": 0.880,
                "student_6l_kd": 0.869, "student_6l_hard": 0.866, "untrained_layer_drop": 0.0,
                "source": "issue: H100, plain PyTorch loop, 3 epochs each"}
    if cpu:
        t, s = cpu["tiers"].get("teacher"), cpu["tiers"].get("kd_student")
        if t and s:
            summary["decode_speedup_1_stream"] = s["throughput_1_stream"]["tokens_per_second"] / t["throughput_1_stream"]["tokens_per_second"]
            summary["decode_speedup_8_streams"] = s["throughput_8_streams"]["tokens_per_second"] / t["throughput_8_streams"]["tokens_per_second"]
            targets["decode_2_5x_faster_under_vllm"] = min(summary["decode_speedup_1_stream"], summary["decode_speedup_8_streams"]) >= 2.5
    if cpu and args.preds:
        # the tiers as served (assembled from shipped files, vLLM float32 on the CPU) against the
        # GPU evaluation of the same weights, on the same first-n test messages
        check = {}
        for tier, pred in (("teacher", "teacher"), ("kd_student", "kd_seed0")):
            se = (cpu["tiers"].get(tier) or {}).get("served_eval")
            if se:
                rows = read_csv(require_data("banking77", "test.csv", root=args.data))[: se["n"]]
                rep = json.loads((Path(args.preds) / f"{pred}.json").read_text())["replies"][: se["n"]]
                gpu_acc = sum(parse_intent(a) == r["category"] for a, r in zip(rep, rows)) / len(rows)
                check[tier] = {"n": se["n"], "served_cpu_vllm": se["intent_accuracy"], "gpu_transformers": gpu_acc}
        summary["served_vs_gpu_eval_same_messages"] = check
    for k in ("label_agreement", "rouge_l", "token_kl_to_teacher"):
        for prefix in ("kd_seed", "hard_seed"):
            summary.setdefault("agreement_over_seeds", {})[f"{prefix[:-5]}_{k}"] = agg(prefix, k)
    out = {"summary": summary, "targets_met": targets, "baseline_from_issue": baseline,
           "gpu_recipe": {"hardware": gpu.get("hardware"), "recipe": gpu.get("recipe"), "steps": st,
                          "device_runs": json.loads(Path(args.device_log).read_text()) if args.device_log else None},
           "cpu_serving": cpu,
           "other_gpu_runs": {}}
    for spec in args.other or []:
        name, path = spec.split("=", 1)
        o = json.loads(Path(path).read_text())
        out["other_gpu_runs"][name] = {"recipe": o.get("recipe"), "steps": o["steps"]}
    (RESULTS / "distill_quality.json").write_text(json.dumps(out, indent=2))
    # RouteLLM-format per-prompt correctness (prompt, student correct, teacher correct)
    if args.preds:
        rows = read_csv(require_data("banking77", "test.csv", root=args.data))
        t = json.loads((Path(args.preds) / "teacher.json").read_text())["replies"]
        s = json.loads((Path(args.preds) / "kd_seed0.json").read_text())["replies"]
        with open(RESULTS / "banking77_tier_correctness.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["prompt", "student", "teacher"])
            for r, a, b in zip(rows, s, t):
                w.writerow([r["text"], parse_intent(a) == r["category"], parse_intent(b) == r["category"]])
    print(json.dumps(summary, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="stage", required=True)
    g = sub.add_parser("gpu")
    g.add_argument("--recipe", default=str(REPO / "distill" / "recipes" / "banking77_gpu.yaml"))
    g.add_argument("--work", default="/tmp/distill_work")
    g.add_argument("--out", default=os.environ.get("OUT", "/tmp/distill_out"))
    g.add_argument("--data", default=None, help="data root (holds banking77/)")
    g.add_argument("--budget-s", type=float, default=540)
    g.add_argument("--resume-from", default=None, help="dir with a previous run's returned files")
    g.add_argument("--no-extras", action="store_true", help="skip ablation / progressive")
    g.add_argument("--max-train", type=int, default=None)
    g.add_argument("--max-eval", type=int, default=None)
    g.add_argument("--max-new-tokens", type=int, default=48)
    g.add_argument("--gen-batch", type=int, default=256)
    c = sub.add_parser("cpu")
    c.add_argument("--cache", default=str(REPO / ".cache" / "distill"))
    c.add_argument("--data", default=None)
    c.add_argument("--cpu-eval-n", type=int, default=200)
    c.add_argument("--only", nargs="*")
    r = sub.add_parser("report")
    r.add_argument("--gpu-results", required=True)
    r.add_argument("--preds", default=None, help="dir with teacher.json, kd_seed0.json")
    r.add_argument("--data", default=None)
    r.add_argument("--device-log", default=None)
    r.add_argument("--other", nargs="*", help="NAME=gpu_results.json of other GPU runs to include")
    args = ap.parse_args()
    if args.stage == "gpu":
        # torch and the training stack: only for this stage (the GPU machine)
        from benchmarks.distill_gpu import gpu_stage, pack_outputs

        try:
            gpu_stage(args)
        finally:
            pack_outputs(Path(args.work), Path(args.out))
    elif args.stage == "cpu":
        cpu_stage(args)
    else:
        report(args)


if __name__ == "__main__":
    main()
