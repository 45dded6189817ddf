"""Reading a relayed SSE stream: usage, text and relayed-token counts, one event at a time.

Kept apart from the serving object so the per-chunk work (the hot loop of a stream) is one small
function that unit tests can drive with raw events.
"""

from __future__ import annotations

from gateway import fastjson
from gateway.answer_text import choice_text
from gateway.ledger.booking import RequestRecord
from gateway.tiers.stream_usage import RelayedTokens


def inspect_chunk(event: bytes, record: RequestRecord, wants_final: bool, strip_running_usage: bool,
                   relayed: RelayedTokens) -> bytes | None:
    """Read usage (and, when storing content, text) from one SSE event; return what to forward.

    ``strip_running_usage``: the gateway (not the client) asked for usage on every chunk.
    ``relayed`` counts the event's text while the tier has reported no usage.
    """
    payload = event.strip().removeprefix(b"data:").strip()
    try:
        data = fastjson.loads(payload)
    except ValueError:
        return event
    if not isinstance(data, dict):
        return event
    if record.texts is not None:
        record.texts.append(choice_text(data, "delta"))
    usage = data.get("usage")
    if not usage:
        if record.usage_source is None:
            relayed.count(data)
        return event
    record.take_usage(usage)
    if not data.get("choices"):  # the usage-only final chunk
        return event if wants_final else None
    if wants_final and not strip_running_usage:  # some providers put the final usage on the last choice chunk
        return event
    del data["usage"]
    return b"data: " + fastjson.dumps(data) + b"\n\n"
