"""Prometheus metrics, one registry per app (so tests can build many apps in one process)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

if TYPE_CHECKING:
    from gateway.ledger.booking import RequestRecord

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
OTHER = "other"


class BoundedLabel:
    """A label value that cannot blow up Prometheus: at most ``top_n`` values of their own, the rest ``other``.

    A value earns its own label once it has made ``admit_after`` requests while a slot is free
    (a one-off caller never takes a slot); its first requests were counted under ``other``.
    Once the slots are full, new values stay ``other`` -- the ledger (``/v1/costs/summary?
    group_by=user``) has the exact figures for every value. Counts of values not (yet) admitted
    are kept for at most ``track`` values, then forgotten (a cheap bound, not a sketch).
    """

    def __init__(self, top_n: int = 20, admit_after: int = 5, track: int = 10_000) -> None:
        self.top_n, self.admit_after, self.track = top_n, admit_after, track
        self.admitted: set[str] = set()
        self.pending: dict[str, int] = {}

    def __call__(self, value: str | None) -> str:
        if value is None:
            return "none"
        if value in self.admitted:
            return value
        if len(self.admitted) >= self.top_n:
            return OTHER
        seen = self.pending.get(value, 0) + 1
        if seen >= self.admit_after:
            self.pending.pop(value, None)
            self.admitted.add(value)
            return value
        if len(self.pending) >= self.track:
            self.pending.clear()
        self.pending[value] = seen
        return OTHER


class GatewayMetrics:
    def __init__(self, tenant_top_n: int = 20) -> None:
        self.registry = CollectorRegistry()
        # Per tenant (the request's `user`), workload and key: bounded label values (top N + other).
        self.tenant_labels = {d: BoundedLabel(tenant_top_n) for d in ("user", "workload", "key")}
        self._tenant_cache: dict[tuple[str, str], tuple] = {}
        self._request_cache: dict[tuple[str, str, str], tuple] = {}
        self.tenant_requests = Counter("tierwise_tenant_requests", "Requests per user, workload or API key "
                                       "(top N values, the rest 'other')", ["dimension", "value"],
                                       registry=self.registry)
        self.tenant_cost = Counter("tierwise_tenant_cost", "Cost per user, workload or API key (top N, rest "
                                   "'other')", ["dimension", "value"], registry=self.registry)
        self.tenant_teacher_cost = Counter("tierwise_tenant_teacher_counterfactual_cost", "Teacher counterfactual "
                                           "per user, workload or API key", ["dimension", "value"],
                                           registry=self.registry)
        labels = ["tier", "status"]
        self.requests = Counter("tierwise_requests", "Requests handled", ["tier", "endpoint", "status"],
                                registry=self.registry)
        self.tokens = Counter("tierwise_tokens", "Tokens processed", ["tier", "kind"], registry=self.registry)
        self.cost = Counter("tierwise_cost", "Cost of served requests (currency units)", labels,
                            registry=self.registry)
        self.teacher_cost = Counter("tierwise_teacher_counterfactual_cost",
                                    "What the same tokens would have cost on the teacher", labels,
                                    registry=self.registry)
        self.latency = Histogram("tierwise_request_latency_seconds", "End-to-end latency", labels,
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.ttft = Histogram("tierwise_time_to_first_token_seconds", "Time to first streamed token", ["tier"],
                              buckets=LATENCY_BUCKETS, registry=self.registry)
        self.route_score = Histogram("tierwise_route_score", "Router scores of auto requests",
                                     buckets=[i / 10 for i in range(1, 11)], registry=self.registry)
        # multiprocess_mode: how gauges combine over worker processes (server.workers; see process_exiting).
        self.tier_up = Gauge("tierwise_tier_up", "1 if the tier is ready", ["tier"], registry=self.registry,
                             multiprocess_mode="mostrecent")
        self.shadow_pairs = Counter("tierwise_shadow_pairs", "Student answers re-asked of the teacher",
                                    registry=self.registry)
        self.shadow_agreement = Gauge("tierwise_shadow_agreement", "Rolling student/teacher agreement",
                                      registry=self.registry, multiprocess_mode="mostrecent")
        self.drift_alarm = Gauge("tierwise_drift_alarm", "1 while rolling agreement is below the floor",
                                 registry=self.registry, multiprocess_mode="max")
        self.threshold_shift = Gauge("tierwise_route_threshold_shift",
                                     "Shift applied to the routing threshold by the drift monitor",
                                     registry=self.registry, multiprocess_mode="mostrecent")
        self.key_store_reads = Counter("tierwise_key_store_reads", "Reads of the API keys from the database "
                                       "(TTL refreshes and lookups of unknown keys)", registry=self.registry)
        self.auth_failures = Counter("tierwise_auth_failures", "Requests refused with 401 (not booked in the "
                                     "ledger, so that a wrong-key flood does not write to it)",
                                     registry=self.registry)
        self.cascade_escalations = Counter("tierwise_cascade_escalations", "Cascaded requests the teacher "
                                           "answered (student unsure, or failed before deciding)",
                                           registry=self.registry)
        self.cascade_accepted = Counter("tierwise_cascade_accepted", "Cascaded requests the student answered",
                                        registry=self.registry)
        self.band_checks = Counter("tierwise_competence_band_checks", "Requests in the competence gate's uncertain "
                                   "band asked of the near tier first: kept (it was confident) or escalated to the "
                                   "out-of-scope tier", ["outcome"], registry=self.registry)
        self.ledger_backlog = Gauge("tierwise_ledger_backlog_rows", "Rows not yet committed to the ledger "
                                    "(summed over live workers, each as of its last scrape)",
                                    registry=self.registry, multiprocess_mode="livesum")

    def _tenant_children(self, dimension: str, label: str) -> tuple:
        """The three labelled counters of one (dimension, value), looked up once (``labels()`` costs
        a few microseconds per call, and this runs three times per request)."""
        children = self._tenant_cache.get((dimension, label))
        if children is None:
            children = tuple(c.labels(dimension, label) for c in (self.tenant_requests, self.tenant_cost,
                                                                  self.tenant_teacher_cost))
            self._tenant_cache[(dimension, label)] = children
        return children

    def _request_children(self, tier: str, endpoint: str, status: str) -> tuple:
        """The per-request counters of one (tier, endpoint, status), looked up once: tiers,
        endpoints and statuses are few, and ``labels()`` would run six times per request."""
        key = (tier, endpoint, status)
        children = self._request_cache.get(key)
        if children is None:
            children = (self.requests.labels(tier, endpoint, status), self.tokens.labels(tier, "prompt"),
                        self.tokens.labels(tier, "completion"), self.cost.labels(tier, status),
                        self.teacher_cost.labels(tier, status), self.latency.labels(tier, status))
            self._request_cache[key] = children
        return children

    def observe(self, record: RequestRecord) -> None:
        """Count one finished request from its booked record (costs and latency set)."""
        tier = record.tier or "none"
        requests, prompt_tokens, completion_tokens, cost, teacher_cost, latency = self._request_children(
            tier, record.endpoint, record.status)
        requests.inc()
        prompt_tokens.inc(record.prompt_tokens)
        completion_tokens.inc(record.completion_tokens)
        cost.inc(record.cost)
        teacher_cost.inc(record.teacher_cost)
        if record.latency_ms is not None:
            latency.observe(record.latency_ms / 1000)
        if record.ttft_ms is not None:
            self.ttft.labels(tier).observe(record.ttft_ms / 1000)
        if record.decision is not None and record.decision.score is not None:
            self.route_score.observe(record.decision.score)
        for dimension, value in (("user", record.user), ("workload", record.workload),
                                 ("key", record.key.id if record.key else None)):
            requests, cost, teacher_cost = self._tenant_children(dimension, self.tenant_labels[dimension](value))
            requests.inc()
            cost.inc(record.cost)
            teacher_cost.inc(record.teacher_cost)
        if record.escalated is not None:
            if record.decision is not None and record.decision.policy.startswith("competence_near"):
                self.band_checks.labels("escalated" if record.escalated else "kept").inc()
            else:
                (self.cascade_escalations if record.escalated else self.cascade_accepted).inc()


def multiprocess_dir() -> str | None:
    """The directory prometheus-client shares values through when the gateway runs several
    worker processes (``gateway.workers``); None in a single process."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition: this process's registry, or the sum over every worker's files."""
    if multiprocess_dir() is None:
        return generate_latest(registry)
    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined)
    return generate_latest(combined)


def process_exiting() -> None:
    """A worker is stopping: its ``live*`` gauges leave the aggregate."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(os.getpid())
