"""JSON on the request path: orjson, with the standard library behind it for what orjson refuses.

Every proxied request is parsed once (the client's body), serialised once (the body sent to
the tier) and parsed again (the tier's answer); a stream parses each event. orjson does each
several times faster than ``json``. It differs on rare inputs, which take the standard
library's path instead, so the gateway accepts and refuses exactly what it did before (its own
checks, e.g. for lone surrogates, still run on the result):

* it refuses ``NaN``/``Infinity`` literals and lone surrogate escapes, which ``json`` accepts;
* it reads an integer beyond 64 bits as a float, silently: a text with a run of 19 or more
  digits anywhere (a C-speed scan) is parsed by ``json``, which keeps the exact integer.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson


_LONG_DIGITS = re.compile(rb"\d{19}")


def loads(data: bytes) -> Any:
    """Parse JSON text; raises ``ValueError`` (or ``UnicodeDecodeError``, ``RecursionError``) as
    ``json.loads`` would."""
    if _LONG_DIGITS.search(data):
        return json.loads(data)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)  # the reference behaviour: accepts what json does, or says why not


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON bytes."""
    try:
        return orjson.dumps(value)
    except TypeError:  # e.g. an integer beyond 64 bits, kept from a body json.loads accepted
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
