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
