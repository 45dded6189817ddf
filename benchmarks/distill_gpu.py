"""The GPU stage of ``benchmarks.distill_quality``: train and evaluate every tier, resumably.

Run through ``python -m benchmarks.distill_quality gpu`` (the `device` tool, one H100). The
steps, in order, each persisted in ``results.json`` as soon as it finishes so a re-run
continues where the last one stopped: teacher fine-tune (LoRA) -> teacher replies on the
test set -> teacher generations on the train messages (sequence-level KD targets) -> for
each seed a KD student and a hard-label student (same init, data and steps) -> quality of
every tier; extras when time allows (ablation without the hidden loss, progressive
30 -> 10 -> 6). Torch and the training modules are imported here only, so the CPU and
report stages start without them.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import tarfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from benchmarks.common import STARTED, log
from distill.assemble import build_merged_teacher
from distill.card import count_params
from distill.data import Example, build_examples, parse_intent, read_csv, target_for
from distill.evaluate import accuracy, agreement, intent_correct, token_kl
from distill.modeling import decode_responses, generate_ids, load_model, load_tokenizer
from distill.packaged import materialize_teacher
from distill.recipe import Recipe, TrainSpec, load_recipe
from distill.ship import write_student_shards
from distill.student_init import layer_drop
from distill.train import teacher_finetune, teacher_targets, train_student


class Steps:
    """Resumable steps: results persisted after each, skipped when already done.

    ``budget_s`` counts from the start of the process, like the device call's time limit.
    """

    def __init__(self, work: Path, budget_s: float):
        self.work, self.deadline = work, STARTED + budget_s
        self.path = work / "results.json"
        self.res = json.loads(self.path.read_text()) if self.path.is_file() else {"steps": {}}

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def run(self, name: str, est_s: float, fn: Callable[[], dict | None]) -> dict | None:
        """Run ``fn`` unless done already or fewer than ``est_s`` seconds of budget are left."""
        if name in self.res["steps"]:
            log(f"skip {name} (done)")
            return self.res["steps"][name]
        if self.left() < est_s:
            log(f"skip {name}: {self.left():.0f} s left, needs ~{est_s:.0f} s")
            return None
        log(f"start {name}")
        t = time.perf_counter()
        out = dict(fn() or {})
        out["seconds"] = round(time.perf_counter() - t, 1)
        self.res["steps"][name] = out
        self.save()
        log(f"done {name} in {out['seconds']} s: { {k: v for k, v in out.items() if not isinstance(v, (list, dict))} }")
        return out

    def save(self) -> None:
        self.path.write_text(json.dumps(self.res, indent=2))


def round_fp16_(model: torch.nn.Module) -> None:
    """Round weights to fp16 and back: evaluate exactly what ships (fp16 shards)."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())


def sweep_setup(args: argparse.Namespace, epochs: float) -> tuple[Recipe, Path, "Steps"]:
    """The GPU recipe on ``args.data`` for ``epochs``, the work dir, and its resumable steps."""
    torch.backends.cuda.matmul.allow_tf32 = True
    recipe = load_recipe(Path(__file__).resolve().parents[1] / "distill" / "recipes" / "banking77_gpu.yaml")
    recipe.data.root = Path(args.data)
    recipe.train.epochs = epochs
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    return recipe, work, Steps(work, args.budget_s)


def evaluate_splits(name: str, model_dir: Path, splits: dict[str, list[dict]], preds_dir: Path, fp16: bool,
                    max_new_tokens: int, gen_batch: int) -> dict:
    """Intent accuracy per split with the model dir's own tokenizer (a trimmed one has its own);
    replies saved as ``<name>-<split>.json``; agreement with ``teacher-<split>.json`` when present."""
    tok = load_tokenizer(model_dir)
    m = load_model(model_dir, torch.float32)
    if fp16:
        round_fp16_(m)
    out: dict = {}
    for split, rows in splits.items():
        replies = decode_responses(tok, generate_ids(m, tok, [r["text"] for r in rows], max_new_tokens, gen_batch))
        (preds_dir / f"{name}-{split}.json").write_text(json.dumps(replies))
        res = {"intent_accuracy": accuracy(intent_correct(replies, [r["category"] for r in rows])), "n": len(rows)}
        teacher_file = preds_dir / f"teacher-{split}.json"
        if name != "teacher" and teacher_file.is_file():
            res.update(agreement(replies, json.loads(teacher_file.read_text())))
        out[split] = res
    del m
    torch.cuda.empty_cache()
    return out


