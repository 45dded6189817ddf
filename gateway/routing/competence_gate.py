"""The competence gate: requests outside what the student was taught go to the strong tier.

The trained router judges *how hard* a request is among requests like its training data; it
cannot tell that "What's the weather in Paris tomorrow?" is nothing a banking student has
ever seen (measured: ROC-AUC 0.50 between in- and out-of-scope). The student's competence
index (``router.competence``, written by ``distill`` with the student) can: it measures
how far the request lies from the student's training prompts. The gate asks it first:

    competence gate -> router (outcome / trained / fixed) -> cascade

Beyond the threshold the request goes to the out-of-scope tier and the ledger's
``route_policy`` says ``competence``; within it the wrapped policy decides and names itself
(``outcome``, ``trained``, ``cascade``, ...). The gate wraps any ``RoutingPolicy``, so later stages compose
behind it without knowing it exists. Scoring is bounded: the index caps the text it reads.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

from gateway.config import RouterConfig
from gateway.routing.cascade_policy import load_cascade
from gateway.routing.policy import RouteDecision, RoutingPolicy

log = logging.getLogger("gateway.routing")


class CompetenceScorer(Protocol):
    """What ``router.competence.load_competence(...).index`` provides."""

    threshold_: float

    def distance_one(self, conversation: list[dict]) -> float: ...

    def threshold_for(self, acceptance: float) -> float: ...


class CompetenceGate:
    """Send requests beyond the competence threshold to ``out_of_scope_tier``; the rest to ``inner``.

    With a ``near_tier``, the gate has a third answer: requests past the threshold but within
    ``near_threshold`` (the distance that still keeps, say, 99.5 % of the index's held-out
    in-scope validation prompts) are *unsure*, and go to ``near_tier``, typically the
    workload's own teacher. That is where rare phrasings of in-scope requests land; sending
    them to a general flagship that was never taught the workload's answers loses them, while
    the workload's teacher gets them right and costs the same. General requests land there too;
    with a ``near_check`` the near tier answers first with logprobs and keeps the request only
    when its first line is confident, else the out-of-scope tier answers (a cascade one level
    up). ``route_policy`` says ``competence_near`` (``competence_near+cascade`` when checked).
    """

    stage = "competence"

    def __init__(self, index: CompetenceScorer, out_of_scope_tier: str, inner: RoutingPolicy,
                 threshold: float | None = None, near_tier: str | None = None,
                 near_threshold: float | None = None, near_check: object | None = None) -> None:
        self.index = index
        # A ``gateway.routing.cascade.Cascade`` escalating to the out-of-scope tier: the band's
        # requests then ask the near tier first and keep its answer only when it is confident.
        self.near_check = near_check
        self.out_of_scope_tier = out_of_scope_tier
        self.inner = inner
        self.threshold = float(index.threshold_ if threshold is None else threshold)
        self.near_tier = near_tier
        # No band without a tier; a band edge inside the threshold is no band either.
        self.near_threshold = max(self.threshold, float(near_threshold)) if near_tier and near_threshold is not None \
            else self.threshold
        self.name = f"{self.stage}+{inner.name}"

    def route(self, messages: list[dict]) -> RouteDecision:
        distance = self.index.distance_one(messages)
        if distance > self.near_threshold:
            return RouteDecision(tier=self.out_of_scope_tier, score=distance, threshold=self.near_threshold,
                                 policy=self.stage)
        if distance > self.threshold:
            if self.near_tier is None:  # no band (near_threshold == threshold): not reached
                return RouteDecision(tier=self.out_of_scope_tier, score=distance, threshold=self.threshold,
                                     policy=self.stage)
            checked = self.near_check is not None
            return RouteDecision(tier=self.near_tier, score=distance, threshold=self.threshold,
                                 policy=f"{self.stage}_near" + ("+cascade" if checked else ""),
                                 cascade=self.near_check)
        return self.inner.route(messages)

    def set_shift(self, shift: float) -> None:
        """The drift monitor moves the router's boundary; the competence boundary is the student's own."""
        self.inner.set_shift(shift)


def load_gate_index(config: RouterConfig):
    """The configured competence index, or None (no gate configured, or its file is missing: loudly).

    One that exists but is refused (edited, foreign types) stops the start-up.
    """
    gate = config.competence
    if gate is None:
        return None
    if not Path(gate.artifact).is_file():
        log.warning("competence gate: no index at %s; requests are not checked against the student's scope",
                    gate.artifact)
        return None
    from router.competence import load_competence

    return load_competence(gate.artifact).index


def with_competence_gate(policy: RoutingPolicy, config: RouterConfig, index: CompetenceScorer | None) -> RoutingPolicy:
    """``policy`` behind the configured competence gate, or unchanged when there is no index."""
    gate = config.competence
    if gate is None or index is None:
        return policy
    tier = gate.tier or config.strong_tier
    near = index.threshold_for(gate.near_acceptance) if gate.near_tier else None
    check = None
    if gate.near_tier and gate.near_check is not None:
        check = load_cascade(gate.near_check.artifact, gate.near_check.threshold, gate.near_check.decision_tokens,
                             escalate_to=tier)
    gated = CompetenceGate(index, tier, policy, gate.threshold, gate.near_tier, near, check)
    band = (f", up to {gated.near_threshold:.3f} to {gate.near_tier}" + (" if it is confident" if check else "")
            if gate.near_tier else "")
    log.info("routing policy: competence gate %s (distance > %.3f%s, beyond to %s), then %s",
             gate.artifact, gated.threshold, band, tier, policy.name)
    return gated
