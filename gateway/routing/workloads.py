"""Per-workload routes in front of the configured chain (issue #13 item 5).

A workload the flywheel made a student for gets its own route: requests within that
student's competence (its index, fitted on the workload's training prompts) go to the
workload's promoted student, or, for ``canary_share`` of them, to the canary being tried;
requests beyond it go to the strong tier. A tier with a cascade (the flywheel fitted one when
the student alone missed the gate) answers through it: its answer is kept when its confidence
clears the cascade's threshold, otherwise the workload's teacher answers. Workloads without a
route, and routes with no tier yet, use the configured chain (gate -> router -> cascade). The
reloader swaps the whole table in one assignment, so a request sees either the old routes or the
new ones, never a mix.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from gateway.routing.cascade import Cascade
from gateway.routing.competence_gate import CompetenceScorer
from gateway.routing.policy import RouteDecision, RoutingPolicy


@dataclass
class WorkloadPolicy:
    workload: str
    tier: str | None
    strong_tier: str
    index: CompetenceScorer | None = None
    canary_tier: str | None = None
    canary_share: float = 0.0
    rng: random.Random | None = None
    # A workload with its own teacher (shadow.workload_reference_tiers) is that teacher's until a
    # student is promoted for it: the default chain's student was not made for it, and its
    # traffic must reach its teacher to be captured for the next student.
    teacher_until_promoted: bool = False
    cascade: Cascade | None = None  # the promoted tier's
    canary_cascade: Cascade | None = None

    def route(self, messages: list[dict]) -> RouteDecision | None:
        """The decision for this workload, or None to leave it to the configured chain."""
        if self.tier is None and self.canary_tier is None:
            return RouteDecision(self.strong_tier, policy="workload+teacher") if self.teacher_until_promoted else None
        if self.index is not None:
            distance = self.index.distance_one(messages)
            if distance > self.index.threshold_:
                return RouteDecision(self.strong_tier, distance, self.index.threshold_, "workload+competence")
        if self.canary_tier is not None and (self.rng or random).random() < self.canary_share:
            return _through(self.canary_tier, "workload+canary", self.canary_cascade)
        if self.tier is None:
            return None
        return _through(self.tier, "workload", self.cascade)


def _through(tier: str, policy: str, cascade: Cascade | None) -> RouteDecision:
    if cascade is None:
        return RouteDecision(tier, policy=policy)
    return RouteDecision(tier, threshold=cascade.threshold, policy=f"{policy}+cascade", cascade=cascade)


class RoutingTable:
    """The configured chain plus the per-workload routes the control plane set."""

    def __init__(self, default: RoutingPolicy) -> None:
        self.default = default
        self.workloads: dict[str, WorkloadPolicy] = {}

    @property
    def name(self) -> str:
        return self.default.name

    def route(self, messages: list[dict], workload: str | None = None) -> RouteDecision:
        policy = self.workloads.get(workload) if workload is not None else None
        decision = policy.route(messages) if policy is not None else None
        return decision if decision is not None else self.default.route(messages)

    def replace(self, workloads: dict[str, WorkloadPolicy]) -> None:
        self.workloads = workloads

    def set_shift(self, shift: float) -> None:
        self.default.set_shift(shift)
