"""Reading a JSON request body defensively.

The body is read with a hard size cap (before parsing, so a huge body costs nothing), must
be JSON by content type, valid UTF-8, not absurdly nested, and an object. Each failure is an
OpenAI-style 4xx instead of whatever the framework would have said.
"""

from __future__ import annotations

import json
import re

from fastapi import Request
from pydantic import BaseModel

from gateway.errors import GatewayError


async def read_json_object(request: Request, max_bytes: int) -> dict:
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type and "json" not in content_type:
        raise GatewayError(
            f"Unsupported content type '{content_type}'; send 'application/json'.",
            status_code=415, code="unsupported_media_type",
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        raise GatewayError("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        body = json.loads(raw)
    except UnicodeDecodeError:
        raise GatewayError("The request body is not valid UTF-8.", code="invalid_json") from None
    except RecursionError:
        raise GatewayError("The JSON body is nested too deeply.", code="invalid_json") from None
    except ValueError as exc:
        raise GatewayError(f"We could not parse the JSON body of your request: {exc}.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise GatewayError("The JSON body must be an object.", code="invalid_json")
    if _SURROGATE_ESCAPE.search(raw) and _has_lone_surrogate(body):
        raise GatewayError("The JSON body holds a lone UTF-16 surrogate (\\uD800-\\uDFFF), which is not text.",
                           code="invalid_json")
    return body


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
