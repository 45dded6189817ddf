"""The small interface between the gateway and whatever decides ``model: "auto"``.

A policy turns a request's messages into a ``RouteDecision`` (tier, score, threshold). The
trained scikit-learn router from ``router/`` plugs in as a ``Scorer``; without one, the
``FixedPolicy`` sends every auto request to one named tier and says so at start-up, so
nobody is surprised by where traffic went.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol


log = logging.getLogger("gateway.routing")


@dataclass(frozen=True, slots=True)
class RouteDecision:
    tier: str
    score: float | None = None
    threshold: float | None = None
    policy: str = "fixed"
    # A ``gateway.routing.cascade.Cascade`` when the student should answer through the cascade:
    # the serving code then runs it instead of the tier alone. Typed loosely so this module,
    # which the cascade imports, does not import the cascade back.
    cascade: object | None = None


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


# Scoring costs 1-3 microseconds per character on the event loop (character n-grams, the
# hand features' regexes): 4,000 characters keep one decision at ~4-8 ms on this 2-core
# machine (under load), while a whole 1 MB prompt took 0.5-1.6 s. Training prompts (MMLU
# questions, support requests) are mostly shorter, so the router sees what it was trained
# on; only the length cues saturate at the cap.
MAX_ROUTING_CHARS = 4_000


def without_instructions(messages: list[dict]) -> list[dict]:
    """The conversation without system/developer turns: those are the operator's instructions,
    which say nothing about how hard this request is and would differ from the prompts the
    trained router learned from (the competence gate, by contrast, reads them)."""
    turns = [m for m in messages if m.get("role") not in ("system", "developer")]
    return turns or messages[-1:]


def bounded_messages(messages: list[dict], max_chars: int = MAX_ROUTING_CHARS) -> list[dict]:
    """The conversation with at most ``max_chars`` characters of text, for the router.

    The latest turns matter most, so the budget is spent from the last message backwards;
    a text longer than what is left keeps its beginning and its end (where a question's
    instructions and the question itself usually are). Every message stays, so turn counts
    do not change.
    """
    if sum(len(m.get("content") or "") for m in messages) <= max_chars:
        return messages
    left = max_chars
    bounded: list[dict] = []
    for message in reversed(messages):
        text = message.get("content") or ""
        if len(text) > left:
            head = left * 3 // 4
            text = text[:head] + "\n" + text[len(text) - (left - head):] if left else ""
        left = max(0, left - len(text))
        bounded.append({**message, "content": text})
    bounded.reverse()
    return bounded


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
        score = float(self.scorer.score(bounded_messages(without_instructions(messages))))
        threshold = min(1.0, max(0.0, self.threshold + self.shift))
        tier = self.strong_tier if score >= threshold else self.weak_tier
        return RouteDecision(tier=tier, score=score, threshold=threshold, policy=self.name)
