"""From captured traffic to a distillation dataset, per workload (issue #13 item 2).

Captured records (the ``captures`` table: the client's request, the teacher's answer, maybe
its top-k logprobs) become chat records: the request's messages plus the teacher's answer as
the last, assistant turn. Then:

1. **Exact duplicates** go: the same prompt (every message but the answer), compared after
   case folding and whitespace collapsing, is kept once (the first capture).
2. **Near duplicates** go: prompts whose character 3-5-gram TF-IDF vectors have a cosine of at
   least ``near_duplicate_cosine`` (0.9 by default: a changed word or a typo, not a rephrasing)
   to an earlier kept prompt. Without this, near-copies land on both sides of the split and
   the test score measures memory.
3. **A stratified split** into train / validation / test by the answer's label (its first
   line, e.g. ``Intent: card_arrival``, or the keys of a JSON answer), so every split sees the
   workload's mix. Labels too rare to appear in every split on their own are pooled and the
   pool is split at the same shares (so a workload of free-form answers, where almost every
   label is unique, still gets its 10 % test split). Validation chooses epochs and thresholds;
   test is never used for a choice.

The output is chat-format JSONL (``{"messages": [...], "workload", "request_id", "label",
"teacher_logprobs"?}``) that ``datasets.load_dataset("json", ...)`` and ``distill`` read.
"""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gateway.capture.store import CaptureStore
from gateway.config import CaptureConfig
from gateway.ledger.schema import normalise_url

SPLITS = ("train", "validation", "test")
_SPACE = re.compile(r"\s+")


@dataclass
class DatasetReport:
    workload: str
    captured: int = 0
    unusable: int = 0  # no answer text, or a request shape the chat format cannot hold
    exact_duplicates: int = 0
    near_duplicates: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    labels: int = 0

    def manifest(self, seed: int, fractions: dict[str, float], near_cosine: float, source: str) -> dict:
        return {"workload": self.workload, "counts": self.counts, "captured": self.captured,
                "unusable": self.unusable, "dedup": {"exact": self.exact_duplicates, "near": self.near_duplicates,
                                                     "near_duplicate_cosine": near_cosine},
                "labels": self.labels, "seed": seed, "fractions": fractions,
                "label_rule": "first line of the teacher's answer (JSON answers: their sorted keys)",
                "choices": "validation chooses epochs/thresholds; test is never used for a choice",
                "source": source}


def read_captures(ledger: Engine | str, workload: str) -> Iterator[dict]:
    """Captured records of ``workload``, oldest first (``CaptureStore.iter_records``)."""
    engine = ledger if isinstance(ledger, Engine) else sa.create_engine(normalise_url(ledger))
    try:
        yield from CaptureStore(engine, CaptureConfig()).iter_records(workload)
    finally:
        if engine is not ledger:
            engine.dispose()


def answer_label(answer: str) -> str:
    """The stratum of an answer: its first line, or the sorted keys of a JSON object."""
    text = answer.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if isinstance(value, dict):
            return "json:" + ",".join(sorted(map(str, value)))
    first = text.splitlines()[0].strip() if text else ""
    return first[:120] or "unlabeled"


def chat_record(capture: dict) -> dict | None:
    """The chat record of one capture, or None when it holds no usable prompt and answer."""
    request = json.loads(capture["request_json"])
    response = json.loads(capture["response_json"])
    choices = response.get("choices") or []
    if not choices:
        return None
    choice = choices[0]
    if capture["endpoint"] == "completions":
        prompt = request.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            return None
        messages = [{"role": "user", "content": prompt}]
        answer = choice.get("text")
    else:
        messages = [_plain(m) for m in request.get("messages") or []]
        if not messages or any(m is None for m in messages):
            return None
        answer = (choice.get("message") or {}).get("content")
    if not isinstance(answer, str) or not answer.strip():
        return None
    record = {"messages": [*messages, {"role": "assistant", "content": answer}], "workload": capture["workload"],
              "request_id": capture["request_id"], "label": answer_label(answer)}
    if capture.get("logprobs_json"):
        record["teacher_logprobs"] = json.loads(capture["logprobs_json"])
    return record


