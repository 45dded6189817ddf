"""The judge's prompt and verdicts (``distill/judge.py``); the calls through a real gateway and
vLLM teacher are in ``tests/gateway/test_cascade_vllm.py``."""

from __future__ import annotations

import pytest

from distill.judge import judge_answers, judge_messages, parse_verdict


@pytest.mark.parametrize(("text", "verdict"), [("yes", True), ("Yes.", True), ("NO", False), ("no, it differs", False),
                                               ("The answer: yes", True), ("yesterday", None), ("maybe", None),
                                               ("", None)])
def test_verdicts(text, verdict):
    assert parse_verdict(text) is verdict


def test_the_judge_sees_the_request_with_its_task_then_reference_then_candidate():
    prompt = [{"role": "system", "content": "Name the intent."}, {"role": "user", "content": "my card?"}]
    messages = judge_messages(prompt, "candidate text", "reference text")
    assert messages[0]["role"] == "system" and "yes" in messages[0]["content"]
    body = messages[1]["content"]
    assert body.index("Name the intent.") < body.index("my card?") < body.index("reference text") < body.index("candidate text")


def test_lengths_must_match():
    with pytest.raises(ValueError):
        judge_answers([[]], ["a", "b"], ["a"], base_url="http://127.0.0.1:9", model="teacher")
