"""A fast fake OpenAI server: fixed answers, real HTTP, streaming included.

It exists to measure what the gateway itself adds (benchmarks/gateway_overhead.py) without a
model's cost drowning the signal, and to load-test the gateway. It is plain Starlette so its
own overhead stays as small as possible.
"""

from __future__ import annotations

import asyncio
import json
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


def create_stub_app(tokens: int = 16, token_delay_s: float = 0.0, word: str = "tok") -> Starlette:
    """``token_delay_s`` paces streamed tokens (and delays whole answers by tokens x delay);
    every answer is ``word`` repeated ``tokens`` times."""
    words = [word] * tokens

    def _usage(prompt_tokens: int) -> dict:
        return {"prompt_tokens": prompt_tokens, "completion_tokens": tokens, "total_tokens": prompt_tokens + tokens}

    async def chat(request: Request) -> Response:
        body = json.loads(await request.body())
        model = body.get("model", "stub")
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        created = int(time.time())
        if not body.get("stream"):
            if token_delay_s:
                await asyncio.sleep(token_delay_s * tokens)
            return JSONResponse({
                "id": "chatcmpl-stub", "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(words)},
                             "finish_reason": "stop"}],
                "usage": _usage(prompt_tokens),
            })
        include_usage = (body.get("stream_options") or {}).get("include_usage")

        async def events():
            base = {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": created, "model": model}
            for i, word in enumerate(words):
                if token_delay_s:
                    await asyncio.sleep(token_delay_s)
                delta = {"role": "assistant", "content": word} if i == 0 else {"content": " " + word}
                chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                yield f"data: {json.dumps(chunk)}\n\n"
            yield f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': {}, 'finish_reason': 'stop'}]})}\n\n"
            if include_usage:
                yield f"data: {json.dumps({**base, 'choices': [], 'usage': _usage(prompt_tokens)})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def completion(request: Request) -> Response:
        body = json.loads(await request.body())
        prompt = body.get("prompt", "")
        prompt_tokens = len(str(prompt).split())
        return JSONResponse({"id": "cmpl-stub", "object": "text_completion", "created": int(time.time()),
                             "model": body.get("model", "stub"),
                             "choices": [{"index": 0, "text": " ".join(words), "finish_reason": "stop"}],
                             "usage": _usage(prompt_tokens)})

    async def models(_: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "stub", "object": "model", "owned_by": "stub"}]})

    async def health(_: Request) -> Response:
        return Response(status_code=200)

    return Starlette(routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completion, methods=["POST"]),
        Route("/v1/models", models),
        Route("/health", health),
    ])
