"""Captured traffic -> dataset (issue #13 item 2): exact and near duplicates removed, a
stratified train/validation/test split with no prompt on two sides, chat JSONL that loads as
a JSON-lines dataset. Captures are written by the gateway's own CaptureStore, on real SQLite
and PostgreSQL."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime

import pytest

from flywheel.dataset import answer_label, build_dataset, prompt_key, read_captures
from gateway.capture.store import CapturedPair, CaptureStore
from gateway.config import CaptureConfig
from gateway.ledger.schema import make_engine
from support.processes import REPO
from support.shared_data import shared_data

SYSTEM = "You are a bank's customer-support assistant. Name the intent of the customer's message, then reply briefly."


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request, tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")


def _banking(n_per_label: int = 20, labels: int = 6) -> list[tuple[str, str]]:
    by_label: dict[str, list[str]] = {}
    with open(shared_data("banking77", "train.csv"), newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if len(by_label) < labels or row["category"] in by_label:
                by_label.setdefault(row["category"], [])
                if len(by_label[row["category"]]) < n_per_label:
                    by_label[row["category"]].append(row["text"])
    return [(text, label) for label, texts in by_label.items() for text in texts]


def _capture(store: CaptureStore, i: int, text: str, label: str, workload: str = "support") -> None:
    answer = f"Intent: {label}\nReply: Let me help with that."
    store.write([CapturedPair(
        request_id=f"{workload}-{i}", ts=datetime.now(UTC), workload=workload, api_key_id=None,
        endpoint="chat.completions", tier="teacher",
        request={"model": "auto", "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]},
        response={"choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}]},
        logprobs=[{"token": "Intent", "logprob": -0.01, "top_logprobs": [{"token": "Intent", "logprob": -0.01}]}],
        prompt_tokens=20, completion_tokens=9)])


def test_dedup_split_and_export(db, tmp_path):
    engine = make_engine(db)
    store = CaptureStore(engine, CaptureConfig(enabled=True))
    rows = _banking()
    for i, (text, label) in enumerate(rows):
        _capture(store, i, text, label)
    first_text, first_label = rows[0]
    _capture(store, 1000, "  " + first_text.upper() + " ", first_label)  # exact duplicate (case, spacing)
    _capture(store, 1001, first_text.rstrip("?.!") + "!!", first_label)  # near duplicate (punctuation)
    _capture(store, 1002, "what is the capital of France?", "general", workload="other")
    report = build_dataset(read_captures(engine, "support"), "support", tmp_path / "data", seed=3)
    engine.dispose()

    assert report.captured == len(rows) + 2 and report.exact_duplicates == 1 and report.near_duplicates >= 1
    folder = tmp_path / "data" / "support"
    splits = {name: [json.loads(line) for line in open(folder / f"{name}.jsonl")] for name in ("train", "validation", "test")}
    assert sum(map(len, splits.values())) == report.captured - report.exact_duplicates - report.near_duplicates
    keys = {name: {prompt_key(r) for r in recs} for name, recs in splits.items()}
    assert not (keys["train"] & keys["test"]) and not (keys["train"] & keys["validation"])
    for name in ("validation", "test"):  # every label in every split, in proportion
        assert Counter(r["label"] for r in splits[name]) == Counter({f"Intent: {lbl}": 2 for lbl in {l for _, l in rows}})
    record = splits["train"][0]
    assert [m["role"] for m in record["messages"]] == ["system", "user", "assistant"]
    assert record["messages"][0]["content"] == SYSTEM and record["workload"] == "support"
    assert record["teacher_logprobs"][0]["token"] == "Intent" and record["label"] == answer_label(record["messages"][-1]["content"])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["counts"] == {k: len(v) for k, v in splits.items()} and manifest["dedup"]["exact"] == 1
    # JSON lines as `datasets.load_dataset("json", ...)` reads them: one object per line, one schema
    # for every line of a split (`datasets` is not installed here, so the format is checked directly).
    for recs in splits.values():
        assert {tuple(sorted(r)) for r in recs} == {("label", "messages", "request_id", "teacher_logprobs", "workload")}


def test_labels_of_json_and_plain_answers():
    assert answer_label('{"intent": "card_arrival", "reply": "x"}') == "json:intent,reply"
    assert answer_label("B\n\nBecause ...") == "B"
    assert answer_label("   ") == "unlabeled"


def test_cli_builds_a_dataset_and_refuses_an_empty_workload(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = make_engine(url)
    store = CaptureStore(engine, CaptureConfig(enabled=True))
    for i, (text, label) in enumerate(_banking(10, 3)):
        _capture(store, i, text, label)
    engine.dispose()
    ok = subprocess.run([sys.executable, "-m", "flywheel", "dataset", "--workload", "support", "--out",
                         str(tmp_path / "ds"), "--ledger-url", url], cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "ds" / "support" / "test.jsonl").stat().st_size > 0
    empty = subprocess.run([sys.executable, "-m", "flywheel", "dataset", "--workload", "nobody", "--out",
                            str(tmp_path / "ds"), "--ledger-url", url], cwd=REPO, capture_output=True, text=True)
    assert empty.returncode == 2 and "no captured records" in empty.stderr and "Traceback" not in empty.stderr


def test_rare_labels_are_pooled_so_free_form_workloads_still_get_a_test_split():
    from flywheel.dataset import stratified_split

    frequent = [{"label": "Intent: card_arrival", "i": i} for i in range(50)]
    unique = [{"label": f"free answer {i}", "i": 100 + i} for i in range(200)]  # every label once
    splits = stratified_split(frequent + unique, validation=0.1, test=0.1, seed=0)
    sizes = {name: len(rows) for name, rows in splits.items()}
    assert sizes == {"train": 200, "validation": 25, "test": 25}
    assert sum(r["label"].startswith("free") for r in splits["test"]) == 20  # the pool, at the same share
    ids = [r["i"] for rows in splits.values() for r in rows]
    assert sorted(ids) == sorted(r["i"] for r in frequent + unique)  # nothing lost or doubled
    tiny = stratified_split([{"label": str(i)} for i in range(5)], validation=0.1, test=0.1, seed=0)
    assert len(tiny["train"]) == 5 and not tiny["test"]
