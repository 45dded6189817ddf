"""Distillation losses, each a small function over already-aligned logits.

Conventions (all functions):

* ``student_logits`` / ``teacher_logits``: ``(..., V)`` float tensors for the *same*
  positions (callers shift and select response positions first).
* ``mask``: optional boolean ``(...)``; only ``True`` positions count. Losses are means
  over counted positions (a per-token average, so batch size and length do not rescale
  the loss).
* Soft losses are multiplied by ``T**2`` (Hinton et al., 2015): gradients of a softened
  KL shrink like ``1/T**2``, and the factor keeps the soft term's magnitude comparable
  with the hard term when ``T`` changes, so ``alpha`` means the same thing at any ``T``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def _masked_mean(per_pos: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return per_pos.mean()
    mask = mask.to(per_pos.dtype)
    return (per_pos * mask).sum() / mask.sum().clamp_min(1.0)


def forward_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``T^2 * KL(p_teacher || p_student)`` at temperature ``T``: mode-covering, the classic KD loss."""
    t = float(temperature)
    log_p_s = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.float() / t, dim=-1)
    per_pos = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)
    return (t * t) * _masked_mean(per_pos, mask)


def reverse_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``T^2 * KL(p_student || p_teacher)``: mode-seeking (MiniLLM); the student need not cover every teacher mode."""
    t = float(temperature)
    log_p_s = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.float() / t, dim=-1)
    per_pos = (log_p_s.exp() * (log_p_s - log_p_t)).sum(-1)
    return (t * t) * _masked_mean(per_pos, mask)


def generalized_jsd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    beta: float = 0.5,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Generalized Jensen-Shannon divergence (GKD, Agarwal et al. 2024; TRL's definition).

    ``M = beta * p_t + (1 - beta) * p_s``;
    ``JSD_beta = beta * KL(p_t || M) + (1 - beta) * KL(p_s || M)``, times ``T^2``.
    ``beta = 0.5`` is the symmetric JSD; like TRL's GKD, ``beta = 0`` returns forward KL
    and ``beta = 1`` reverse KL (the divergences the family interpolates between). Bounded, so robust to a
    student that puts mass where the teacher has none.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    t = float(temperature)
    log_p_s = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.float() / t, dim=-1)
    if beta == 0.0:  # limits as in TRL: the divergences the family interpolates between
        per_pos = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)  # forward KL
    elif beta == 1.0:
        per_pos = (log_p_s.exp() * (log_p_s - log_p_t)).sum(-1)  # reverse KL
    else:
        log_m = torch.logsumexp(
            torch.stack([log_p_t + torch.log(torch.tensor(beta)), log_p_s + torch.log(torch.tensor(1 - beta))]),
            dim=0,
        )
        kl_t = (log_p_t.exp() * (log_p_t - log_m)).sum(-1)
        kl_s = (log_p_s.exp() * (log_p_s - log_m)).sum(-1)
        per_pos = beta * kl_t + (1 - beta) * kl_s
    return (t * t) * _masked_mean(per_pos, mask)


def hard_ce(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy against hard token labels (positions with ``-100`` or mask False ignored)."""
    labels = labels.clone()
    if mask is not None:
        labels[~mask.bool()] = IGNORE_INDEX
    per_pos = F.cross_entropy(
        student_logits.float().reshape(-1, student_logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).reshape(labels.shape)
    return _masked_mean(per_pos, labels != IGNORE_INDEX)


def sparse_topk_kl(
    student_logits: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_logprobs: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """KD from a teacher seen only through its top-k logprobs (an API teacher, captured traffic).

    ``topk_ids``/``topk_logprobs``: ``(..., k)``; padding candidates have id ``-1``.
    Both distributions are coarsened to the teacher's k candidates plus one bucket for every
    other token (the teacher's bucket holds the probability its top-k leave over; the
    student's, its full softmax's mass outside them), then tempered alike, and the loss is
    ``T^2 * KL(teacher || student)`` over those k + 1 outcomes. It is zero when the student
    gives the k tokens the teacher's probabilities, and, unlike a KL restricted to the k
    tokens, it charges the student for mass it puts elsewhere: restricted, a student could
    rank the k tokens right while its most likely token was one the teacher never proposed.
    """
    t = float(temperature)
    valid = topk_ids >= 0
    ids = topk_ids.clamp_min(0)
    tiny = torch.finfo(torch.float32).tiny
    z = student_logits.float()
    log_z = torch.logsumexp(z, -1, keepdim=True)
    log_p = (torch.gather(z, -1, ids) - log_z).masked_fill(~valid, float("-inf"))
    # The student's mass outside the candidates, from its logits (1 - sum would cancel badly).
    candidate = torch.zeros_like(z).scatter_reduce(-1, ids, valid.float(), reduce="amax") > 0
    log_p_rest = torch.logsumexp(z.masked_fill(candidate, float("-inf")), -1, keepdim=True) - log_z
    log_q = topk_logprobs.float().masked_fill(~valid, float("-inf"))
    log_q_rest = (1.0 - log_q.exp().sum(-1, keepdim=True)).clamp_min(tiny).log()

    def coarse(log_top: torch.Tensor, log_rest: torch.Tensor) -> torch.Tensor:
        """k log-probabilities + the log of what they leave over, tempered and renormalised."""
        return F.log_softmax(torch.cat([log_top, log_rest], -1) / t, dim=-1)

    coarse_q, coarse_p = coarse(log_q, log_q_rest), coarse(log_p, log_p_rest)
    per_pos = torch.where(coarse_q > float("-inf"), coarse_q.exp() * (coarse_q - coarse_p),
                          torch.zeros_like(coarse_q)).sum(-1)
    if mask is not None:
        mask = mask.bool() & valid.any(-1)
    else:
        mask = valid.any(-1)
    return (t * t) * _masked_mean(per_pos, mask)


def mix(soft: torch.Tensor, hard: torch.Tensor, alpha: float = 0.9) -> torch.Tensor:
    """``alpha * soft + (1 - alpha) * hard``; alpha = 1 is soft-only, 0 is hard-only."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return alpha * soft + (1.0 - alpha) * hard


def soft_loss(
    kind: str,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
    beta: float = 0.5,
) -> torch.Tensor:
    """Dispatch by name: ``forward_kl`` | ``reverse_kl`` | ``jsd``."""
    if kind == "forward_kl":
        return forward_kl(student_logits, teacher_logits, temperature, mask)
    if kind == "reverse_kl":
        return reverse_kl(student_logits, teacher_logits, temperature, mask)
    if kind == "jsd":
        return generalized_jsd(student_logits, teacher_logits, beta, temperature, mask)
    raise ValueError(f"unknown soft loss {kind!r}")


def hidden_cosine(
    student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``1 - cos`` between aligned hidden states (DistilBERT's cosine embedding loss)."""
    cos = F.cosine_similarity(student_hidden.float(), teacher_hidden.float(), dim=-1)
    return _masked_mean(1.0 - cos, mask)


def similarity_preserving(student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """Relation-based KD (similarity-preserving, Tung & Mori 2019): the student matches how the
    teacher relates the *examples of a batch* to each other, not each example's output.

    ``*_features``: ``(B, D_s)`` / ``(B, D_t)`` one vector per example (e.g. the mean of the
    last hidden layer over its tokens); the widths may differ. Each side's ``B x B`` Gram matrix
    is row-normalised; the loss is their mean squared difference (Frobenius^2 / B^2). Zero when
    the student's batch geometry equals the teacher's, whatever its scale or rotation.
    """
    if student_features.shape[0] != teacher_features.shape[0]:
        raise ValueError("student and teacher features must hold the same examples")
    g_s = F.normalize(student_features.float() @ student_features.float().T, dim=1)
    g_t = F.normalize(teacher_features.float() @ teacher_features.float().T, dim=1)
    return ((g_s - g_t) ** 2).mean()


def attention_relation_kl(
    student_states: torch.Tensor,
    teacher_states: torch.Tensor,
    heads: int,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """MiniLM-v2-style self-attention relation transfer (Wang et al., 2021).

    ``*_states``: ``(B, L, D)`` queries, keys or values of one layer (the widths may differ).
    Each side is split into the same number of relation ``heads``; the relation of a head is
    ``softmax(X X^T / sqrt(d))`` over positions; the loss is ``KL(teacher || student)`` of those
    relations, averaged over heads and over the query positions that ``mask`` (``(B, L)``,
    True = real token) keeps, with masked key positions excluded from the softmax. Head
    counts need not match the models' own: relations are compared, not attention heads.
    """
    def relations(x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        if d % heads:
            raise ValueError(f"width {d} is not divisible into {heads} relation heads")
        x = x.float().reshape(b, n, heads, d // heads).transpose(1, 2)  # (B, H, L, d)
        scores = x @ x.transpose(-1, -2) / math.sqrt(d // heads)
        if mask is not None:
            scores = scores.masked_fill(~mask.bool()[:, None, None, :], float("-inf"))
        return F.log_softmax(scores, dim=-1)

    log_s, log_t = relations(student_states), relations(teacher_states)
    kl = (log_t.exp() * (log_t - log_s)).nan_to_num(0.0).sum(-1)  # (B, H, L); -inf - -inf at masked keys
    per_pos = kl.mean(1)
    return _masked_mean(per_pos, mask)


def attention_map_mse(
    student_attentions: torch.Tensor,
    teacher_attentions: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention transfer (TinyBERT): mean squared difference between a student layer's attention
    probabilities and those of the teacher layer it was copied from, ``(B, H, L, L)`` each, with
    the teacher's heads averaged into groups when the student has fewer. Only query rows that
    ``mask`` keeps count."""
    s, t = student_attentions.float(), teacher_attentions.float()
    if t.shape[1] != s.shape[1]:
        if t.shape[1] % s.shape[1]:
            raise ValueError(f"teacher heads {t.shape[1]} do not group into student heads {s.shape[1]}")
        t = t.reshape(t.shape[0], s.shape[1], -1, *t.shape[2:]).mean(2)
    per_pos = ((s - t) ** 2).sum(-1).mean(1)  # (B, L)
    return _masked_mean(per_pos, mask)


def mixture_log_probs(teacher_logits: list[torch.Tensor], weights: list[float], temperature: float) -> torch.Tensor:
    """Multi-teacher targets: ``log(sum_i w_i * softmax(z_i / T))`` over a shared vocabulary.

    The weighted mixture of the teachers' (softened) distributions, as log-probabilities. A
    mixture rather than an average of logits: where the teachers disagree, the target keeps
    both of their modes instead of a blurred middle.
    """
    if len(teacher_logits) != len(weights) or not teacher_logits:
        raise ValueError("one weight per teacher, at least one teacher")
    total = float(sum(weights))
    if total <= 0 or any(w < 0 for w in weights):
        raise ValueError(f"teacher weights must be >= 0 with a positive sum, got {weights}")
    t = float(temperature)
    parts = [F.log_softmax(z.float() / t, dim=-1) + math.log(w / total)
             for z, w in zip(teacher_logits, weights) if w > 0]
    return torch.logsumexp(torch.stack(parts), dim=0)


def soft_loss_to_log_probs(kind: str, student_logits: torch.Tensor, teacher_log_probs: torch.Tensor,
                           temperature: float, mask: torch.Tensor | None = None, beta: float = 0.5) -> torch.Tensor:
    """:func:`soft_loss` against a target given as (already softened) log-probabilities, e.g. a
    teacher mixture: the same ``T^2``-scaled divergences."""
    t = float(temperature)
    # log-probabilities at temperature 1 are logits whose softmax is the target itself
    return soft_loss(kind, student_logits / t, teacher_log_probs, 1.0, mask, beta) * (t * t)
