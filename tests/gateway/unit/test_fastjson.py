"""The request path's JSON: orjson where it can, and exactly ``json``'s verdicts where it cannot."""

from __future__ import annotations

import json

import pytest

from gateway import fastjson


@pytest.mark.parametrize("text", [
    b'{"model": "auto", "messages": [{"role": "user", "content": "caf\\u00e9 \xe2\x82\xac"}], "n": 1}',
    b'{"temperature": NaN, "top_p": Infinity}',  # json accepts these literals; orjson does not
    b'{"max_tokens": 123456789012345678901234567890}',  # beyond 64 bits
    b'{"content": "\\ud800 lone"}',  # a lone surrogate escape (the body reader refuses it afterwards)
    b'[1, 2.5, "x", null, true]',
])
def test_loads_accepts_what_json_accepts(text: bytes) -> None:
    got, want = fastjson.loads(text), json.loads(text)
    assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True)


@pytest.mark.parametrize("text", [b"", b"{", b'{"a": 1,}', b"\xff\xfe{}", b"{'a': 1}"])
def test_loads_refuses_what_json_refuses(text: bytes) -> None:
    with pytest.raises(ValueError) as ours:
        fastjson.loads(text)
    with pytest.raises(ValueError) as reference:
        json.loads(text)
    assert type(ours.value) is type(reference.value)  # UnicodeDecodeError stays UnicodeDecodeError


def test_dumps_is_compact_utf8_and_round_trips() -> None:
    value = {"model": "tier", "messages": [{"role": "user", "content": "Grüße ✓"}], "max_tokens": 16}
    out = fastjson.dumps(value)
    assert isinstance(out, bytes) and b", " not in out and "Grüße ✓".encode() in out
    assert json.loads(out) == value


def test_dumps_falls_back_for_what_orjson_refuses() -> None:
    big = {"max_tokens": 123456789012345678901234567890}
    assert json.loads(fastjson.dumps(big)) == big
