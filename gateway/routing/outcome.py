"""The router trained on our own tiers' outcomes, as a routing policy.

``router.outcome_router.OutcomeRouter`` learned P(the student's answer agrees with the
teacher's) from what *our* student and teacher answered on the workload's training data, from
the request's text and its competence distance (how far it lies from the student's training
prompts). Below the artifact's threshold (chosen for a quality target on out-of-fold
predictions) the request goes to the strong tier.

It plugs into ``ThresholdPolicy`` as a ``Scorer`` whose score is P(the student is *not* good
enough) = 1 - P(agree), so the ledger's ``route_score`` / ``route_threshold`` read the same way
for every trained policy (at or above the threshold: strong tier), and the drift monitor's
shift works unchanged. The distance comes from the same loaded competence index as the gate's,
which keeps its last answer: gate and router read one computation.
"""

from __future__ import annotations

from typing import Protocol

from gateway.routing.policy import ThresholdPolicy
from router.messages import content_text


class CompetenceDistance(Protocol):
    def distance_one(self, conversation: list[dict]) -> float: ...


class AgreementModel(Protocol):
    """What ``router.outcome_router.load_outcome_router(...).model`` provides."""

    def agreement_one(self, text: str, competence_distance: float, confidence: float | None = None) -> float: ...


def request_text(messages: list[dict]) -> str:
    """The customer's words: the user turns (the router learned from customer messages alone)."""
    if not messages:
        return ""
    parts = [content_text(m.get("content")) for m in messages if m.get("role") == "user"]
    return "\n".join(p for p in parts if p) or content_text(messages[-1].get("content"))


class OutcomeScorer:
    """``Scorer`` over an ``OutcomeRouter``: score = 1 - P(agree); threshold = 1 - the artifact's."""

    def __init__(self, model: AgreementModel, index: CompetenceDistance, agreement_threshold: float) -> None:
        self.model = model
        self.index = index
        self.threshold = 1.0 - float(agreement_threshold)

    def score(self, messages: list[dict]) -> float:
        distance = self.index.distance_one(messages)
        return 1.0 - self.model.agreement_one(request_text(messages), distance)


class OutcomePolicy(ThresholdPolicy):
    """``ThresholdPolicy`` on an ``OutcomeScorer``; ``route_policy`` says ``outcome``."""

    name = "outcome"
