"""Distilling from any chat data (issue #13 items 3-4), on the CPU with a 2-layer student.

Two workloads with different system prompts and answer formats (Banking77 intents, MMLU
letters) in one dataset; sparse KD from captured teacher logprobs (made here with the packaged
teacher, in the OpenAI format the gateway captures); the epoch chosen on the validation split;
the Banking77 converter; the evaluation and the gate.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from support.processes import REPO
from support.shared_data import shared_data

BANK_SYSTEM = "You are a bank's customer-support assistant. Name the intent of the customer's message, then reply briefly."
EXAM_SYSTEM = "Answer the multiple-choice question with the letter of the correct option only."


def _records() -> list[dict]:
    with open(shared_data("banking77", "train.csv"), newline="", encoding="utf-8") as f:
        bank = [r for r in csv.DictReader(f)][::900][:8]
    with open(shared_data("routellm", "mmlu", "mmlu_astronomy.csv"), newline="", encoding="utf-8") as f:
        exam = [r["prompt"] for r in csv.DictReader(f)][:8]
    out = [{"messages": [{"role": "system", "content": BANK_SYSTEM}, {"role": "user", "content": r["text"]},
                         {"role": "assistant", "content": f"Intent: {r['category']}"}], "label": r["category"]}
           for r in bank]
    out += [{"messages": [{"role": "system", "content": EXAM_SYSTEM}, {"role": "user", "content": q[:300]},
                          {"role": "assistant", "content": "ABCD"[i % 4]}], "label": "ABCD"[i % 4]}
            for i, q in enumerate(exam)]
    return out


def _with_teacher_logprobs(teacher_dir: Path, records: list[dict], k: int = 3) -> list[dict]:
    """The teacher's top-k logprobs at each answer token, as the gateway captures them (strings)."""
    import torch

    from distill.chat_data import answer_text, chat_prompt_ids, prompt_messages
    from distill.data import end_of_turn_id
    from distill.modeling import load_model, load_tokenizer

    tok, model = load_tokenizer(teacher_dir), load_model(teacher_dir)
    out = []
    for record in records:
        prompt = chat_prompt_ids(tok, prompt_messages(record))
        answer = tok(answer_text(record), add_special_tokens=False)["input_ids"] + [end_of_turn_id(tok)]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + answer])).logits[0, len(prompt) - 1:-1]
        logprobs = torch.log_softmax(logits.float(), -1)
        content = []
        for pos, token_id in enumerate(answer):
            top = torch.topk(logprobs[pos], k)
            content.append({"token": tok.decode([token_id]), "logprob": float(logprobs[pos, token_id]),
                            "top_logprobs": [{"token": tok.decode([int(i)]), "logprob": float(v)}
                                             for v, i in zip(top.values, top.indices)]})
        out.append({**record, "teacher_logprobs": content})
    return out


@pytest.fixture(scope="module")
def chat_dataset(teacher_dir, tmp_path_factory) -> Path:
    from distill.chat_data import write_chat_jsonl

    records = _with_teacher_logprobs(teacher_dir, _records())
    folder = tmp_path_factory.mktemp("chat") / "mixed"
    train = [r for i, r in enumerate(records) if i % 4 != 3]
    validation = [r for i, r in enumerate(records) if i % 4 == 3]
    write_chat_jsonl(train, folder / "train.jsonl")
    write_chat_jsonl(validation, folder / "validation.jsonl")
    write_chat_jsonl(validation, folder / "test.jsonl")  # tiny: only the plumbing is under test here
    return folder


