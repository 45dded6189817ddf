"""A tiny unlabeled slice of Banking77 for CPU distillation tests."""

from __future__ import annotations

import csv
from pathlib import Path

from support.shared_data import shared_data


def write_tiny_banking_csv(dest_dir: Path, stride: int, n: int) -> Path:
    """Every ``stride``-th Banking77 training message, ``n`` of them, unlabeled (KD needs no labels).

    Fails (does not skip) where Banking77 is missing: see ``support.shared_data``.
    """
    src = shared_data("banking77", "train.csv")
    rows = list(csv.DictReader(open(src, newline="")))[::stride][:n]
    p = dest_dir / "tiny.csv"
    with open(p, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["text"])
        w.writeheader()
        w.writerows({"text": r["text"]} for r in rows)
    return p

