"""Chat data: distilling from any workload's conversations, not only Banking77 (issue #13).

A chat record (``flywheel.dataset`` writes them; ``distill dataset banking77`` converts the
CSV) is ``{"messages": [...], "teacher_logprobs"?: [...], "label"?: ...}``: every message but
the last is the prompt, rendered with the student's chat template (the system prompt is
whatever the data says); the last, assistant message is the target. When the records were
captured from the teacher, that target *is* the teacher's answer (sequence-level KD, no second
pass over the teacher), and ``teacher_logprobs`` (OpenAI's chat logprobs ``content`` list)
give sparse top-k soft targets. A record whose captured tokens do not map onto the student's
vocabulary falls back to sequence-level KD alone, and is counted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.api_teacher import SparseDataset, parse_choice
from distill.data import Example, build_examples, end_of_turn_id, subsample


@dataclass
class ChatExamples:
    """Tokenised chat records, with their sparse targets when the records carry logprobs."""

    examples: list[Example] | SparseDataset
    records: list[dict]
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.examples)


def read_chat_jsonl(path: Path, limit: int | None = None, seed: int = 0) -> list[dict]:
    """The records of a chat JSONL file (a seeded subsample of ``limit`` when given)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"chat data file not found: {path}")
    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            messages = record.get("messages")
            if not isinstance(messages, list) or len(messages) < 2 or messages[-1].get("role") != "assistant":
                raise ValueError(f"{path}:{n}: a chat record needs 'messages' ending with the assistant's answer")
            records.append(record)
    return subsample(records, limit, seed=seed) if limit else records


def prompt_messages(record: dict) -> list[dict]:
    return [{"role": m["role"], "content": m["content"]} for m in record["messages"][:-1]]


def answer_text(record: dict) -> str:
    return record["messages"][-1]["content"]


def chat_prompt_ids(tokenizer: Any, messages: list[dict]) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    return list(ids)


def last_user_text(record: dict) -> str:
    users = [m["content"] for m in record["messages"][:-1] if m["role"] == "user"]
    return users[-1] if users else ""


def chat_examples(tokenizer: Any, records: list[dict], max_len: int, top_k: int = 5,
                  use_logprobs: bool = True) -> ChatExamples:
    """Examples whose targets are the records' answers; sparse top-k targets where captured.

    With ``use_logprobs`` and at least one record carrying ``teacher_logprobs``, the result is
    a :class:`SparseDataset` (records without usable logprobs get no soft targets there, only
    the hard one); otherwise plain examples.
    """
    eot = end_of_turn_id(tokenizer)
    prompts = [chat_prompt_ids(tokenizer, prompt_messages(r)) for r in records]
    texts = [last_user_text(r) for r in records]
    with_logprobs = use_logprobs and any(r.get("teacher_logprobs") for r in records)
    if not with_logprobs:
        examples = build_examples(tokenizer, texts, [answer_text(r) for r in records], max_len, prompts=prompts)
        return ChatExamples(examples, records, {"soft_targets": "none", "records": len(records)})
    responses, topk, aligned, fallback = [], [], 0, 0
    for record in records:
        answer_ids = tokenizer(answer_text(record), add_special_tokens=False)["input_ids"]
        ids, top_ids, top_lps = parse_choice(tokenizer, {"logprobs": {"content": record.get("teacher_logprobs") or []}},
                                             top_k)
        # The captured tokens must spell the answer the student is trained on, token for token.
        if ids and [i for i in ids if i != eot] == answer_ids:
            aligned += 1
        else:
            ids, top_ids, top_lps = answer_ids, [], []
            fallback += 1
        responses.append(ids + [eot] if not ids or ids[-1] != eot else ids)
        topk.append((top_ids, top_lps))
    examples = build_examples(tokenizer, texts, responses, max_len, prompts=prompts)
    info = {"soft_targets": "captured_top_k", "top_k": top_k, "records": len(records),
            "aligned_logprobs": aligned, "sequence_level_only": fallback}
    return ChatExamples(SparseDataset(examples, topk, top_k, tokenizer.pad_token_id or eot), records, info)


def write_chat_jsonl(records: list[dict], path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
