"""Schemathesis hooks for fuzzing the gateway: a check that every error is OpenAI-shaped."""

import json

import schemathesis


@schemathesis.check
def openai_error_shape(ctx, response, case):
    """Every 4xx/5xx body is ``{"error": {"message", "type", "param", "code"}}``."""
    if response.status_code >= 400:
        error = json.loads(response.content)["error"]
        if set(error) != {"message", "type", "param", "code"} or not error["message"]:
            raise AssertionError(f"not an OpenAI error body: {response.content[:200]!r}")
