"""The shipped default routing (support router + its measured threshold) does what the product
promises: customer-support messages go to the student, hard general questions to the teacher."""

from __future__ import annotations

import csv
import random

import pytest

from gateway.config import load_config
from gateway.routing.build import build_policy
from gateway.routing.policy import ThresholdPolicy

from support.shared_data import shared_data


@pytest.fixture(scope="module")
def policy():
    """The default chain: the competence gate in front of the support router."""
    built = build_policy(load_config().router)
    assert isinstance(built.inner, ThresholdPolicy)
    return built


def sample(path, column: str, n: int) -> list[str]:
    with open(path, newline="") as f:
        rows = [r[column] for r in csv.DictReader(f)]
    return random.Random(7).sample(rows, n)


def test_support_messages_go_to_the_student(policy):
    messages = sample(shared_data("banking77", "test.csv"), "text", 200)
    to_student = [policy.route([{"role": "user", "content": m}]).tier == "student" for m in messages]
    assert sum(to_student) / len(to_student) >= 0.9


def test_hard_general_questions_mostly_go_to_the_teacher(policy):
    questions = [q for name in ("college_physics", "abstract_algebra", "professional_law", "college_medicine")
                 for q in sample(shared_data("routellm", "mmlu", f"mmlu_{name}.csv"), "prompt", 25)]
    # Out of the student's scope they reach the general flagship (the competence gate), else the teacher.
    to_teacher = [policy.route([{"role": "user", "content": q}]).tier in ("flagship", "teacher") for q in questions]
    assert sum(to_teacher) / len(to_teacher) >= 0.6
