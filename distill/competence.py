"""Every student ships with its competence index: a model of the prompts it was taught on.

The gateway's competence gate (``gateway/routing/competence_gate.py``) sends a request that
lies far from those prompts to the teacher. The index is fitted here, from the student's own
training prompts only, and written next to the student as ``competence.skops``:

* ``python -m distill run`` writes ``OUT/model/competence.skops`` after training and lists it
  in the card (``distill_card.json``: file, sha256, threshold, parameters, validation);
* ``export_tiers`` (``distill/ship.py``) ships it with the student's layers and lists it,
  hash and all, in ``artifacts/tiers/manifest.json``; ``assemble`` checks the hash and puts
  it into the built student dir;
* an existing student gets one with ``python -m distill competence --student DIR --prompts
  CSV_OR_JSONL``; a student dir inside a shipped artifacts dir also gets its manifest entry
  updated, so the hash check covers the new file.

torch-free: this module only reads text files and calls ``router.competence``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

from router.competence import CompetenceIndex, save_competence

INDEX_FILE = "competence.skops"
CARD_FILE = "distill_card.json"
MANIFEST_FILE = "manifest.json"


def read_prompts(path: Path, text_column: str = "text") -> list:
    """The prompts of a CSV (``text_column``) or JSONL file (``text_column`` or ``messages`` per line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file not found: {path}")
    if path.suffix == ".jsonl":
        prompts: list = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if text_column in row:
                    prompts.append(str(row[text_column]))
                elif isinstance(row.get("messages"), list):
                    prompts.append(row["messages"])
                else:
                    raise ValueError(f"{path}:{n} has neither {text_column!r} nor 'messages'")
        return prompts
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if text_column not in (reader.fieldnames or []):
            raise ValueError(f"{path} has no {text_column!r} column (columns: {reader.fieldnames})")
        return [row[text_column] for row in reader]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def write_competence(student_dir: Path, prompts: Sequence, source: str,
                     known_prompts: Sequence[str] = (), **params) -> dict:
    """Fit the index on ``prompts``, write ``student_dir/competence.skops``, list it in the card.

    ``known_prompts``: the system prompt(s) the student was trained with; the gate ignores
    them in requests. ``params``: ``CompetenceIndex`` parameters (features, k,
    target_acceptance, ...). Returns the card entry (also written into the card if one exists).
    """
    student_dir = Path(student_dir)
    t0 = time.perf_counter()
    index = CompetenceIndex(known_prompts=tuple(known_prompts), **params).fit(list(prompts))
    fit_s = time.perf_counter() - t0
    params_used = {k: v for k, v in index.get_params().items() if k != "known_prompts"}
    metadata = {"fitted_on": source, "n_prompts": len(prompts), "params": params_used,
                "known_prompts": list(known_prompts), "validation": index.validation_summary(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path = save_competence(index, student_dir / INDEX_FILE, metadata)
    entry = {"file": INDEX_FILE, "sha256": _sha256(path), "threshold": round(index.threshold_, 6),
             "fitted_on": source, "n_prompts": len(prompts), "params": params_used,
             "validation_acceptance": round(index.validation_acceptance(), 4), "fit_seconds": round(fit_s, 1)}
    card = student_dir / CARD_FILE
    if card.is_file():
        data = json.loads(card.read_text())
        data["competence"] = entry
        card.write_text(json.dumps(data, indent=2, default=str))
    _update_manifest(student_dir)
    return entry


def _update_manifest(student_dir: Path) -> None:
    """If ``student_dir`` is a shipped tier dir (``artifacts/tiers/<tier>``), re-hash its listed files.

    The manifest lists each shipped file with its sha256; the index is added to the tier's
    files and the card's hash (it just changed) is refreshed, so ``assemble`` verifies both.
    """
    manifest_path = student_dir.parent / MANIFEST_FILE
    if not manifest_path.is_file():
        return
    manifest = json.loads(manifest_path.read_text())
    prefix = student_dir.name + "/"
    for entry in manifest.get("tiers", {}).values():
        files = entry.get("files", {})
        if not any(rel.startswith(prefix) for rel in files):
            continue
        for name in (INDEX_FILE, CARD_FILE):
            if (student_dir / name).is_file():
                files[prefix + name] = _sha256(student_dir / name)
        manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True))
        return


def for_recipe(recipe, model_dir: Path) -> dict:
    """The index of a student that ``python -m distill run`` just trained with ``recipe``.

    Fitted on exactly the prompts the student was trained on (the recipe's training file,
    subsampled as ``distill_run`` does) with the task's system prompt as a known prompt.
    A training set too small to hold out a validation split gets no index, and the card
    says why rather than the run failing after training.
    """
    from distill.data import SYSTEM_PROMPT, read_csv, subsample

    if recipe.data.format == "chat_jsonl":  # the user turns it was trained on; the data's system prompts
        from distill.chat_data import last_user_text, read_chat_jsonl

        records = read_chat_jsonl(recipe.data.train_path(), recipe.data.max_train)
        texts = [last_user_text(r) for r in records]
        known = tuple(sorted({m["content"] for r in records for m in r["messages"][:-1] if m["role"] == "system"}))
    else:
        texts = [r["text"] for r in subsample(read_csv(recipe.data.train_path()), recipe.data.max_train, seed=0)]
        known = (SYSTEM_PROMPT,)
    try:
        return write_competence(model_dir, texts, source=str(recipe.data.train_path()), known_prompts=known)
    except ValueError as exc:
        return {"skipped": str(exc)}
