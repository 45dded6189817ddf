"""How much two answers to the same request agree, in [0, 1].

ROUGE-L F1 over lower-cased word tokens (longest common subsequence): order-aware, tolerant of
small wording changes, and cheap enough to run on every shadow pair. For answers that start
with a label (the customer-support tiers answer ``intent: <label>`` first), ``first_line``
compares just that line exactly.
"""

from __future__ import annotations

import re
from typing import Literal

Metric = Literal["rouge_l", "first_line"]
_WORD = re.compile(r"\w+", re.UNICODE)


def rouge_l_f1(a: str, b: str) -> float:
    x, y = _WORD.findall(a.lower()), _WORD.findall(b.lower())
    if not x or not y:
        return float(x == y)
    previous = [0] * (len(y) + 1)
    for xi in x:
        current = [0]
        for j, yj in enumerate(y):
            current.append(previous[j] + 1 if xi == yj else max(previous[j + 1], current[j]))
        previous = current
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(x), lcs / len(y)
    return 2 * precision * recall / (precision + recall)


def first_line_match(a: str, b: str) -> float:
    def first(text: str) -> str:
        return next((line.strip().lower() for line in text.splitlines() if line.strip()), "")
    return float(first(a) == first(b))


def agreement(a: str, b: str, metric: Metric = "rouge_l") -> float:
    return rouge_l_f1(a, b) if metric == "rouge_l" else first_line_match(a, b)
