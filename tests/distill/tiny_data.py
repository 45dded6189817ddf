"""A tiny unlabeled slice of Banking77 for CPU distillation tests."""

from __future__ import annotations

from pathlib import Path

import pytest


def write_tiny_banking_csv(dest_dir: Path, stride: int, n: int) -> Path:
    """Every ``stride``-th Banking77 training message, ``n`` of them, unlabeled (KD needs no labels)."""
    import csv

    from distill.data import data_root

    src = data_root() / "banking77" / "train.csv"
    if not src.is_file():
        pytest.skip(f"Banking77 not found at {src}")
    rows = list(csv.DictReader(open(src, newline="")))[::stride][:n]
    p = dest_dir / "tiny.csv"
    with open(p, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["text"])
        w.writeheader()
        w.writerows({"text": r["text"]} for r in rows)
    return p

