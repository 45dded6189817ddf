"""The small interface between the gateway and whatever decides ``model: "auto"``.

A policy turns a request's messages into a ``RouteDecision`` (tier, score, threshold). The
trained scikit-learn router from ``router/`` plugs in as a ``Scorer``; without one, the
``FixedPolicy`` sends every auto request to one named tier and says so at start-up, so
nobody is surprised by where traffic went.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gateway.config import RouterConfig

log = logging.getLogger("gateway.routing")


@dataclass(frozen=True, slots=True)
class RouteDecision:
    tier: str
    score: float | None = None
    threshold: float | None = None
    policy: str = "fixed"


class Scorer(Protocol):
    """What ``router.load_router`` returns: P(the cheap tier is not good enough)."""

    threshold: float

    def score(self, messages: list[dict]) -> float: ...


class RoutingPolicy(Protocol):
    name: str

    def route(self, messages: list[dict]) -> RouteDecision: ...

    def set_shift(self, shift: float) -> None:
        """Move the decision boundary (the drift monitor's lever); negative: toward the strong tier."""


class FixedPolicy:
    """Every auto request to one tier."""

    name = "fixed"

    def __init__(self, tier: str) -> None:
        self.tier = tier

    def route(self, messages: list[dict]) -> RouteDecision:
        return RouteDecision(tier=self.tier, policy=self.name)

    def set_shift(self, shift: float) -> None:
        """Nothing to shift: every request already goes to one tier."""


class ThresholdPolicy:
    """Score the request; at or above the threshold it needs the strong tier."""

    name = "trained"

    def __init__(self, scorer: Scorer, strong_tier: str, weak_tier: str, threshold: float | None = None) -> None:
        self.scorer = scorer
        self.strong_tier = strong_tier
        self.weak_tier = weak_tier
        self.threshold = float(scorer.threshold if threshold is None else threshold)
        self.shift = 0.0

    def set_shift(self, shift: float) -> None:
        self.shift = shift

    def route(self, messages: list[dict]) -> RouteDecision:
        score = float(self.scorer.score(messages))
        threshold = min(1.0, max(0.0, self.threshold + self.shift))
        tier = self.strong_tier if score >= threshold else self.weak_tier
        return RouteDecision(tier=tier, score=score, threshold=threshold, policy=self.name)


def build_policy(config: RouterConfig) -> RoutingPolicy:
    """The configured policy; a missing artifact degrades to FixedPolicy, loudly.

    An artifact that exists but is refused (tampered, foreign types) stops the start-up: an
    operator who configured a router should not silently get another one.
    """
    fixed = FixedPolicy(config.default_tier or config.strong_tier)
    if config.policy == "fixed":
        log.info("routing policy: fixed, every `auto` request goes to tier %s", fixed.tier)
        return fixed
    if not config.artifact or not Path(config.artifact).exists():
        log.warning("routing policy: no trained router at %s; every `auto` request goes to tier %s",
                    config.artifact, fixed.tier)
        return fixed
    from router import load_router

    scorer = load_router(config.artifact)
    policy = ThresholdPolicy(scorer, config.strong_tier, config.weak_tier, config.threshold)
    log.info("routing policy: trained router %s, threshold %.3f (>= goes to %s, else %s)",
             config.artifact, policy.threshold, config.strong_tier, config.weak_tier)
    return policy
