"""Where the soft (distillation) targets of a batch come from: two small strategies.

The trainer computes the student's forward pass and the hard loss; a :class:`TeacherSignal`
turns the same batch into the soft term (and, where the teacher's internals are visible,
the hidden-state term). Two sources, as in DistillKit's ``SignalSource``:

* :class:`DenseTeacherSignal`: local teacher models run on the batch; full logits, so any
  divergence of :mod:`distill.losses` (forward/reverse KL, JSD), a mixture of several
  teachers, and the feature terms (hidden-state cosine, relations between examples or
  tokens, attention maps) are available.
* :class:`SparseTeacherSignal`: the teacher seen only through its top-k logprobs per
  response token (an API teacher, or captured logprobs), carried in the batch as
  ``topk_ids`` / ``topk_logprobs``; sparse top-k KL, no hidden states.

Keeping them apart means a new source (say, logits cached on disk) is one more class,
not one more branch in ``compute_loss``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch

from distill import losses
from distill.recipe import LossSpec

if TYPE_CHECKING:
    from distill.trim_first import TeacherVocab


@dataclass
class StudentPass:
    """The student's forward pass on one batch, as the signals need it.

    ``logits``: response positions only, ``(n_tokens, V)``; ``mask``: which of the shifted
    positions ``(B, L - 1)`` those are; ``hidden_states``: per layer, when asked for;
    ``positions``: the sequence positions the model computed logits for (``logits_to_keep``,
    see :func:`response_positions`), or None when it computed them everywhere.
    """

    logits: torch.Tensor
    mask: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None
    attentions: tuple[torch.Tensor, ...] | None = None
    positions: torch.Tensor | None = None


def response_positions(mask: torch.Tensor) -> torch.Tensor:
    """The positions whose logits any loss reads: those where some row of the batch has a target.

    ``mask``: the shifted target mask ``(B, L - 1)`` (logits at position ``p`` predict token
    ``p + 1``). Prompts are most of a chat example and the output head over a 49k vocabulary is
    the largest matrix of a layer-dropped student, so computing logits only here (transformers'
    ``logits_to_keep`` with a tensor of positions) saves a third or more of a CPU training step.
    """
    return mask.any(dim=0).nonzero().squeeze(-1)


def select_logits(logits: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
    """``(n_tokens, V)``: the logits at the masked shifted positions, whether the model computed
    logits everywhere (``positions`` None: ``(B, L, V)``) or only at ``positions``."""
    if positions is None:
        return logits[:, :-1][mask]
    return logits[mask[:, positions]]


def supports_logits_to_keep(model: torch.nn.Module) -> bool:
    """Whether the model's forward takes ``logits_to_keep`` (transformers' causal LMs do; a PEFT
    wrapper passes it on to its base model)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


#: The loss parts a signal may return; the trainer logs each (``loss_soft`` ...) and weights them.
SIGNAL_PARTS = ("soft", "hidden", "relation", "attention")


def needs_attentions(spec: LossSpec) -> bool:
    return spec.attention_weight > 0


def use_eager_attention(model: torch.nn.Module) -> None:
    """Attention probabilities are only returned by the eager implementation (not SDPA/flash)."""
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    else:  # older transformers
        model.config._attn_implementation = "eager"


class TeacherSignal(ABC):
    """Soft targets for a batch; the trainer mixes them with the hard loss."""

    def wants_hidden(self, spec: LossSpec) -> bool:
        """Whether the student's forward pass must return hidden states for this signal."""
        return False

    def wants_attentions(self, spec: LossSpec) -> bool:
        """Whether the student's forward pass must return attention probabilities."""
        return False

    @abstractmethod
    def losses(self, inputs: dict[str, torch.Tensor], student: StudentPass,
               spec: LossSpec) -> dict[str, torch.Tensor]:
        """The signal's loss terms for the batch, by name (:data:`SIGNAL_PARTS`; absent = zero)."""


