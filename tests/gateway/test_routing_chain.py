"""The routing chain's stages on the shipped artifacts, in-process (issue #12): the competence
gate's uncertain band, and the router trained on our own tiers' outcomes reading the gate's
distance."""

from __future__ import annotations

import logging

import pytest

from gateway.config import CompetenceGateConfig, RouterConfig
from gateway.routing.build import build_policy
from gateway.routing.competence_gate import CompetenceGate
from gateway.routing.outcome import OutcomePolicy, request_text
from gateway.routing.policy import FixedPolicy
from router.competence import load_competence
from router.defaults import DEFAULT_OUTCOME_ARTIFACT, PROJECT_ROOT
from router.outcome_router import load_outcome_router

INDEX = PROJECT_ROOT / "artifacts" / "tiers" / "student" / "competence.skops"
SUPPORT = "You are a bank's customer-support assistant. Name the intent of the customer's message, then reply briefly."


class FixedDistances:
    """An index stand-in whose distance is looked up by the last message's text."""

    threshold_ = 0.5

    def __init__(self, distances: dict[str, float]) -> None:
        self.distances = distances

    def distance_one(self, conversation: list[dict]) -> float:
        return self.distances[conversation[-1]["content"]]

    def threshold_for(self, acceptance: float) -> float:
        return 0.7


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_the_gate_has_an_uncertain_band_between_its_threshold_and_the_outer_edge():
    index = FixedDistances({"in": 0.3, "edge": 0.5, "band": 0.6, "outer edge": 0.7, "far": 0.9})
    gate = CompetenceGate(index, "flagship", FixedPolicy("student"), near_tier="teacher", near_threshold=0.7)
    routed = {text: gate.route(user(text)) for text in index.distances}
    assert {t: (d.tier, d.policy) for t, d in routed.items()} == {
        "in": ("student", "fixed"), "edge": ("student", "fixed"), "band": ("teacher", "competence_near"),
        "outer edge": ("teacher", "competence_near"), "far": ("flagship", "competence")}
    assert routed["band"].score == 0.6 and routed["band"].threshold == 0.5
    assert routed["far"].threshold == 0.7
    # no near tier: no band; an outer edge inside the threshold: no band either
    plain = CompetenceGate(index, "flagship", FixedPolicy("student"))
    assert plain.route(user("band")).tier == "flagship"
    inside = CompetenceGate(index, "flagship", FixedPolicy("student"), near_tier="teacher", near_threshold=0.2)
    assert inside.near_threshold == 0.5 and inside.route(user("band")).tier == "flagship"


def test_the_band_edge_comes_from_the_index_validation_prompts():
    gate_config = CompetenceGateConfig(artifact=str(INDEX), tier="flagship", near_tier="teacher", near_acceptance=0.995)
    built = build_policy(RouterConfig(policy="fixed", default_tier="student", competence=gate_config))
    index = load_competence(INDEX).index
    assert isinstance(built, CompetenceGate)
    assert built.threshold == pytest.approx(index.threshold_)
    assert built.near_threshold == pytest.approx(index.threshold_for(0.995)) and built.near_threshold > built.threshold


@pytest.fixture(scope="module")
def outcome_chain():
    config = RouterConfig(policy="outcome", competence=CompetenceGateConfig(artifact=str(INDEX), tier="flagship"))
    return build_policy(config)


def test_the_outcome_router_scores_text_and_the_gates_distance(outcome_chain, monkeypatch):
    assert outcome_chain.name == "competence+outcome"
    inner = outcome_chain.inner
    assert isinstance(inner, OutcomePolicy)
    loaded = load_outcome_router(DEFAULT_OUTCOME_ARTIFACT)
    assert inner.threshold == pytest.approx(1.0 - loaded.threshold)  # score = P(not agree)
    index = outcome_chain.index
    assert inner.scorer.index is index  # one index object for both stages

    calls = []
    original = type(index)._distance_of_text
    monkeypatch.setattr(type(index), "_distance_of_text", lambda self, text: calls.append(text) or original(self, text))
    messages = [{"role": "system", "content": SUPPORT}, {"role": "user", "content": "My card payment was declined twice"}]
    decision = outcome_chain.route(messages)
    assert len(calls) == 1  # the gate's distance is the router's feature: computed once
    distance = original(index, calls[0])
    expected = 1.0 - loaded.model.agreement_one("My card payment was declined twice", distance)
    assert decision.policy == "outcome" and decision.score == pytest.approx(expected)
    assert decision.tier == ("teacher" if expected >= inner.threshold else "student")


def test_the_outcome_router_sends_its_least_likely_agreements_to_the_teacher(outcome_chain):
    """Ranking holds through the gateway's policy: a request P(agree) ranks low goes to the strong tier."""
    import json

    outcomes = PROJECT_ROOT / "benchmarks" / "results" / "cascade_outcomes_validation.jsonl"
    texts = [json.loads(x)["text"] for x in outcomes.read_text().splitlines()[:300]]
    decisions = [outcome_chain.route(user(t)) for t in texts]
    routed = [d for d in decisions if d.policy == "outcome"]
    assert len(routed) > 250  # training prompts are in scope
    to_teacher = [d for d in routed if d.tier == "teacher"]
    assert 0 < len(to_teacher) < len(routed)
    assert min(d.score for d in to_teacher) >= max(d.score for d in routed if d.tier == "student")


def test_request_text_is_the_customers_words():
    assert request_text([{"role": "system", "content": SUPPORT}, {"role": "user", "content": "a"},
                         {"role": "assistant", "content": "b"},
                         {"role": "user", "content": [{"type": "text", "text": "c"}]}]) == "a\nc"
    assert request_text([]) == ""


def test_a_missing_outcome_router_degrades_to_fixed_loudly(tmp_path, caplog):
    config = RouterConfig(policy="outcome", artifact=str(tmp_path / "none.skops"),
                          competence=CompetenceGateConfig(artifact=str(INDEX), tier="flagship"))
    with caplog.at_level(logging.WARNING, logger="gateway.routing"):
        built = build_policy(config)
    assert isinstance(built.inner, FixedPolicy) and built.inner.tier == "teacher"
    assert "no trained router" in caplog.text


def test_the_drift_lever_moves_the_cascade_threshold():
    from gateway.routing.cascade import Cascade
    from gateway.routing.cascade_policy import CascadePolicy

    cascade = Cascade(model=None, threshold=0.6)
    policy = CascadePolicy(FixedPolicy("student"), "student", cascade)
    policy.set_shift(-0.1)  # quality dropped: toward the strong tier
    assert cascade.threshold == pytest.approx(0.7)
    policy.set_shift(-0.9)
    assert cascade.threshold == 1.0
    policy.set_shift(0.0)
    assert cascade.threshold == pytest.approx(0.6)
