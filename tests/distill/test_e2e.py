"""A tiny end-to-end distillation on the CPU, and the result loaded by transformers and vLLM.

Tiny on purpose (8 messages, 4 steps, 2-layer student): it checks the plumbing (teacher
targets, KD trainer, checkpoints, final dir, card), not quality.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tiny_data import write_tiny_banking_csv



@pytest.fixture(scope="module")
def tiny_csv(tmp_path_factory) -> Path:
    return write_tiny_banking_csv(tmp_path_factory.mktemp("data"), stride=1250, n=8)


@pytest.fixture(scope="module")
def distilled(teacher_dir, cache_dir, tiny_csv, tmp_path_factory):
    from distill.recipe import Recipe
    from distill.train import distill_run

    out = tmp_path_factory.mktemp("run")
    r = Recipe.model_validate({
        "name": "tiny", "teacher": "default",
        "data": {"train_file": str(tiny_csv)},
        "student": {"layers": 2},
        "loss": {"temperature": 2.0, "alpha": 0.9, "hidden_weight": 0.5},
        "train": {"max_steps": 4, "batch_size": 4, "lr": 1e-3, "max_len": 96, "logging_steps": 1,
                  "threads": 2},
    })
    card = distill_run(r, cache_dir, out)
    return out, card


def test_kd_lowers_the_loss(distilled, teacher_dir):
    import torch

    from distill.data import build_examples
    from distill.evaluate import token_kl
    from distill.modeling import load_model, load_tokenizer

    out, card = distilled
    tok = load_tokenizer(out / "model")
    targets = json.loads((out / "run" / "teacher_targets.json").read_text())["ids"]
    texts = [r["text"] for r in csv.DictReader(open(card["data"]["train"]))]
    ex = build_examples(tok, texts, targets, 96)
    teacher = load_model(teacher_dir, torch.float32, "cpu")
    before = token_kl(load_model(out / "run" / "init", torch.float32, "cpu"), teacher, ex)
    after = token_kl(load_model(out / "model", torch.float32, "cpu"), teacher, ex)
    assert after < before
    stage = card["stages"][0]
    assert stage["steps"] == 4 and stage["kept_layers"] == [0, 29]


def test_card_records_the_run(distilled):
    out, card = distilled
    on_disk = json.loads((out / "distill_card.json").read_text())
    assert on_disk["student"]["layers"] == 2
    assert on_disk["loss"]["temperature"] == 2.0 and on_disk["loss"]["alpha"] == 0.9
    assert on_disk["teacher"]["layers"] == 30
    assert on_disk["data"]["labels_used"] is False
    assert on_disk["student"]["parameters"] > 0 and on_disk["train"]["max_steps"] == 4


def test_transformers_loads_the_student(distilled):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, _ = distilled
    tok = AutoTokenizer.from_pretrained(out / "model")
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    assert model.config.num_hidden_layers == 2
    ids = tok.apply_chat_template([{"role": "user", "content": "my card has not arrived"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    gen = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert gen.shape[1] == ids["input_ids"].shape[1] + 3 or gen.shape[1] > ids["input_ids"].shape[1]


@pytest.mark.slow
def test_vllm_serves_the_student(distilled, tmp_path):
    pytest.importorskip("vllm")
    import httpx

    from distill.evaluate import VLLMServer

    out, _ = distilled
    with VLLMServer(out / "model", name="tiny-student", log_file=tmp_path / "vllm.log") as srv:
        r = httpx.post(f"{srv.base_url}/chat/completions", timeout=120, json={
            "model": "tiny-student", "max_tokens": 8, "temperature": 0,
            "messages": [{"role": "user", "content": "I lost my card"}]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["choices"][0]["message"]["content"] is not None
        assert body["usage"]["completion_tokens"] >= 1


def test_progressive_chain(teacher_dir, cache_dir, tiny_csv, tmp_path):
    """30 -> 3 -> 2 layers: the intermediate student teaches the final one."""
    from distill.recipe import Recipe
    from distill.train import distill_run

    r = Recipe.model_validate({
        "name": "tiny-progressive", "data": {"train_file": str(tiny_csv), "max_train": 4},
        "stages": [3, 2],
        "train": {"max_steps": 1, "batch_size": 4, "max_len": 96, "threads": 2},
    })
    card = distill_run(r, cache_dir, tmp_path / "p")
    assert [s["layers"] for s in card["stages"]] == [3, 2]
    assert card["stages"][1]["teacher"].endswith("stage0-3l/model")
    assert json.loads((tmp_path / "p" / "model" / "config.json").read_text())["num_hidden_layers"] == 2


def test_every_distillation_kind_runs_end_to_end(teacher_dir, cache_dir, tiny_csv, tmp_path):
    """Relation (batch), attention transfer, two teachers and on-policy batches in one tiny run
    of the real packaged model: the plumbing, each term logged and the card saying which ran."""
    from distill.recipe import Recipe
    from distill.train import distill_run

    r = Recipe.model_validate({
        "name": "tiny-all-kinds", "teacher": "default",
        "data": {"train_file": str(tiny_csv)},
        "student": {"layers": 2},
        "loss": {"alpha": 0.9, "relation_weight": 1.0, "attention_weight": 1.0, "on_policy": 0.5,
                 "on_policy_max_new_tokens": 8, "soft": "jsd",
                 "extra_teachers": [{"model": str(teacher_dir), "weight": 0.5}]},
        "train": {"max_steps": 4, "batch_size": 4, "lr": 1e-3, "max_len": 96, "logging_steps": 1, "threads": 2,
                  "seed": 3},
    })
    card = distill_run(r, cache_dir, tmp_path)
    stage = card["stages"][0]
    assert stage["steps"] == 4
    losses = stage["final_losses"]
    assert losses["loss_relation"] > 0 and losses["loss_attention"] > 0
    assert 0.0 <= losses["loss_on_policy"] <= 1.0
    assert card["loss"]["extra_teachers"][0]["weight"] == 0.5 and card["loss"]["on_policy"] == 0.5


def test_a_narrow_trimmed_student(teacher_dir, cache_dir, tiny_csv, tmp_path):
    """The faster-student options of a recipe (issue #18 item 5): MLPs narrowed to their most
    important units at init, the vocabulary trimmed after training; the result still loads,
    its training texts tokenize to the same tokens, and the kept tokens keep their logits."""
    import torch
    from transformers import AutoTokenizer

    from distill.data import build_examples
    from distill.modeling import load_model
    from distill.recipe import Recipe
    from distill.train import distill_run

    r = Recipe.model_validate({
        "name": "tiny-fast", "data": {"train_file": str(tiny_csv)},
        "student": {"layers": 2, "intermediate_size": 512, "trim_vocab": True, "trim_own_answers": 4},
        "train": {"max_steps": 2, "batch_size": 4, "max_len": 96, "threads": 2},
    })
    card = distill_run(r, cache_dir, tmp_path)
    model, untrimmed = tmp_path / "model", tmp_path / "model-untrimmed"
    cfg = json.loads((model / "config.json").read_text())
    assert cfg["intermediate_size"] == 512 and cfg["num_hidden_layers"] == 2
    init = json.loads((tmp_path / "run" / "init" / "student_init.json").read_text())
    assert [len(u) for u in init["kept_mlp_units"]] == [512, 512]
    trim = card["student"]["vocab_trim"]
    assert trim["vocab_before"] == 49152 and cfg["vocab_size"] == trim["vocab_after"] < 3000
    assert card["student"]["vocab_size"] == trim["vocab_after"] and trim["own_answers"] == 4
    # the training data (prompt + teacher target) tokenizes to the same tokens after trimming
    old_tok, new_tok = AutoTokenizer.from_pretrained(str(untrimmed)), AutoTokenizer.from_pretrained(str(model))
    texts = [row["text"] for row in csv.DictReader(open(tiny_csv))]
    targets = json.loads((tmp_path / "run" / "teacher_targets.json").read_text())["ids"]
    ex = build_examples(old_tok, texts, targets, 96)[0]
    rendered = old_tok.decode(ex.prompt + ex.response)
    assert old_tok.convert_ids_to_tokens(old_tok(rendered, add_special_tokens=False)["input_ids"]) == \
        new_tok.convert_ids_to_tokens(new_tok(rendered, add_special_tokens=False)["input_ids"])
    kept = json.loads((model / "vocab_trim.json").read_text())["kept_ids"]
    with torch.no_grad():
        a = load_model(untrimmed, torch.float32, "cpu")(torch.tensor([ex.prompt])).logits[0]
        b = load_model(model, torch.float32, "cpu")(torch.tensor([[kept.index(i) for i in ex.prompt]])).logits[0]
    assert torch.allclose(a[:, kept], b, atol=1e-4)


def test_a_student_trimmed_before_training(teacher_dir, cache_dir, tiny_csv, tmp_path):
    """``student.trim_before_training``: the init is trimmed, every step trains the small
    vocabulary against the full teacher (read through the kept ids), and the shipped dir is the
    trimmed one: its tokenizer renders the training texts to the kept tokens and it answers."""
    import torch
    from transformers import AutoTokenizer

    from distill.data import build_examples
    from distill.modeling import decode_responses, generate_ids, load_model, load_tokenizer
    from distill.recipe import Recipe
    from distill.train import distill_run

    r = Recipe.model_validate({
        "name": "tiny-trim-first", "data": {"train_file": str(tiny_csv)},
        "student": {"layers": 2, "trim_vocab": True, "trim_before_training": True},
        "loss": {"alpha": 0.9, "hidden_weight": 0.5},
        "train": {"max_steps": 3, "batch_size": 4, "max_len": 96, "threads": 2, "logging_steps": 1},
    })
    card = distill_run(r, cache_dir, tmp_path)
    model = tmp_path / "model"
    trim = card["student"]["vocab_trim"]
    cfg = json.loads((model / "config.json").read_text())
    assert trim["when"] == "before training" and trim["vocab_before"] == 49152
    assert cfg["vocab_size"] == trim["vocab_after"] < 3000 and not (tmp_path / "model-untrimmed").exists()
    losses = [h for h in card["stages"][0].get("history", []) if "loss_soft" in h] or [card["stages"][0]["final_losses"]]
    assert all(h["loss_soft"] > 0 for h in losses)  # the teacher's signal reached the trimmed student
    kept = json.loads((model / "vocab_trim.json").read_text())["kept_ids"]
    old_tok, new_tok = AutoTokenizer.from_pretrained(str(teacher_dir)), AutoTokenizer.from_pretrained(str(model))
    texts = [row["text"] for row in csv.DictReader(open(tiny_csv))]
    targets = json.loads((tmp_path / "run" / "teacher_targets.json").read_text())["ids"]
    ex = build_examples(old_tok, texts, targets, 96)[0]
    rendered = old_tok.decode(ex.prompt + ex.response)
    assert [kept[i] for i in new_tok(rendered, add_special_tokens=False)["input_ids"]] == \
        old_tok(rendered, add_special_tokens=False)["input_ids"]
    tok = load_tokenizer(model)
    ids = generate_ids(load_model(model, torch.float32, "cpu"), tok, texts[:2], 8, 2)
    assert all(0 <= i < cfg["vocab_size"] for seq in ids for i in seq)
    assert all(isinstance(a, str) for a in decode_responses(tok, ids))


def test_narrowing_keeps_the_most_important_units(teacher_dir, tmp_path):
    """The narrowed MLP is the teacher's, restricted to the units with the largest
    gate-row x up-row x down-column norms; a width above the teacher's is refused."""
    from distill.student_init import layer_drop, load_state, mlp_unit_importance

    out = layer_drop(teacher_dir, tmp_path / "s", 2, intermediate_size=256)
    info = json.loads((out / "student_init.json").read_text())
    teacher, student = load_state(teacher_dir), load_state(out)
    layer = info["kept_layers"][1]
    pre = f"model.layers.{layer}.mlp."
    score = mlp_unit_importance(*(teacher[pre + n + ".weight"] for n in ("gate_proj", "up_proj", "down_proj")))
    kept = info["kept_mlp_units"][1]
    assert kept == sorted(score.topk(256).indices.tolist())
    assert (student["model.layers.1.mlp.down_proj.weight"] == teacher[pre + "down_proj.weight"][:, kept]).all()
    assert student["model.layers.1.mlp.gate_proj.weight"].shape == (256, 576)
    with pytest.raises(ValueError, match="intermediate_size"):
        layer_drop(teacher_dir, tmp_path / "w", 2, intermediate_size=4096)
