"""Banking77 data: locating it, chat formatting, tokenisation and collation.

Task format (what the adapted teacher learns, and what every tier answers):

    system: SYSTEM_PROMPT
    user:   <customer message>
    assistant: "Intent: <label>\\nReply: <short helpful reply>"

The intent comes first so a router or gateway can read it after a few tokens, and so
"exact label in the reply" accuracy is a simple parse. Banking77 has no replies, so the
reply is a short per-intent template: the point of the tier is the intent, the reply
shows the format a support bot would use.
"""

from __future__ import annotations

import csv
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

# the one shared-data lookup (router/ uses it too); recipes and benchmarks reach it from here
from tierwise_common.data_dir import data_root  # noqa: F401

SYSTEM_PROMPT = (
    "You are a bank's customer-support assistant. Name the intent of the customer's "
    "message, then reply briefly."
)
_INTENT_RE = re.compile(r"Intent:\s*([^\n]+)")


def read_csv(path: Path, limit: int | None = None) -> list[dict]:
    """Rows of a ``text,category`` CSV (category may be absent: unlabeled messages)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    with open(path, newline="", encoding="utf-8") as f:
        rows = [dict(r) for r in csv.DictReader(f)]
    if rows and "text" not in rows[0]:
        raise ValueError(f"{path} has no 'text' column (columns: {list(rows[0])})")
    return rows[:limit] if limit else rows


def subsample(rows: list[dict], limit: int | None, seed: int = 0) -> list[dict]:
    """A deterministic, label-stratified-enough random subset (shuffle then cut)."""
    if not limit or limit >= len(rows):
        return rows
    rng = random.Random(seed)
    idx = list(range(len(rows)))
    rng.shuffle(idx)
    return [rows[i] for i in sorted(idx[:limit])]


def load_categories(dataset_dir: Path) -> list[str]:
    p = Path(dataset_dir) / "categories.json"
    if p.is_file():
        return json.loads(p.read_text())
    return []


def readable(label: str) -> str:
    return label.replace("_", " ").replace("?", "").strip().lower()


def reply_for(label: str) -> str:
    """A short, helpful, intent-specific reply (template)."""
    return f"I can help with {readable(label)}. Please check the details in the app, and I'll guide you through the next steps."


def target_for(label: str) -> str:
    return f"Intent: {label}\nReply: {reply_for(label)}"


def parse_intent(text: str) -> str | None:
    """The label after ``Intent:`` in a reply (exact string, stripped), or None."""
    m = _INTENT_RE.search(text or "")
    return m.group(1).strip() if m else None


def messages_for(text: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": text}]


def prompt_ids(tokenizer, text: str) -> list[int]:
    ids = tokenizer.apply_chat_template(messages_for(text), add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    return list(ids)


def end_of_turn_id(tokenizer) -> int:
    tid = tokenizer.convert_tokens_to_ids("<|im_end|>")
    return tid if isinstance(tid, int) and tid >= 0 else tokenizer.eos_token_id


@dataclass
class Example:
    """One training sequence: prompt ids + response ids (response ends with end-of-turn)."""

    prompt: list[int]
    response: list[int]
    text: str = ""


def build_examples(
    tokenizer,
    texts: Sequence[str],
    responses: Sequence[str | list[int]],
    max_len: int = 128,
    prompts: Sequence[list[int]] | None = None,
) -> list[Example]:
    """Tokenise (message, response) pairs; responses may be strings or token-id lists.

    Token-id responses (from the teacher's own generation or an API teacher that returns
    token ids) are used as they are, so the student is trained on exactly the teacher's
    tokens. Over-long prompts are cut from the left of the message, never the response.
    ``prompts``: ready prompt ids (chat data renders whole conversations); by default each
    text is rendered with the Banking77 system prompt.
    """
    eot = end_of_turn_id(tokenizer)
    out = []
    for i, (text, resp) in enumerate(zip(texts, responses)):
        p = list(prompts[i]) if prompts is not None else prompt_ids(tokenizer, text)
        if isinstance(resp, str):
            r = tokenizer(resp, add_special_tokens=False)["input_ids"] + [eot]
        else:
            r = list(resp)
            if not r or r[-1] != eot:
                r = r + [eot]
        room = max_len - len(r)
        if room < 8:
            r = r[: max_len - 8]
            room = 8
        if len(p) > room:
            p = p[:3] + p[len(p) - room + 3:]  # keep the first tokens (role marker), cut the middle
        out.append(Example(prompt=p, response=r, text=text))
    return out


class ExampleDataset:
    """A torch-style dataset of dicts ``input_ids, labels`` (labels -100 on the prompt)."""

    def __init__(self, examples: list[Example]):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict:
        e = self.examples[i]
        return {
            "input_ids": e.prompt + e.response,
            "labels": [-100] * len(e.prompt) + e.response,
        }


class RightPadCollator:
    """Right padding for training (left padding gave NaN losses: fully masked rows)."""

    def __init__(self, pad_id: int, pad_to_multiple_of: int | None = 8):
        self.pad_id = pad_id
        self.mult = pad_to_multiple_of

    def __call__(self, batch: list[dict]) -> dict:
        import torch

        n = max(len(b["input_ids"]) for b in batch)
        if self.mult:
            n = ((n + self.mult - 1) // self.mult) * self.mult
        ids = torch.full((len(batch), n), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), n), -100, dtype=torch.long)
        att = torch.zeros((len(batch), n), dtype=torch.long)
        for i, b in enumerate(batch):
            L = len(b["input_ids"])
            ids[i, :L] = torch.tensor(b["input_ids"])
            labels[i, :L] = torch.tensor(b["labels"])
            att[i, :L] = 1
        return {"input_ids": ids, "attention_mask": att, "labels": labels}


def left_pad(batch_ids: Iterable[list[int]], pad_id: int) -> tuple[Any, Any]:
    """Left-padded ``(input_ids, attention_mask)`` tensors for batched generation."""
    import torch

    batch_ids = list(batch_ids)
    n = max(len(x) for x in batch_ids)
    ids = torch.full((len(batch_ids), n), pad_id, dtype=torch.long)
    att = torch.zeros((len(batch_ids), n), dtype=torch.long)
    for i, x in enumerate(batch_ids):
        ids[i, n - len(x):] = torch.tensor(x)
        att[i, n - len(x):] = 1
    return ids, att
