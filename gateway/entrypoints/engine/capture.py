"""The request path's side of content capture (``gateway/capture``): asking the tier for the
logprobs the flywheel distills from, without the client noticing, and handing the booked
answer to the capture store.

The teacher's top-k token log-probabilities make sparse KD possible without a second pass
over the teacher. They are asked of vLLM and URL tiers only (a hosted model behind litellm may
refuse the parameter), for non-streamed chat completions whose client did not ask for
logprobs itself; the gateway then takes them out of the answer before relaying it, so the
client gets exactly what it would have got. Streams are captured without logprobs.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from gateway.capture.policy import CapturePolicy
from gateway.capture.store import CapturedPair, CaptureStore
from gateway.ledger.booking import BookedSink, RequestRecord
from gateway.tiers.base import Endpoint, Tier, UpstreamReply


def with_capture_logprobs(body: dict, endpoint: Endpoint, top_k: int, tier: Tier) -> dict:
    """``body`` asking ``tier`` for its top-``top_k`` logprobs, or ``body`` itself where it should not."""
    if endpoint != "chat" or top_k <= 0 or body.get("logprobs") or tier.config.kind not in ("vllm", "url", "adapter"):
        return body
    return {**body, "logprobs": True, "top_logprobs": top_k}


def take_capture_logprobs(reply: UpstreamReply, record: RequestRecord) -> UpstreamReply:
    """Keep the first choice's logprobs on the record and relay the answer without any."""
    choices = reply.data.get("choices") or []
    if not choices:
        return reply
    first = (choices[0].get("logprobs") or {}).get("content")
    record.capture_logprobs = first if isinstance(first, list) else None
    data = {**reply.data, "choices": [{**c, "logprobs": None} for c in choices]}
    return UpstreamReply(content=json.dumps(data, ensure_ascii=False).encode(), data=data)


def assembled_answer(record: RequestRecord) -> dict:
    """A streamed answer in the non-streamed shape (what the capture table keeps)."""
    text = "".join(record.texts or [])
    choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": None}
              if record.endpoint == "chat" else {"index": 0, "text": text, "finish_reason": None})
    return {"object": "chat.completion" if record.endpoint == "chat" else "text_completion", "choices": [choice],
            "usage": {"prompt_tokens": record.prompt_tokens, "completion_tokens": record.completion_tokens}}


def capture_sink(policy: CapturePolicy, store: CaptureStore) -> BookedSink:
    """Booked teacher answers of opted-in requests go to the capture store (queued, not written here)."""

    def capture_answer(record: RequestRecord) -> None:
        if record.capture_body is None or not policy.keeps(record.tier, record.status):
            return
        workload = record.workload or policy.config.default_workload
        store.submit(CapturedPair(
            request_id=record.request_id, ts=datetime.now(UTC), workload=workload,
            api_key_id=record.key.id if record.key else None,
            endpoint="chat.completions" if record.endpoint == "chat" else "completions", tier=record.tier or "",
            request=record.capture_body, response=record.capture_reply or assembled_answer(record),
            logprobs=record.capture_logprobs, prompt_tokens=record.prompt_tokens,
            completion_tokens=record.completion_tokens))
        policy.counted(workload)

    return capture_answer
