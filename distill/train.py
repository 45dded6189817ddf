"""Training runs: teacher fine-tuning (LoRA) and knowledge distillation of a whole recipe.

The same code runs on the CPU (quick recipe, tests) and on a GPU (the real recipe):
Trainer/accelerate choose the device; bf16 autocast is switched on only on CUDA. The
trainer itself is :class:`distill.kd_trainer.KDTrainer`; where its soft targets come from
is a :mod:`distill.teacher_signals` strategy chosen here.

* :func:`teacher_finetune`: LoRA over the packaged teacher on Banking77's gold
  ``Intent/Reply`` targets; the adapter is what ships (~10 MB).
* :func:`train_student`: one student, trained with a dense (local teacher) or sparse
  (API teacher's top-k) signal, or on hard targets only.
* :func:`distill_run`: a whole recipe: teacher, student init, targets, training
  (progressive stages chained), final model dir + ``distill_card.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import EarlyStoppingCallback

from distill import dist
from distill.api_teacher import SparseDataset, api_examples
from distill.assemble import merge_lora_state
from distill.atomic import atomic_dir
from distill.card import make_card
from distill.data import (
    Example,
    ExampleDataset,
    RightPadCollator,
    build_examples,
    read_csv,
    subsample,
    target_for,
)
from distill.chat_data import chat_examples, last_user_text, read_chat_jsonl
from distill.kd_trainer import HistoryCallback, KDTrainer, latest_checkpoint, training_args
from distill.modeling import default_device, generate_ids, load_model, load_tokenizer, on_gpu
from distill.packaged import copy_tokenizer_files, save_state_dict_dir, write_marker
from distill.recipe import LossSpec, Recipe, TrainSpec, preflight
from distill.student_init import from_scratch, layer_drop, load_state, read_config
from distill.teacher_signals import DenseTeacherSignal, SparseTeacherSignal, TeacherSignal
from distill.teachers import load_extra_teachers, resolve_teacher_dir
from distill.trim_first import TeacherVocab, trim_before_training

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
#: The loss of runs that learn from hard targets only (teacher fine-tuning, gold-label students).
HARD_ONLY = LossSpec(alpha=0.0, targets="gold")


def save_model_dir(model: torch.nn.Module, src_dir: Path, out_dir: Path, info: dict) -> Path:
    """Final float32 HF dir (config, safetensors, tokenizer, generation config), atomically.

    Config, tokenizer and ``student_init.json`` are copied from ``src_dir`` (the init the
    model was trained from); ``info`` goes into the completion marker.
    """
    with atomic_dir(out_dir) as tmp:
        state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
        save_state_dict_dir(state, dict(read_config(src_dir)), tmp)
        copy_tokenizer_files(src_dir, tmp)
        for extra in ("student_init.json", "vocab_trim.json"):  # a student trimmed before training keeps its map
            if (Path(src_dir) / extra).is_file():
                shutil.copy2(Path(src_dir) / extra, tmp / extra)
        write_marker(tmp, **info)
    return out_dir


# ------------------------------------------------------------------------ teacher finetune
def teacher_finetune(
    base_dir: Path,
    train_rows: list[dict],
    out_dir: Path,
    spec: TrainSpec,
    lora_r: int = 16,
    lora_alpha: int = 32,
    adapter_dtype: torch.dtype = torch.float16,
) -> dict:
    """Teach the teacher the support task with a LoRA adapter; write adapter + merged model.

    ``out_dir/adapter``: the PEFT adapter, its tensors rounded to ``adapter_dtype`` (what
    ships); ``out_dir/model``: base + that rounded adapter merged in float32, exactly what
    ``distill assemble`` rebuilds, so every number measured on it holds for the shipped tier.
    """
    # PEFT only here: distillation runs without it (assembly merges adapters by hand)
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file, save_file

    out_dir = Path(out_dir)
    tok = load_tokenizer(base_dir)
    texts = [r["text"] for r in train_rows]
    ex = build_examples(tok, texts, [target_for(r["category"]) for r in train_rows], spec.max_len)
    torch.manual_seed(spec.seed)
    model = load_model(base_dir)
    model = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=0.05,
                                             target_modules=LORA_TARGETS, task_type="CAUSAL_LM"))
    history: list[dict] = []
    ckpt_dir = out_dir / "checkpoints"
    trainer = KDTrainer(
        model=model,
        args=training_args(spec, ckpt_dir, len(ex)),
        train_dataset=ExampleDataset(ex),
        data_collator=RightPadCollator(tok.pad_token_id),
        callbacks=[HistoryCallback(history)],
        loss_spec=HARD_ONLY,
    )
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=latest_checkpoint(ckpt_dir))
    train_s = time.perf_counter() - t0
    adapter_dir = out_dir / "adapter"
    model.save_pretrained(str(adapter_dir))
    st = load_file(str(adapter_dir / "adapter_model.safetensors"))
    save_file({k: v.to(adapter_dtype).contiguous() for k, v in st.items()},
              str(adapter_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
    merged = merge_lora_state(load_state(base_dir), adapter_dir)
    with atomic_dir(out_dir / "model") as tmp:
        save_state_dict_dir(merged, read_config(base_dir), tmp)
        copy_tokenizer_files(base_dir, tmp)
        write_marker(tmp, kind="teacher", adapter=str(adapter_dir))
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return {"train_seconds": round(train_s, 1), "examples": len(ex), "lora_r": lora_r,
            "lora_alpha": lora_alpha, "history": history[-5:],
            "final_loss": next((h["loss"] for h in reversed(history) if "loss" in h), None)}


# ----------------------------------------------------------------------------- distillation
def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def teacher_targets(teacher_model: torch.nn.Module, tok: Any, texts: list[str], cache_file: Path | None,
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


def freeze_embeddings(model: torch.nn.Module) -> None:
    """Freeze input embeddings (and so the tied head): only layers + norm train and ship."""
    model.get_input_embeddings().weight.requires_grad_(False)
    out = model.get_output_embeddings()
    if out is not None:
        out.weight.requires_grad_(False)


def teacher_signal(
    loss: LossSpec,
    teacher_model: torch.nn.Module | None,
    examples: list[Example] | SparseDataset,
    layer_map: list[int] | None,
    extra_teachers: list[tuple[torch.nn.Module, float]] = (),
    teacher_vocab: TeacherVocab | None = None,
) -> TeacherSignal | None:
    """The soft-target source of a student run, or None (hard targets only).

    Top-k targets carried by an API teacher's dataset win; otherwise a local teacher model
    gives full logits. Gold-label students and ``alpha = 0`` use no teacher signal.
    """
    if loss.targets != "teacher" or loss.alpha == 0:
        return None
    if isinstance(examples, SparseDataset):
        return SparseTeacherSignal()
    if teacher_model is not None:
        return DenseTeacherSignal(teacher_model, layer_map or [], weight=loss.teacher_weight, extra=extra_teachers,
                                  vocab=teacher_vocab)
    return None


def train_student(
    student_dir: Path,
    teacher_model: torch.nn.Module | None,
    tok: Any,
    examples: list[Example] | SparseDataset,
    recipe: Recipe,
    out_dir: Path,
    layer_map: list[int] | None = None,
    eval_examples: list[Example] | SparseDataset | None = None,
    extra_teachers: list[tuple[torch.nn.Module, float]] = (),
    teacher_vocab: TeacherVocab | None = None,
) -> dict:
    """Train one student with :class:`KDTrainer`; write ``out_dir/model``; return stats.

    ``examples``: tokenised examples (sequence-level KD or gold targets), or an API
    teacher's :class:`SparseDataset` (top-k targets). ``layer_map``: the teacher layer
    each student layer came from (hidden-state loss). ``eval_examples`` (the validation
    split, same kind as ``examples``) with ``train.early_stopping_patience``: the epoch is
    chosen by validation loss, and the choice is reported under ``selection``.
    ``teacher_vocab``: the student's vocabulary was trimmed before training (``tok`` and the
    examples are the trimmed ones; the teacher is read through it).
    """
    spec = recipe.train
    torch.manual_seed(spec.seed)
    model = load_model(student_dir)
    if recipe.student.freeze_embeddings:
        freeze_embeddings(model)
    history: list[dict] = []
    ckpt_dir = Path(out_dir) / "checkpoints"
    sparse = isinstance(examples, SparseDataset)
    dataset = dist.SeenDataset(examples if sparse else ExampleDataset(examples))
    select = bool(eval_examples) and spec.early_stopping_patience is not None
    callbacks: list = [HistoryCallback(history)]
    if select:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=spec.early_stopping_patience))
    trainer = KDTrainer(
        model=model,
        args=training_args(spec, ckpt_dir, len(examples), evaluate=select),
        train_dataset=dataset,
        eval_dataset=(eval_examples if sparse else ExampleDataset(eval_examples)) if select else None,
        data_collator=examples.collator if sparse else RightPadCollator(tok.pad_token_id),
        callbacks=callbacks,
        loss_spec=recipe.loss if recipe.loss.targets == "teacher" else HARD_ONLY,
        signal=teacher_signal(recipe.loss, teacher_model, examples, layer_map, extra_teachers, teacher_vocab),
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
    )
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=latest_checkpoint(ckpt_dir))
    secs = time.perf_counter() - t0
    seen = dist.gather_object(dataset.seen)  # collective: every rank
    digests = dist.gather_object(dist.trainable_digest(trainer.model)) if dist.enabled() else None
    a = trainer.args
    parallel = {"world_size": a.world_size, "backend": dist.backend(),
                "per_device_batch": a.per_device_train_batch_size, "grad_accum": a.gradient_accumulation_steps,
                "global_batch": a.per_device_train_batch_size * a.gradient_accumulation_steps * a.world_size,
                **dist.split_stats(seen, len(dataset))}
    if digests is not None:  # DDP averaged the gradients: every replica ends with the same weights
        parallel["replicas_identical"] = len(set(digests)) == 1
    if dist.is_main():  # DDP replicas are identical: one rank writes
        info = {"kind": "student", "recipe": recipe.name, "seed": spec.seed}
        save_model_dir(trainer.model, student_dir, Path(out_dir) / "model", info)
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    dist.barrier()  # the next stage (or the card) reads out_dir/model
    selection = None
    if select:
        curve = [{"epoch": h.get("epoch"), "step": h["step"], "eval_loss": h["eval_loss"]} for h in history if "eval_loss" in h]
        best = min(curve, key=lambda c: c["eval_loss"]) if curve else None
        selection = {"by": "validation loss (the training objective on the validation split); test not used",
                     "patience": spec.early_stopping_patience, "best": best, "curve": curve,
                     "epochs_run": trainer.state.epoch}
    return {"train_seconds": round(secs, 1), "steps": trainer.state.global_step, "history": history,
            "parallel": parallel, "selection": selection}


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
    chat = recipe.data.format == "chat_jsonl"
    if chat:  # the system prompt and the answers come from the data
        records = read_chat_jsonl(recipe.data.train_path(), recipe.data.max_train)
        val_path = recipe.data.split_path("validation")
        val_records = read_chat_jsonl(val_path) if recipe.train.early_stopping_patience and val_path.is_file() else []
        texts, rows = [last_user_text(r) for r in records], []
    else:
        rows = subsample(read_csv(recipe.data.train_path()), recipe.data.max_train, seed=0)
        texts = [r["text"] for r in rows]
    eval_examples = None
    data_info: dict = {}
    depths = recipe.stages or [recipe.student.layers]
    stage_teacher_dir = teacher_dir
    stages = []
    trim_examples = None  # stage 0's examples: what the vocabulary is trimmed to
    trim = None
    for i, depth in enumerate(depths):
        sdir = out / (f"stage{i}-{depth}l" if len(depths) > 1 else "run")
        log(f"stage {i}: {depth}-layer student from {stage_teacher_dir}")
        init_dir = sdir / "init"
        with dist.main_first():
            if not (init_dir / "config.json").is_file():
                if recipe.student.init == "layer_drop":
                    layer_drop(stage_teacher_dir, init_dir, depth,
                               intermediate_size=recipe.student.intermediate_size if i == 0 else None)
                else:
                    from_scratch(stage_teacher_dir, init_dir, depth, recipe.student.hidden_size,
                                 recipe.student.intermediate_size, recipe.train.seed)
        kept = json.loads((init_dir / "student_init.json").read_text()).get("kept_layers")
        dtype = torch.bfloat16 if on_gpu() else torch.float32
        teacher_model = None
        if chat:
            # The answers are the teacher's (captured), or gold; soft targets: captured top-k, else
            # the local teacher's full logits (``loss.targets: teacher``), else none (hard only).
            sparse_ok = recipe.loss.targets == "teacher" and i == 0
            built = chat_examples(tok, records, recipe.train.max_len, recipe.data.top_k, use_logprobs=sparse_ok)
            if recipe.loss.targets == "teacher" and not isinstance(built.examples, SparseDataset):
                teacher_model = load_model(stage_teacher_dir, dtype=dtype)
            examples, data_info = built.examples, built.info
            if val_records:
                eval_examples = chat_examples(tok, val_records, recipe.train.max_len, recipe.data.top_k,
                                              use_logprobs=isinstance(examples, SparseDataset)).examples
        elif recipe.api_teacher is not None and i == 0:
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
        extra = load_extra_teachers(recipe.loss, cache, dtype) if teacher_model is not None and i == 0 else []
        trim_examples = trim_examples if trim_examples is not None else examples
        train_dir, student_tok, teacher_vocab = init_dir, tok, None
        if recipe.student.trim_before_training:
            train_dir = sdir / "init-trimmed"
            with dist.main_first():
                t0 = time.perf_counter()
                trim, examples, eval_examples, teacher_vocab = trim_before_training(
                    init_dir, train_dir, examples, eval_examples, tok)
                trim["seconds"] = round(time.perf_counter() - t0, 1)
            student_tok = load_tokenizer(train_dir)
            log(f"vocabulary trimmed before training: {trim['vocab_before']} -> {trim['vocab_after']} tokens")
        stats = train_student(train_dir, teacher_model, student_tok, examples, recipe, sdir, kept, eval_examples,
                              extra, teacher_vocab)
        del teacher_model, extra
        stages.append({"layers": depth, "teacher": str(stage_teacher_dir), "kept_layers": kept,
                       "train_seconds": stats["train_seconds"], "steps": stats["steps"],
                       "first_losses": next((h for h in stats["history"] if "loss" in h), None),
                       "final_losses": next((h for h in reversed(stats["history"]) if "loss" in h), None),
                       "train_summary": next((h for h in reversed(stats["history"]) if "train_loss" in h), None),
                       "parallel": stats["parallel"], "selection": stats["selection"], "data": data_info or None})
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
        if recipe.student.trim_before_training:
            shutil.copytree(stage_teacher_dir, final)  # trained trimmed: `trim` is the summary from above
        elif recipe.student.trim_vocab:
            from distill.vocab_trim import trim_trained_student

            untrimmed = out / "model-untrimmed"
            shutil.rmtree(untrimmed, ignore_errors=True)
            t0 = time.perf_counter()
            trim = trim_trained_student(stage_teacher_dir, final, trim_examples, recipe.student.trim_own_answers)
            shutil.copytree(stage_teacher_dir, untrimmed)
            trim["seconds"] = round(time.perf_counter() - t0, 1)
            log(f"vocabulary trimmed: {trim['vocab_before']} -> {trim['vocab_after']} tokens "
                f"(untrimmed model: {untrimmed})")
        else:
            shutil.copytree(stage_teacher_dir, final)
        card = make_card(recipe, teacher_dir, final, stages, len(texts))
        if trim is not None:
            card["student"]["vocab_trim"] = trim
        (out / "distill_card.json").write_text(json.dumps(card, indent=2, default=str))
        shutil.copy2(out / "distill_card.json", final / "distill_card.json")
    dist.barrier()
    if card is None:
        card = json.loads((out / "distill_card.json").read_text())
    return card
