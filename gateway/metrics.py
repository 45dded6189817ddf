"""Prometheus metrics, one registry per app (so tests can build many apps in one process)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from gateway.ledger.booking import RequestRecord

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
        self.tier_up = Gauge("tierwise_tier_up", "1 if the tier is ready", ["tier"], registry=self.registry)
        self.shadow_pairs = Counter("tierwise_shadow_pairs", "Student answers re-asked of the teacher",
                                    registry=self.registry)
        self.shadow_agreement = Gauge("tierwise_shadow_agreement", "Rolling student/teacher agreement",
                                      registry=self.registry)
        self.drift_alarm = Gauge("tierwise_drift_alarm", "1 while rolling agreement is below the floor",
                                 registry=self.registry)
        self.threshold_shift = Gauge("tierwise_route_threshold_shift",
                                     "Shift applied to the routing threshold by the drift monitor",
                                     registry=self.registry)
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
        self.ledger_backlog = Gauge("tierwise_ledger_backlog_rows", "Rows not yet committed to the ledger",
                                    registry=self.registry)

    def observe(self, record: RequestRecord) -> None:
        """Count one finished request from its booked record (costs and latency set)."""
        tier = record.tier or "none"
        status = record.status
        self.requests.labels(tier, record.endpoint, status).inc()
        self.tokens.labels(tier, "prompt").inc(record.prompt_tokens)
        self.tokens.labels(tier, "completion").inc(record.completion_tokens)
        self.cost.labels(tier, status).inc(record.cost)
        self.teacher_cost.labels(tier, status).inc(record.teacher_cost)
        if record.latency_ms is not None:
            self.latency.labels(tier, status).observe(record.latency_ms / 1000)
        if record.ttft_ms is not None:
            self.ttft.labels(tier).observe(record.ttft_ms / 1000)
        if record.decision is not None and record.decision.score is not None:
            self.route_score.observe(record.decision.score)
        if record.escalated is not None:
            (self.cascade_escalations if record.escalated else self.cascade_accepted).inc()
