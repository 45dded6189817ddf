"""The cascade: ask the student first, keep its answer if it is confident, else ask the teacher.

Routing before the answer (the trained router, the competence gate) can only guess how the
student will do; the cascade looks at what it actually says. The student is asked with
``logprobs`` and streamed; after its *decision window* (the first line, the intent of a
support answer, or at most ``decision_tokens`` tokens) a calibrated model
(``router.confidence.CascadeConfidence``) turns the window's logprobs into P(the teacher would
say the same). At or above the threshold the student's answer goes on; below it, the
student's stream is closed (vLLM stops generating when the connection drops) and the teacher
answers instead. An escalation therefore costs the student's time to its decision point on
top of the teacher's answer, never a whole student answer.

What the client sees is one ordinary answer: a stream holds back only the window's events and
then relays the chosen tier's stream; a non-streamed request gets the student's answer
assembled from its stream (with ``usage``), or the teacher's reply. Logprobs the client did not
ask for are taken out. The rejected attempt is real compute, so :class:`CascadeOutcome`
carries its tokens for the ledger (``extra_*`` columns, included in ``cost``) with the
decision and the confidence.

Composition (``router.cascade`` config): competence gate -> router -> cascade. A decision for
the weak tier made by the policy in front becomes a cascade (``+cascade`` in ``route_policy``);
``router.policy: cascade`` puts every in-scope request through it. A student that fails before
its decision counts as an escalation (reason ``student_failed``): the teacher answers. The
competence gate's band check is the same machinery one level up (support teacher first, the
flagship on escalation: ``Cascade.escalate_to``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.errors import GatewayError
from gateway.routing.policy import RouteDecision
from gateway.tiers.base import Endpoint, Tier, UpstreamReply
from gateway.tiers.stream_usage import estimate_prompt_tokens

log = logging.getLogger("gateway.routing")

DONE = b"data: [DONE]\n\n"
STUDENT_TOP_LOGPROBS = 5  # the confidence model's margin feature reads the top-2


class ConfidenceModel(Protocol):
    """What ``router.confidence.load_confidence(...).model`` provides."""

    def confidence(self, tokens: list[dict]) -> float: ...


@dataclass
class CascadeOutcome:
    """One request's cascade: what the ledger and the metrics record."""

    student_tier: str
    teacher_tier: str
    threshold: float
    confidence: float | None = None
    escalated: bool | None = None  # None: no decision was made (e.g. the client left first)
    reason: str | None = None  # 'confident', 'unsure', 'student_failed'
    extra_prompt_tokens: int = 0  # the rejected student attempt
    extra_completion_tokens: int = 0
    decision_ms: float | None = None

    @property
    def final_tier(self) -> str:
        return self.teacher_tier if self.escalated else self.student_tier


def _decision_window_done(tokens: list[dict], limit: int) -> bool:
    return len(tokens) >= limit or any("\n" in str(t.get("token", "")) for t in tokens)


def _parse(event: bytes) -> dict | None:
    payload = event.strip().removeprefix(b"data:").strip()
    if not payload or payload == b"[DONE]":
        return None
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _tokens_of(data: dict, endpoint: Endpoint) -> list[dict]:
    """The logprob entries of choice 0 in one chunk, in the chat shape (token, logprob, top_logprobs)."""
    choices = data.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return []
    lp = choices[0].get("logprobs")
    if not isinstance(lp, dict):
        return []
    if endpoint == "chat":
        return [t for t in lp.get("content") or [] if isinstance(t, dict)]
    tops = lp.get("top_logprobs") or []
    return [{"token": tok, "logprob": val,
             "top_logprobs": [{"token": k, "logprob": v} for k, v in (tops[i] or {}).items()] if i < len(tops) else []}
            for i, (tok, val) in enumerate(zip(lp.get("tokens") or [], lp.get("token_logprobs") or []))]


