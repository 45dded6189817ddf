"""The request path shared by chat and text completions: validate, route, relay, record.

One class serves both endpoints because the steps are the same and only the request model
and upstream path differ. Every request that reaches it leaves exactly one ledger row,
whether it was refused, failed upstream, was cut off by the client, or succeeded.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError

from gateway.entrypoints.body import read_json_object
from gateway.entrypoints.protocol_common import SamplingRequest
from gateway.errors import GatewayError, from_validation_error, model_not_found, tier_unavailable
from gateway.routing.policy import RouteDecision
from gateway.state import GatewayState
from gateway.tiers.base import Endpoint, Tier, UpstreamError

log = logging.getLogger("gateway.requests")

AUTO = "auto"

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
    started: float = field(default_factory=time.perf_counter)
    ts: datetime = field(default_factory=lambda: datetime.now(UTC))
    request_id: str = field(default_factory=new_request_id)
    requested_model: str = ""
    tier: str | None = None
    decision: RouteDecision | None = None
    stream: bool = False
    user: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float | None = None
    status: str = "ok"
    http_status: int = 200
    error: str | None = None

    def fail(self, exc: GatewayError | UpstreamError, status: str = "error") -> None:
        self.status, self.http_status, self.error = status, exc.status_code, exc.message

    def take_usage(self, usage: dict | None) -> None:
        if usage:
            self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            self.completion_tokens = int(usage.get("completion_tokens") or 0)


class SamplingProxy:
    def __init__(self, endpoint: Endpoint, request_model: type[SamplingRequest]) -> None:
        self.endpoint = endpoint
        self.request_model = request_model

    async def handle(self, request: Request, state: GatewayState) -> Response:
        record = RequestRecord(endpoint=self.endpoint)
        try:
            body = await read_json_object(request, state.config.server.max_body_bytes)
            record.requested_model = str(body.get("model", ""))[:256]
            parsed = self._validate(body, state)
            record.stream, record.user = parsed.stream, parsed.user
            tier = self._choose_tier(parsed, record, state)
            self._check_budget(parsed, tier)
            upstream_body = self._upstream_body(body, parsed)
            headers = self._headers(record)
            if parsed.stream:
                return await self._stream(tier, upstream_body, parsed, record, state, headers)
            reply = await tier.complete(self.endpoint, upstream_body)
        except (GatewayError, UpstreamError) as exc:
            record.fail(exc, "rejected" if isinstance(exc, GatewayError) else "error")
            self._finish(record, state)
            error = exc if isinstance(exc, GatewayError) else _as_gateway_error(exc)
            error.headers = {**(error.headers or {}), **self._headers(record)}
            raise error from None
        record.take_usage(reply.data.get("usage"))
        self._finish(record, state)
        return Response(content=reply.content, media_type="application/json", headers=headers)

    # -- steps -------------------------------------------------------------------------
    def _validate(self, body: dict, state: GatewayState) -> SamplingRequest:
        try:
            parsed = self.request_model.model_validate(body)
        except ValidationError as exc:
            raise from_validation_error(exc) from None
        messages = getattr(parsed, "messages", None)
        if messages is not None and len(messages) > state.config.server.max_messages:
            raise GatewayError(f"'messages' holds {len(messages)} messages; the limit is "
                               f"{state.config.server.max_messages}.", param="messages", code="too_many_messages")
        return parsed

    def _choose_tier(self, parsed: SamplingRequest, record: RequestRecord, state: GatewayState) -> Tier:
        if parsed.model == AUTO:
            decision = state.policy.route(parsed.routing_messages())  # type: ignore[attr-defined]
            tier = state.tiers.resolve(decision.tier)
            if tier is None or not tier.is_ready:
                tier, decision = self._fallback(decision, state)
            record.decision = decision
        else:
            tier = state.tiers.resolve(parsed.model)
            if tier is None:
                raise model_not_found(parsed.model)
            if not tier.is_ready:
                record.tier = tier.name
                raise tier_unavailable(tier.name, tier.status.value + (f" ({tier.detail})" if tier.detail else ""))
        record.tier = tier.name
        return tier

    @staticmethod
    def _fallback(decision: RouteDecision, state: GatewayState) -> tuple[Tier, RouteDecision]:
        """The routed tier is not serving: take the strong tier, else any ready tier."""
        ready = state.tiers.ready()
        if not ready:
            raise tier_unavailable(decision.tier, "no tier is ready")
        strong = state.tiers.resolve(state.config.router.strong_tier)
        chosen = strong if strong is not None and strong.is_ready else ready[0]
        log.info("routed tier %s is not ready; sending to %s", decision.tier, chosen.name)
        return chosen, RouteDecision(chosen.name, decision.score, decision.threshold, decision.policy + "+fallback")

    @staticmethod
    def _check_budget(parsed: SamplingRequest, tier: Tier) -> None:
        budget, limit = parsed.completion_budget, tier.max_model_len
        if budget is not None and limit is not None and budget >= limit:
            raise GatewayError(
                f"max_tokens={budget} does not fit tier `{tier.name}`, whose context is {limit} tokens "
                f"(prompt and completion together).",
                param="max_tokens", code="context_length_exceeded",
            )

    @staticmethod
    def _upstream_body(body: dict, parsed: SamplingRequest) -> dict:
        """The client's body as sent (vendor fields pass through); streams always report usage."""
        if parsed.stream:
            return {**body, "stream_options": {**(body.get("stream_options") or {}), "include_usage": True}}
        return body

    @staticmethod
    def _headers(record: RequestRecord) -> dict[str, str]:
        headers = {"x-request-id": record.request_id}
        if record.tier:
            headers["x-tierwise-tier"] = record.tier
        if record.decision is not None and record.decision.score is not None:
            headers["x-tierwise-route-score"] = f"{record.decision.score:.4f}"
        return headers

    async def _stream(self, tier: Tier, body: dict, parsed: SamplingRequest, record: RequestRecord,
                      state: GatewayState, headers: dict[str, str]) -> StreamingResponse:
        events = tier.stream(self.endpoint, body)
        try:
            first = await events.__anext__()  # upstream refusals surface here, as a proper HTTP error
        except StopAsyncIteration:
            raise UpstreamError(502, f"tier `{tier.name}` closed the stream without answering") from None
        relay = self._relay(first, events, parsed.wants_stream_usage, record, state)
        return StreamingResponse(relay, media_type="text/event-stream",
                                 headers={**headers, "cache-control": "no-cache", "x-accel-buffering": "no"})

    async def _relay(self, first: bytes, events: AsyncIterator[bytes], client_wants_usage: bool,
                     record: RequestRecord, state: GatewayState) -> AsyncIterator[bytes]:
        """Pass events through one by one; read usage on the way; hide it if not asked for."""
        record.ttft_ms = (time.perf_counter() - record.started) * 1000
        try:
            event: bytes | None = first
            while event is not None:
                if b'"usage"' in event and _read_usage(event, record) and not client_wants_usage:
                    event = None
                if event is not None:
                    yield event
                event = await anext(events, None)
        except UpstreamError as exc:
            record.fail(exc)
            yield b"data: " + json.dumps(_as_gateway_error(exc).body()).encode() + b"\n\ndata: [DONE]\n\n"
        except (asyncio.CancelledError, GeneratorExit):
            record.status, record.http_status, record.error = "client_disconnected", 499, "client went away mid-stream"
            raise
        finally:
            await events.aclose()
            self._finish(record, state)

    @staticmethod
    def _finish(record: RequestRecord, state: GatewayState) -> None:
        cost, teacher_cost = state.pricing.costs(record.tier, record.prompt_tokens, record.completion_tokens)
        decision = record.decision
        row = {
            "ts": record.ts,
            "request_id": record.request_id,
            "api_key_id": None,
            "endpoint": record.endpoint,
            "requested_model": record.requested_model,
            "tier": record.tier,
            "route_policy": decision.policy if decision else None,
            "route_score": decision.score if decision else None,
            "route_threshold": decision.threshold if decision else None,
            "stream": record.stream,
            "prompt_tokens": record.prompt_tokens,
            "completion_tokens": record.completion_tokens,
            "latency_ms": (time.perf_counter() - record.started) * 1000,
            "ttft_ms": record.ttft_ms,
            "status": record.status,
            "http_status": record.http_status,
            "error": record.error,
            "cost": cost,
            "teacher_cost": teacher_cost,
            "user": record.user,
            "prompt": None,
            "completion": None,
        }
        state.ledger.record(row)
        state.metrics.observe(row)


def _read_usage(event: bytes, record: RequestRecord) -> bool:
    """Take usage from an SSE event; True if the event is the usage-only final chunk."""
    payload = event.strip().removeprefix(b"data:").strip()
    try:
        data = json.loads(payload)
    except ValueError:
        return False
    usage = data.get("usage") if isinstance(data, dict) else None
    if not usage:
        return False
    record.take_usage(usage)
    return not data.get("choices")


def _as_gateway_error(exc: UpstreamError) -> GatewayError:
    return GatewayError(exc.message, status_code=exc.status_code,
                        type="invalid_request_error" if exc.status_code < 500 else exc.type, code=exc.code)
