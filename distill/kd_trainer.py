"""``KDTrainer``: transformers' ``Trainer`` with a distillation loss, plus its arguments.

Why a ``Trainer`` subclass (as TRL's ``GKDTrainer``) and not a hand-written loop: device
placement, bf16, gradient accumulation, checkpoints and resuming, DDP under torchrun or
accelerate all come with it, and the same code runs the CPU test recipe and the GPU one.

The loss per batch is ``alpha * soft + (1 - alpha) * hard`` plus the weighted feature terms:
``hard`` is cross-entropy on the targets in the batch (the teacher's own generations for
sequence-level KD, or dataset labels), ``soft`` and ``hidden`` come from a
:class:`~distill.teacher_signals.TeacherSignal`; with no signal (or ``alpha = 0``) the
loss is ``hard`` alone (hard-label students, teacher fine-tuning).
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from distill import dist, losses
from distill.modeling import default_device, on_gpu
from distill.recipe import LossSpec, TrainSpec
from distill.on_policy import student_samples
from distill.teacher_signals import (DenseTeacherSignal, StudentPass, TeacherSignal, response_positions,
                                     select_logits, supports_logits_to_keep, use_eager_attention)

#: The loss parts logged next to Trainer's ``loss`` (``loss_soft`` ...), in this order.
LOSS_PARTS = ("soft", "hard", "hidden", "relation", "attention", "on_policy")


class KDTrainer(Trainer):
    """``Trainer`` whose ``compute_loss`` mixes a teacher signal with the hard loss.

    ``loss = alpha * soft + (1 - alpha) * hard + hidden_weight * hidden + relation_weight *
    relation + attention_weight * attention``; on the on-policy share of batches (the student's
    own samples, :mod:`distill.on_policy`) the hard term is dropped (``alpha`` counts as 1).
    """

    def __init__(self, *args: Any, loss_spec: LossSpec, signal: TeacherSignal | None = None,
                 pad_token_id: int | None = None, eos_token_id: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loss_spec = loss_spec
        self.signal = signal
        self.pad_token_id, self.eos_token_id = pad_token_id, eos_token_id
        self._parts: dict[str, list[float]] = {}
        self._keep_supported: bool | None = None
        self._coin = random.Random(self.args.seed + 7919 * max(0, self.args.process_index))
        if signal is not None and signal.wants_attentions(loss_spec):
            use_eager_attention(self.model)

    def _on_policy(self, model) -> bool:
        spec = self.loss_spec
        return (spec.on_policy > 0 and isinstance(self.signal, DenseTeacherSignal) and model.training
                and self.pad_token_id is not None and self._coin.random() < spec.on_policy)

    def _logits_to_keep(self, model) -> bool:
        """Whether the student's forward can compute logits at chosen positions only (checked once)."""
        if self._keep_supported is None:
            self._keep_supported = supports_logits_to_keep(self.accelerator.unwrap_model(model))
        return self._keep_supported

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        spec = self.loss_spec
        signal = self.signal if spec.alpha > 0 else None
        on_policy = signal is not None and self._on_policy(model)
        if on_policy:
            inputs = student_samples(self.accelerator.unwrap_model(model), inputs, pad_token_id=self.pad_token_id,
                                     eos_token_id=self.eos_token_id, max_new_tokens=spec.on_policy_max_new_tokens,
                                     temperature=spec.on_policy_temperature)
        tgt = inputs["labels"][:, 1:]
        mask = tgt != losses.IGNORE_INDEX
        # logits only where a loss reads them (the prompt's positions are most of the sequence)
        positions = response_positions(mask) if self._logits_to_keep(model) else None
        out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                    output_hidden_states=signal is not None and signal.wants_hidden(spec),
                    output_attentions=signal is not None and signal.wants_attentions(spec),
                    **({"logits_to_keep": positions} if positions is not None else {}))
        s_sel = select_logits(out.logits, mask, positions)
        hard = losses.hard_ce(s_sel, tgt[mask])
        zero = torch.zeros((), device=hard.device)
        if signal is None:
            parts, loss = {}, hard
        else:
            parts = signal.losses(inputs, StudentPass(s_sel, mask, out.hidden_states,
                                                      getattr(out, "attentions", None), positions), spec)
            loss = (parts["soft"] if on_policy else losses.mix(parts["soft"], hard, spec.alpha))
            for name, weight in (("hidden", spec.hidden_weight), ("relation", spec.relation_weight),
                                 ("attention", spec.attention_weight)):
                if name in parts:
                    loss = loss + weight * parts[name]
        values = {**parts, "hard": hard, "on_policy": torch.tensor(float(on_policy))}
        for k in LOSS_PARTS:
            self._parts.setdefault(k, []).append(float(values.get(k, zero).detach()))
        return (loss, out) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Add the mean loss parts since the last log (over all ranks under DDP)."""
        parts = {k: (sum(v), len(v)) for k, v in self._parts.items() if v}
        if dist.enabled() and torch.distributed.is_initialized():
            # Trainer calls log() on every rank (after its own all-gather of the loss):
            # average the loss parts over all ranks, not just rank 0's share of the batch
            t = torch.tensor([x for k in LOSS_PARTS for x in parts.get(k, (0.0, 0))], dtype=torch.float64)
            if dist.backend() == "nccl":
                t = t.to(default_device())
            torch.distributed.all_reduce(t)
            t = t.cpu().tolist()
            parts = {k: (t[2 * i], t[2 * i + 1]) for i, k in enumerate(LOSS_PARTS) if t[2 * i + 1] > 0}
        for k, (total, n) in parts.items():
            logs[f"loss_{k}"] = round(total / n, 5)
        self._parts = {}
        super().log(logs, *args, **kwargs)


class HistoryCallback(TrainerCallback):
    """Collects logged numbers (for the card, and so tests can check the loss went down)."""

    def __init__(self, history: list[dict]) -> None:
        self.history = history

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            self.history.append({"step": state.global_step,
                                 **{k: v for k, v in logs.items() if isinstance(v, (int, float))}})


def training_args(spec: TrainSpec, out_dir: Path, n_examples: int, evaluate: bool = False) -> TrainingArguments:
    """``TrainingArguments`` for a recipe's train spec (cosine schedule, warm-up as a ratio).

    ``evaluate``: score the validation split every epoch, checkpoint every epoch and load the
    epoch with the lowest validation loss at the end (early stopping is a callback).
    """
    bf16 = spec.bf16 if spec.bf16 is not None else on_gpu()
    # global batch = per-device batch x grad accumulation x processes (DDP)
    steps_per_epoch = math.ceil(n_examples / (spec.batch_size * spec.grad_accum * dist.world_size()))
    ddp = {}
    if dist.enabled():
        # CPU DDP needs gloo (Trainer would pick it too, but say so); on CUDA: NCCL
        ddp = {"ddp_backend": dist.backend(), "ddp_timeout": spec.ddp_timeout,
               "ddp_find_unused_parameters": False}
    total = spec.max_steps if spec.max_steps > 0 else math.ceil(steps_per_epoch * spec.epochs)
    selection = {}
    if evaluate:
        selection = {"eval_strategy": "epoch", "save_strategy": "epoch", "load_best_model_at_end": True,
                     "metric_for_best_model": "eval_loss", "greater_is_better": False,
                     "prediction_loss_only": True, "per_device_eval_batch_size": spec.batch_size}
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
        **({} if evaluate else {"save_strategy": "steps" if spec.save_steps else "no"}),
        save_steps=spec.save_steps or 500,
        save_total_limit=2 if evaluate else 1,  # the best epoch's checkpoint and the latest
        report_to=[],
        bf16=bool(bf16),
        use_cpu=not on_gpu(),
        seed=spec.seed,
        data_seed=spec.seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=False,
        **ddp,
        **selection,
    )


def latest_checkpoint(out_dir: Path) -> str | None:
    """The newest ``checkpoint-N`` under ``out_dir`` (to resume from), or None."""
    ckpts = sorted(Path(out_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(ckpts[-1]) if ckpts else None
