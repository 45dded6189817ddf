"""What the gateway's stack costs with none of the gateway in it (issue #17's CPU target in context).

Two FastAPI apps served the way the gateway is (uvicorn, uvloop, httptools, no access log), each
one route, ``POST /v1/chat/completions``:

* ``noop_app``: reads and parses the body (orjson) and returns a canned completion: the cost of
  uvicorn + Starlette + FastAPI per request, nothing else.
* ``relay_app``: parses the body and relays it to the upstream through one pooled aiohttp
  session (``TIERWISE_FLOOR_UPSTREAM``), returning the upstream's bytes (a stream: each read
  written as it came): the floor of any gateway on this stack that calls its model over HTTP,
  with no auth, routing, validation, ledger or metrics.

``floor_section`` measures both under the same closed-loop load as ``gateway_overhead``'s ``cpu``
section, so the gateway's CPU per request can be read as floor + its own work.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import httpx
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from benchmarks.loadgen import run_load
from benchmarks.procstat import CpuMeter
from gateway.devtools.processes import ServerProcess, free_port, spawn, wait_until
from gateway.tiers.base import UPSTREAM_KEEPALIVE_S, UPSTREAM_MAX_CONNECTIONS

_CANNED = orjson.dumps({
    "id": "chatcmpl-floor", "object": "chat.completion", "created": 0, "model": "floor",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "tok " * 16}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 16, "total_tokens": 28}})

noop_app = FastAPI()


@noop_app.post("/v1/chat/completions")
async def noop_completion(request: Request) -> Response:
    orjson.loads(await request.body())
    return Response(_CANNED, media_type="application/json")


@asynccontextmanager
async def _relay_lifespan(app: FastAPI):
    connector = aiohttp.TCPConnector(limit=UPSTREAM_MAX_CONNECTIONS, limit_per_host=0,  # as the gateway's
                                     keepalive_timeout=UPSTREAM_KEEPALIVE_S)
    async with aiohttp.ClientSession(connector=connector) as session:
        app.state.session = session
        app.state.upstream = os.environ["TIERWISE_FLOOR_UPSTREAM"].rstrip("/") + "/chat/completions"
        yield


relay_app = FastAPI(lifespan=_relay_lifespan)


@relay_app.post("/v1/chat/completions")
async def relay_completion(request: Request) -> Response:
    body = orjson.loads(await request.body())
    body["model"] = "tier"
    state = request.app.state
    upstream = await state.session.post(state.upstream, data=orjson.dumps(body),
                                        headers={"content-type": "application/json"})
    if not body.get("stream"):
        async with upstream:
            return Response(await upstream.read(), status_code=upstream.status, media_type="application/json")

    async def relayed() -> AsyncIterator[bytes]:  # each read from the upstream, written as it came
        try:
            async for block in upstream.content.iter_any():
                yield block
        finally:
            upstream.release()

    return StreamingResponse(relayed(), status_code=upstream.status, media_type="text/event-stream")


@noop_app.get("/health")
@relay_app.get("/health")
async def health() -> dict:
    return {"ok": True}


def start_floor(app: str, upstream_v1: str, tmp: Path) -> ServerProcess:
    """``app``: ``noop_app`` or ``relay_app``, served like the gateway (uvloop, httptools)."""
    port = free_port()
    log = tmp / f"floor-{app}-{port}.log"
    proc = spawn(["uvicorn", f"benchmarks.stack_floor:{app}", "--port", str(port), "--loop", "uvloop",
                  "--http", "httptools", "--no-access-log", "--log-level", "warning"], log,
                 env={"TIERWISE_FLOOR_UPSTREAM": upstream_v1})
    server = ServerProcess(proc, f"http://127.0.0.1:{port}", log)
    try:
        wait_until(lambda: httpx.get(server.url + "/health").status_code == 200, 180, app, proc, log)
    except BaseException:
        server.stop()
        raise
    return server


class FloorRelay:
    """``relay_app`` shaped like ``gateway_overhead.Gateway`` (url, headers, server, stop), so the
    stream-chunk section measures it beside the gateway."""

    def __init__(self, upstream_v1: str, tmp: Path) -> None:
        self.name, self.headers = "floor_relay", None
        self.server = start_floor("relay_app", upstream_v1, tmp)
        self.url = self.server.url + "/v1/chat/completions"

    def stop(self) -> None:
        self.server.stop()


async def floor_section(upstream_v1: str, tmp: Path, bodies: list[dict], n: int, concurrency: int = 32,
                        repeats: int = 2) -> dict:
    """CPU µs per request (user + system, from /proc) of each floor app at ``concurrency``: the
    mean of ``repeats`` alternated runs, each listed."""
    servers = {app: start_floor(app, upstream_v1, tmp) for app in ("noop_app", "relay_app")}
    out: dict = {}
    try:
        for server in servers.values():  # warm
            await run_load(server.url + "/v1/chat/completions", bodies[:200], 8, 200)
        for _ in range(repeats):
            for app, server in servers.items():
                meter = CpuMeter(server.proc.pid).start()
                run = await run_load(server.url + "/v1/chat/completions", bodies, concurrency, n)
                runs = out.setdefault(app, {"runs_cpu_us": [], "runs_rps": [], "errors": 0})
                runs["runs_cpu_us"].append(round(meter.stop() / max(1, len(run.latencies_ms)) * 1e6, 1))
                runs["runs_rps"].append(round(run.rps, 1))
                runs["errors"] += run.errors
    finally:
        for server in servers.values():
            server.stop()
    for runs in out.values():
        runs["cpu_us_per_request"] = round(sum(runs["runs_cpu_us"]) / len(runs["runs_cpu_us"]), 1)
    return out


def floor_context(result: dict) -> dict:
    """The gateway's CPU per request at c=32 split into the stack's floor and its own work."""
    floor = result.get("floor")
    if not floor:
        return {}
    gateway = result["cpu"]["c32"]["current"]["gateway_cpu_us_per_request"]
    relay = floor["relay_app"]["cpu_us_per_request"]
    chunks = result.get("stream_chunk", {})
    per_chunk = {name: chunks[name]["cpu_us_per_chunk"] for name in ("floor_relay", "current") if name in chunks}
    return {"fastapi_noop_us": floor["noop_app"]["cpu_us_per_request"], "fastapi_relay_us": relay,
            "gateway_us": gateway, "gateway_own_work_us": round(gateway - relay, 1),
            "us_per_relayed_chunk_paced": per_chunk,
            "note": "relay = uvicorn + FastAPI + one aiohttp call upstream, no gateway feature; "
                    "the gateway's own work (auth, validation, routing, ledger, metrics, headers) is the rest"}
