"""The request path shared by chat and text completions: validate, admit, route, relay, book.

One class serves both endpoints because the steps are the same and only the request model
and upstream path differ. One ``SamplingServing`` per endpoint is built in the app's lifespan
with its collaborators (tiers, routing policy, booking, limiter, shadow sampler) and fetched
by the route from ``app.state`` (``entrypoints.dependencies``), as vLLM's serving objects are.

Every authenticated request that reaches it leaves exactly one ledger row, whether it was
refused, failed upstream, was cut off by the client, or succeeded; with ``ledger.durability:
commit`` the row is committed before the response ends (``ledger.booking``). The one
exception: while the ledger's backlog is full (its database away), requests are refused with
a 503 before anything else and only counted in the metrics, since their rows could not be kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError

from gateway.answer_text import choice_text
from gateway.auth.keys import ApiKey
from gateway.capture.policy import CapturePolicy, InvalidWorkload, parse_workload
from gateway.config import GatewayConfig
from gateway.entrypoints.engine.capture import take_capture_logprobs, with_capture_logprobs
from gateway.entrypoints.engine.body import read_json_object
from gateway.entrypoints.engine.protocol import SamplingRequest
from gateway.entrypoints.engine.streaming import forward_block
from gateway.errors import (CLIENT_CLOSED_REQUEST, GatewayError, database_unavailable, from_validation_error,
                            internal_error, model_not_found, tier_unavailable, unhandled_errors, unsupported_by_tier,
                            upstream_error)
from gateway.ledger.booking import Booking, RequestRecord
from gateway.ledger.pricing import Pricing
from gateway.limits import Limiter
from gateway.limits.reservations import max_request_cost
from gateway.metrics import GatewayMetrics
from gateway.routing.cascade import plan_cascade
from gateway.routing.policy import RouteDecision, bounded_messages
from gateway.routing.requirements import RequestNeeds
from gateway.routing.workloads import RoutingTable
from gateway.shadow.sampler import ShadowSampler
from gateway.tiers.base import Endpoint, Tier, UpstreamReply
from gateway.tiers.registry import TierRegistry
from gateway.tiers.stream_usage import RelayedTokens, estimate_prompt_tokens

log = logging.getLogger("gateway.requests")

AUTO = "auto"
DONE_EVENT = b"data: [DONE]\n\n"
# Longer routing text is scored in a worker thread (see ``_route``); below it, a thread hop
# (~50-100 us) would cost more than the decision it moves.
OFFLOAD_ROUTING_CHARS = 1_000

class SamplingServing:
    def __init__(self, endpoint: Endpoint, request_model: type[SamplingRequest], *, config: GatewayConfig,
                 tiers: TierRegistry, policy: RoutingTable, booking: Booking, pricing: Pricing,
                 limiter: Limiter, shadow: ShadowSampler, metrics: GatewayMetrics,
                 capture: CapturePolicy) -> None:
        self.endpoint = endpoint
        self.request_model = request_model
        self.server = config.server
        self.store_content = config.ledger.store_content
        self.strong_tier = config.router.strong_tier
        self.tiers = tiers
        self.policy = policy
        self.booking = booking
        self.pricing = pricing
        self.limiter = limiter
        self.shadow = shadow
        self.metrics = metrics
        self.capture = capture
        self.workload_header = config.capture.workload_header
        self.default_workload = config.capture.default_workload
        self.logprobs_top_k = config.capture.logprobs_top_k

    async def handle(self, request: Request, key: ApiKey | None) -> Response:
        with self.booking.serving():
            return await self._handle(request, key)

    def _new_record(self, key: ApiKey | None) -> RequestRecord:
        """The record of a request about to be handled; a 503 while the ledger cannot take rows."""
        if self.booking.full:
            # The database has been away long enough to fill the ledger's backlog: refuse (no
            # answer, nothing to book, counted in the metrics) rather than serve unbooked answers.
            self.metrics.requests.labels("none", self.endpoint, "ledger_full").inc()
            raise database_unavailable("Requests cannot be booked right now.")
        return RequestRecord(endpoint=self.endpoint, key=key)

    @contextlib.asynccontextmanager
    async def _booked_if_it_fails(self, record: RequestRecord) -> AsyncIterator[None]:
        """Whatever ends the request before its answer still books its row: a refusal or an
        upstream failure (the error, with the row's headers), the client going away (booked
        without awaiting: we are cancelled), or a bug of ours (a 500, one bounded log line)."""
        try:
            yield
        except GatewayError as exc:
            record.fail(exc, _row_status(exc))
            await self.booking.book(record)
            exc.headers = {**(exc.headers or {}), **self._headers(record)}
            raise exc from None
        except asyncio.CancelledError:
            record.status, record.http_status = "client_disconnected", CLIENT_CLOSED_REQUEST
            record.error = "client went away before the answer"
            self.booking.book_nowait(record)
            raise
        except Exception as exc:  # noqa: BLE001 - a bug of ours: still booked, a 500, one bounded log line
            unhandled_errors.report(f"request {record.request_id} failed", exc)
            error = internal_error()
            record.fail(error)
            await self.booking.book(record)
            error.headers = self._headers(record)
            raise error from None

    async def _read(self, request: Request, record: RequestRecord) -> tuple[dict, Any]:
        """The request's body and its validated model; the record learns the model, user and workload."""
        body = await read_json_object(request, self.server.max_body_bytes, self.server.body_read_timeout_s)
        record.requested_model = str(body.get("model", ""))[:256]
        parsed = self._validate(body)
        record.user, record.workload = getattr(parsed, "user", None), self._workload(request)
        return body, parsed

    async def _handle(self, request: Request, key: ApiKey | None) -> Response:
        record = self._new_record(key)
        async with self._booked_if_it_fails(record):
            body, parsed = await self._read(request, record)
            record.stream = parsed.stream
            if self.store_content:
                record.prompt = json.dumps(body.get("messages", body.get("prompt")))[:100_000]
                record.texts = []
            may_capture = self._may_capture(record.workload, key)
            if may_capture and self.capture.wants(record.workload, key.capture if key else None):
                record.capture_body = body
                record.texts = [] if record.texts is None else record.texts
            if self.shadow.wants() and may_capture is not False:
                record.shadow_body = body
                record.texts = [] if record.texts is None else record.texts
            if key is not None:
                await self.limiter.admit(key)
            if parsed.model == AUTO:
                record.decision = await self._route(parsed, record)
            tiers = self._candidates(parsed, record, RequestNeeds.of(body))
            self._check_budget(parsed, tiers[0])
            if key is not None and key.budget is not None:
                record.reservation = await self.limiter.reserve(key, max_request_cost(
                    self.pricing, [t.name for t in tiers], tiers[0].max_model_len, body, parsed.completion_budget,
                    parsed.n))
            if parsed.stream:
                return await self._stream(tiers, body, parsed, record)
            upstream_body = body if record.capture_body is None else with_capture_logprobs(
                body, self.endpoint, self.logprobs_top_k, tiers[0])
            reply = await self._complete(tiers, upstream_body, record)
            if upstream_body is not body:
                reply = take_capture_logprobs(reply, record)
            if record.capture_body is not None:
                record.capture_reply = reply.data
        record.take_usage(reply.data.get("usage"))
        if record.texts is not None:
            record.texts.append(choice_text(reply.data, "message"))
        await self.booking.book(record)
        return Response(content=reply.content, media_type="application/json", headers=self._headers(record))

    # -- admission ---------------------------------------------------------------------
    def _workload(self, request: Request) -> str:
        try:
            return parse_workload(request.headers.get(self.workload_header), self.default_workload)
        except InvalidWorkload as exc:
            raise GatewayError(f"Invalid {self.workload_header} header: {exc}.", param=self.workload_header,
                               code="invalid_workload") from None

    def _may_capture(self, workload: str, key: ApiKey | None) -> bool | None:
        """Whether this request's content may be kept beyond its answer (capture, shadow samples).

        None while capture is off (shadow sampling then follows its own settings); with capture
        on, the workload must be listed and, with auth on, the key opted in.
        """
        if not self.capture.enabled:
            return None
        return self.capture.workload_listed(workload) and (key is None or key.capture)

    def _validate(self, body: dict) -> SamplingRequest:
        try:
            parsed = self.request_model.model_validate(body)
        except ValidationError as exc:
            raise from_validation_error(exc) from None
        messages = getattr(parsed, "messages", None)
        if messages is not None and len(messages) > self.server.max_messages:
            raise GatewayError(f"'messages' holds {len(messages)} messages; the limit is "
                               f"{self.server.max_messages}.", param="messages", code="too_many_messages")
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
    async def _route(self, parsed: SamplingRequest, record: RequestRecord) -> RouteDecision:
        """The policy's decision for ``auto``. The text is bounded (``bounded_messages``), so a
        decision costs well under a millisecond for chat-sized prompts and a few ms at the cap;
        past ``OFFLOAD_ROUTING_CHARS`` it is scored in a worker thread, so the event loop keeps
        relaying other clients' streams meanwhile."""
        messages = bounded_messages(parsed.routing_messages())
        if sum(len(str(m.get("content") or "")) for m in messages) > OFFLOAD_ROUTING_CHARS:
            return await asyncio.to_thread(self.policy.route, messages, record.workload)
        return self.policy.route(messages, record.workload)

    def _candidates(self, parsed: SamplingRequest, record: RequestRecord, needs: RequestNeeds) -> list[Tier]:
        """The tiers to try, in order: the chosen one (if it can take traffic), then its fallbacks;
        only tiers whose capabilities cover the request's needs (tools, response_format, images)."""
        if parsed.model == AUTO:
            decision = record.decision
            chosen = self.tiers.resolve(decision.tier)
            if chosen is None:
                raise tier_unavailable(decision.tier, "the router chose a tier that is not configured")
        else:
            chosen = self.tiers.resolve(parsed.model)
            if chosen is None:
                raise model_not_found(parsed.model)
            if gaps := needs.missing(chosen.config.supports):
                raise unsupported_by_tier(chosen.name, gaps, needs.param(gaps))
        record.tier = chosen.name
        order = [chosen, *(self.tiers.resolve(name) for name in chosen.config.fallbacks)]
        if parsed.model == AUTO:  # routing may always end at the strong tier
            order.append(self.tiers.resolve(self.strong_tier))
        if not needs.plain:
            order = self._capable(order, needs, parsed.model == AUTO)
            if order[0] is not chosen:
                self._note_fallback(record, chosen.name, order[0].name, "cannot serve this request", "capability")
                chosen = order[0]
        candidates: list[Tier] = []
        for tier in order:
            if tier is not None and tier.available and tier not in candidates:
                candidates.append(tier)
        if not candidates:
            detail = chosen.status.value + (" (circuit open)" if chosen.breaker.is_open else "")
            raise tier_unavailable(chosen.name, detail + (f": {chosen.detail}" if chosen.detail else ""))
        if parsed.model == AUTO:
            candidates = plan_cascade(record.decision, {"n": getattr(parsed, "n", 1)}, candidates,
                                      self.tiers.resolve(self.strong_tier), self.tiers.resolve)
            record.cascade = getattr(candidates[0], "outcome", None)
        if candidates[0].name != chosen.name:
            self._note_fallback(record, chosen.name, candidates[0].name, "not available")
        return candidates

    def _capable(self, order: list[Tier | None], needs: RequestNeeds, auto: bool) -> list[Tier]:
        """``order`` without the tiers that cannot serve ``needs``; for ``auto``, any capable tier
        (the strong one first) when none of the chain is; a 400 when no tier at all is."""
        capable = [t for t in order if t is not None and not needs.missing(t.config.supports)]
        if not capable and auto:
            everyone = sorted(self.tiers, key=lambda t: t.name != self.strong_tier)
            capable = [t for t in everyone if not needs.missing(t.config.supports)]
        if not capable:
            gaps = needs.missing(next(t for t in order if t is not None).config.supports)
            raise GatewayError(f"No configured tier supports {', '.join(gaps)}.", param=needs.param(gaps),
                               code="unsupported_by_tiers")
        return capable

    @staticmethod
    def _note_fallback(record: RequestRecord, from_tier: str, to_tier: str, why: str, reason: str = "fallback") -> None:
        log.info("request %s: tier %s %s, falling back to %s", record.request_id, from_tier, why, to_tier)
        record.fallback_from = record.fallback_from or from_tier
        record.tier = to_tier
        if record.decision is not None:
            d = record.decision
            record.decision = RouteDecision(to_tier, d.score, d.threshold, d.policy.split("+")[0] + "+" + reason)

    def _failed(self, tier: Tier, exc: GatewayError, rest: list[Tier], record: RequestRecord) -> None:
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
            except GatewayError as exc:
                self._failed(tier, exc, tiers[i + 1:], record)
                continue
            tier.breaker.success()
            record.tier = tier.name
            return reply
        raise AssertionError("unreachable: the last failure re-raises")

    # -- streaming ---------------------------------------------------------------------
    async def _stream(self, tiers: list[Tier], body: dict, parsed: SamplingRequest,
                      record: RequestRecord) -> StreamingResponse:
        """Open the stream, failing over until a tier sends its first event; then relay it."""
        for i, tier in enumerate(tiers):
            record.attempts += 1
            options = {**(body.get("stream_options") or {}), **tier.stream_usage_options()}
            events = tier.stream_blocks(self.endpoint, {**body, "stream_options": options})
            try:
                first = await anext(events)
            except StopAsyncIteration:
                exc = upstream_error(502, f"tier `{tier.name}` closed the stream without answering")
            except GatewayError as err:
                exc = err
            else:
                tier.breaker.success()
                record.tier = tier.name
                relay = self._relay(first, events, body, parsed, record,
                                    gateway_asked_continuous=bool(options.get("continuous_usage_stats"))
                                    and not (body.get("stream_options") or {}).get("continuous_usage_stats"))
                return StreamingResponse(relay, media_type="text/event-stream", headers={
                    **self._headers(record), "cache-control": "no-cache", "x-accel-buffering": "no"})
            self._failed(tier, exc, tiers[i + 1:], record)
        raise AssertionError("unreachable: the last failure re-raises")

    async def _relay(self, first: bytes, events: AsyncIterator[bytes], body: dict, parsed: SamplingRequest,
                     record: RequestRecord, gateway_asked_continuous: bool) -> AsyncIterator[bytes]:
        """Pass events through as they come (a block of them in one write), reading usage on the way.

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
            block: bytes | None = first
            while block is not None:
                out, done = forward_block(block, record, wants_final, gateway_asked_continuous, relayed)
                if out:
                    yield out
                if done:
                    break
                block = await anext(events, None)
            record.take_counted(relayed, lambda: estimate_prompt_tokens(body))
            await self.booking.book(record)
            finished = True
            yield DONE_EVENT
        except GatewayError as exc:
            record.take_counted(relayed, lambda: estimate_prompt_tokens(body))
            record.fail(exc)
            await self.booking.book(record)
            finished = True
            yield b"data: " + json.dumps(exc.body()).encode() + b"\n\n" + DONE_EVENT
        except (asyncio.CancelledError, GeneratorExit):
            record.status, record.http_status, record.error = "client_disconnected", 499, "client went away mid-stream"
            raise
        finally:
            await events.aclose()
            if not finished:
                record.take_counted(relayed, lambda: estimate_prompt_tokens(body))
                self.booking.book_nowait(record)

    # -- answer headers ----------------------------------------------------------------
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


def _row_status(exc: GatewayError) -> str:
    """The ledger status of a request that ended in ``exc`` before an answer was relayed."""
    if exc.upstream:
        return "error"
    return "client_disconnected" if exc.status_code == CLIENT_CLOSED_REQUEST else "rejected"

