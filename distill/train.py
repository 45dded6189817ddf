"""Training: teacher fine-tuning (LoRA) and knowledge distillation, on transformers' Trainer.

The same code runs on the CPU (quick recipe, tests) and on a GPU (the real recipe):
Trainer/accelerate choose the device; bf16 autocast is switched on only on CUDA.

* :func:`teacher_finetune`: LoRA over the packaged teacher on Banking77's gold
  ``Intent/Reply`` targets; the adapter is what ships (~10 MB).
* :class:`KDTrainer`: ``Trainer`` whose ``compute_loss`` runs the frozen teacher on the
  same batch and mixes a soft loss (forward KL / reverse KL / JSD at temperature T,
  or sparse top-k KL from an API teacher) with the hard loss on the targets.
* :func:`distill_run`: a whole recipe: teacher, student init, targets, training
  (progressive stages chained), final model dir + ``distill_card.json``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from distill import dist, losses
from distill.data import (
    ExampleDataset,
    RightPadCollator,
    build_examples,
    read_csv,
    subsample,
    target_for,
)
from distill.modeling import default_device, generate_ids, load_model, load_tokenizer, on_gpu
from distill.packaged import materialize_teacher, save_state_dict_dir, write_marker
from distill.recipe import Recipe, preflight
from distill.student_init import from_scratch, layer_drop, load_state, read_config

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# --------------------------------------------------------------------------------- trainer
def _trainer_classes():
    from transformers import Trainer, TrainingArguments

    class KDTrainer(Trainer):
        """``Trainer`` with a distillation loss; the teacher is frozen and never stepped."""

        def __init__(self, *args, teacher=None, loss_spec=None, layer_map=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.teacher = teacher
            self.loss_spec = loss_spec
            self.layer_map = layer_map or []
            self._parts: dict[str, list[float]] = {}
            if teacher is not None:
                teacher.eval()
                for p in teacher.parameters():
                    p.requires_grad_(False)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            spec = self.loss_spec
            labels = inputs["labels"]
            want_hidden = spec.hidden_weight > 0 and self.teacher is not None and bool(self.layer_map)
            out = model(
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                output_hidden_states=want_hidden,
            )
            tgt = labels[:, 1:]
            mask = tgt != losses.IGNORE_INDEX
            s_sel = out.logits[:, :-1][mask]
            hard = losses.hard_ce(s_sel, tgt[mask])
            soft = torch.zeros((), device=hard.device)
            hidden = torch.zeros((), device=hard.device)
            use_soft = spec.alpha > 0 and (self.teacher is not None or "topk_ids" in inputs)
            if use_soft:
                if "topk_ids" in inputs:  # API teacher: sparse top-k soft targets
                    soft = losses.sparse_topk_kl(
                        s_sel, inputs["topk_ids"][:, 1:][mask], inputs["topk_logprobs"][:, 1:][mask],
                        spec.temperature,
                    )
                else:
                    if next(self.teacher.parameters()).device != out.logits.device:
                        self.teacher.to(out.logits.device)
                    with torch.no_grad():
                        t_out = self.teacher(
                            input_ids=inputs["input_ids"],
                            attention_mask=inputs["attention_mask"],
                            output_hidden_states=want_hidden,
                        )
                    t_sel = t_out.logits[:, :-1][mask]
                    soft = losses.soft_loss(spec.soft, s_sel, t_sel, spec.temperature, beta=spec.beta)
                    if want_hidden:
                        att = inputs["attention_mask"].bool()
                        terms = [
                            losses.hidden_cosine(out.hidden_states[s + 1], t_out.hidden_states[t + 1], att)
                            for s, t in enumerate(self.layer_map)
                        ]
                        hidden = torch.stack(terms).mean()
                loss = losses.mix(soft, hard, spec.alpha) + spec.hidden_weight * hidden
            else:
                loss = hard
            for k, v in (("soft", soft), ("hard", hard), ("hidden", hidden)):
                self._parts.setdefault(k, []).append(float(v.detach()))
            return (loss, out) if return_outputs else loss

        def log(self, logs, *args, **kwargs):
            parts = {k: (sum(v), len(v)) for k, v in self._parts.items() if v}
            if dist.enabled() and torch.distributed.is_initialized():
                # Trainer calls log() on every rank (after its own all-gather of the loss):
                # average the loss parts over all ranks, not just rank 0's share of the batch
                keys = ("soft", "hard", "hidden")
                t = torch.tensor([x for k in keys for x in parts.get(k, (0.0, 0))], dtype=torch.float64)
                if dist.backend() == "nccl":
                    t = t.to(default_device())
                torch.distributed.all_reduce(t)
                t = t.cpu().tolist()
                parts = {k: (t[2 * i], t[2 * i + 1]) for i, k in enumerate(keys) if t[2 * i + 1] > 0}
            for k, (total, n) in parts.items():
                logs[f"loss_{k}"] = round(total / n, 5)
            self._parts = {}
            super().log(logs, *args, **kwargs)

    return Trainer, TrainingArguments, KDTrainer


class HistoryCallbackFactory:
    """Collects logged losses (for the card, and so tests can check the loss went down)."""

    @staticmethod
    def make(history: list[dict]):
        from transformers import TrainerCallback

        class _H(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kw):
                if logs:
                    history.append({"step": state.global_step, **{k: v for k, v in logs.items()
                                                                  if isinstance(v, (int, float))}})

        return _H()


def training_args(spec, out_dir: Path, n_examples: int):
    from transformers import TrainingArguments

    bf16 = spec.bf16 if spec.bf16 is not None else on_gpu()
    # global batch = per-device batch x grad accumulation x processes (DDP)
    steps_per_epoch = math.ceil(n_examples / (spec.batch_size * spec.grad_accum * dist.world_size()))
    ddp = {}
    if dist.enabled():
        # CPU DDP needs gloo (Trainer would pick it too, but say so); on CUDA: NCCL
        ddp = {"ddp_backend": dist.backend(), "ddp_timeout": spec.ddp_timeout,
               "ddp_find_unused_parameters": False}
    total = spec.max_steps if spec.max_steps > 0 else math.ceil(steps_per_epoch * spec.epochs)
    return TrainingArguments(
        output_dir=str(out_dir),
        per_device_train_batch_size=spec.batch_size,
        gradient_accumulation_steps=spec.grad_accum,
        learning_rate=spec.lr,
        num_train_epochs=spec.epochs,
        max_steps=spec.max_steps,
        warmup_steps=int(spec.warmup_ratio * total),
        lr_scheduler_type="cosine",
        weight_decay=spec.weight_decay,
        logging_steps=spec.logging_steps,
        save_strategy="steps" if spec.save_steps else "no",
        save_steps=spec.save_steps or 500,
        save_total_limit=1,
        report_to=[],
        bf16=bool(bf16),
        use_cpu=not on_gpu(),
        seed=spec.seed,
        data_seed=spec.seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=False,
        **ddp,
    )


def _latest_checkpoint(out_dir: Path) -> str | None:
    ckpts = sorted(Path(out_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(ckpts[-1]) if ckpts else None


def save_model_dir(model, tokenizer, src_dir: Path, out_dir: Path, info: dict) -> Path:
    """Final float32 HF dir (config, safetensors, tokenizer, generation config), atomically."""
    from distill.packaged import commit_dir, copy_tokenizer_files, tmp_sibling

    tmp = tmp_sibling(out_dir)
    try:
        state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
        cfg = dict(read_config(src_dir))
        save_state_dict_dir(state, cfg, tmp)
        copy_tokenizer_files(src_dir, tmp)
        if (Path(src_dir) / "student_init.json").is_file():
            shutil.copy2(Path(src_dir) / "student_init.json", tmp / "student_init.json")
        write_marker(tmp, **info)
        return commit_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ------------------------------------------------------------------------ teacher finetune
def teacher_finetune(
    base_dir: Path,
    train_rows: list[dict],
    out_dir: Path,
    spec,
    lora_r: int = 16,
    lora_alpha: int = 32,
    adapter_dtype: torch.dtype = torch.float16,
) -> dict:
    """Teach the teacher the support task with a LoRA adapter; write adapter + merged model.

    ``out_dir/adapter``: the PEFT adapter, its tensors rounded to ``adapter_dtype`` (what
    ships); ``out_dir/model``: base + that rounded adapter merged in float32, exactly what
    ``distill assemble`` rebuilds, so every number measured on it holds for the shipped tier.
    """
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file, save_file

    from distill.assemble import merge_lora_state

    out_dir = Path(out_dir)
    tok = load_tokenizer(base_dir)
    texts = [r["text"] for r in train_rows]
    ex = build_examples(tok, texts, [target_for(r["category"]) for r in train_rows], spec.max_len)
    torch.manual_seed(spec.seed)
    model = load_model(base_dir)
    model = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=0.05,
                                             target_modules=LORA_TARGETS, task_type="CAUSAL_LM"))
    Trainer, _, KDTrainer = _trainer_classes()
    history: list[dict] = []
    ckpt_dir = out_dir / "checkpoints"
    trainer = KDTrainer(
        model=model,
        args=training_args(spec, ckpt_dir, len(ex)),
        train_dataset=ExampleDataset(ex),
        data_collator=RightPadCollator(tok.pad_token_id),
        callbacks=[HistoryCallbackFactory.make(history)],
        loss_spec=_hard_only_spec(),
    )
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=_latest_checkpoint(ckpt_dir))
    train_s = time.perf_counter() - t0
    adapter_dir = out_dir / "adapter"
    model.save_pretrained(str(adapter_dir))
    st = load_file(str(adapter_dir / "adapter_model.safetensors"))
    save_file({k: v.to(adapter_dtype).contiguous() for k, v in st.items()},
              str(adapter_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
    merged = merge_lora_state(load_state(base_dir), adapter_dir)
    from distill.packaged import commit_dir, copy_tokenizer_files, tmp_sibling

    tmp = tmp_sibling(out_dir / "model")
    save_state_dict_dir(merged, read_config(base_dir), tmp)
    copy_tokenizer_files(base_dir, tmp)
    write_marker(tmp, kind="teacher", adapter=str(adapter_dir))
    commit_dir(tmp, out_dir / "model")
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return {"train_seconds": round(train_s, 1), "examples": len(ex), "lora_r": lora_r,
            "lora_alpha": lora_alpha, "history": history[-5:],
            "final_loss": next((h["loss"] for h in reversed(history) if "loss" in h), None)}


def _hard_only_spec():
    from distill.recipe import LossSpec

    return LossSpec(alpha=0.0, targets="gold")


# ----------------------------------------------------------------------------- distillation
def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def teacher_targets(teacher_model, tok, texts: list[str], cache_file: Path | None,
                    max_new_tokens: int = 48, batch_size: int = 64) -> list[list[int]]:
    """The teacher's greedy responses (sequence-level KD targets), cached on disk."""
    key = _digest(texts, max_new_tokens)
    if cache_file and Path(cache_file).is_file():
        data = json.loads(Path(cache_file).read_text())
        if data.get("key") == key:
            return data["ids"]
    ids = generate_ids(teacher_model, tok, texts, max_new_tokens, batch_size)
    if cache_file:
        Path(cache_file).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(cache_file).with_name(f".{Path(cache_file).name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"key": key, "ids": ids}))
        tmp.replace(cache_file)  # readers (other ranks, reruns) never see half a file
    return ids


def freeze_embeddings(model) -> None:
    """Freeze input embeddings (and so the tied head): only layers + norm train and ship."""
    model.get_input_embeddings().weight.requires_grad_(False)
    out = model.get_output_embeddings()
    if out is not None:
        out.weight.requires_grad_(False)


class _SeenDataset:
    """Wraps a dataset and records the indices this process read (proof of the DDP split).

    Read, not necessarily trained on: a data loader may fetch one batch ahead of the last step.
    """

    def __init__(self, ds):
        self.ds = ds
        self.seen: list[int] = []

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        self.seen.append(int(i))
        return self.ds[i]


def _trainable_digest(model) -> str:
    h = hashlib.sha256()
    for name, prm in model.named_parameters():
        if prm.requires_grad:
            h.update(name.encode())
            h.update(prm.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _split_stats(read_per_rank: list[list[int]], n_examples: int) -> dict:
    sets = [set(s) for s in read_per_rank]
    shared = set.intersection(*sets) if len(sets) > 1 else set()
    return {
        "examples": n_examples,
        "read_per_rank": [len(s) for s in read_per_rank],
        "distinct_per_rank": [len(s) for s in sets],
        "distinct_union": len(set().union(*sets)),
        "read_by_every_rank": len(shared),
        "first_read_per_rank": [s[:32] for s in read_per_rank],
    }


def train_student(
    student_dir: Path,
    teacher_model,
    tok,
    examples,
    recipe: Recipe,
    out_dir: Path,
    layer_map: list[int] | None = None,
) -> dict:
    """Train one student with :class:`KDTrainer`; write ``out_dir/model``; return stats."""
    spec = recipe.train
    torch.manual_seed(spec.seed)
    model = load_model(student_dir)
    if recipe.student.freeze_embeddings:
        freeze_embeddings(model)
    _, _, KDTrainer = _trainer_classes()
    history: list[dict] = []
    ckpt_dir = Path(out_dir) / "checkpoints"
    use_teacher = recipe.loss.targets == "teacher" and recipe.loss.alpha > 0
    dataset = _SeenDataset(examples if hasattr(examples, "collator") else ExampleDataset(examples))
    trainer = KDTrainer(
        model=model,
        args=training_args(spec, ckpt_dir, len(examples)),
        train_dataset=dataset,
        data_collator=_collator_for(examples, tok),
        callbacks=[HistoryCallbackFactory.make(history)],
        teacher=teacher_model if use_teacher else None,
        loss_spec=recipe.loss if recipe.loss.targets == "teacher" else _hard_only_spec(),
        layer_map=layer_map,
    )
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=_latest_checkpoint(ckpt_dir))
    secs = time.perf_counter() - t0
    seen = dist.gather_object(dataset.seen)  # collective: every rank
    digests = dist.gather_object(_trainable_digest(trainer.model)) if dist.enabled() else None
    a = trainer.args
    parallel = {"world_size": a.world_size, "backend": dist.backend(),
                "per_device_batch": a.per_device_train_batch_size, "grad_accum": a.gradient_accumulation_steps,
                "global_batch": a.per_device_train_batch_size * a.gradient_accumulation_steps * a.world_size,
                **_split_stats(seen, len(dataset))}
    if digests is not None:  # DDP averaged the gradients: every replica ends with the same weights
        parallel["replicas_identical"] = len(set(digests)) == 1
    if dist.is_main():  # DDP replicas are identical: one rank writes
        info = {"kind": "student", "recipe": recipe.name, "seed": spec.seed}
        save_model_dir(trainer.model, tok, student_dir, Path(out_dir) / "model", info)
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    dist.barrier()  # the next stage (or the card) reads out_dir/model
    return {"train_seconds": round(secs, 1), "steps": trainer.state.global_step, "history": history,
            "parallel": parallel}


def _collator_for(examples, tok):
    if hasattr(examples, "collator"):
        return examples.collator
    return RightPadCollator(tok.pad_token_id)


def resolve_teacher_dir(recipe: Recipe, cache: Path) -> Path:
    """The teacher as a model dir: packaged base (materialized), a dir, + optional adapter."""
    from distill.assemble import build_merged_teacher, sha256_file

    base = materialize_teacher(Path(cache) / "base-teacher") if recipe.teacher == "default" else Path(recipe.teacher)
    if recipe.teacher_adapter is None:
        return base
    adapter = Path(recipe.teacher_adapter)
    digest = sha256_file(adapter / "adapter_model.safetensors")
    out = Path(cache) / f"teacher-{digest[:12]}"
    from distill.packaged import is_complete

    if not is_complete(out):
        build_merged_teacher(base, adapter, out, digest)
    return out


def distill_run(recipe: Recipe, cache: Path, out: Path, log: Callable[[str], None] = print) -> dict:
    """Run a recipe end to end (progressive when ``recipe.stages`` lists several depths)."""
    preflight(recipe)
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    dist.init(recipe.train.ddp_timeout)
    if dist.enabled():
        log(f"{dist.tag()}: world size {dist.world_size()}, local rank {dist.local_rank()}, "
            f"device {default_device()}, torch threads {torch.get_num_threads()}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with dist.main_first():  # rank 0 materializes the teacher; the others then find it complete
        teacher_dir = resolve_teacher_dir(recipe, cache)
    tok = load_tokenizer(teacher_dir)
    rows = subsample(read_csv(recipe.data.train_path()), recipe.data.max_train, seed=0)
    texts = [r["text"] for r in rows]
    depths = recipe.stages or [recipe.student.layers]
    stage_teacher_dir = teacher_dir
    stages = []
    for i, depth in enumerate(depths):
        sdir = out / (f"stage{i}-{depth}l" if len(depths) > 1 else "run")
        log(f"stage {i}: {depth}-layer student from {stage_teacher_dir}")
        init_dir = sdir / "init"
        with dist.main_first():
            if not (init_dir / "config.json").is_file():
                if recipe.student.init == "layer_drop":
                    layer_drop(stage_teacher_dir, init_dir, depth)
                else:
                    from_scratch(stage_teacher_dir, init_dir, depth, recipe.student.hidden_size,
                                 recipe.student.intermediate_size, recipe.train.seed)
        kept = json.loads((init_dir / "student_init.json").read_text()).get("kept_layers")
        dtype = torch.bfloat16 if on_gpu() else torch.float32
        teacher_model = None
        if recipe.api_teacher is not None and i == 0:
            from distill.api_teacher import api_examples

            # rank 0 queries the API and writes the cache; the others read it
            with dist.main_first():
                examples = api_examples(recipe, tok, texts, cache_file=out / "api_teacher_targets.jsonl")
        elif recipe.loss.targets == "teacher":
            teacher_model = load_model(stage_teacher_dir, dtype=dtype)
            cache_file = sdir / "teacher_targets.json"
            # sequence-level KD targets: rank 0 generates them all (same targets as a
            # single-process run) and caches them; the other ranks wait, then read the cache
            with dist.main_first():
                cached = cache_file.is_file()
                t0 = time.perf_counter()
                tgt = teacher_targets(teacher_model, tok, texts, cache_file)
            if dist.enabled() or not cached:
                log(f"{dist.tag() or 'teacher targets'}: {len(tgt)} teacher targets "
                    f"{'read from cache' if cached else 'generated'} ({time.perf_counter() - t0:.1f} s)")
            examples = build_examples(tok, texts, tgt, recipe.train.max_len)
        else:  # comparison student: dataset labels, no teacher
            examples = build_examples(tok, texts, [target_for(r["category"]) for r in rows],
                                      recipe.train.max_len)
        stats = train_student(init_dir, teacher_model, tok, examples, recipe, sdir, kept)
        del teacher_model
        stages.append({"layers": depth, "teacher": str(stage_teacher_dir), "kept_layers": kept,
                       "train_seconds": stats["train_seconds"], "steps": stats["steps"],
                       "first_losses": next((h for h in stats["history"] if "loss" in h), None),
                       "final_losses": next((h for h in reversed(stats["history"]) if "loss" in h), None),
                       "train_summary": next((h for h in reversed(stats["history"]) if "train_loss" in h), None),
                       "parallel": stats["parallel"]})
        if dist.enabled():
            p = stats["parallel"]
            log(f"{dist.tag()}: trained {stats['steps']} steps, global batch {p['global_batch']} "
                f"(= {p['per_device_batch']} x {p['grad_accum']} x {p['world_size']} processes), "
                f"this rank read {p['read_per_rank'][dist.rank()]} examples "
                f"(first: {p['first_read_per_rank'][dist.rank()][:8]})")
        stage_teacher_dir = sdir / "model"
    final = out / "model"
    card = None
    if dist.is_main():  # only rank 0 writes the final dir and the card
        if final.exists():
            shutil.rmtree(final)
        shutil.copytree(stage_teacher_dir, final)
        card = make_card(recipe, teacher_dir, final, stages, len(texts))
        (out / "distill_card.json").write_text(json.dumps(card, indent=2, default=str))
        shutil.copy2(out / "distill_card.json", final / "distill_card.json")
    dist.barrier()
    if card is None:
        card = json.loads((out / "distill_card.json").read_text())
    return card


def count_params(model_dir: Path) -> dict:
    state = load_state(model_dir)
    total = sum(v.numel() for v in state.values())
    emb = sum(v.numel() for k, v in state.items() if "embed_tokens" in k or k == "lm_head.weight")
    return {"parameters": total, "non_embedding_parameters": total - emb}


def make_card(recipe: Recipe, teacher_dir: Path, model_dir: Path, stages: list[dict], n_train: int) -> dict:
    cfg = read_config(model_dir)
    size = sum(f.stat().st_size for f in Path(model_dir).glob("*.safetensors"))
    return {
        "name": recipe.name,
        "teacher": {"dir": str(teacher_dir), "spec": recipe.teacher,
                    "adapter": str(recipe.teacher_adapter) if recipe.teacher_adapter else None,
                    "api": recipe.api_teacher.model_dump() if recipe.api_teacher else None,
                    "layers": read_config(teacher_dir)["num_hidden_layers"]},
        "student": {"init": recipe.student.init, "layers": cfg["num_hidden_layers"],
                    "hidden_size": cfg["hidden_size"], "bytes": size, **count_params(model_dir),
                    "freeze_embeddings": recipe.student.freeze_embeddings},
        "loss": recipe.loss.model_dump(),
        "train": recipe.train.model_dump(),
        "data": {"train": str(recipe.data.train_path()), "examples": n_train,
                 "labels_used": recipe.loss.targets == "gold"},
        "stages": stages,
        "device": torch.cuda.get_device_name(0) if on_gpu() else "cpu",
        "processes": dist.world_size(),
        "ddp_backend": dist.backend(),
        "evaluation": None,
        "recipe": recipe.model_dump(mode="json"),
    }
