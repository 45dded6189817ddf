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


# -- conversations (issue #14 item 3): the whole conversation is routed, not its last turn --------

CARD_FOLLOW_UP = [  # a banking conversation whose last turn alone looks like nothing the student knows
    {"role": "user", "content": "I lost my card yesterday and I think someone is using it."},
    {"role": "assistant", "content": "I'm sorry to hear that. I can block it for you."},
    {"role": "user", "content": "Yes please, and send me a new one."}]
CODE_FOLLOW_UP = [  # a coding conversation whose last turn alone looks like banking
    {"role": "user", "content": "Write a Python function that reverses a linked list."},
    {"role": "assistant", "content": "def reverse(head): ..."},
    {"role": "user", "content": "Can you add a top up of the transfer fee to it?"}]
CODING_SYSTEM = [  # another task's instructions: the student was not taught this job
    {"role": "system", "content": "You are an expert Python programming tutor. Answer with code."},
    {"role": "user", "content": "How do I transfer money between two accounts?"}]


@pytest.mark.parametrize("conversation, whole, last_alone", [
    (CARD_FOLLOW_UP, "student", "flagship"),
    (CODE_FOLLOW_UP, "flagship", "student"),
    (CODING_SYSTEM, "flagship", "student"),
])
def test_the_conversation_routes_where_its_last_turn_alone_would_not(policy, conversation, whole, last_alone):
    assert policy.route(conversation).tier == whole
    assert policy.route(conversation[-1:]).tier == last_alone


def test_conversations_route_the_same_through_the_gateway(stub, tmp_path):
    """The gateway hands the router the whole conversation, system prompt included (real HTTP)."""
    import httpx

    from support.configs import STUDENT, TEACHER
    from support.processes import start_gateway

    tiers = [{"model_name": name, "role": role, "price": price, "url": {"base_url": stub.url + "/v1"}}
             for name, role, price in (("flagship", "teacher", TEACHER), ("teacher", "teacher", TEACHER),
                                       ("student", "student", STUDENT))]
    router = load_config().router.model_dump(exclude_none=True)
    gateway = start_gateway({"model_list": tiers, "router": router, "teacher": "flagship",
                             "ledger": {"url": f"sqlite:///{tmp_path / 'ledger.db'}"}, "auth": {"enabled": False}},
                            tmp_path, timeout_s=180)
    try:
        for conversation, whole, _ in ((CARD_FOLLOW_UP, "student", None), (CODE_FOLLOW_UP, "flagship", None),
                                       (CODING_SYSTEM, "flagship", None)):
            reply = httpx.post(gateway.url + "/v1/chat/completions", timeout=60,
                               json={"model": "auto", "messages": conversation, "max_tokens": 4})
            assert reply.status_code == 200 and reply.headers["x-tierwise-tier"] == whole, conversation
    finally:
        gateway.stop()
