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
    parts = signal.losses(batch, s, spec)
    soft = parts["soft"]
    with torch.no_grad():
        t_sel = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1][s.mask]
    assert soft.item() == pytest.approx(losses.generalized_jsd(s.logits, t_sel, 0.3, 2.0).item(), rel=1e-5)
    assert soft.item() > 0 and set(parts) == {"soft"}
    same = DenseTeacherSignal(copy.deepcopy(student)).losses(batch, s, spec)["soft"]
    assert same.item() == pytest.approx(0.0, abs=1e-6)  # a teacher identical to the student


def test_dense_signal_hidden_loss_follows_the_layer_map(batch) -> None:
    teacher = tiny_llama(4, seed=2)
    student = tiny_llama(2, seed=1)
    spec = LossSpec(hidden_weight=0.5)
    signal = DenseTeacherSignal(teacher, layer_map=[0, 3])
    assert signal.wants_hidden(spec) and not signal.wants_hidden(LossSpec(hidden_weight=0.0))
    assert not DenseTeacherSignal(teacher).wants_hidden(spec)  # no layer map: nothing to align
    s = student_pass(student, batch, hidden=True)
    hidden = signal.losses(batch, s, spec)["hidden"]
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
    parts = SparseTeacherSignal().losses(sparse, s, spec)
    assert parts["soft"].item() == pytest.approx(0.0, abs=1e-5)  # the student's own top-k: nothing to learn
    assert set(parts) == {"soft"}
    flipped = {**sparse, "topk_logprobs": sparse["topk_logprobs"].flip(-1)}
    soft = SparseTeacherSignal().losses(flipped, s, spec)["soft"]
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
    soft, hard, hidden = (trainer._parts[k][-1] for k in LOSS_PARTS[:3])
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


# -- the distillation kinds of issue #18 ------------------------------------------------------------

def test_relation_losses_see_batch_geometry_not_scale():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(6, 16, generator=g)
    rotation, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))
    # the same geometry in another width, scale and rotation: nothing to learn
    assert losses.similarity_preserving(feats @ rotation * 3.0, feats).item() == pytest.approx(0.0, abs=1e-6)
    assert losses.similarity_preserving(torch.randn(6, 8, generator=g), feats).item() > 0.01
    tokens = torch.randn(2, 5, 18, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]).bool()
    assert losses.attention_relation_kl(tokens, tokens, 3, mask).item() == pytest.approx(0.0, abs=1e-6)
    other = torch.randn(2, 5, 18, generator=g)
    kl = losses.attention_relation_kl(other, tokens, 3, mask)
    assert kl.item() > 0 and torch.isfinite(kl)
    padded = tokens.clone()
    padded[1, 3:] = 100.0  # what sits at masked positions must not matter
    assert losses.attention_relation_kl(other, padded, 3, mask).item() == pytest.approx(kl.item(), rel=1e-5)


def test_attention_map_loss_groups_teacher_heads():
    g = torch.Generator().manual_seed(1)
    student = torch.softmax(torch.randn(2, 2, 5, 5, generator=g), -1)
    teacher = student.repeat_interleave(2, dim=1)  # 4 heads, each pair equal to one student head
    assert losses.attention_map_mse(student, teacher).item() == pytest.approx(0.0, abs=1e-7)
    assert losses.attention_map_mse(student, torch.softmax(torch.randn(2, 4, 5, 5, generator=g), -1)).item() > 0


def test_teacher_mixture_is_a_weighted_mixture_of_distributions():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(3, 10, generator=g), torch.randn(3, 10, generator=g)
    mixed = losses.mixture_log_probs([a, b], [3.0, 1.0], temperature=2.0).exp()
    want = 0.75 * torch.softmax(a / 2, -1) + 0.25 * torch.softmax(b / 2, -1)
    assert torch.allclose(mixed, want, atol=1e-6)
    only_a = losses.mixture_log_probs([a, b], [1.0, 0.0], temperature=2.0)
    student = torch.randn(3, 10, generator=g)
    assert losses.soft_loss_to_log_probs("forward_kl", student, only_a, 2.0).item() == pytest.approx(
        losses.forward_kl(student, a, 2.0).item(), rel=1e-5)  # one teacher: the classic loss


def test_multi_teacher_signal_uses_the_mixture(batch) -> None:
    student, t1, t2 = tiny_llama(2, seed=1), tiny_llama(2, seed=2), tiny_llama(3, seed=3)
    spec = LossSpec(temperature=2.0, teacher_weight=2.0)
    s = student_pass(student, batch)
    soft = DenseTeacherSignal(t1, weight=2.0, extra=[(t2, 1.0)]).losses(batch, s, spec)["soft"]
    with torch.no_grad():
        z = [m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1][s.mask]
             for m in (t1, t2)]
    want = losses.soft_loss_to_log_probs("forward_kl", s.logits, losses.mixture_log_probs(z, [2.0, 1.0], 2.0), 2.0)
    assert soft.item() == pytest.approx(want.item(), rel=1e-5)
    assert soft.item() != pytest.approx(DenseTeacherSignal(t1).losses(batch, s, spec)["soft"].item(), rel=1e-3)


