"""The request path shared by chat and text completions: validate, admit, route, relay, record.

One class serves both endpoints because the steps are the same and only the request model
and upstream path differ. Every authenticated request that reaches it leaves exactly one
ledger row, whether it was refused, failed upstream, was cut off by the client, or succeeded;
with ``ledger.durability: commit`` the row is committed before the response ends. The one
exception: while the ledger's backlog is full (its database away), requests are refused with
a 503 before anything else and only counted in the metrics, since their rows could not be kept.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError

from gateway.answer_text import choice_text
from gateway.auth.keys import ApiKey
from gateway.entrypoints.body import read_json_object
from gateway.entrypoints.protocol_common import SamplingRequest
from gateway.errors import (CLIENT_CLOSED_REQUEST, GatewayError, database_unavailable, from_validation_error,
                            internal_error, model_not_found, tier_unavailable, unhandled_errors)
from gateway.limits.reservations import max_request_cost
from gateway.routing.cascade import cascade_columns, plan_cascade
from gateway.routing.policy import RouteDecision, bounded_messages
from gateway.state import GatewayState
from gateway.tiers.base import Endpoint, Tier, UpstreamError, UpstreamReply
from gateway.tiers.stream_usage import RelayedTokens, estimate_prompt_tokens
from gateway.entrypoints.engine.streaming import inspect_chunk
from gateway.ledger.booking import RequestRecord

log = logging.getLogger("gateway.requests")

AUTO = "auto"
DONE_EVENT = b"data: [DONE]\n\n"

class SamplingProxy:
    def __init__(self, endpoint: Endpoint, request_model: type[SamplingRequest]) -> None:
        self.endpoint = endpoint
        self.request_model = request_model

    async def handle(self, request: Request, state: GatewayState, key: ApiKey | None) -> Response:
        state.in_flight += 1
        try:
            return await self._handle(request, state, key)
        finally:
            state.in_flight -= 1

    async def _handle(self, request: Request, state: GatewayState, key: ApiKey | None) -> Response:
        if state.ledger.full:
            # The database has been away long enough to fill the ledger's backlog: refuse (no
            # answer, nothing to book, counted in the metrics) rather than serve unbooked answers.
            state.metrics.requests.labels("none", self.endpoint, "ledger_full").inc()
            raise database_unavailable("Requests cannot be booked right now.")
        record = RequestRecord(endpoint=self.endpoint, key=key)
        try:
            body = await read_json_object(request, state.config.server.max_body_bytes,
                                          state.config.server.body_read_timeout_s)
            record.requested_model = str(body.get("model", ""))[:256]
            parsed = self._validate(body, state)
            record.stream, record.user = parsed.stream, parsed.user
            if state.config.ledger.store_content:
                record.prompt = json.dumps(body.get("messages", body.get("prompt")))[:100_000]
                record.texts = []
            if state.shadow.wants():
                record.shadow_body = body
                record.texts = [] if record.texts is None else record.texts
            if key is not None:
                await state.limiter.admit(key)
            tiers = self._candidates(parsed, record, state)
            self._check_budget(parsed, tiers[0])
            if key is not None and key.budget is not None:
                record.reservation = await state.limiter.reserve(key, max_request_cost(
                    state.pricing, [t.name for t in tiers], tiers[0].max_model_len, body, parsed.completion_budget,
                    parsed.n))
            if parsed.stream:
                return await self._stream(tiers, body, parsed, record, state)
            reply = await self._complete(tiers, body, record)
        except (GatewayError, UpstreamError) as exc:
            record.fail(exc, _row_status(exc))
            await self._finish(record, state)
            error = exc if isinstance(exc, GatewayError) else _as_gateway_error(exc)
            error.headers = {**(error.headers or {}), **self._headers(record)}
            raise error from None
        except asyncio.CancelledError:
            # The client went away (or the server is stopping) before the answer: still book the row
            # and release the key's budget hold, without awaiting anything more (we are cancelled).
            record.status, record.http_status = "client_disconnected", CLIENT_CLOSED_REQUEST
            record.error = "client went away before the answer"
            self._finish_nowait(record, state)
            raise
        except Exception as exc:  # noqa: BLE001 - a bug of ours: still booked, a 500, one bounded log line
            unhandled_errors.report(f"request {record.request_id} failed", exc)
            error = internal_error()
            record.fail(error)
            await self._finish(record, state)
            error.headers = self._headers(record)
            raise error from None
        record.take_usage(reply.data.get("usage"))
        if record.texts is not None:
            record.texts.append(choice_text(reply.data, "message"))
        await self._finish(record, state)
        return Response(content=reply.content, media_type="application/json", headers=self._headers(record))

    # -- admission ---------------------------------------------------------------------
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

    @staticmethod
    def _check_budget(parsed: SamplingRequest, tier: Tier) -> None:
        budget, limit = parsed.completion_budget, tier.max_model_len
        if budget is not None and limit is not None and budget >= limit:
            raise GatewayError(
                f"max_tokens={budget} does not fit tier `{tier.name}`, whose context is {limit} tokens "
                f"(prompt and completion together).",
                param="max_tokens", code="context_length_exceeded",
            )

    # -- routing and failover ----------------------------------------------------------
    def _candidates(self, parsed: SamplingRequest, record: RequestRecord, state: GatewayState) -> list[Tier]:
        """The tiers to try, in order: the chosen one (if it can take traffic), then its fallbacks."""
        if parsed.model == AUTO:
            # Bounded text: every policy's work stays a few ms on the loop, whatever the prompt size.
            decision = state.policy.route(bounded_messages(parsed.routing_messages()))  # type: ignore[attr-defined]
            record.decision = decision
            chosen = state.tiers.resolve(decision.tier)
            if chosen is None:
                raise tier_unavailable(decision.tier, "the router chose a tier that is not configured")
        else:
            chosen = state.tiers.resolve(parsed.model)
            if chosen is None:
                raise model_not_found(parsed.model)
        record.tier = chosen.name
        order = [chosen, *(state.tiers.resolve(name) for name in chosen.config.fallbacks)]
        if parsed.model == AUTO:  # routing may always end at the strong tier
            order.append(state.tiers.resolve(state.config.router.strong_tier))
        candidates: list[Tier] = []
        for tier in order:
            if tier is not None and tier.available and tier not in candidates:
                candidates.append(tier)
        if not candidates:
            detail = chosen.status.value + (" (circuit open)" if chosen.breaker.is_open else "")
            raise tier_unavailable(chosen.name, detail + (f": {chosen.detail}" if chosen.detail else ""))
        if parsed.model == AUTO:
            candidates = plan_cascade(record.decision, {"n": getattr(parsed, "n", 1)}, candidates,
                                      state.tiers.resolve(state.config.router.strong_tier))
            record.cascade = getattr(candidates[0], "outcome", None)
        if candidates[0].name != chosen.name:
            self._note_fallback(record, chosen.name, candidates[0].name, "not available")
        return candidates

    @staticmethod
    def _note_fallback(record: RequestRecord, from_tier: str, to_tier: str, why: str) -> None:
        log.info("request %s: tier %s %s, falling back to %s", record.request_id, from_tier, why, to_tier)
        record.fallback_from = record.fallback_from or from_tier
        record.tier = to_tier
        if record.decision is not None:
            d = record.decision
            record.decision = RouteDecision(to_tier, d.score, d.threshold, d.policy.split("+")[0] + "+fallback")

    def _failed(self, tier: Tier, exc: UpstreamError, rest: list[Tier], record: RequestRecord) -> None:
        """Count a failure against the tier; re-raise unless it is the tier's fault and a fallback is left."""
        if exc.status_code < 500:
            raise exc  # the request itself is bad: another tier would refuse it too
        tier.breaker.failure()
        if not rest:
            raise exc
        self._note_fallback(record, tier.name, rest[0].name, f"failed ({exc.status_code}: {exc.message})")

    async def _complete(self, tiers: list[Tier], body: dict, record: RequestRecord) -> UpstreamReply:
        for i, tier in enumerate(tiers):
            record.attempts += 1
            try:
                reply = await tier.complete(self.endpoint, body)
            except UpstreamError as exc:
                self._failed(tier, exc, tiers[i + 1:], record)
                continue
            tier.breaker.success()
            record.tier = tier.name
            return reply
        raise AssertionError("unreachable: the last failure re-raises")

    # -- streaming ---------------------------------------------------------------------
    async def _stream(self, tiers: list[Tier], body: dict, parsed: SamplingRequest, record: RequestRecord,
                      state: GatewayState) -> StreamingResponse:
        """Open the stream, failing over until a tier sends its first event; then relay it."""
        for i, tier in enumerate(tiers):
            record.attempts += 1
            options = {**(body.get("stream_options") or {}), **tier.stream_usage_options()}
            events = tier.stream(self.endpoint, {**body, "stream_options": options})
            try:
                first = await anext(events)
            except StopAsyncIteration:
                exc = UpstreamError(502, f"tier `{tier.name}` closed the stream without answering")
            except UpstreamError as err:
                exc = err
            else:
                tier.breaker.success()
                record.tier = tier.name
                relay = self._relay(first, events, body, parsed, record, state,
                                    gateway_asked_continuous=bool(options.get("continuous_usage_stats"))
                                    and not (body.get("stream_options") or {}).get("continuous_usage_stats"))
                return StreamingResponse(relay, media_type="text/event-stream", headers={
                    **self._headers(record), "cache-control": "no-cache", "x-accel-buffering": "no"})
            self._failed(tier, exc, tiers[i + 1:], record)
        raise AssertionError("unreachable: the last failure re-raises")

    async def _relay(self, first: bytes, events: AsyncIterator[bytes], body: dict, parsed: SamplingRequest,
                     record: RequestRecord, state: GatewayState, gateway_asked_continuous: bool) -> AsyncIterator[bytes]:
        """Pass events through one by one, reading usage on the way.

        Usage the client did not ask for is taken out (the gateway always asks the tier for
        it). Until the tier reports usage, the relayed text is counted, so a stream cut
        before the tier's final usage is still booked (``usage_source = 'counted'``). The row
        is committed before ``[DONE]``, so a stream that ended has its row.
        """
        record.ttft_ms = (time.perf_counter() - record.started) * 1000
        wants_final = parsed.wants_stream_usage
        relayed = RelayedTokens()
        finished = False
        try:
            event: bytes | None = first
            while event is not None:
                if event.strip().replace(b" ", b"") == b"data:[DONE]":
                    break
                if b'"usage"' in event or record.texts is not None or record.usage_source is None:
                    event = inspect_chunk(event, record, wants_final, gateway_asked_continuous, relayed)
                if event is not None:
                    yield event
                event = await anext(events, None)
            record.take_counted(relayed, lambda: estimate_prompt_tokens(body))
            await self._finish(record, state)
            finished = True
            yield DONE_EVENT
        except UpstreamError as exc:
            record.take_counted(relayed, lambda: estimate_prompt_tokens(body))
            record.fail(exc)
            await self._finish(record, state)
            finished = True
            yield b"data: " + json.dumps(_as_gateway_error(exc).body()).encode() + b"\n\n" + DONE_EVENT
        except (asyncio.CancelledError, GeneratorExit):
            record.status, record.http_status, record.error = "client_disconnected", 499, "client went away mid-stream"
            raise
        finally:
            await events.aclose()
            if not finished:
                record.take_counted(relayed, lambda: estimate_prompt_tokens(body))
                self._finish_nowait(record, state)

    # -- booking -----------------------------------------------------------------------
    @staticmethod
    def _headers(record: RequestRecord) -> dict[str, str]:
        headers = {"x-request-id": record.request_id}
        if record.tier:
            headers["x-tierwise-tier"] = record.tier
        if record.decision is not None and record.decision.score is not None:
            headers["x-tierwise-route-score"] = f"{record.decision.score:.4f}"
        if record.fallback_from:
            headers["x-tierwise-fallback-from"] = record.fallback_from
        return headers

    def _finish_nowait(self, record: RequestRecord, state: GatewayState) -> asyncio.Future:
        """Book the row (and the key's usage) without waiting for the commit."""
        cost, teacher_cost = state.pricing.costs(record.tier if record.status != "rejected" else None,
                                                 record.prompt_tokens, record.completion_tokens)
        decision = record.decision
        row = {
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
            "latency_ms": (time.perf_counter() - record.started) * 1000,
            "ttft_ms": record.ttft_ms,
            "status": record.status,
            "http_status": record.http_status,
            "error": record.error,
            "cost": cost,
            "teacher_cost": teacher_cost,
            "user": record.user,
            "prompt": record.prompt,
            "completion": "".join(record.texts) if record.texts is not None and record.prompt is not None else None,
        }
        extra = cascade_columns(record.cascade, lambda t, p, c: state.pricing.costs(t, p, c)[0])
        row.update(extra)
        row["cost"] += extra["extra_cost"] or 0.0
        committed = state.ledger.record(row)
        state.metrics.observe(row)
        if record.shadow_body is not None and record.status == "ok" and record.tier:
            state.shadow.submit(record.request_id, record.tier, self.endpoint, record.shadow_body,
                                "".join(record.texts or []))
        if record.key is not None and (record.prompt_tokens or record.completion_tokens or record.reservation):
            settle = asyncio.ensure_future(state.limiter.settle(
                record.key, record.prompt_tokens + record.completion_tokens, cost, record.reservation))
            record.reservation = None  # released once, on whichever path books the row
            settle.add_done_callback(_log_settle_error)
        return committed

    async def _finish(self, record: RequestRecord, state: GatewayState) -> None:
        committed = self._finish_nowait(record, state)
        # Alone on the gateway, commit inline (no thread hop); with company, join the group commit.
        alone = state.in_flight <= 1
        if state.config.ledger.durability == "commit" and not (alone and state.ledger.commit_inline()):
            try:
                await asyncio.wait_for(asyncio.shield(committed), state.config.ledger.commit_timeout_s)
            except TimeoutError:
                if not state.ledger.failing:  # an outage is logged by the ledger, at most every 10 s
                    log.warning("request %s answered before its ledger row was committed (still queued)",
                                record.request_id)


def _log_settle_error(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("limits: counting usage failed: %s", task.exception())


def _row_status(exc: GatewayError | UpstreamError) -> str:
    """The ledger status of a request that ended in ``exc`` before an answer was relayed."""
    if isinstance(exc, UpstreamError):
        return "error"
    return "client_disconnected" if exc.status_code == CLIENT_CLOSED_REQUEST else "rejected"


def _as_gateway_error(exc: UpstreamError) -> GatewayError:
    return GatewayError(exc.message, status_code=exc.status_code,
                        type="invalid_request_error" if exc.status_code < 500 else exc.type, code=exc.code)
