"""Text similarity for comparing two answers: ROUGE-L F1 with one tokenisation.

Words are runs of word characters (``\\w+``, Unicode-aware) of the lower-cased text, so
punctuation never splits or glues words ("help." and "help" are the same word). That is
what the ``rouge-score`` package does for ASCII text (without stemming), and it is used by
both the gateway's live shadow agreement and distillation's offline agreement, so the two
numbers are the same metric.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    """The lower-cased word tokens ROUGE-L compares."""
    return _WORD.findall(text.lower())


def lcs_len(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (O(len(a) * len(b)))."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l_f1(candidate: str, reference: str) -> float:
    """ROUGE-L F1 in [0, 1]: order-aware overlap, tolerant of small wording changes.

    Two empty texts agree (1.0); one empty text agrees with nothing (0.0).
    """
    c, r = words(candidate), words(reference)
    if not c or not r:
        return float(c == r)
    lcs = lcs_len(c, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(c), lcs / len(r)
    return 2 * precision * recall / (precision + recall)