class DenseTeacherSignal(TeacherSignal):
    """Local, frozen teacher models run on the same batch (full logits).

    One teacher: its distribution is the soft target. Several (``extra``, each with a weight,
    next to the first teacher's ``weight``): the target is the weighted mixture of their
    softened distributions (:func:`distill.losses.mixture_log_probs`; the teachers must share
    the tokenizer). Hidden-state, relation and attention terms compare the student with the
    first teacher, whose layers it was copied from (``layer_map``).
    """

    def __init__(self, teacher: torch.nn.Module, layer_map: Sequence[int] = (), *,
                 weight: float = 1.0, extra: Sequence[tuple[torch.nn.Module, float]] = (),
                 vocab: "TeacherVocab | None" = None) -> None:
        """``layer_map[s]``: the teacher layer student layer ``s`` is compared with (hidden loss).
        ``vocab``: the student's vocabulary was trimmed before training
        (:mod:`distill.trim_first`); the teachers keep theirs and are read through it."""
        self.teacher = teacher
        self.vocab = vocab
        self.layer_map = list(layer_map)
        self.teachers = [(teacher, float(weight)), *((m, float(w)) for m, w in extra)]
        # checked once here, not per batch (inspecting a forward signature every step is wasted work)
        self._logits_to_keep = {id(m): supports_logits_to_keep(m) for m, _ in self.teachers}
        for model, _ in self.teachers:
            model.eval()  # frozen: never stepped, no dropout
            for p in model.parameters():
                p.requires_grad_(False)

    def wants_hidden(self, spec: LossSpec) -> bool:
        return (spec.hidden_weight > 0 and bool(self.layer_map)) or spec.relation_weight > 0

    def wants_attentions(self, spec: LossSpec) -> bool:
        return needs_attentions(spec) and bool(self.layer_map)

    def losses(self, inputs: dict[str, torch.Tensor], student: StudentPass,
               spec: LossSpec) -> dict[str, torch.Tensor]:
        device = student.logits.device
        for model, _ in self.teachers:
            if next(model.parameters()).device != device:
                model.to(device)  # Trainer places the student; the teachers follow it
        want_hidden, want_att = self.wants_hidden(spec), self.wants_attentions(spec)
        if want_att:
            use_eager_attention(self.teacher)
        input_ids = inputs["input_ids"] if self.vocab is None else self.vocab.to_teacher(inputs["input_ids"])
        batch = {"input_ids": input_ids, "attention_mask": inputs["attention_mask"]}
        keep = student.positions

        def run(model: torch.nn.Module, **kwargs) -> tuple[object, torch.Tensor]:
            positions = keep if keep is not None and self._logits_to_keep[id(model)] else None
            out = model(**batch, **kwargs, **({"logits_to_keep": positions} if positions is not None else {}))
            selected = select_logits(out.logits, student.mask, positions)
            return out, selected if self.vocab is None else self.vocab.restrict(selected)

        with torch.no_grad():
            t_out, t_sel = run(self.teacher, output_hidden_states=want_hidden, output_attentions=want_att)
            others = [(run(m)[1], w) for m, w in self.teachers[1:]]
        if others:
            target = losses.mixture_log_probs([t_sel, *(o for o, _ in others)],
                                              [self.teachers[0][1], *(w for _, w in others)], spec.temperature)
            soft = losses.soft_loss_to_log_probs(spec.soft, student.logits, target, spec.temperature, beta=spec.beta)
        else:
            soft = losses.soft_loss(spec.soft, student.logits, t_sel, spec.temperature, beta=spec.beta)
        parts = {"soft": soft}
        att_mask = inputs["attention_mask"].bool()
        if want_hidden and spec.hidden_weight > 0 and self.layer_map:
            terms = [losses.hidden_cosine(student.hidden_states[s + 1], t_out.hidden_states[t + 1], att_mask)
                     for s, t in enumerate(self.layer_map)]
            parts["hidden"] = torch.stack(terms).mean()
        if spec.relation_weight > 0:
            parts["relation"] = relation_loss(spec, student.hidden_states[-1], t_out.hidden_states[-1], att_mask)
        if want_att:
            terms = [losses.attention_map_mse(student.attentions[s], t_out.attentions[t], att_mask)
                     for s, t in enumerate(self.layer_map)]
            parts["attention"] = torch.stack(terms).mean()
        return parts


def relation_loss(spec: LossSpec, student_last: torch.Tensor, teacher_last: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
    """The recipe's relation term on the last hidden layer: ``batch`` (similarity between the
    batch's examples, mean-pooled over their tokens) or ``minilm`` (self-attention relations
    of the tokens within each example)."""
    if spec.relation == "minilm":
        return losses.attention_relation_kl(student_last, teacher_last, spec.relation_heads, mask)
    weights = mask.to(student_last.dtype).unsqueeze(-1)
    pool = lambda h: (h.float() * weights).sum(1) / weights.sum(1).clamp_min(1.0)  # noqa: E731
    return losses.similarity_preserving(pool(student_last), pool(teacher_last))


class SparseTeacherSignal(TeacherSignal):
    """Top-k teacher logprobs carried in the batch (``topk_ids`` / ``topk_logprobs``)."""

    def losses(self, inputs: dict[str, torch.Tensor], student: StudentPass,
               spec: LossSpec) -> dict[str, torch.Tensor]:
        mask = student.mask
        soft = losses.sparse_topk_kl(student.logits, inputs["topk_ids"][:, 1:][mask],
                                     inputs["topk_logprobs"][:, 1:][mask], spec.temperature)
        return {"soft": soft}
