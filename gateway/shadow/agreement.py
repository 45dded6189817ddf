"""How much two answers to the same request agree, in [0, 1].

ROUGE-L F1 over lower-cased word tokens (longest common subsequence): order-aware, tolerant of
small wording changes, and cheap enough to run on every shadow pair; it is
``tierwise_common.text_metrics``'s, the same function distillation's offline agreement uses.
For answers that start with a label (the customer-support tiers answer ``intent: <label>``
first), ``first_line`` compares just that line exactly.
"""

from __future__ import annotations

from typing import Literal

from tierwise_common.text_metrics import rouge_l_f1

Metric = Literal["rouge_l", "first_line"]


def first_line_match(a: str, b: str) -> float:
    def first(text: str) -> str:
        return next((line.strip().lower() for line in text.splitlines() if line.strip()), "")
    return float(first(a) == first(b))


def agreement(a: str, b: str, metric: Metric = "rouge_l") -> float:
    return rouge_l_f1(a, b) if metric == "rouge_l" else first_line_match(a, b)
