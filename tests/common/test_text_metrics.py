"""ROUGE-L as the gateway (live shadow agreement) and distill (offline agreement) both compute it."""

from __future__ import annotations

import pytest

from distill.evaluate import agreement as offline_agreement
from gateway.shadow.agreement import agreement as live_agreement
from tierwise_common.text_metrics import lcs_len, rouge_l_f1, words


def test_words_ignore_case_and_punctuation() -> None:
    assert words("Intent: card_arrival\nReply: I can help.") == ["intent", "card_arrival", "reply", "i", "can", "help"]
    assert words("Ça coûte 3,50 €!") == ["ça", "coûte", "3", "50"]


def test_lcs_and_f1_by_hand() -> None:
    assert lcs_len("a b c d".split(), "a c d e".split()) == 3
    # 5 and 5 words, LCS "card did arrive" = 3: P = R = 3/5, F1 = 0.6
    assert rouge_l_f1("the card did not arrive", "my card did arrive today") == pytest.approx(0.6)
    # 5 and 4 words, LCS "the card" = 2: P = 2/5, R = 2/4, F1 = 2PR / (P + R) = 4/9
    assert rouge_l_f1("the card has not arrived", "the card did arrive") == pytest.approx(4 / 9)
    assert rouge_l_f1("", "") == 1.0
    assert rouge_l_f1("", "anything") == 0.0
    assert rouge_l_f1("x y", "z") == 0.0


def test_gateway_and_distill_report_the_same_number() -> None:
    """Before one module, distill split on whitespace: "help." and "help" were different words."""
    student = "Intent: card_arrival\nReply: I can help."
    teacher = "Intent: card_arrival\nReply: I can help with card arrival"
    # 6 and 9 words, LCS 6 (all of the student's): P = 1, R = 2/3, F1 = 0.8 (whitespace split: LCS 5)
    assert rouge_l_f1(student, teacher) == pytest.approx(0.8)
    assert live_agreement(student, teacher) == rouge_l_f1(student, teacher)
    assert offline_agreement([student], [teacher])["rouge_l"] == rouge_l_f1(student, teacher)
