"""Each loss against a value computed by hand.

Two-token vocabulary: teacher probabilities [0.25, 0.75] (logits [0, ln 3]), student
[0.5, 0.5] (logits [0, 0]).
"""

from __future__ import annotations

import math

import pytest
import torch

from distill import losses

T_LOGITS = torch.tensor([[0.0, math.log(3.0)]])
S_LOGITS = torch.tensor([[0.0, 0.0]])
# KL(t || s) = 0.25 ln(0.25/0.5) + 0.75 ln(0.75/0.5)
FWD = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
# KL(s || t) = 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75)
REV = 0.5 * math.log(2.0) + 0.5 * math.log(2.0 / 3.0)


def test_forward_kl_by_hand():
    assert losses.forward_kl(S_LOGITS, T_LOGITS).item() == pytest.approx(FWD, abs=1e-6)
    assert FWD == pytest.approx(0.130812, abs=1e-6)


def test_forward_kl_temperature_and_t2_scaling():
    # At T = 2 with logits doubled, both distributions are unchanged, so the loss is
    # exactly T^2 = 4 times the T = 1 value.
    got = losses.forward_kl(2 * S_LOGITS, 2 * T_LOGITS, temperature=2.0).item()
    assert got == pytest.approx(4 * FWD, abs=1e-6)


def test_kl_zero_for_identical_distributions():
    x = torch.randn(5, 7, 11)
    assert losses.forward_kl(x, x, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert losses.reverse_kl(x, x, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert losses.generalized_jsd(x, x, 0.5, 2.0).item() == pytest.approx(0.0, abs=1e-6)


def test_reverse_kl_by_hand():
    assert losses.reverse_kl(S_LOGITS, T_LOGITS).item() == pytest.approx(REV, abs=1e-6)


def test_jsd_by_hand():
    m = [0.375, 0.625]
    kl_t = 0.25 * math.log(0.25 / m[0]) + 0.75 * math.log(0.75 / m[1])
    kl_s = 0.5 * math.log(0.5 / m[0]) + 0.5 * math.log(0.5 / m[1])
    want = 0.5 * kl_t + 0.5 * kl_s
    assert losses.generalized_jsd(S_LOGITS, T_LOGITS, beta=0.5).item() == pytest.approx(want, abs=1e-6)
    # the family's ends, as in TRL's GKD
    assert losses.generalized_jsd(S_LOGITS, T_LOGITS, beta=0.0).item() == pytest.approx(FWD, abs=1e-6)
    assert losses.generalized_jsd(S_LOGITS, T_LOGITS, beta=1.0).item() == pytest.approx(REV, abs=1e-6)


def test_hard_ce_by_hand_and_ignore_index():
    logits = torch.tensor([[0.0, math.log(3.0)], [5.0, 0.0]])
    labels = torch.tensor([1, -100])
    assert losses.hard_ce(logits, labels).item() == pytest.approx(-math.log(0.75), abs=1e-6)


def test_mix_alpha():
    soft, hard = torch.tensor(2.0), torch.tensor(10.0)
    assert losses.mix(soft, hard, 0.9).item() == pytest.approx(0.9 * 2 + 0.1 * 10)
    assert losses.mix(soft, hard, 1.0).item() == pytest.approx(2.0)
    assert losses.mix(soft, hard, 0.0).item() == pytest.approx(10.0)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        losses.mix(soft, hard, 1.5)


def test_mask_excludes_positions():
    s = torch.stack([S_LOGITS[0], torch.tensor([9.0, -9.0])])
    t = torch.stack([T_LOGITS[0], torch.tensor([-9.0, 9.0])])
    got = losses.forward_kl(s, t, mask=torch.tensor([True, False])).item()
    assert got == pytest.approx(FWD, abs=1e-6)


def test_sparse_topk_kl_by_hand():
    # a uniform student over 4 tokens; the teacher seen through its top-2 (+ one padding slot),
    # which leave 0.25 over: coarse teacher [0.5, 0.25 | 0.25], coarse student [0.25, 0.25 | 0.5]
    student = torch.zeros(1, 4)
    ids = torch.tensor([[0, 1, -1]])
    lps = torch.tensor([[math.log(0.5), math.log(0.25), 0.0]])
    want = 0.5 * math.log(2.0) + 0.25 * math.log(0.5)
    assert losses.sparse_topk_kl(student, ids, lps).item() == pytest.approx(want, abs=1e-6)
    # tempered alike (T = 2), times T^2
    q = [x ** 0.5 for x in (0.5, 0.25, 0.25)]
    p = [x ** 0.5 for x in (0.25, 0.25, 0.5)]
    q, p = [x / sum(q) for x in q], [x / sum(p) for x in p]
    want_t2 = 4 * sum(a * math.log(a / b) for a, b in zip(q, p))
    assert losses.sparse_topk_kl(student, ids, lps, 2.0).item() == pytest.approx(want_t2, abs=1e-6)


def test_sparse_topk_kl_is_zero_for_the_teachers_own_probabilities():
    teacher = torch.tensor([[2.0, 1.0, 0.5, -1.0, -3.0]])
    top = torch.log_softmax(teacher, -1).topk(3, dim=-1)
    assert losses.sparse_topk_kl(teacher, top.indices, top.values).item() == pytest.approx(0.0, abs=1e-6)
    assert losses.sparse_topk_kl(teacher, top.indices, top.values, 2.0).item() == pytest.approx(0.0, abs=1e-6)


def test_sparse_topk_kl_charges_mass_the_teacher_never_proposed():
    ids = torch.tensor([[0, 1, -1]])
    lps = torch.tensor([[math.log(0.25), math.log(0.75), 0.0]])
    # both rank tokens 0 and 1 as the teacher does (1:3), but the second puts 98 % on token 2
    right = torch.tensor([[math.log(0.25), math.log(0.75), -30.0]])
    elsewhere = torch.tensor([[0.0, math.log(3.0), 5.0]])
    assert losses.sparse_topk_kl(right, ids, lps).item() == pytest.approx(0.0, abs=1e-5)
    assert losses.sparse_topk_kl(elsewhere, ids, lps).item() > 2.0


def test_hidden_cosine():
    a = torch.tensor([[1.0, 0.0]])
    assert losses.hidden_cosine(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert losses.hidden_cosine(a, torch.tensor([[0.0, 1.0]])).item() == pytest.approx(1.0, abs=1e-6)
