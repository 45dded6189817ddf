"""Vocabulary trimming (issue #18 item 5) on the packaged model: the corpus tokenizes to the same
token strings, the logits of kept tokens are unchanged, other text still tokenizes."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def trimmed(teacher_dir, tmp_path_factory):
    from transformers import AutoTokenizer

    from distill.data import SYSTEM_PROMPT, target_for
    from distill.vocab_trim import chat_corpus, trim_vocabulary

    tok = AutoTokenizer.from_pretrained(str(teacher_dir))
    corpus = chat_corpus(tok, [("My card still hasn't arrived, what now?", target_for("card_arrival")),
                               ("Why was I charged a fee for my transfer?", target_for("transfer_fee_charged"))],
                         SYSTEM_PROMPT)
    out = tmp_path_factory.mktemp("trim") / "model"
    summary = trim_vocabulary(teacher_dir, out, corpus)
    return tok, AutoTokenizer.from_pretrained(str(out)), out, corpus, summary


def test_the_corpus_tokenizes_to_the_same_tokens(trimmed):
    old, new, out, corpus, summary = trimmed
    assert summary["vocab_before"] == 49152 and 256 < summary["vocab_after"] < 3000
    for text in corpus:
        assert old.convert_ids_to_tokens(old(text, add_special_tokens=False)["input_ids"]) == \
            new.convert_ids_to_tokens(new(text, add_special_tokens=False)["input_ids"])
    assert new.eos_token == "<|im_end|>" and new.eos_token_id == old.eos_token_id  # specials keep their ids
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == summary["vocab_after"] == len(new)


def test_other_text_still_tokenizes_and_decodes(trimmed):
    old, new, *_ = trimmed
    text = "Zebra-42 übermäßig 東京 🙂 def f(x): return x**2"
    ids = new(text, add_special_tokens=False)["input_ids"]
    assert new.decode(ids) == text  # the byte alphabet is kept: nothing is lost, pieces are smaller
    assert len(ids) >= len(old(text, add_special_tokens=False)["input_ids"])


def test_kept_tokens_keep_their_logits(trimmed, teacher_dir):
    import torch

    from distill.modeling import load_model

    old_tok, new_tok, out, corpus, _ = trimmed
    kept = json.loads((out / "vocab_trim.json").read_text())["kept_ids"]
    big, small = load_model(teacher_dir, torch.float32, "cpu"), load_model(out, torch.float32, "cpu")
    with torch.no_grad():
        a = big(torch.tensor([old_tok(corpus[0], add_special_tokens=False)["input_ids"]])).logits[0]
        b = small(torch.tensor([new_tok(corpus[0], add_special_tokens=False)["input_ids"]])).logits[0]
    assert b.shape[-1] == len(kept)
    assert torch.allclose(a[:, kept], b, atol=1e-4)


def test_cli_trims_from_a_csv_corpus(teacher_dir, tmp_path):
    import subprocess
    import sys

    from tiny_data import write_tiny_banking_csv

    corpus = write_tiny_banking_csv(tmp_path, stride=1250, n=8)
    proc = subprocess.run([sys.executable, "-m", "distill", "trim-vocab", "--model", str(teacher_dir),
                           "--corpus", str(corpus), "--out", str(tmp_path / "trimmed")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "trimmed" / "vocab_trim.json").read_text())
    assert summary["vocab_before"] == 49152 and summary["vocab_after"] < 5000 and summary["corpus_texts"] == 8
    assert "49152 -> " in proc.stdout