def test_captured_logprobs_become_sparse_targets_and_misaligned_ones_fall_back(chat_dataset, teacher_dir):
    from distill.api_teacher import SparseDataset
    from distill.chat_data import chat_examples, read_chat_jsonl
    from distill.modeling import load_tokenizer

    tok = load_tokenizer(teacher_dir)
    records = read_chat_jsonl(chat_dataset / "train.jsonl")
    records[0] = {**records[0], "teacher_logprobs": records[1]["teacher_logprobs"]}  # another answer's tokens
    built = chat_examples(tok, records, max_len=128, top_k=3)
    assert isinstance(built.examples, SparseDataset)
    assert built.info["aligned_logprobs"] == len(records) - 1 and built.info["sequence_level_only"] == 1
    item = built.examples[1]
    answer_positions = [i for i, label in enumerate(item["labels"]) if label != -100]
    assert all(ids[0] >= 0 for ids in (item["topk_ids"][i] for i in answer_positions[:-1]))
    assert tok.decode(item["input_ids"][answer_positions[0]:]).startswith(records[1]["messages"][-1]["content"])
    # the system prompt comes from the data, not the code
    assert BANK_SYSTEM in tok.decode(built.examples[0]["input_ids"]) or EXAM_SYSTEM in tok.decode(built.examples[0]["input_ids"])


def test_distill_on_chat_data_chooses_the_epoch_on_validation(chat_dataset, cache_dir, tmp_path):
    from distill.recipe import Recipe
    from distill.train import distill_run

    r = Recipe.model_validate({
        "name": "chat-tiny", "teacher": "default",
        "data": {"format": "chat_jsonl", "dir": str(chat_dataset), "top_k": 3},
        "student": {"layers": 2},
        "loss": {"temperature": 2.0, "alpha": 0.9},
        "train": {"epochs": 3, "batch_size": 4, "lr": 1e-3, "max_len": 128, "logging_steps": 1, "threads": 2,
                  "early_stopping_patience": 2},
    })
    card = distill_run(r, cache_dir, tmp_path / "run")
    stage = card["stages"][0]
    assert stage["data"]["soft_targets"] == "captured_top_k" and stage["data"]["aligned_logprobs"] == 12
    selection = stage["selection"]
    assert "validation" in selection["by"] and len(selection["curve"]) >= 2
    assert selection["best"]["eval_loss"] == min(c["eval_loss"] for c in selection["curve"])
    assert (tmp_path / "run" / "model" / "config.json").is_file()
    assert card["data"]["train"].endswith("train.jsonl")

    report = tmp_path / "eval.json"
    proc = subprocess.run([sys.executable, "-m", "distill", "evaluate", "--model", str(tmp_path / "run" / "model"),
                           "--data", str(chat_dataset / "test.jsonl"), "--n", "4", "--max-new-tokens", "8",
                           "--json", str(report)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(report.read_text())
    assert result["n"] == 4 and result["metric"] == "first_line" and 0.0 <= result["student_quality"] <= 1.0
    assert result["passes"] == (result["student_quality"] >= 0.97)


def test_scores_follow_the_answer_shape_and_the_gate():
    from distill.chat_eval import answer_kind, passes_gate, score_answers

    assert answer_kind(['{"intent": "a", "x": 1}', '{"intent": "b"}']) == "json"
    assert score_answers(['{"intent": "a", "x": 1}', '{"intent": "c"}'],
                         ['{"x": 1, "intent": "a"}', '{"intent": "b"}'])["quality"] == 0.5
    assert score_answers(["Intent: a\nReply: hello", "B"], ["Intent: a\nReply: other", "C"])["quality"] == 0.5
    free = score_answers(["the card arrives in five days"], ["your card arrives within five working days, "
                                                              "please wait a little longer before you call us again"])
    assert free["metric"] == "free_text" and 0 < free["quality"] < 1
    assert passes_gate(0.97, 1.0, 0.97) and not passes_gate(0.9, 1.0, 0.97) and not passes_gate(0.5, 0.0, 0.5)


def test_banking77_converter(tmp_path):
    from distill.banking77_chat import write_banking77
    from distill.chat_data import read_chat_jsonl

    counts = write_banking77(shared_data("banking77"), tmp_path)
    with open(shared_data("banking77", "test.csv"), newline="", encoding="utf-8") as f:
        assert counts["test"] == sum(1 for _ in csv.DictReader(f))
    validation = read_chat_jsonl(tmp_path / "validation.jsonl")
    assert len({r["label"] for r in validation}) == 77  # every intent carved out
    train_texts = {r["messages"][1]["content"] for r in read_chat_jsonl(tmp_path / "train.jsonl")}
    assert not train_texts & {r["messages"][1]["content"] for r in validation}
    assert validation[0]["messages"][-1]["content"].startswith("Intent: ")
