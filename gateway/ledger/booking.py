"""Booking one request: the ``RequestRecord`` the request path fills in, and the ``Booking``
that turns it into a ledger row when the request ends, whichever way it ends.

The request path fills the record in as it goes (tier, route decision, usage, status); the
booking prices it, builds the row, queues it with the writer, counts it in the metrics and
hands it to whatever else wants finished requests (shadow sampling, the key's usage, content
capture: the ``sinks``), then applies the commit policy (``ledger.durability``). It lives in
the ledger package because the record's fields are the ledger's columns; it knows nothing
about HTTP or tiers (a failure is anything with a status code and a message, relayed-token
counts arrive as plain numbers).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

from gateway.auth.keys import ApiKey
from gateway.limits.reservations import Reservation
from gateway.ledger.pricing import Pricing
from gateway.ledger.writer import LedgerWriter
from gateway.routing.cascade import CascadeOutcome, cascade_columns
from gateway.routing.policy import RouteDecision

log = logging.getLogger("gateway.requests")


class _Failure(Protocol):
    status_code: int
    message: str


class RelayedTokens(Protocol):
    content_chunks: int
    completion_tokens: int


# Request ids: a random per-process prefix and a counter. Unique across replicas and
# restarts, and without a urandom syscall per request (uuid4 showed in profiles).
_ID_PREFIX = "req-" + os.urandom(6).hex()
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):010x}"


@dataclass
class RequestRecord:
    """What the ledger learns about one request, filled in as it goes."""

    endpoint: str
    key: ApiKey | None = None
    started: float = field(default_factory=time.perf_counter)
    ts: datetime = field(default_factory=lambda: datetime.now(UTC))
    request_id: str = field(default_factory=new_request_id)
    requested_model: str = ""
    tier: str | None = None
    fallback_from: str | None = None
    attempts: int = 0
    decision: RouteDecision | None = None
    stream: bool = False
    user: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_source: str | None = None  # 'upstream': the tier said; 'counted': the relay estimated
    ttft_ms: float | None = None
    status: str = "ok"
    http_status: int = 200
    error: str | None = None
    reservation: Reservation | None = None  # the key's budget hold, released when the row is booked
    prompt: str | None = None
    texts: list[str] | None = None  # the answer's text, kept when storing content or shadowing
    cascade: CascadeOutcome | None = None
    shadow_body: dict | None = None  # the request, kept when this answer is a shadow sample
    workload: str | None = None  # what the request named in the workload header (or the default)
    # Content capture (gateway/capture/): the client's request when it may be kept, the tier's
    # whole answer (non-streamed) and the answer's token logprobs when the gateway asked for them.
    capture_body: dict | None = None
    capture_reply: dict | None = None
    capture_logprobs: list | None = None
    # Set when the record is booked: what it cost (cascade extra included), the teacher
    # counterfactual, and how long it took.
    cost: float = 0.0
    teacher_cost: float = 0.0
    latency_ms: float | None = None

    @property
    def escalated(self) -> bool | None:
        """Whether the cascade handed this request to the teacher (None: not cascaded)."""
        return self.cascade.escalated if self.cascade is not None else None

    def fail(self, exc: _Failure, status: str = "error") -> None:
        self.status, self.http_status, self.error = status, exc.status_code, exc.message

    def take_usage(self, usage: dict | None) -> None:
        if usage:
            self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            self.completion_tokens = int(usage.get("completion_tokens") or 0)
            self.usage_source = "upstream"

    def take_counted(self, relayed: RelayedTokens, prompt_tokens_estimate: Callable[[], int]) -> None:
        """Book what the relay counted, unless the tier reported usage (which is exact)."""
        if self.usage_source is None and relayed.content_chunks:
            self.prompt_tokens = prompt_tokens_estimate()
            self.completion_tokens = relayed.completion_tokens
            self.usage_source = "counted"


class MetricsSink(Protocol):
    def observe(self, record: RequestRecord) -> None: ...


# Called with every booked record (after its cost is set): shadow sampling, the key's usage
# settlement, content capture. A sink must not block: it schedules its own work.
BookedSink = Callable[[RequestRecord], None]


class Booking:
    """Books finished requests: price, row, writer, metrics, sinks; then the commit policy.

    Built once at start-up with its collaborators. ``serving()`` brackets the handling of one
    request: the count of requests in flight decides whether a row is committed inline (alone
    on the gateway: no thread hop) or joins the writer's group commit.
    """

    def __init__(self, writer: LedgerWriter, pricing: Pricing, metrics: MetricsSink, *,
                 durability: Literal["commit", "async"] = "commit", commit_timeout_s: float = 5.0,
                 sinks: Sequence[BookedSink] = ()) -> None:
        self.writer = writer
        self.pricing = pricing
        self.metrics = metrics
        self.durability = durability
        self.commit_timeout_s = commit_timeout_s
        self.sinks: list[BookedSink] = list(sinks)
        self.in_flight = 0

    @property
    def full(self) -> bool:
        """The writer's backlog is full (its database away): new requests must be refused."""
        return self.writer.full

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    def row(self, record: RequestRecord) -> dict:
        """Price ``record`` (setting its cost fields) and build its ledger row."""
        cost, teacher_cost = self.pricing.costs(record.tier if record.status != "rejected" else None,
                                                record.prompt_tokens, record.completion_tokens)
        extra = cascade_columns(record.cascade, lambda t, p, c: self.pricing.costs(t, p, c)[0])
        record.cost, record.teacher_cost = cost + (extra["extra_cost"] or 0.0), teacher_cost
        record.latency_ms = (time.perf_counter() - record.started) * 1000
        decision = record.decision
        return {
            "ts": record.ts,
            "request_id": record.request_id,
            "api_key_id": record.key.id if record.key else None,
            "endpoint": record.endpoint,
            "requested_model": record.requested_model,
            "tier": record.tier,
            "route_policy": decision.policy if decision else None,
            "route_score": decision.score if decision else None,
            "route_threshold": decision.threshold if decision else None,
            "fallback_from": record.fallback_from,
            "attempts": record.attempts,
            "stream": record.stream,
            "prompt_tokens": record.prompt_tokens,
            "completion_tokens": record.completion_tokens,
            "usage_source": record.usage_source,
            "latency_ms": record.latency_ms,
            "ttft_ms": record.ttft_ms,
            "status": record.status,
            "http_status": record.http_status,
            "error": record.error,
            "cost": record.cost,
            "teacher_cost": teacher_cost,
            "user": record.user,
            "workload": record.workload,
            **self.pricing.basis(record.tier if record.status != "rejected" else None),
            "prompt": record.prompt,
            "completion": "".join(record.texts) if record.texts is not None and record.prompt is not None else None,
            **extra,
        }

    def book_nowait(self, record: RequestRecord) -> asyncio.Future:
        """Queue the row and tell the sinks, without waiting for the commit."""
        committed = self.writer.record(self.row(record))
        self.metrics.observe(record)
        for sink in self.sinks:
            try:
                sink(record)
            except Exception as exc:  # noqa: BLE001 - a sink's bug must not lose the row or the answer
                log.error("booking: sink %s failed for %s: %s", getattr(sink, "__name__", sink), record.request_id, exc)
        return committed

    async def book(self, record: RequestRecord) -> None:
        """Book the row; with ``durability: commit`` wait (bounded) until it is committed."""
        committed = self.book_nowait(record)
        alone = self.in_flight <= 1
        if self.durability == "commit" and not (alone and self.writer.commit_inline()):
            try:
                await asyncio.wait_for(asyncio.shield(committed), self.commit_timeout_s)
            except TimeoutError:
                if not self.writer.failing:  # an outage is logged by the writer, at most every 10 s
                    log.warning("request %s answered before its ledger row was committed (still queued)",
                                record.request_id)
