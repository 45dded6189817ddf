"""SSE chunk inspection (``inspect_chunk``): what the relay reads from each streamed event and
what it forwards. Usage is booked from the tier's report; running usage the gateway asked for
(and the client did not) is taken out; text is counted while no usage has come.

The module path is the one issue #11 gives the streaming code; the imports are made per test,
so a move shows up as these tests failing with the path they expected, not as a collection error.
"""

from __future__ import annotations

import importlib
import json
from types import ModuleType

import pytest

STREAMING = "gateway.entrypoints.engine.streaming"
BOOKING = "gateway.ledger.booking"


def _module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        pytest.fail(f"{name} is where issue #11 puts this code; it does not import: {exc}", pytrace=False)


def inspect(event: bytes, record, *, wants_final: bool, strip_running_usage: bool = False, relayed=None):
    from gateway.tiers.stream_usage import RelayedTokens

    relayed = relayed if relayed is not None else RelayedTokens()
    return _module(STREAMING).inspect_chunk(event, record, wants_final, strip_running_usage, relayed), relayed


def record(**fields):
    return _module(BOOKING).RequestRecord(endpoint="chat", **fields)


def sse(data: dict) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def decoded(event: bytes) -> dict:
    return json.loads(event.strip().removeprefix(b"data:").strip())


CONTENT = {"id": "c1", "choices": [{"index": 0, "delta": {"content": "hello there"}}]}
USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def test_a_content_chunk_is_forwarded_unchanged_and_its_text_counted():
    booked = record()
    event = sse(CONTENT)
    forwarded, relayed = inspect(event, booked, wants_final=False)
    assert forwarded == event
    assert relayed.content_chunks == 1 and relayed.completion_tokens >= 1
    assert booked.usage_source is None


def test_the_final_usage_chunk_is_booked_and_kept_when_the_client_asked_for_it():
    booked = record()
    event = sse({"id": "c1", "choices": [], "usage": USAGE})
    forwarded, _ = inspect(event, booked, wants_final=True)
    assert forwarded == event
    assert (booked.prompt_tokens, booked.completion_tokens, booked.usage_source) == (7, 3, "upstream")


def test_the_final_usage_chunk_is_booked_and_dropped_when_only_the_gateway_asked():
    booked = record()
    forwarded, _ = inspect(sse({"id": "c1", "choices": [], "usage": USAGE}), booked, wants_final=False)
    assert forwarded is None and booked.completion_tokens == 3


def test_running_usage_the_gateway_asked_for_is_stripped_from_content_chunks():
    booked = record()
    forwarded, relayed = inspect(sse({**CONTENT, "usage": USAGE}), booked, wants_final=True, strip_running_usage=True)
    assert decoded(forwarded) == CONTENT  # the text goes on, the usage the client never asked for does not
    assert booked.usage_source == "upstream" and relayed.content_chunks == 0  # usage known: nothing to count


def test_usage_on_the_last_choice_chunk_stays_when_the_client_asked_for_usage():
    booked = record()
    event = sse({**CONTENT, "usage": USAGE})
    forwarded, _ = inspect(event, booked, wants_final=True, strip_running_usage=False)
    assert forwarded == event and booked.completion_tokens == 3


def test_text_is_kept_for_the_ledger_only_when_content_is_stored():
    booked = record(texts=[])
    inspect(sse(CONTENT), booked, wants_final=False)
    assert booked.texts == ["hello there"]


@pytest.mark.parametrize("event", [b"data: {not json\n\n", b"data: [1, 2]\n\n", b": keep-alive\n\n"])
def test_events_that_are_not_json_objects_pass_through_untouched(event):
    booked = record()
    forwarded, relayed = inspect(event, booked, wants_final=False)
    assert forwarded == event and booked.usage_source is None and relayed.content_chunks == 0


# -- blocks: several events that arrived together are forwarded in one write (issue #17) ------

def forward(block: bytes, rec, *, wants_final: bool, strip_running_usage: bool = False, relayed=None):
    from gateway.tiers.stream_usage import RelayedTokens

    relayed = relayed if relayed is not None else RelayedTokens()
    return _module(STREAMING).forward_block(block, rec, wants_final, strip_running_usage, relayed), relayed


def test_a_block_is_what_its_events_one_by_one_would_have_sent():
    usage_final = {"id": "c1", "choices": [], "usage": USAGE}
    running = {**CONTENT, "usage": USAGE}
    events = [sse(CONTENT), sse(running), sse(usage_final)]
    one_by_one = record()
    expected = b"".join(e for e in (inspect(ev, one_by_one, wants_final=False, strip_running_usage=True)[0]
                                    for ev in events) if e is not None)
    rec = record()
    (out, done), _ = forward(b"".join(events), rec, wants_final=False, strip_running_usage=True)
    assert not done and out == expected
    assert b'"usage"' not in out and out.count(b"hello there") == 2  # running and final usage taken out
    assert rec.usage_source == one_by_one.usage_source and rec.completion_tokens == 3


def test_done_ends_the_block_and_is_not_forwarded():
    rec = record()
    (out, done), relayed = forward(sse(CONTENT) + b"data: [DONE]\n\n", rec, wants_final=True)
    assert done and out == sse(CONTENT)
    assert relayed.content_chunks == 1  # counted while the tier has reported no usage


def test_a_block_needing_no_reading_is_forwarded_as_it_is():
    rec = record()
    rec.take_usage(USAGE)  # usage already reported, no text kept: nothing to read
    block = sse(CONTENT) * 5
    (out, done), relayed = forward(block, rec, wants_final=False)
    assert out is block and not done and relayed.content_chunks == 0


def test_split_events_keeps_each_terminator():
    from gateway.tiers.base import split_events

    assert split_events(sse(CONTENT)) == [sse(CONTENT)]
    assert split_events(sse(CONTENT) + b"data: [DONE]\n\n") == [sse(CONTENT), b"data: [DONE]\n\n"]