class _OwnBreakers:
    """The serving code's breaker calls on a cascade do nothing: the cascade reports to each tier's own."""

    def success(self) -> None: ...

    def failure(self) -> None: ...

    def allow(self) -> bool:
        return True


class CascadeTier:
    """One request's cascade, shaped like a ``Tier`` for the serving code (``complete`` / ``stream_blocks``).

    Its ``name`` is the student's until the decision, then the tier that answered; it is
    used for one request only (``outcome`` is that request's).
    """

    breaker = _OwnBreakers()
    available = True

    def __init__(self, cascade: Cascade, student: Tier, teacher: Tier) -> None:
        self.cascade, self.student, self.teacher = cascade, student, teacher
        self.config = student.config  # fallbacks, context length: the student's (the first call's)
        self.outcome = CascadeOutcome(student.name, teacher.name, cascade.threshold)
        self._started = time.perf_counter()

    @property
    def name(self) -> str:
        return self.outcome.final_tier

    @property
    def max_model_len(self) -> int | None:
        return self.student.max_model_len

    def stream_usage_options(self) -> dict:
        return self.student.stream_usage_options()

    async def _teacher_reply(self, endpoint: Endpoint, body: dict) -> UpstreamReply:
        try:
            reply = await self.teacher.complete(endpoint, body)
        except GatewayError as exc:
            if exc.status_code >= 500:
                self.teacher.breaker.failure()
            raise
        self.teacher.breaker.success()
        return reply

    # -- the client's wishes -------------------------------------------------------------
    @staticmethod
    def _client_logprobs(endpoint: Endpoint, body: dict) -> int | None:
        """How many alternatives the client asked for per token; None: no logprobs at all."""
        if endpoint == "chat":
            return int(body.get("top_logprobs") or 0) if body.get("logprobs") else None
        value = body.get("logprobs")
        return None if value is None or value is False else int(value)

    def _student_body(self, endpoint: Endpoint, body: dict) -> dict:
        asked = self._client_logprobs(endpoint, body) or 0
        top = max(asked, STUDENT_TOP_LOGPROBS)
        extra = {"logprobs": True, "top_logprobs": top} if endpoint == "chat" else {"logprobs": top}
        options = {**(body.get("stream_options") or {}), **self.student.stream_usage_options()}
        return {**body, **extra, "stream": True, "stream_options": options}

    def _clean(self, event: bytes, data: dict | None, keep: int | None) -> bytes:
        """``event`` with logprobs cut to what the client asked for (none, or ``keep`` alternatives)."""
        if data is None or not any(isinstance(c, dict) and c.get("logprobs") for c in data.get("choices") or []):
            return event
        for choice in data["choices"]:
            lp = choice.get("logprobs")
            if keep is None or not isinstance(lp, dict):
                choice.pop("logprobs", None)
            elif isinstance(lp.get("content"), list):
                for entry in lp["content"]:
                    if isinstance(entry, dict) and isinstance(entry.get("top_logprobs"), list):
                        entry["top_logprobs"] = entry["top_logprobs"][:keep]
            elif isinstance(lp.get("top_logprobs"), list):
                lp["top_logprobs"] = [dict(list(t.items())[:keep]) if isinstance(t, dict) else t
                                      for t in lp["top_logprobs"]]
        return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"

    # -- the decision ------------------------------------------------------------------------
    async def _open_student(self, endpoint: Endpoint, body: dict) -> tuple[AsyncIterator[bytes] | None, list]:
        """Read the student's stream up to its decision point; decide; return the stream and held events.

        Returns ``(None, [])`` when the student failed before deciding (escalation).
        """
        events = self.student.stream(endpoint, self._student_body(endpoint, body))
        held: list[tuple[bytes, dict | None]] = []
        tokens: list[dict] = []
        usage: dict | None = None
        try:
            async for event in events:
                data = _parse(event)
                held.append((event, data))
                if data is not None:
                    tokens += _tokens_of(data, endpoint)
                    usage = data.get("usage") or usage
                if event.strip().replace(b" ", b"") == b"data:[DONE]" or _decision_window_done(
                        tokens, self.cascade.decision_tokens):
                    break
        except GatewayError as exc:
            if exc.status_code < 500:
                await events.aclose()
                raise  # the request itself is bad: the teacher would refuse it too
            self.student.breaker.failure()
            log.info("cascade: student %s failed before its decision (%s); asking %s",
                     self.student.name, exc.message, self.teacher.name)
            self._decide(None, "student_failed", body, usage, tokens)
            return None, []
        self.student.breaker.success()
        confidence = self.cascade.model.confidence(tokens) if tokens else 0.0
        if confidence >= self.cascade.threshold:
            self._decide(confidence, "confident", body, usage, tokens)
            return events, held
        await events.aclose()  # drops the connection: the student stops generating
        self._decide(confidence, "unsure", body, usage, tokens)
        return None, []

    def _decide(self, confidence: float | None, reason: str, body: dict, usage: dict | None, tokens: list) -> None:
        o = self.outcome
        o.confidence, o.reason, o.escalated = confidence, reason, reason != "confident"
        o.decision_ms = (time.perf_counter() - self._started) * 1000
        if o.escalated and (tokens or usage):  # the student read the prompt and generated the window
            o.extra_prompt_tokens = int((usage or {}).get("prompt_tokens") or estimate_prompt_tokens(body))
            o.extra_completion_tokens = max(len(tokens), int((usage or {}).get("completion_tokens") or 0))

    # -- the two ways to answer ------------------------------------------------------------
    async def stream_blocks(self, endpoint: Endpoint, body: dict) -> AsyncIterator[bytes]:
        """The chosen answer as ``Tier.stream_blocks`` yields it: the teacher's blocks whole, the
        student's (each read for its confidence) one event each."""
        keep = self._client_logprobs(endpoint, body)
        student_events, held = await self._open_student(endpoint, body)
        if student_events is None:
            options = {**(body.get("stream_options") or {}), **self.teacher.stream_usage_options()}
            teacher_events = self.teacher.stream_blocks(endpoint, {**body, "stream_options": options})
            try:
                async for event in teacher_events:
                    yield event
            except GatewayError as exc:
                if exc.status_code >= 500:
                    self.teacher.breaker.failure()
                raise
            finally:
                await teacher_events.aclose()  # a client that left mid-answer stops the teacher too
            self.teacher.breaker.success()
            return
        try:
            for event, data in held:
                yield self._clean(event, data, keep)
            async for event in student_events:
                yield self._clean(event, _parse(event), keep)
        finally:
            await student_events.aclose()

    async def complete(self, endpoint: Endpoint, body: dict) -> UpstreamReply:
        """A whole answer: the student's (assembled from its stream) or the teacher's reply."""
        student_events, held = await self._open_student(endpoint, {**body, "stream": True})
        if student_events is None:
            return await self._teacher_reply(endpoint, body)
        try:
            chunks = [data for _event, data in held if data is not None]
            async for event in student_events:
                data = _parse(event)
                if data is not None:
                    chunks.append(data)
        finally:
            await student_events.aclose()
        reply = assemble(chunks, endpoint, self._client_logprobs(endpoint, body))
        return UpstreamReply(content=json.dumps(reply).encode(), data=reply)


