"""Shadow sampling: some student answers are re-asked of the teacher in the background.

The client's response never waits: the shadow call starts after the student's answer is
booked, runs as a background task (bounded by ``max_in_flight``; a sample that finds no
room is skipped, not queued), and its outcome lands in ``shadow_pairs`` and the drift monitor.

Texts obey the ledger's content opt-in: the comparison needs the prompt and both answers, so
they are held in memory for the length of the shadow call, but ``shadow_pairs`` stores them
only when ``ledger.store_content`` is on (the prompt also needs ``shadow.store_prompts``).
Otherwise a pair is its ids, tiers, agreement score and cost: enough for drift monitoring,
not for retraining the router from an export.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from datetime import UTC, datetime

from sqlalchemy.engine import Engine

from gateway.answer_text import choice_text
from gateway.config import GatewayConfig
from gateway.errors import GatewayError
from gateway.ledger.pricing import Pricing
from gateway.ledger.schema import shadow_pairs_table
from gateway.metrics import GatewayMetrics
from gateway.routing.policy import RoutingPolicy
from gateway.shadow.agreement import agreement
from gateway.shadow.drift import DriftMonitor
from gateway.shadow.drift_store import DriftStateStore
from gateway.tiers.base import Endpoint
from gateway.tiers.registry import TierRegistry

log = logging.getLogger("gateway.shadow")


class ShadowSampler:
    def __init__(self, config: GatewayConfig, tiers: TierRegistry, engine: Engine, pricing: Pricing,
                 metrics: GatewayMetrics, policy: RoutingPolicy) -> None:
        self.config = config.shadow
        self.store_texts = config.ledger.store_content
        self.store_prompts = self.store_texts and self.config.store_prompts
        self.reference = self.config.reference_tier or config.teacher_tier
        self.tiers = tiers
        self.engine = engine
        self.pricing = pricing
        self.metrics = metrics
        self.policy = policy
        self.monitor = DriftMonitor(self.config)
        self.student_names = sorted(t.model_name for t in config.model_list if t.role == "student")
        self.drift_store = DriftStateStore(engine, f"{','.join(self.student_names)}->{self.reference}")
        self.student_roles = {t.model_name for t in config.model_list if t.role == "student"}
        self._tasks: set[asyncio.Task] = set()
        self._random = random.Random()

    @property
    def enabled(self) -> bool:
        return self.config.sample_rate > 0

    async def start(self) -> None:
        """Resume the drift state the replicas share (window, alarm, routing shift)."""
        if self.enabled and await asyncio.to_thread(self.drift_store.load, self.monitor):
            self.metrics.shadow_agreement.set(self.monitor.rolling or 0.0)
            self.metrics.drift_alarm.set(1 if self.monitor.alarm else 0)
            self.metrics.threshold_shift.set(self.monitor.threshold_shift)
            self.policy.set_shift(self.monitor.threshold_shift)

    def wants(self) -> bool:
        """Decide up front whether this request is a sample (so its answer text is kept)."""
        return self.enabled and len(self._tasks) < self.config.max_in_flight and \
            self._random.random() < self.config.sample_rate

    def submit(self, request_id: str, tier: str, endpoint: Endpoint, body: dict, answer: str,
               workload: str | None = None) -> None:
        """Start the shadow call for a finished student answer (returns at once)."""
        if tier not in self.student_roles or len(self._tasks) >= self.config.max_in_flight:
            return
        reference = self.config.workload_reference_tiers.get(workload or "", self.reference)
        task = asyncio.create_task(self._shadow(request_id, tier, endpoint, body, answer, reference))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _shadow(self, request_id: str, tier: str, endpoint: Endpoint, body: dict, answer: str,
                      reference_name: str) -> None:
        reference = self.tiers.resolve(reference_name)
        if reference is None or not reference.available:
            return
        shadow_body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        row = {"ts": datetime.now(UTC), "request_id": request_id, "tier": tier, "reference_tier": reference.name,
               "metric": self.config.metric, "answer": answer if self.store_texts else None, "agreement": None,
               "reference_answer": None, "reference_cost": 0.0, "error": None,
               "prompt": json.dumps(body.get("messages", body.get("prompt"))) if self.store_prompts else None}
        try:
            reply = await reference.complete(endpoint, shadow_body)
        except GatewayError as exc:
            # Upstream error messages can quote the request: stored only with content.
            row["error"] = exc.message if self.store_texts else f"reference tier failed ({exc.status_code})"
        else:
            reference_answer = choice_text(reply.data, "message")
            row["reference_answer"] = reference_answer if self.store_texts else None
            usage = reply.data.get("usage") or {}
            row["reference_cost"] = self.pricing.costs(reference.name, int(usage.get("prompt_tokens") or 0),
                                                       int(usage.get("completion_tokens") or 0))[0]
            row["agreement"] = agreement(answer, reference_answer, self.config.metric)
            await asyncio.to_thread(self.drift_store.observe, self.monitor, row["agreement"])
            self.metrics.shadow_pairs.inc()
            self.metrics.shadow_agreement.set(self.monitor.rolling or 0.0)
            self.metrics.drift_alarm.set(1 if self.monitor.alarm else 0)
            self.metrics.threshold_shift.set(self.monitor.threshold_shift)
            self.policy.set_shift(self.monitor.threshold_shift)
        try:
            await asyncio.to_thread(self._insert, row)
        except Exception:
            log.exception("shadow: could not record the pair for %s", request_id)

    def _insert(self, row: dict) -> None:
        with self.engine.begin() as conn:
            conn.execute(shadow_pairs_table.insert().values(**row))

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Let the shadow calls in flight finish (and be recorded) before shutting down."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)
