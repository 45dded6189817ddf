"""The cascade as a routing stage: which decisions become cascades, and loading the configured one.

``gateway/routing/cascade.py`` runs one request's cascade (the student's window, the decision,
the switch); this module is where the routing chain meets it: ``CascadePolicy`` turns a policy's
weak-tier decisions into cascades, and ``load_cascade`` builds a ``Cascade`` from its confidence
model artifact (used for the student's cascade and for the competence gate's band check).
"""

from __future__ import annotations

import logging
from pathlib import Path

from gateway.routing.cascade import Cascade
from gateway.routing.policy import RouteDecision, RoutingPolicy

log = logging.getLogger("gateway.routing")


class CascadePolicy:
    """Wrap a policy: its decisions for ``student_tier`` become cascades (``+cascade``)."""

    def __init__(self, inner: RoutingPolicy, student_tier: str, cascade: Cascade) -> None:
        self.inner = inner
        self.student_tier = student_tier
        self.cascade = cascade
        self.base_threshold = cascade.threshold
        self.name = f"{inner.name}+cascade" if inner.name != "fixed" else "cascade"

    def route(self, messages: list[dict]) -> RouteDecision:
        decision = self.inner.route(messages)
        if decision.tier != self.student_tier:
            return decision
        policy = "cascade" if decision.policy == "fixed" else f"{decision.policy}+cascade"
        return RouteDecision(decision.tier, decision.score, decision.threshold, policy, cascade=self.cascade)

    def set_shift(self, shift: float) -> None:
        """The drift monitor's lever moves the cascade too: a negative shift raises the confidence
        needed to keep the student's answer (more escalations), like the router's threshold."""
        self.inner.set_shift(shift)
        self.cascade.threshold = min(1.0, max(0.0, self.base_threshold - shift))


def load_cascade(artifact: str | Path, threshold: float | None, decision_tokens: int,
                 escalate_to: str | None = None) -> Cascade:
    """The configured cascade; a missing or refused confidence model stops the start-up (unlike a
    missing router): without it the cascade would accept or escalate blindly."""
    from router.confidence import load_confidence

    loaded = load_confidence(artifact)
    cascade = Cascade(loaded.model, loaded.threshold if threshold is None else threshold, decision_tokens, escalate_to)
    log.info("routing policy: cascade %s (first answers with confidence >= %.3f kept; first line or %d tokens)",
             artifact, cascade.threshold, decision_tokens)
    return cascade