def _plain(message: dict) -> dict | None:
    """``{"role", "content"}`` with text content (parts joined); None for what text cannot hold."""
    content = message.get("content")
    if isinstance(content, list):
        if any(isinstance(p, dict) and p.get("type") not in ("text", None) for p in content):
            return None  # images, audio: not a text student's data
        content = "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    if not isinstance(content, str) or message.get("role") not in ("system", "developer", "user", "assistant"):
        return None
    return {"role": "system" if message["role"] == "developer" else message["role"], "content": content}


def prompt_key(record: dict) -> str:
    """What two records must share to be exact duplicates: the prompt, case and spacing folded."""
    return "\n".join(f"{m['role']}:{_SPACE.sub(' ', m['content']).strip().casefold()}" for m in record["messages"][:-1])


def remove_duplicates(records: list[dict], near_cosine: float) -> tuple[list[dict], int, int]:
    """Records without exact and near duplicates (the first of each kept); and how many of each went."""
    seen: set[str] = set()
    unique = []
    for record in records:
        key = prompt_key(record)
        if key not in seen:
            seen.add(key)
            unique.append(record)
    exact = len(records) - len(unique)
    if len(unique) < 2 or near_cosine >= 1.0:
        return unique, exact, 0
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.neighbors import NearestNeighbors

    texts = [prompt_key(r) for r in unique]
    vectors = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), min_df=1).fit_transform(texts)
    neighbours = NearestNeighbors(metric="cosine", algorithm="brute").fit(vectors)
    _, indices = neighbours.radius_neighbors(vectors, radius=1.0 - near_cosine + 1e-9)
    kept: list[dict] = []
    kept_idx: set[int] = set()
    for i, near in enumerate(indices):
        if any(j < i and j in kept_idx for j in near):
            continue
        kept_idx.add(i)
        kept.append(unique[i])
    return kept, exact, len(unique) - len(kept)


def stratified_split(records: list[dict], validation: float, test: float, seed: int) -> dict[str, list[dict]]:
    """Train / validation / test with each label's share in each split; labels too rare for that
    are pooled, and the pool is split at the same shares."""
    by_label: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        by_label[record["label"]].append(record)
    rng = random.Random(seed)
    splits: dict[str, list[dict]] = {name: [] for name in SPLITS}
    rare: list[dict] = []

    def cut(group: list[dict]) -> bool:
        n_val, n_test = round(len(group) * validation), round(len(group) * test)
        if n_val == 0 or n_test == 0 or n_val + n_test >= len(group):
            return False
        splits["test"].extend(group[:n_test])
        splits["validation"].extend(group[n_test:n_test + n_val])
        splits["train"].extend(group[n_test + n_val:])
        return True

    for label in sorted(by_label):
        group = by_label[label]
        rng.shuffle(group)
        if not cut(group):
            rare.extend(group)  # too rare to appear in every split on its own
    rng.shuffle(rare)
    if not cut(rare):
        splits["train"].extend(rare)  # a handful of records in all: nothing to hold out
    for name in SPLITS:
        rng.shuffle(splits[name])
    return splits


def build_dataset(captured: Iterable[dict], workload: str, out: Path, *, validation: float = 0.1, test: float = 0.1,
                  seed: int = 0, near_cosine: float = 0.9, source: str = "captures") -> DatasetReport:
    """Write ``out/<workload>/{train,validation,test}.jsonl`` and ``manifest.json``; return the report."""
    report = DatasetReport(workload=workload)
    records = []
    for capture in captured:
        report.captured += 1
        record = chat_record(capture)
        if record is None:
            report.unusable += 1
        else:
            records.append(record)
    records, report.exact_duplicates, report.near_duplicates = remove_duplicates(records, near_cosine)
    splits = stratified_split(records, validation, test, seed)
    report.counts = {name: len(rows) for name, rows in splits.items()}
    report.labels = len({r["label"] for r in records})
    folder = Path(out) / workload
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    fractions = {"train": round(1 - validation - test, 6), "validation": validation, "test": test}
    (folder / "manifest.json").write_text(json.dumps(report.manifest(seed, fractions, near_cosine, source), indent=2))
    return report