def assemble(chunks: list[dict], endpoint: Endpoint, keep: int | None) -> dict:
    """A non-streamed completion object from stream chunks (choice 0; ``n`` > 1 is not cascaded)."""
    text, tokens, finish, usage, head = [], [], None, None, chunks[0] if chunks else {}
    for data in chunks:
        usage = data.get("usage") or usage
        for choice in data.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") if endpoint == "chat" else choice
            text.append(str((delta or {}).get("content" if endpoint == "chat" else "text") or ""))
            tokens += _tokens_of(data, endpoint)
            finish = choice.get("finish_reason") or finish
    if endpoint == "chat":
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": "".join(text)},
                                  "finish_reason": finish}
        if keep is not None:
            choice["logprobs"] = {"content": [{**t, "top_logprobs": (t.get("top_logprobs") or [])[:keep]}
                                              for t in tokens]}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": "".join(text), "finish_reason": finish}
        if keep is not None:
            choice["logprobs"] = {"tokens": [t["token"] for t in tokens],
                                  "token_logprobs": [t["logprob"] for t in tokens],
                                  "top_logprobs": [{a["token"]: a["logprob"] for a in (t.get("top_logprobs") or [])[:keep]}
                                                   for t in tokens]}
        obj = "text_completion"
    reply = {"id": head.get("id", "cascade"), "object": obj, "created": head.get("created", int(time.time())),
             "model": head.get("model", ""), "choices": [choice]}
    if usage:
        reply["usage"] = {k: usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens") if k in usage}
    return reply


class Cascade:
    """The loaded confidence model and its operating point; ``run`` starts one request's cascade."""

    def __init__(self, model: ConfidenceModel, threshold: float, decision_tokens: int = 16,
                 escalate_to: str | None = None) -> None:
        self.model = model
        self.threshold = float(threshold)
        self.decision_tokens = decision_tokens
        self.escalate_to = escalate_to  # None: the router's strong tier (the competence band check names its own)

    def tier(self, student: Tier, teacher: Tier) -> CascadeTier:
        return CascadeTier(self, student, teacher)


def plan_cascade(decision: RouteDecision | None, body: dict, candidates: list, teacher: Tier | None,
                 resolve: Callable[[str], Tier | None] | None = None) -> list:
    """The serving code's hook: ``candidates`` with the student (first) replaced by its cascade.

    ``teacher`` is where escalations go unless the cascade names its own tier (``escalate_to``,
    looked up with ``resolve``). Unchanged when the request is not cascaded, when the first
    candidate is not the chosen student (a fallback), or when the teacher cannot take traffic
    now (the student answers alone rather than escalating into a tier that is down).
    """
    cascade = cascade_for(decision, body)
    if cascade is None or not candidates or candidates[0].name != decision.tier:
        return candidates
    if cascade.escalate_to and resolve is not None:
        teacher = resolve(cascade.escalate_to)
    if teacher is None or teacher is candidates[0] or not teacher.available:
        return candidates
    return [cascade.tier(candidates[0], teacher), *candidates[1:]]


def cascade_columns(outcome: CascadeOutcome | None, price: Callable[[str, int, int], float]) -> dict:
    """The ledger's cascade columns for one request (all None when it was not cascaded).

    ``price(tier, prompt_tokens, completion_tokens)``: what tokens cost on a tier. The
    returned ``extra_cost`` is to be added to the row's ``cost``.
    """
    if outcome is None:
        return {"cascade_confidence": None, "escalated": None, "extra_prompt_tokens": None,
                "extra_completion_tokens": None, "extra_cost": None}
    extra = price(outcome.student_tier, outcome.extra_prompt_tokens, outcome.extra_completion_tokens)
    return {"cascade_confidence": outcome.confidence, "escalated": outcome.escalated,
            "extra_prompt_tokens": outcome.extra_prompt_tokens, "extra_completion_tokens": outcome.extra_completion_tokens,
            "extra_cost": extra}


def cascade_for(decision: RouteDecision | None, body: dict) -> Cascade | None:
    """The cascade this request goes through: the policy chose one, and one answer was asked for
    (``n`` > 1 asks for several; the decision reads one, so those go to the student plainly)."""
    if decision is None or decision.cascade is None:
        return None
    try:
        return decision.cascade if int(body.get("n") or 1) == 1 else None
    except (TypeError, ValueError):
        return None
