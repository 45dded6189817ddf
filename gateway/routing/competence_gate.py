"""The competence gate: requests outside what the student was taught go to the strong tier.

The trained router judges *how hard* a request is among requests like its training data; it
cannot tell that "What's the weather in Paris tomorrow?" is nothing a banking student has
ever seen (measured: ROC-AUC 0.50 between in- and out-of-scope). The student's competence
index (``router.competence``, written by ``distill`` with the student) can: it measures
how far the request lies from the student's training prompts. The gate asks it first:

    competence gate -> router (trained / fixed) -> (cascade, later)

Beyond the threshold the request goes to the out-of-scope tier and the ledger's
``route_policy`` says ``competence``; within it the wrapped policy decides and names itself
(``trained``, ``fixed``). The gate wraps any ``RoutingPolicy``, so later stages compose
behind it without knowing it exists. Scoring is bounded: the index caps the text it reads.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

from gateway.config import RouterConfig
from gateway.routing.policy import RouteDecision, RoutingPolicy

log = logging.getLogger("gateway.routing")


class CompetenceScorer(Protocol):
    """What ``router.competence.load_competence(...).index`` provides."""

    threshold_: float

    def distance_one(self, conversation: list[dict]) -> float: ...


class CompetenceGate:
    """Send requests beyond the competence threshold to ``out_of_scope_tier``; the rest to ``inner``."""

    stage = "competence"

    def __init__(self, index: CompetenceScorer, out_of_scope_tier: str, inner: RoutingPolicy,
                 threshold: float | None = None) -> None:
        self.index = index
        self.out_of_scope_tier = out_of_scope_tier
        self.inner = inner
        self.threshold = float(index.threshold_ if threshold is None else threshold)
        self.name = f"{self.stage}+{inner.name}"

    def route(self, messages: list[dict]) -> RouteDecision:
        distance = self.index.distance_one(messages)
        if distance > self.threshold:
            return RouteDecision(tier=self.out_of_scope_tier, score=distance, threshold=self.threshold,
                                 policy=self.stage)
        return self.inner.route(messages)

    def set_shift(self, shift: float) -> None:
        """The drift monitor moves the router's boundary; the competence boundary is the student's own."""
        self.inner.set_shift(shift)


def with_competence_gate(policy: RoutingPolicy, config: RouterConfig) -> RoutingPolicy:
    """``policy`` behind the configured competence gate, or unchanged when none is configured.

    A configured index that is missing degrades to no gate, loudly (like a missing router);
    one that exists but is refused (edited, foreign types) stops the start-up.
    """
    gate = config.competence
    if gate is None:
        return policy
    if not Path(gate.artifact).is_file():
        log.warning("competence gate: no index at %s; requests are not checked against the student's scope",
                    gate.artifact)
        return policy
    from router.competence import load_competence

    loaded = load_competence(gate.artifact)
    tier = gate.tier or config.strong_tier
    gated = CompetenceGate(loaded.index, tier, policy, gate.threshold)
    log.info("routing policy: competence gate %s (distance > %.3f goes to %s), then %s",
             gate.artifact, gated.threshold, tier, policy.name)
    return gated
