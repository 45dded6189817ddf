"""The shipped default routing (competence gate with its checked band -> cascade) does what the
product promises before any tier answers: customer-support messages go to the student's cascade,
general questions to the general flagship (or, in the gate's uncertain band, to the support
teacher first, which hands them to the flagship when it is unsure)."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.routing.build import build_policy
from gateway.routing.cascade_policy import CascadePolicy
from gateway.routing.competence_gate import CompetenceGate

from support.shared_data import shared_data


@pytest.fixture(scope="module")
def policy():
    """The default chain: the competence gate (with its checked band) in front of the cascade."""
    built = build_policy(load_config().router)
    assert isinstance(built, CompetenceGate) and isinstance(built.inner, CascadePolicy)
    assert built.near_tier == "teacher" and built.near_check.escalate_to == "flagship"
    return built


def sample(path, column: str, n: int) -> list[str]:
    with open(path, newline="") as f:
        rows = [r[column] for r in csv.DictReader(f)]
    return random.Random(7).sample(rows, n)


def test_support_messages_go_to_the_student(policy):
    messages = sample(shared_data("banking77", "test.csv"), "text", 200)
    decisions = [policy.route([{"role": "user", "content": m}]) for m in messages]
    assert all(d.cascade is not None for d in decisions if d.tier == "student")  # the student answers if sure
    assert sum(d.tier == "student" for d in decisions) / len(decisions) >= 0.9


def test_hard_general_questions_mostly_go_to_the_teacher(policy):
    questions = [q for name in ("college_physics", "abstract_algebra", "professional_law", "college_medicine")
                 for q in sample(shared_data("routellm", "mmlu", f"mmlu_{name}.csv"), "prompt", 25)]
    # Out of the student's scope they reach the general flagship (the competence gate).
    to_flagship = [policy.route([{"role": "user", "content": q}]).tier == "flagship" for q in questions]
    assert sum(to_flagship) / len(to_flagship) >= 0.9


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


# The coding conversations land in the gate's band: the support teacher is asked first and, unsure
# on the real tiers, hands them to the flagship (test_band_check.py); the student never sees them.
@pytest.mark.parametrize("conversation, whole, last_alone", [
    (CARD_FOLLOW_UP, "student", "teacher"),
    (CODE_FOLLOW_UP, "teacher", "student"),
    (CODING_SYSTEM, "teacher", "student"),
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
    # Stub answers are not what the confidence models were calibrated on: keep every first answer,
    # so the tier says where the conversation was routed.
    router["cascade"]["threshold"] = 0.0
    router["competence"]["near_check"]["threshold"] = 0.0
    gateway = start_gateway({"model_list": tiers, "router": router, "teacher": "flagship",
                             "ledger": {"url": f"sqlite:///{tmp_path / 'ledger.db'}"}, "auth": {"enabled": False}},
                            tmp_path, timeout_s=180)
    try:
        for conversation, whole, _ in ((CARD_FOLLOW_UP, "student", None), (CODE_FOLLOW_UP, "teacher", None),
                                       (CODING_SYSTEM, "teacher", None)):
            reply = httpx.post(gateway.url + "/v1/chat/completions", timeout=60,
                               json={"model": "auto", "messages": conversation, "max_tokens": 4})
            assert reply.status_code == 200 and reply.headers["x-tierwise-tier"] == whole, conversation
        # Loading the chain's skops artifacts must not drag torch into the gateway (router/signed.py).
        maps = (Path("/proc") / str(gateway.proc.pid) / "maps").read_text()
        assert "libtorch" not in maps, "torch got loaded into the gateway process"
    finally:
        gateway.stop()