def test_trainer_adds_relation_and_attention_terms(batch, tmp_path) -> None:
    student, teacher = tiny_llama(2, seed=1), tiny_llama(4, seed=2)
    spec = LossSpec(alpha=0.8, relation_weight=0.5, attention_weight=2.0)
    trainer = _trainer(student, spec, DenseTeacherSignal(teacher, layer_map=[0, 3]), tmp_path)
    loss = trainer.compute_loss(student, batch)
    part = {k: trainer._parts[k][-1] for k in LOSS_PARTS}
    assert part["relation"] > 0 and part["attention"] > 0 and part["hidden"] == 0.0
    want = 0.8 * part["soft"] + 0.2 * part["hard"] + 0.5 * part["relation"] + 2.0 * part["attention"]
    assert loss.item() == pytest.approx(want, rel=1e-5)
    loss.backward()  # the attention term reaches the student's attention weights
    assert student.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    minilm = LossSpec(relation_weight=1.0, relation="minilm", relation_heads=4)
    trainer = _trainer(tiny_llama(2, seed=1), minilm, DenseTeacherSignal(teacher, layer_map=[0, 3]), tmp_path)
    trainer.compute_loss(trainer.model, batch)
    assert trainer._parts["relation"][-1] > 0


def test_on_policy_batches_are_the_students_own_samples(batch, tmp_path) -> None:
    from distill.on_policy import prompt_lengths, student_samples

    student = tiny_llama(2, seed=1)
    sampled = student_samples(student, batch, pad_token_id=0, eos_token_id=1, max_new_tokens=5, temperature=1.0)
    assert prompt_lengths(batch["labels"], batch["attention_mask"]) == [4, 4]
    for i in range(2):
        n = int(sampled["attention_mask"][i].sum())
        assert torch.equal(sampled["input_ids"][i, :4], batch["input_ids"][i, :4])  # the prompt is kept
        answer = sampled["labels"][i][sampled["labels"][i] != losses.IGNORE_INDEX]
        assert 1 <= len(answer) <= 5 and torch.equal(answer, sampled["input_ids"][i, 4:n])
    spec = LossSpec(alpha=0.5, soft="reverse_kl", on_policy=1.0, on_policy_max_new_tokens=4)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    trainer = KDTrainer(model=student.train(), args=args, loss_spec=spec, signal=DenseTeacherSignal(tiny_llama(2, 2)),
                        pad_token_id=0, eos_token_id=1)
    loss = trainer.compute_loss(student, batch)
    assert trainer._parts["on_policy"][-1] == 1.0
    assert loss.item() == pytest.approx(trainer._parts["soft"][-1], rel=1e-5)  # no hard term on own samples
    off = KDTrainer(model=student, args=args, loss_spec=spec.model_copy(update={"on_policy": 0.0}),
                    signal=DenseTeacherSignal(tiny_llama(2, 2)), pad_token_id=0, eos_token_id=1)
    off.compute_loss(student, batch)
    assert off._parts["on_policy"][-1] == 0.0


@pytest.mark.parametrize("spec", [LossSpec(alpha=0.7, temperature=2.0, hidden_weight=0.25),
                                  LossSpec(alpha=0.5, soft="jsd", relation_weight=0.5, teacher_weight=2.0)])
def test_logits_only_at_response_positions_change_nothing_but_the_work(batch, tmp_path, spec) -> None:
    """The output head runs only where some row has a target (student and dense teachers); loss
    and gradients are those of the full-logits pass."""
    batch = {k: v.clone() for k, v in batch.items()}
    batch["labels"][0, :6] = losses.IGNORE_INDEX  # prompts of different lengths: positions 3..8 needed
    results = []
    for keep in (True, False):
        student, teacher = tiny_llama(2, seed=1), tiny_llama(4, seed=2)
        extra = [(tiny_llama(3, seed=3), 1.0)] if spec.teacher_weight != 1.0 else []
        rows: list[int] = []
        for model in (student, teacher, *(m for m, _ in extra)):
            model.lm_head.register_forward_hook(lambda m, inp, out: rows.append(inp[0].shape[1]))
        signal = DenseTeacherSignal(teacher, layer_map=[0, 3], weight=spec.teacher_weight, extra=extra)
        trainer = _trainer(student, spec, signal, tmp_path)
        trainer._keep_supported = keep
        loss = trainer.compute_loss(student, batch)
        loss.backward()
        results.append((loss.item(), student.model.layers[0].mlp.up_proj.weight.grad.clone(), rows))
    (kept_loss, kept_grad, kept_rows), (full_loss, full_grad, full_rows) = results
    assert kept_loss == pytest.approx(full_loss, rel=1e-5)
    assert torch.allclose(kept_grad, full_grad, rtol=1e-4, atol=1e-7)
    assert len(kept_rows) == len(full_rows) == 2 + len(extra)
    assert set(full_rows) == {10} and set(kept_rows) == {6}  # positions 3..8 of 10


def test_a_student_trimmed_before_training_reads_the_teacher_through_its_vocabulary(batch) -> None:
    """``DenseTeacherSignal(vocab=...)``: the teacher sees its own ids for the student's tokens and
    its logits are restricted to the kept tokens (a distribution renormalised over them)."""
    from distill.trim_first import TeacherVocab

    kept = torch.arange(0, VOCAB, 2)  # the student's 32 tokens are the teacher's even ids
    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=len(kept), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    student, teacher = LlamaForCausalLM(cfg).eval(), tiny_llama(2, seed=2)
    small = {k: v % len(kept) if k != "attention_mask" else v for k, v in batch.items()}
    small["labels"] = torch.where(batch["labels"] == losses.IGNORE_INDEX, batch["labels"], small["labels"])
    s = student_pass(student, small)
    spec = LossSpec(temperature=2.0)
    soft = DenseTeacherSignal(teacher, vocab=TeacherVocab(kept)).losses(small, s, spec)["soft"]
    with torch.no_grad():
        t_logits = teacher(input_ids=kept[small["input_ids"]], attention_mask=small["attention_mask"]).logits
    want = losses.soft_loss("forward_kl", s.logits, t_logits[:, :-1][s.mask][:, kept], 2.0)
    assert soft.item() == pytest.approx(want.item(), rel=1e-5) and soft.item() > 0