def seed_from_previous_run(work: Path, prev: Path) -> None:
    """Continue a run whose machine was given back: its results + the teacher's shipped
    adapter and test replies came back; everything else is rebuilt or rerun."""
    res = json.loads((prev / "gpu_results.json").read_text())
    res["steps"] = {k: v for k, v in res["steps"].items() if k in ("teacher_finetune", "eval_teacher")}
    (work / "results.json").write_text(json.dumps(res, indent=2))
    (work / "preds").mkdir(exist_ok=True)
    shutil.copy2(prev / "preds" / "teacher.json", work / "preds" / "teacher.json")
    (work / "teacher" / "adapter").mkdir(parents=True, exist_ok=True)
    for n in ("adapter_model.safetensors", "adapter_config.json"):
        shutil.copy2(prev / n, work / "teacher" / "adapter" / n)
    if (prev / "teacher_targets.json.gz").is_file():  # skip regenerating them
        (work / "teacher_targets.json").write_bytes(gzip.decompress((prev / "teacher_targets.json.gz").read_bytes()))


def hardware() -> dict:
    """What the numbers were measured on."""
    return {
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__, "python": platform.python_version(),
        "transformers": __import__("transformers").__version__, "peft": __import__("peft").__version__,
        "cpus": os.cpu_count(),
    }


class GpuRun:
    """One GPU run's shared state (recipe, data, teacher) and its measurable steps."""

    def __init__(self, args: argparse.Namespace, recipe: Recipe, work: Path, teacher_dir: Path,
                 train_rows: list[dict]):
        self.args, self.recipe, self.work, self.teacher_dir = args, recipe, work, teacher_dir
        self.train_rows = train_rows
        test_rows = read_csv(recipe.data.eval_path(), limit=args.max_eval)
        self.test_texts = [r["text"] for r in test_rows]
        self.test_labels = [r["category"] for r in test_rows]
        self.preds_dir = work / "preds"
        self.preds_dir.mkdir(exist_ok=True)
        self.tok = load_tokenizer(teacher_dir)
        self.init_dir = work / "init6"
        self._teacher32: torch.nn.Module | None = None

    def teacher32(self) -> torch.nn.Module:
        """The float32 teacher (token KL reference), loaded once."""
        if self._teacher32 is None:
            self._teacher32 = load_model(self.teacher_dir, torch.float32)
        return self._teacher32

    def evaluate(self, name: str, model_dir: Path, fp16: bool) -> dict:
        """Intent accuracy on the test set; agreement and token KL with the teacher (students)."""
        m = load_model(model_dir, torch.float32)
        if fp16:
            round_fp16_(m)
        t = time.perf_counter()
        ids = generate_ids(m, self.tok, self.test_texts, self.args.max_new_tokens, self.args.gen_batch)
        gen_s = time.perf_counter() - t
        replies = decode_responses(self.tok, ids)
        (self.preds_dir / f"{name}.json").write_text(json.dumps({"ids": ids, "replies": replies}))
        flags = intent_correct(replies, self.test_labels)
        out = {"intent_accuracy": accuracy(flags), "n": len(flags), "hf_generate_seconds": round(gen_s, 1),
               **count_params(model_dir), "layers": m.config.num_hidden_layers}
        if name != "teacher":
            t_rep = json.loads((self.preds_dir / "teacher.json").read_text())
            out.update(agreement(replies, t_rep["replies"]))
            ex = build_examples(self.tok, self.test_texts, t_rep["ids"], self.recipe.train.max_len)
            out["token_kl_to_teacher"] = token_kl(m, self.teacher32(), ex, batch_size=128)
        del m
        torch.cuda.empty_cache()
        return out

    def make_targets(self) -> dict:
        """The teacher's greedy generations on the train messages (sequence-level KD targets)."""
        t16 = load_model(self.teacher_dir, torch.bfloat16)
        t = time.perf_counter()
        ids = teacher_targets(t16, self.tok, [r["text"] for r in self.train_rows], self.work / "teacher_targets.json",
                              self.args.max_new_tokens, self.args.gen_batch)
        agree = accuracy([parse_intent(x) == r["category"]
                          for x, r in zip(decode_responses(self.tok, ids), self.train_rows)])
        del t16
        return {"n": len(ids), "gen_seconds": round(time.perf_counter() - t, 1),
                "train_label_agreement": agree}

    def examples_for(self, kind: str) -> list[Example]:
        """Training examples: gold labels, or the teacher's generations."""
        texts = [r["text"] for r in self.train_rows]
        if kind == "gold":
            return build_examples(self.tok, texts, [target_for(r["category"]) for r in self.train_rows],
                                  self.recipe.train.max_len)
        tgt = json.loads((self.work / "teacher_targets.json").read_text())["ids"]
        return build_examples(self.tok, texts, tgt, self.recipe.train.max_len)

    def train_eval(self, name: str, variant: dict[str, Any], init: Path | None = None,
                   teacher_dir: Path | None = None, layer_map: list[int] | None = None,
                   examples_kind: str | None = None) -> dict:
        """Train one student (the recipe with ``variant``'s ``section.key`` overrides), evaluate it."""
        init = init or self.init_dir
        teacher_dir = teacher_dir or self.teacher_dir
        layer_map = layer_map if layer_map is not None else kept_layers(self.init_dir)
        r = self.recipe.model_copy(deep=True)
        for k, v in variant.items():
            sect, key = k.split(".")
            setattr(getattr(r, sect), key, v)
        teacher_model = None
        if r.loss.targets == "teacher":
            teacher_model = load_model(teacher_dir, torch.bfloat16)
        ex = self.examples_for(examples_kind or r.loss.targets)
        out_dir = self.work / "students" / name
        stats = train_student(init, teacher_model, self.tok, ex, r, out_dir, layer_map)
        del teacher_model
        torch.cuda.empty_cache()
        res = self.evaluate(name, out_dir / "model", fp16=True)
        hist = stats["history"]
        res.update({"train_seconds": stats["train_seconds"], "steps": stats["steps"],
                    "first_log": hist[0] if hist else None, "last_log": hist[-2] if len(hist) > 1 else None,
                    "variant": variant})
        return res

    def progressive(self) -> dict:
        """30 -> 10 -> 6 layers: a 10-layer student, then a 6-layer one distilled from it."""
        mid_init = self.work / "init10"
        if not (mid_init / "config.json").is_file():
            layer_drop(self.teacher_dir, mid_init, 10)
        mid = self.train_eval("prog_10l", {}, init=mid_init, layer_map=kept_layers(mid_init))
        mid_model = self.work / "students" / "prog_10l" / "model"
        small_init = self.work / "init6_from10"
        if not (small_init / "config.json").is_file():
            layer_drop(mid_model, small_init, 6)
        small = self.train_eval("prog_10l_6l", {}, init=small_init, teacher_dir=mid_model,
                                layer_map=kept_layers(small_init), examples_kind="teacher")
        return {"intermediate_10l": mid, "student_6l": small}


