"""A fast fake OpenAI server: fixed answers, real HTTP, streaming included.

It exists to measure what the gateway itself adds (benchmarks/gateway_overhead.py) without a
model's cost drowning the signal, and to load-test the gateway. It is plain Starlette so its
own overhead stays as small as possible.

Reliability tests use two more behaviours: ``continuous_usage`` (report usage on every chunk
when the request asks with ``stream_options.continuous_usage_stats``, as vLLM does) and
``drop_after`` (close the connection after that many streamed tokens, as a crashing
upstream does). The cascade's tests use ``logprob``: a request that asks for logprobs gets
that logprob for every token (or the one a ``[logprob=X]`` tag in its text names), with one
alternative 1.0 below it, in the chat or text-completion shape. Run it alone with ``python -m gateway.devtools.stub_upstream --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


_LOGPROB_TAG = re.compile(r"\[logprob=(-?[0-9.]+)\]")


def _embedding(item: object, dims: int = 8) -> list[float]:
    """A deterministic unit vector per input (the same text always embeds the same)."""
    import hashlib
    import math

    digest = hashlib.sha256(json.dumps(item).encode()).digest()
    raw = [b - 127.5 for b in digest[:dims]]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [v / norm for v in raw]


class UpstreamDropped(Exception):
    """Raised inside a stream to make the server drop the connection mid-answer."""


def create_stub_app(tokens: int = 16, token_delay_s: float = 0.0, word: str = "tok", *,
                    continuous_usage: bool = False, drop_after: int | None = None,
                    logprob: float = -0.05, set_cookie: bool = False) -> Starlette:
    """``token_delay_s`` paces streamed tokens (and delays whole answers by tokens x delay);
    every answer is ``word`` repeated ``tokens`` times. ``continuous_usage``: honour
    ``continuous_usage_stats``; ``drop_after``: cut every stream after that many tokens.
    ``set_cookie``: every chat answer sets a session cookie (as a load balancer's sticky session
    or a hosted provider's bot check does), and /metrics counts the chat requests that came
    back carrying a cookie."""
    words = [word] * tokens
    served = {"generated": 0, "running": 0, "with_cookie": 0}  # what /metrics reports

    def _cookie_checked(request: Request, response: Response) -> Response:
        if set_cookie:
            served["with_cookie"] += "cookie" in request.headers
            response.set_cookie("stub_session", f"s{served['generated']}")
        return response

    def _logprob_for(body: dict) -> float:
        found = _LOGPROB_TAG.search(json.dumps(body.get("messages", body.get("prompt", ""))))
        return float(found.group(1)) if found else logprob

    def _logprobs(body: dict, texts: list[str], chat: bool) -> dict | None:
        """Logprobs for ``texts`` (one entry per token) if the request asked for them."""
        if chat and not body.get("logprobs") or not chat and body.get("logprobs") in (None, False):
            return None
        lp = _logprob_for(body)
        top = int(body.get("top_logprobs") or 0) if chat else int(body.get("logprobs") or 0)
        alts = [(t, lp) for t in texts], [("alt", lp - 1.0)]
        if chat:
            return {"content": [{"token": t, "logprob": v, "bytes": list(t.encode()),
                                 "top_logprobs": [{"token": a, "logprob": b} for a, b in [(t, v), *alts[1]]][:top]}
                                for t, v in alts[0]]}
        return {"tokens": texts, "token_logprobs": [lp] * len(texts), "text_offset": [0] * len(texts),
                "top_logprobs": [dict([(t, lp), *alts[1]][:top]) for t in texts]}

    def _usage(prompt_tokens: int, completion_tokens: int = tokens) -> dict:
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens}

    async def chat(request: Request) -> Response:
        body = json.loads(await request.body())
        model = body.get("model", "stub")
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        created = int(time.time())
        if not body.get("stream"):
            served["running"] += 1
            try:
                if token_delay_s:
                    await asyncio.sleep(token_delay_s * tokens)
            finally:
                served["running"] -= 1
                served["generated"] += tokens
            return _cookie_checked(request, JSONResponse({
                "id": "chatcmpl-stub", "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(words)},
                             "logprobs": _logprobs(body, [w if i == 0 else " " + w for i, w in enumerate(words)], True),
                             "finish_reason": "stop"}],
                "usage": _usage(prompt_tokens),
            }))
        include_usage = (body.get("stream_options") or {}).get("include_usage")
        running_usage = continuous_usage and (body.get("stream_options") or {}).get("continuous_usage_stats")

        async def events():
            base = {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": created, "model": model}
            for i, word in enumerate(words):
                if drop_after is not None and i == drop_after:
                    raise UpstreamDropped(f"stub dropped the stream after {i} tokens")
                if token_delay_s:
                    await asyncio.sleep(token_delay_s)
                delta = {"role": "assistant", "content": word} if i == 0 else {"content": " " + word}
                chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None,
                                              "logprobs": _logprobs(body, [delta["content"]], True)}]}
                if running_usage:
                    chunk["usage"] = _usage(prompt_tokens, i + 1)
                yield f"data: {json.dumps(chunk)}\n\n"
            yield f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': {}, 'finish_reason': 'stop'}]})}\n\n"
            if include_usage:
                yield f"data: {json.dumps({**base, 'choices': [], 'usage': _usage(prompt_tokens)})}\n\n"
            yield "data: [DONE]\n\n"

        return _cookie_checked(request, StreamingResponse(events(), media_type="text/event-stream"))

    async def completion(request: Request) -> Response:
        body = json.loads(await request.body())
        prompt = body.get("prompt", "")
        prompt_tokens = len(str(prompt).split())
        return JSONResponse({"id": "cmpl-stub", "object": "text_completion", "created": int(time.time()),
                             "model": body.get("model", "stub"),
                             "choices": [{"index": 0, "text": " ".join(words), "finish_reason": "stop",
                                          "logprobs": _logprobs(body, [w if i == 0 else " " + w
                                                                       for i, w in enumerate(words)], False)}],
                             "usage": _usage(prompt_tokens)})

    async def embeddings(request: Request) -> Response:
        body = json.loads(await request.body())
        inputs = body.get("input")
        inputs = inputs if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else [inputs]
        data = [{"object": "embedding", "index": i, "embedding": _embedding(item)} for i, item in enumerate(inputs)]
        used = sum(len(item) if isinstance(item, list) else len(str(item).split()) for item in inputs)
        return JSONResponse({"object": "list", "model": body.get("model", "stub"), "data": data,
                             "usage": {"prompt_tokens": used, "total_tokens": used}})

    async def metrics(_: Request) -> Response:
        """vLLM's two throughput series, as a compute-priced tier's meter reads them."""
        return Response("# TYPE vllm:generation_tokens counter\n"
                        f'vllm:generation_tokens_total{{model_name="stub"}} {served["generated"]}\n'
                        "# TYPE vllm:num_requests_running gauge\n"
                        f'vllm:num_requests_running{{model_name="stub"}} {served["running"]}\n'
                        "# TYPE stub_requests_with_cookie counter\n"
                        f'stub_requests_with_cookie_total {served["with_cookie"]}\n',
                        media_type="text/plain")

    async def models(_: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "stub", "object": "model", "owned_by": "stub"}]})

    async def health(_: Request) -> Response:
        return Response(status_code=200)

    return Starlette(routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completion, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/models", models),
        Route("/metrics", metrics),
        Route("/health", health),
    ])


def main(argv: list[str] | None = None) -> None:
    """Serve the stub with the behaviours the CLI's ``stub-upstream`` command does not expose."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--token-delay-ms", type=float, default=0.0)
    parser.add_argument("--word", default="tok")
    parser.add_argument("--continuous-usage", action="store_true", help="honour continuous_usage_stats")
    parser.add_argument("--drop-after", type=int, default=None, help="cut every stream after N tokens")
    parser.add_argument("--logprob", type=float, default=-0.05,
                        help="every token's logprob when asked (a [logprob=X] tag in the request overrides)")
    parser.add_argument("--set-cookie", action="store_true",
                        help="chat answers set a cookie; /metrics counts requests that carry one back")
    args = parser.parse_args(argv)
    app = create_stub_app(args.tokens, args.token_delay_ms / 1000, args.word,
                          continuous_usage=args.continuous_usage, drop_after=args.drop_after, logprob=args.logprob,
                          set_cookie=args.set_cookie)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
