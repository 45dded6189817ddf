"""``KDTrainer``'s loss with each teacher signal, on tiny random Llama models (seconds, CPU).

The end-to-end tests train with a dense teacher; here each strategy is checked against the
loss functions it must call, and the trainer against the mixing formula it documents.
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments

from distill import losses
from distill.kd_trainer import LOSS_PARTS, KDTrainer
from distill.recipe import LossSpec
from distill.teacher_signals import DenseTeacherSignal, SparseTeacherSignal, StudentPass

VOCAB, K = 64, 4


def tiny_llama(layers: int, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    """Two sequences, prompt positions labelled -100, the second one right-padded."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (2, 10), generator=g)
    labels = ids.clone()
    labels[:, :4] = losses.IGNORE_INDEX
    att = torch.ones_like(ids)
    att[1, 8:] = 0
    labels[1, 8:] = losses.IGNORE_INDEX
    return {"input_ids": ids, "attention_mask": att, "labels": labels}


def student_pass(model: LlamaForCausalLM, batch: dict, hidden: bool = False) -> StudentPass:
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=hidden)
    mask = batch["labels"][:, 1:] != losses.IGNORE_INDEX
    return StudentPass(out.logits[:, :-1][mask], mask, out.hidden_states)


def test_dense_signal_is_the_recipe_divergence_and_freezes_the_teacher(batch) -> None:
    student, teacher = tiny_llama(2, seed=1), tiny_llama(2, seed=2)
    spec = LossSpec(soft="jsd", beta=0.3, temperature=2.0, alpha=0.5)
    signal = DenseTeacherSignal(teacher)
    assert not any(p.requires_grad for p in teacher.parameters())
    s = student_pass(student, batch)
    soft, hidden = signal.losses(batch, s, spec)
    with torch.no_grad():
        t_sel = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1][s.mask]
    assert soft.item() == pytest.approx(losses.generalized_jsd(s.logits, t_sel, 0.3, 2.0).item(), rel=1e-5)
    assert soft.item() > 0 and hidden.item() == 0.0
    same, _ = DenseTeacherSignal(copy.deepcopy(student)).losses(batch, s, spec)
    assert same.item() == pytest.approx(0.0, abs=1e-6)  # a teacher identical to the student


def test_dense_signal_hidden_loss_follows_the_layer_map(batch) -> None:
    teacher = tiny_llama(4, seed=2)
    student = tiny_llama(2, seed=1)
    spec = LossSpec(hidden_weight=0.5)
    signal = DenseTeacherSignal(teacher, layer_map=[0, 3])
    assert signal.wants_hidden(spec) and not signal.wants_hidden(LossSpec(hidden_weight=0.0))
    assert not DenseTeacherSignal(teacher).wants_hidden(spec)  # no layer map: nothing to align
    s = student_pass(student, batch, hidden=True)
    _, hidden = signal.losses(batch, s, spec)
    with torch.no_grad():
        t_hidden = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           output_hidden_states=True).hidden_states
    att = batch["attention_mask"].bool()
    want = torch.stack([losses.hidden_cosine(s.hidden_states[1], t_hidden[1], att),
                        losses.hidden_cosine(s.hidden_states[2], t_hidden[4], att)]).mean()
    assert hidden.item() == pytest.approx(want.item(), rel=1e-5) and hidden.item() > 0


def test_sparse_signal_reads_top_k_from_the_batch(batch) -> None:
    student = tiny_llama(2, seed=1)
    with torch.no_grad():
        logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    # top-k targets at the label positions, stored one position later like SparseDataset does
    top = torch.log_softmax(logits, -1).topk(K, dim=-1)
    sparse = {**batch,
              "topk_ids": torch.cat([torch.full((2, 1, K), -1), top.indices[:, :-1]], 1),
              "topk_logprobs": torch.cat([torch.zeros(2, 1, K), top.values[:, :-1]], 1)}
    s = student_pass(student, sparse)
    spec = LossSpec(temperature=1.0)
    soft, hidden = SparseTeacherSignal().losses(sparse, s, spec)
    assert soft.item() == pytest.approx(0.0, abs=1e-5)  # the student's own top-k: nothing to learn
    assert hidden.item() == 0.0
    flipped = {**sparse, "topk_logprobs": sparse["topk_logprobs"].flip(-1)}
    soft, _ = SparseTeacherSignal().losses(flipped, s, spec)
    want = losses.sparse_topk_kl(s.logits, flipped["topk_ids"][:, 1:][s.mask],
                                 flipped["topk_logprobs"][:, 1:][s.mask], 1.0)
    assert soft.item() == pytest.approx(want.item(), rel=1e-5) and soft.item() > 0


def _trainer(model, spec: LossSpec, signal, tmp_path) -> KDTrainer:
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    return KDTrainer(model=model, args=args, loss_spec=spec, signal=signal)


def test_trainer_mixes_soft_hard_and_hidden(batch, tmp_path) -> None:
    student, teacher = tiny_llama(2, seed=1), tiny_llama(4, seed=2)
    spec = LossSpec(alpha=0.7, temperature=2.0, hidden_weight=0.25)
    trainer = _trainer(student, spec, DenseTeacherSignal(teacher, layer_map=[0, 3]), tmp_path)
    loss = trainer.compute_loss(student, batch)
    soft, hard, hidden = (trainer._parts[k][-1] for k in LOSS_PARTS)
    assert soft > 0 and hard > 0 and hidden > 0
    assert loss.item() == pytest.approx(0.7 * soft + 0.3 * hard + 0.25 * hidden, rel=1e-5)
    assert loss.requires_grad


@pytest.mark.parametrize("signal", [None, "dense"])
def test_without_signal_or_alpha_the_loss_is_the_hard_loss(batch, tmp_path, signal) -> None:
    student = tiny_llama(2, seed=1)
    spec = LossSpec(alpha=0.0 if signal else 0.9)
    trainer = _trainer(student, spec, DenseTeacherSignal(tiny_llama(2, seed=2)) if signal else None, tmp_path)
    loss = trainer.compute_loss(student, batch)
    s = student_pass(student, batch)
    hard = losses.hard_ce(s.logits, batch["labels"][:, 1:][s.mask])
    assert loss.item() == pytest.approx(hard.item(), rel=1e-6)
    assert trainer._parts["soft"][-1] == 0.0
