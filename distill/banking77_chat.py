"""Banking77 as one chat dataset among others: the CSV rendered as chat JSONL records.

Each message becomes ``[system: the support prompt, user: message, assistant: "Intent: <label>
\\nReply: ..."]`` (gold answers: Banking77 has no replies). Validation is carved out of
``train.csv`` with a split stratified by intent; test is ``test.csv``, untouched.
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

from distill.chat_data import write_chat_jsonl
from distill.data import SYSTEM_PROMPT, read_csv, target_for


def chat_record(text: str, label: str) -> dict:
    return {"messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": text},
                         {"role": "assistant", "content": target_for(label)}],
            "workload": "banking77", "label": f"Intent: {label}"}


def write_banking77(dataset_dir: Path, out: Path, validation: float = 0.1, seed: int = 0) -> dict[str, int]:
    """``out/{train,validation,test}.jsonl`` from ``dataset_dir/{train,test}.csv``; returns the counts."""
    by_label: dict[str, list[dict]] = defaultdict(list)
    for row in read_csv(Path(dataset_dir) / "train.csv"):
        by_label[row["category"]].append(row)
    rng = random.Random(seed)
    train, val = [], []
    for label in sorted(by_label):
        rows = by_label[label]
        rng.shuffle(rows)
        n_val = max(1, round(len(rows) * validation))
        val += [chat_record(r["text"], label) for r in rows[:n_val]]
        train += [chat_record(r["text"], label) for r in rows[n_val:]]
    rng.shuffle(train)
    test = [chat_record(r["text"], r["category"]) for r in read_csv(Path(dataset_dir) / "test.csv")]
    for name, records in (("train", train), ("validation", val), ("test", test)):
        write_chat_jsonl(records, Path(out) / f"{name}.jsonl")
    return {"train": len(train), "validation": len(val), "test": len(test)}
