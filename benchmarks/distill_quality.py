"""Distillation quality benchmark: teacher, KD student, hard-label student, untrained init.

Two stages, because quality needs a GPU to train on and cost must be measured where tiers
are served:

``gpu``  (the `device` tool, one H100; resumable: re-running continues where it stopped)
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
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RESULTS = REPO / "benchmarks" / "results"
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", flush=True)


# ==================================================================================== GPU
class Steps:
    """Resumable steps: results persisted after each, skipped when already done."""

    def __init__(self, work: Path, budget_s: float):
        self.work, self.deadline = work, T0 + budget_s
        self.path = work / "results.json"
        self.res = json.loads(self.path.read_text()) if self.path.is_file() else {"steps": {}}

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def run(self, name: str, est_s: float, fn):
        if name in self.res["steps"]:
            log(f"skip {name} (done)")
            return self.res["steps"][name]
        if self.left() < est_s:
            log(f"skip {name}: {self.left():.0f} s left, needs ~{est_s:.0f} s")
            return None
        log(f"start {name}")
        t = time.perf_counter()
        out = fn()
        out = dict(out or {})
        out["seconds"] = round(time.perf_counter() - t, 1)
        self.res["steps"][name] = out
        self.save()
        log(f"done {name} in {out['seconds']} s: { {k: v for k, v in out.items() if not isinstance(v, (list, dict))} }")
        return out

    def save(self) -> None:
        self.path.write_text(json.dumps(self.res, indent=2))


def round_fp16_(model) -> None:
    """Round weights to fp16 and back: evaluate exactly what ships (fp16 shards)."""
    import torch

    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())


def gpu_stage(args) -> None:
    import torch

    from distill.data import build_examples, read_csv, target_for
    from distill.evaluate import accuracy, agreement, intent_correct, token_kl
    from distill.packaged import materialize_teacher
    from distill.recipe import TrainSpec, load_recipe
    from distill.ship import write_student_shards
    from distill.student_init import layer_drop
    from distill.modeling import decode_responses, generate_ids, load_model, load_tokenizer
    from distill.train import count_params, teacher_finetune, teacher_targets, train_student

    torch.backends.cuda.matmul.allow_tf32 = True
    recipe = load_recipe(args.recipe)
    if args.data:
        recipe.data.root = Path(args.data)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.resume_from and not (work / "results.json").is_file():
        # Continue a run whose machine was given back: its results + the teacher's shipped
        # adapter and test replies came back; everything else is rebuilt or rerun.
        prev = Path(args.resume_from)
        res = json.loads((prev / "gpu_results.json").read_text())
        res["steps"] = {k: v for k, v in res["steps"].items() if k in ("teacher_finetune", "eval_teacher")}
        (work / "results.json").write_text(json.dumps(res, indent=2))
        (work / "preds").mkdir(exist_ok=True)
        shutil.copy2(prev / "preds" / "teacher.json", work / "preds" / "teacher.json")
        (work / "teacher" / "adapter").mkdir(parents=True, exist_ok=True)
        for n in ("adapter_model.safetensors", "adapter_config.json"):
            shutil.copy2(prev / n, work / "teacher" / "adapter" / n)
        if (prev / "teacher_targets.json.gz").is_file():  # skip regenerating them
            import gzip

            (work / "teacher_targets.json").write_bytes(gzip.decompress((prev / "teacher_targets.json.gz").read_bytes()))
    S = Steps(work, args.budget_s)
    S.res["hardware"] = {
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__, "python": platform.python_version(),
        "transformers": __import__("transformers").__version__, "peft": __import__("peft").__version__,
        "cpus": os.cpu_count(),
    }
    S.res["recipe"] = recipe.model_dump(mode="json")
    train_rows = read_csv(recipe.data.train_path(), limit=args.max_train)
    test_rows = read_csv(recipe.data.eval_path(), limit=args.max_eval)
    test_texts = [r["text"] for r in test_rows]
    test_labels = [r["category"] for r in test_rows]
    preds_dir = work / "preds"
    preds_dir.mkdir(exist_ok=True)

    base = materialize_teacher(work / "base-teacher")
    tf = recipe.teacher_finetune
    t_spec = TrainSpec(epochs=tf.epochs, batch_size=tf.batch_size, lr=tf.lr, max_len=recipe.train.max_len,
                       warmup_ratio=0.05, logging_steps=50, seed=0)
    S.run("teacher_finetune", 60, lambda: teacher_finetune(base, train_rows, work / "teacher", t_spec,
                                                           tf.lora_r, tf.lora_alpha))
    teacher_dir = work / "teacher" / "model"
    if not (teacher_dir / "config.json").is_file():  # resumed: rebuild exactly as assemble does
        from distill.assemble import build_merged_teacher

        build_merged_teacher(base, work / "teacher" / "adapter", teacher_dir, "resumed")
    tok = load_tokenizer(teacher_dir)
    state: dict = {}

    def teacher32():
        if "t32" not in state:
            state["t32"] = load_model(teacher_dir, torch.float32)
        return state["t32"]

    def evaluate(name: str, model_dir: Path, fp16: bool) -> dict:
        m = load_model(model_dir, torch.float32)
        if fp16:
            round_fp16_(m)
        t = time.perf_counter()
        ids = generate_ids(m, tok, test_texts, args.max_new_tokens, args.gen_batch)
        gen_s = time.perf_counter() - t
        replies = decode_responses(tok, ids)
        (preds_dir / f"{name}.json").write_text(json.dumps({"ids": ids, "replies": replies}))
        flags = intent_correct(replies, test_labels)
        out = {"intent_accuracy": accuracy(flags), "n": len(flags), "hf_generate_seconds": round(gen_s, 1),
               **count_params(model_dir), "layers": m.config.num_hidden_layers}
        if name != "teacher":
            t_rep = json.loads((preds_dir / "teacher.json").read_text())
            out.update(agreement(replies, t_rep["replies"]))
            ex = build_examples(tok, test_texts, t_rep["ids"], recipe.train.max_len)
            out["token_kl_to_teacher"] = token_kl(m, teacher32(), ex, batch_size=128)
        del m
        torch.cuda.empty_cache()
        return out

    S.run("eval_teacher", 20, lambda: evaluate("teacher", teacher_dir, False))

    def make_targets():
        t16 = load_model(teacher_dir, torch.bfloat16)
        t = time.perf_counter()
        ids = teacher_targets(t16, tok, [r["text"] for r in train_rows], work / "teacher_targets.json",
                              args.max_new_tokens, args.gen_batch)
        from distill.data import parse_intent

        agree = accuracy([parse_intent(x) == r["category"]
                          for x, r in zip(decode_responses(tok, ids), train_rows)])
        del t16
        return {"n": len(ids), "gen_seconds": round(time.perf_counter() - t, 1),
                "train_label_agreement": agree}

    S.run("teacher_targets", 40, make_targets)
    init_dir = work / "init6"
    if not (init_dir / "config.json").is_file():
        layer_drop(teacher_dir, init_dir, recipe.student.layers)
    kept = json.loads((init_dir / "student_init.json").read_text())["kept_layers"]

    def examples_for(kind: str):
        texts = [r["text"] for r in train_rows]
        if kind == "gold":
            return build_examples(tok, texts, [target_for(r["category"]) for r in train_rows],
                                  recipe.train.max_len)
        tgt = json.loads((work / "teacher_targets.json").read_text())["ids"]
        return build_examples(tok, texts, tgt, recipe.train.max_len)

    def train_eval(name: str, variant: dict, init: Path = init_dir, teacher_dir_: Path = teacher_dir,
                   layer_map=kept, examples_kind: str | None = None) -> dict:
        r = recipe.model_copy(deep=True)
        for k, v in variant.items():
            sect, key = k.split(".")
            setattr(getattr(r, sect), key, v)
        teacher_model = None
        if r.loss.targets == "teacher":
            teacher_model = load_model(teacher_dir_, torch.bfloat16)
        ex = examples_for(examples_kind or r.loss.targets)
        out_dir = work / "students" / name
        stats = train_student(init, teacher_model, tok, ex, r, out_dir, layer_map)
        del teacher_model
        torch.cuda.empty_cache()
        res = evaluate(name, out_dir / "model", fp16=True)
        hist = stats["history"]
        res.update({"train_seconds": stats["train_seconds"], "steps": stats["steps"],
                    "first_log": hist[0] if hist else None, "last_log": hist[-2] if len(hist) > 1 else None,
                    "variant": variant})
        return res

    for seed in recipe.seeds:
        S.run(f"kd_seed{seed}", 150, lambda seed=seed: train_eval(f"kd_seed{seed}", {"train.seed": seed}))
        S.run(f"hard_seed{seed}", 120, lambda seed=seed: train_eval(
            f"hard_seed{seed}", {"train.seed": seed, "loss.targets": "gold", "loss.alpha": 0.0}))
        if seed == recipe.seeds[0] and f"kd_seed{seed}" in S.res["steps"]:
            S.run("init_untrained", 25, lambda: evaluate("init_untrained", init_dir, fp16=False))
            S.run("ship_student", 5, lambda: {"files": [str(p) for p in write_student_shards(
                work / "students" / f"kd_seed{seed}" / "model", work / "ship")]})
    if args.no_extras:
        S.save()
        return
    # extras, when time allows
    S.run("kd_seed0_no_hidden", 150, lambda: train_eval("kd_seed0_no_hidden", {"loss.hidden_weight": 0.0}))

    def progressive():
        mid_init = work / "init10"
        if not (mid_init / "config.json").is_file():
            layer_drop(teacher_dir, mid_init, 10)
        mid_kept = json.loads((mid_init / "student_init.json").read_text())["kept_layers"]
        mid = train_eval("prog_10l", {}, init=mid_init, layer_map=mid_kept)
        small_init = work / "init6_from10"
        if not (small_init / "config.json").is_file():
            layer_drop(work / "students" / "prog_10l" / "model", small_init, 6)
        sk = json.loads((small_init / "student_init.json").read_text())["kept_layers"]
        small = train_eval("prog_10l_6l", {}, init=small_init, teacher_dir_=work / "students" / "prog_10l" / "model",
                           layer_map=sk, examples_kind="teacher")
        return {"intermediate_10l": mid, "student_6l": small}

    S.run("progressive_30_10_6", 330, progressive)
    S.save()


def pack_outputs(work: Path, out: Path) -> None:
    """At most 8 files back: adapter, student shards, results, a tarball of the rest."""
    out.mkdir(parents=True, exist_ok=True)
    for p in [work / "teacher" / "adapter" / "adapter_model.safetensors", *sorted((work / "ship").glob("*.safetensors"))]:
        if p.is_file():
            shutil.copy2(p, out / p.name)
    if (work / "results.json").is_file():
        shutil.copy2(work / "results.json", out / "gpu_results.json")
    with tarfile.open(out / "small.tar.gz", "w:gz") as tar:
        for p in [work / "teacher" / "adapter" / "adapter_config.json", work / "teacher" / "teacher_card.json",
                  work / "preds", work / "init6" / "student_init.json",
                  work / "teacher_targets.json"]:
            if p.exists():
                tar.add(p, arcname=p.name)


# ==================================================================================== CPU
def cpu_stage(args) -> None:
    import torch

    torch.set_num_threads(2)
    from distill.assemble import assemble
    from distill.data import read_csv
    from distill.evaluate import VLLMServer, accuracy, chat_replies, intent_correct, measure_throughput
    from distill.student_init import layer_drop

    cache = Path(args.cache)
    rep = assemble(cache)
    tiers = {"teacher": rep.dirs["teacher"]}
    if "student" in rep.dirs:
        tiers["kd_student"] = rep.dirs["student"]
        init = cache / "init-untrained"
        if not (init / "config.json").is_file():
            layer_drop(rep.dirs["teacher"], init, 6)
        tiers["init_untrained"] = init
    rows = read_csv(Path(args.data or REPO.parent / "shared" / "data") / "banking77" / "test.csv")[: args.cpu_eval_n]
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
        from distill.data import data_root, parse_intent, read_csv

        check = {}
        for tier, pred in (("teacher", "teacher"), ("kd_student", "kd_seed0")):
            se = (cpu["tiers"].get(tier) or {}).get("served_eval")
            if se:
                rows = read_csv(data_root(args.data) / "banking77" / "test.csv")[: se["n"]]
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
        import csv

        from distill.data import parse_intent, read_csv

        rows = read_csv(Path(args.data or REPO.parent / "shared" / "data") / "banking77" / "test.csv")
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
