"""Reading a relayed SSE stream: usage, text and relayed-token counts, one event at a time.

Kept apart from the serving object so the per-chunk work (the hot loop of a stream) is one small
function that unit tests can drive with raw events.
"""

from __future__ import annotations

from gateway import fastjson
from gateway.answer_text import choice_text
from gateway.ledger.booking import RequestRecord
from gateway.tiers.base import split_events
from gateway.tiers.stream_usage import RelayedTokens


def _is_done(event: bytes) -> bool:
    return b"[DONE]" in event and event.strip().replace(b" ", b"") == b"data:[DONE]"


def forward_block(block: bytes, record: RequestRecord, wants_final: bool, strip_running_usage: bool,
                  relayed: RelayedTokens) -> tuple[bytes, bool]:
    """What to send the client of a block of events (one write), and whether ``[DONE]`` came.

    A block that needs no reading (no usage in it, no text kept, usage already reported) is
    forwarded as it is; otherwise each event goes through :func:`inspect_chunk`. ``[DONE]`` is
    not forwarded: the relay books the row first and then sends its own.
    """
    if (b"[DONE]" not in block and b'"usage"' not in block and record.texts is None
            and record.usage_source is not None):
        return block, False
    kept = []
    for event in split_events(block):
        if _is_done(event):
            return b"".join(kept), True
        if b'"usage"' in event or record.texts is not None or record.usage_source is None:
            event = inspect_chunk(event, record, wants_final, strip_running_usage, relayed)
        if event is not None:
            kept.append(event)
    return b"".join(kept), False


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
