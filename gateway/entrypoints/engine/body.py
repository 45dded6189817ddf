"""Reading a JSON request body defensively.

The body is read with a hard size cap (before parsing, so a huge body costs nothing), must
be JSON by content type, valid UTF-8, not absurdly nested, and an object. Each failure is an
OpenAI-style 4xx instead of whatever the framework would have said: a client that hangs up
mid-body gets 499 (``client_disconnected``), one that trickles its body past
``read_timeout_s`` gets 408, so neither holds a request slot nor reaches the catch-all.
"""

from __future__ import annotations

import asyncio
import re

import numpy as np
from fastapi import Request
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from gateway import fastjson
from gateway.errors import GatewayError, client_disconnected

# Deeper than any real request (tool schemas nest a few dozen levels at most), far below the
# depth at which json, pydantic or the JSON encoder on the way to the tier hit Python's
# recursion limit -- which, minus the frames already on the stack, depends on where they run.
MAX_JSON_DEPTH = 64


async def read_json_object(request: Request, max_bytes: int, read_timeout_s: float | None = None) -> dict:
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type and "json" not in content_type:
        raise GatewayError(
            f"Unsupported content type '{content_type}'; send 'application/json'.",
            status_code=415, code="unsupported_media_type",
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    try:
        async with asyncio.timeout(read_timeout_s):
            raw = await _read_capped(request, max_bytes)
    except ClientDisconnect:
        raise client_disconnected() from None
    except TimeoutError:
        raise GatewayError(f"The request body was not received within {read_timeout_s:g} s.",
                           status_code=408, code="request_timeout") from None
    if not raw:
        raise GatewayError("The request body is empty; send a JSON object.", code="invalid_json")
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise _too_deep()
    try:
        body = fastjson.loads(raw)
    except UnicodeDecodeError:
        raise GatewayError("The request body is not valid UTF-8.", code="invalid_json") from None
    except RecursionError:
        raise _too_deep() from None
    except ValueError as exc:
        raise GatewayError(f"We could not parse the JSON body of your request: {exc}.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise GatewayError("The JSON body must be an object.", code="invalid_json")
    if _SURROGATE_ESCAPE.search(raw) and _has_lone_surrogate(body):
        raise GatewayError("The JSON body holds a lone UTF-16 surrogate (\\uD800-\\uDFFF), which is not text.",
                           code="invalid_json")
    return body


async def _read_capped(request: Request, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


_BRACKET_STEP = np.zeros(256, dtype=np.int32)
_BRACKET_STEP[[ord("["), ord("{")]] = 1
_BRACKET_STEP[[ord("]"), ord("}")]] = -1


def json_depth(raw: bytes) -> int:
    """The deepest bracket nesting of a JSON text, in C-speed passes (a few ms per megabyte).

    Checked before parsing, so that a deep body is refused before any recursive code runs.
    Escaped backslashes and quotes are dropped first (left to right, as JSON reads them);
    then a byte is inside a string when an odd number of quotes precede it, and brackets
    there do not count. A body with few brackets is not scanned at all.
    """
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return 0
    text = np.frombuffer(raw.replace(b"\\\\", b"").replace(b'\\"', b""), dtype=np.uint8)
    outside_strings = (np.cumsum(text == ord('"'), dtype=np.int32) & 1) == 0
    return int(np.cumsum(_BRACKET_STEP[text] * outside_strings, dtype=np.int32).max(initial=0))


def _too_deep() -> GatewayError:
    return GatewayError(f"The JSON body is nested more than {MAX_JSON_DEPTH} levels deep.", code="invalid_json")


# JSON may spell a lone UTF-16 surrogate as an escape; Python then holds a string that no
# database, tokenizer or UTF-8 encoder accepts. Only bodies with such an escape are walked.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def _has_lone_surrogate(value: object) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def _too_large(max_bytes: int) -> GatewayError:
    return GatewayError(f"The request body is larger than the limit of {max_bytes} bytes.",
                        status_code=413, code="request_too_large")


def openapi_body(model: type[BaseModel]) -> dict:
    """``openapi_extra`` documenting a body that the route reads by hand (for clients and fuzzers).

    Pydantic puts nested models under ``$defs`` with document-relative references, which do
    not resolve once the schema sits inside the OpenAPI document; they are inlined here.
    """
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: object) -> object:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline(schema)}}}}
