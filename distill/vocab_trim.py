"""A faster student: its vocabulary trimmed to the tokens its workload uses (issue #18 item 5).

SmolLM2's 49,152-token embedding and tied output head cost as much per generated token as a
6-layer student's decoder layers (576 x 49,152 multiply-adds for the head alone), so layer
dropping stops paying off. A support student only ever reads and writes a few thousand
distinct tokens. ``trim_vocabulary`` keeps those (found by tokenizing the workload's texts
through the chat template), every base token of the byte-level alphabet, every special
token, and every token a kept token is merged from; it renumbers them in their old order,
drops the merges that build anything else, and slices the embedding (and head) rows.

What it guarantees, and the tests check: every text the corpus holds tokenizes to exactly the
same token strings as before (only the ids change), and the model gives the same logits for
the kept tokens on those texts. Any other text still tokenizes (the byte alphabet is kept),
into smaller pieces than before. The result is an ordinary Hugging Face model dir with its
own tokenizer, so vLLM serves it unchanged.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path

import torch

from distill.atomic import atomic_dir
from distill.packaged import save_state_dict_dir, write_marker
from distill.student_init import load_state, read_config

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "config.json", "generation_config.json")


def _merge_pairs(merges: list) -> list[tuple[str, str]]:
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else (m[0], m[1]) for m in merges]


def tokens_used(tokenizer, texts: Iterable[str]) -> set[int]:
    """Token ids the texts tokenize to (no special tokens added: the template writes its own)."""
    used: set[int] = set()
    for text in texts:
        used.update(tokenizer(text, add_special_tokens=False)["input_ids"])
    return used


def kept_token_ids(tokenizer_json: dict, used: set[int]) -> list[int]:
    """``used`` closed under what BPE needs to reach them: base tokens, specials, merge parts."""
    model = tokenizer_json["model"]
    vocab: dict[str, int] = model["vocab"]
    pairs = _merge_pairs(model["merges"])
    made_from = {a + b: (a, b) for a, b in pairs}
    keep = set(used) | {t["id"] for t in tokenizer_json.get("added_tokens", [])}
    keep |= {i for tok, i in vocab.items() if tok not in made_from}  # the alphabet: built by no merge
    by_id = {i: tok for tok, i in vocab.items()}
    stack = [by_id[i] for i in keep if i in by_id]
    while stack:
        parts = made_from.get(stack.pop())
        if parts is None:
            continue
        for part in parts:
            if vocab[part] not in keep:
                keep.add(vocab[part])
                stack.append(part)
    return sorted(keep)


def trim_vocabulary(model_dir: Path, out_dir: Path, texts: Iterable[str], used_ids: Iterable[int] = ()) -> dict:
    """Write ``out_dir``: ``model_dir`` with its vocabulary trimmed to what ``texts`` use.

    ``texts``: the workload's prompts and answers, rendered as the model sees them (chat
    template included). ``used_ids``: token ids known to be used (already tokenized
    examples), kept as well. Returns a summary (sizes, kept share) that also lands in the marker.
    """
    from transformers import AutoTokenizer

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tj = json.loads((model_dir / "tokenizer.json").read_text())
    texts = list(texts)
    keep = kept_token_ids(tj, tokens_used(tokenizer, texts) | set(used_ids))
    new_id = {old: new for new, old in enumerate(keep)}
    vocab = tj["model"]["vocab"]
    kept_tokens = {tok for tok, i in vocab.items() if i in new_id}
    tj["model"]["vocab"] = {tok: new_id[i] for tok, i in sorted(vocab.items(), key=lambda kv: kv[1]) if i in new_id}
    original_merges = tj["model"]["merges"]
    tj["model"]["merges"] = [m for m, (a, b) in zip(original_merges, _merge_pairs(original_merges))
                             if a in kept_tokens and b in kept_tokens and a + b in kept_tokens]
    for added in tj.get("added_tokens", []):
        added["id"] = new_id[added["id"]]

    config = dict(read_config(model_dir))
    old_vocab = int(config["vocab_size"])
    config["vocab_size"] = len(keep)
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if isinstance(config.get(key), int):
            config[key] = new_id[config[key]]
    index = torch.tensor(keep, dtype=torch.long)
    state = load_state(model_dir)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        if name in state and state[name].shape[0] == old_vocab:
            state[name] = state[name].index_select(0, index).contiguous()
    summary = {"vocab_before": old_vocab, "vocab_after": len(keep), "kept_share": round(len(keep) / old_vocab, 4),
               "merges_before": len(original_merges), "merges_after": len(tj["model"]["merges"]),
               "corpus_texts": len(texts)}
    with atomic_dir(out_dir) as tmp:
        save_state_dict_dir(state, config, tmp)
        (tmp / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False))
        tok_config = json.loads((model_dir / "tokenizer_config.json").read_text())
        if "added_tokens_decoder" in tok_config:
            tok_config["added_tokens_decoder"] = {str(new_id[int(k)]): v
                                                  for k, v in tok_config["added_tokens_decoder"].items()}
        (tmp / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2, ensure_ascii=False))
        generation = model_dir / "generation_config.json"
        if generation.is_file():
            gen = json.loads(generation.read_text())
            for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
                if isinstance(gen.get(key), int):
                    gen[key] = new_id[gen[key]]
            (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2))
        for extra in ("chat_template.jinja", "student_init.json"):
            if (model_dir / extra).is_file():
                shutil.copy2(model_dir / extra, tmp / extra)
        (tmp / "vocab_trim.json").write_text(json.dumps({**summary, "kept_ids": keep}))
        write_marker(tmp, kind="vocab-trimmed", source=str(model_dir), **summary)
    return summary


def chat_corpus(tokenizer, rows: Iterable[tuple[str, str]], system: str | None = None) -> list[str]:
    """(prompt, answer) pairs rendered through the chat template, as the model reads and writes them."""
    texts = []
    for prompt, answer in rows:
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        texts.append(tokenizer.apply_chat_template(messages, tokenize=False))
    return texts


def _example_list(examples) -> list:
    """The ``Example`` list of a list of examples or of a ``SparseDataset``."""
    return examples.examples if hasattr(examples, "examples") else examples


def example_token_ids(examples) -> set[int]:
    """Every token id of tokenized training examples (a list of ``Example`` or a ``SparseDataset``)."""
    used: set[int] = set()
    for e in _example_list(examples):
        used.update(e.prompt)
        used.update(e.response)
    return used


def trim_trained_student(model_dir: Path, out_dir: Path, examples, own_answers: int = 0) -> dict:
    """``distill run``'s last step (``student.trim_vocab``): trim a trained student to its training data.

    Kept: every token of the training examples as they were tokenized for training (prompts
    through the chat template, and the targets), plus the tokens of the student's own greedy
    answers on the first ``own_answers`` training prompts: a student may write tokens its
    targets never held, and a trimmed one could no longer. The byte alphabet stays, so any
    other text still tokenizes. Returns the summary, with the own-answer share that needed a
    token the targets lacked.
    """
    from distill.modeling import generate_ids, load_model, load_tokenizer

    used = example_token_ids(examples)
    extra: set[int] = set()
    prompts = [e.prompt for e in _example_list(examples)[:own_answers]]
    needed_new = 0
    if prompts:
        tok = load_tokenizer(model_dir)
        answers = generate_ids(load_model(model_dir), tok, [""] * len(prompts), 48, 32, prompts=prompts)
        for ids in answers:
            new = set(ids) - used
            needed_new += bool(new)
            extra |= new
    summary = trim_vocabulary(model_dir, out_dir, (), used | extra)
    summary.update(own_answers=len(prompts), own_answers_with_tokens_beyond_targets=needed_new)
    return summary