def kept_layers(init_dir: Path) -> list[int]:
    """The teacher layers a layer-dropped init kept (its hidden-state layer map)."""
    return json.loads((init_dir / "student_init.json").read_text())["kept_layers"]


def gpu_stage(args: argparse.Namespace) -> None:
    """All GPU steps within ``args.budget_s``; results in ``<work>/results.json``."""
    torch.backends.cuda.matmul.allow_tf32 = True
    recipe = load_recipe(args.recipe)
    if args.data:
        recipe.data.root = Path(args.data)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.resume_from and not (work / "results.json").is_file():
        seed_from_previous_run(work, Path(args.resume_from))
    S = Steps(work, args.budget_s)
    S.res["hardware"] = hardware()
    S.res["recipe"] = recipe.model_dump(mode="json")

    train_rows = read_csv(recipe.data.train_path(), limit=args.max_train)
    base = materialize_teacher(work / "base-teacher")
    tf = recipe.teacher_finetune
    t_spec = TrainSpec(epochs=tf.epochs, batch_size=tf.batch_size, lr=tf.lr, max_len=recipe.train.max_len,
                       warmup_ratio=0.05, logging_steps=50, seed=0)
    S.run("teacher_finetune", 60, lambda: teacher_finetune(base, train_rows, work / "teacher", t_spec,
                                                           tf.lora_r, tf.lora_alpha))
    teacher_dir = work / "teacher" / "model"
    if not (teacher_dir / "config.json").is_file():  # resumed: rebuild exactly as assemble does
        build_merged_teacher(base, work / "teacher" / "adapter", teacher_dir, "resumed")
    run = GpuRun(args, recipe, work, teacher_dir, train_rows)
    S.run("eval_teacher", 20, lambda: run.evaluate("teacher", teacher_dir, False))
    S.run("teacher_targets", 40, run.make_targets)
    if not (run.init_dir / "config.json").is_file():
        layer_drop(teacher_dir, run.init_dir, recipe.student.layers)

    for seed in recipe.seeds:
        S.run(f"kd_seed{seed}", 150, lambda seed=seed: run.train_eval(f"kd_seed{seed}", {"train.seed": seed}))
        S.run(f"hard_seed{seed}", 120, lambda seed=seed: run.train_eval(
            f"hard_seed{seed}", {"train.seed": seed, "loss.targets": "gold", "loss.alpha": 0.0}))
        if seed == recipe.seeds[0] and f"kd_seed{seed}" in S.res["steps"]:
            S.run("init_untrained", 25, lambda: run.evaluate("init_untrained", run.init_dir, fp16=False))
            S.run("ship_student", 5, lambda: {"files": [str(p) for p in write_student_shards(
                work / "students" / f"kd_seed{seed}" / "model", work / "ship")]})
    if args.no_extras:
        S.save()
        return
    # extras, when time allows
    S.run("kd_seed0_no_hidden", 150, lambda: run.train_eval("kd_seed0_no_hidden", {"loss.hidden_weight": 0.0}))
    S.run("progressive_30_10_6", 330, run.progressive)
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
