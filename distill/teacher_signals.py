"""Where the soft (distillation) targets of a batch come from: two small strategies.

The trainer computes the student's forward pass and the hard loss; a :class:`TeacherSignal`
turns the same batch into the soft term (and, where the teacher's internals are visible,
the hidden-state term). Two sources, as in DistillKit's ``SignalSource``:

* :class:`DenseTeacherSignal`: a local teacher model run on the batch; full logits, so any
  divergence of :mod:`distill.losses` (forward/reverse KL, JSD) and the hidden-state cosine
  loss are available.
* :class:`SparseTeacherSignal`: the teacher seen only through its top-k logprobs per
  response token (an API teacher, or captured logprobs), carried in the batch as
  ``topk_ids`` / ``topk_logprobs``; sparse top-k KL, no hidden states.

Keeping them apart means a new source (say, logits cached on disk) is one more class,
not one more branch in ``compute_loss``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

import torch

from distill import losses
from distill.recipe import LossSpec


@dataclass
class StudentPass:
    """The student's forward pass on one batch, as the signals need it.

    ``logits``: response positions only, ``(n_tokens, V)``; ``mask``: which of the shifted
    positions ``(B, L - 1)`` those are; ``hidden_states``: per layer, when asked for.
    """

    logits: torch.Tensor
    mask: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None


class TeacherSignal(ABC):
    """Soft targets for a batch; the trainer mixes them with the hard loss."""

    def wants_hidden(self, spec: LossSpec) -> bool:
        """Whether the student's forward pass must return hidden states for this signal."""
        return False

    @abstractmethod
    def losses(self, inputs: dict[str, torch.Tensor], student: StudentPass,
               spec: LossSpec) -> tuple[torch.Tensor, torch.Tensor]:
        """``(soft, hidden)`` loss terms for the batch (``hidden`` is zero when not used)."""


class DenseTeacherSignal(TeacherSignal):
    """A local, frozen teacher model run on the same batch (full logits)."""

    def __init__(self, teacher: torch.nn.Module, layer_map: Sequence[int] = ()) -> None:
        """``layer_map[s]``: the teacher layer student layer ``s`` is compared with (hidden loss)."""
        self.teacher = teacher
        self.layer_map = list(layer_map)
        teacher.eval()  # frozen: never stepped, no dropout
        for p in teacher.parameters():
            p.requires_grad_(False)

    def wants_hidden(self, spec: LossSpec) -> bool:
        return spec.hidden_weight > 0 and bool(self.layer_map)

    def losses(self, inputs: dict[str, torch.Tensor], student: StudentPass,
               spec: LossSpec) -> tuple[torch.Tensor, torch.Tensor]:
        device = student.logits.device
        if next(self.teacher.parameters()).device != device:
            self.teacher.to(device)  # Trainer places the student; the teacher follows it
        want_hidden = self.wants_hidden(spec)
        with torch.no_grad():
            t_out = self.teacher(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                 output_hidden_states=want_hidden)
        t_sel = t_out.logits[:, :-1][student.mask]
        soft = losses.soft_loss(spec.soft, student.logits, t_sel, spec.temperature, beta=spec.beta)
        hidden = torch.zeros((), device=device)
        if want_hidden:
            att = inputs["attention_mask"].bool()
            terms = [losses.hidden_cosine(student.hidden_states[s + 1], t_out.hidden_states[t + 1], att)
                     for s, t in enumerate(self.layer_map)]
            hidden = torch.stack(terms).mean()
        return soft, hidden


class SparseTeacherSignal(TeacherSignal):
    """Top-k teacher logprobs carried in the batch (``topk_ids`` / ``topk_logprobs``)."""

    def losses(self, inputs: dict[str, torch.Tensor], student: StudentPass,
               spec: LossSpec) -> tuple[torch.Tensor, torch.Tensor]:
        mask = student.mask
        soft = losses.sparse_topk_kl(student.logits, inputs["topk_ids"][:, 1:][mask],
                                     inputs["topk_logprobs"][:, 1:][mask], spec.temperature)
        return soft, torch.zeros((), device=soft.device)
