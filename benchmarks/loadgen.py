"""A small closed-loop load generator (aiohttp) shared by the benchmarks.

``concurrency`` workers each send requests back to back until ``requests`` have been sent;
it records per-request latency (to the last byte) and, for streams, time to first byte.
Bounded in count and time, loopback only.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field

import aiohttp


@dataclass
class RunResult:
    latencies_ms: list[float] = field(default_factory=list)
    ttfb_ms: list[float] = field(default_factory=list)
    errors: int = 0
    wall_s: float = 0.0

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.wall_s if self.wall_s else 0.0

    def pct(self, q: float, values: list[float] | None = None) -> float:
        data = sorted(values if values is not None else self.latencies_ms)
        if not data:
            return float("nan")
        return data[min(len(data) - 1, int(round(q / 100 * (len(data) - 1))))]

    def summary(self) -> dict:
        out = {"requests": len(self.latencies_ms), "errors": self.errors, "rps": round(self.rps, 1),
               "p50_ms": round(self.pct(50), 3), "p99_ms": round(self.pct(99), 3),
               "mean_ms": round(statistics.fmean(self.latencies_ms), 3) if self.latencies_ms else None}
        if self.ttfb_ms:
            out["ttfb_p50_ms"] = round(self.pct(50, self.ttfb_ms), 3)
        return out


async def run_load(url: str, body: dict | list[dict], concurrency: int, requests: int, timeout_s: float = 300,
                   headers: dict | None = None, ramp_s: float = 0.0) -> RunResult:
    """``body``: one request body, or a list sent in turn (distinct prompts, so that nothing on
    the path can answer from a memo of the previous request). ``ramp_s``: worker ``i`` sends its
    first request ``i / concurrency * ramp_s`` after the start, so arrivals are spread evenly
    instead of all clients firing at once (and, on an upstream with a fixed answer time, staying
    in lockstep waves for the whole run)."""
    result = RunResult()
    sent = 0
    bodies = body if isinstance(body, list) else [body]
    stream = bool(bodies[0].get("stream"))
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)

    async def worker(session: aiohttp.ClientSession, delay_s: float) -> None:
        nonlocal sent
        if delay_s:
            await asyncio.sleep(delay_s)
        while sent < requests:
            this = bodies[sent % len(bodies)]
            sent += 1
            t0 = time.perf_counter()
            try:
                async with session.post(url, json=this) as resp:
                    if stream:
                        first = True
                        async for _ in resp.content.iter_any():
                            if first:
                                result.ttfb_ms.append((time.perf_counter() - t0) * 1000)
                                first = False
                    else:
                        await resp.read()
                    if resp.status != 200:
                        result.errors += 1
                        continue
            except aiohttp.ClientError:
                result.errors += 1
                continue
            result.latencies_ms.append((time.perf_counter() - t0) * 1000)

    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s),
                                     headers=headers) as session:
        start = time.perf_counter()
        workers = (worker(session, i / concurrency * ramp_s) for i in range(concurrency))
        await asyncio.wait_for(asyncio.gather(*workers), timeout_s)
        result.wall_s = time.perf_counter() - start
    return result


async def paired_latency(url_a: str, body_a: dict, url_b: str, body_b: dict, requests: int,
                         headers_b: dict | None = None) -> tuple[RunResult, RunResult]:
    """Concurrency 1, alternating A and B request by request, so drift hits both alike."""
    a, b = RunResult(), RunResult()
    async with aiohttp.ClientSession() as session:
        for i in range(requests):
            order = ((url_a, body_a, a, None), (url_b, body_b, b, headers_b))
            for url, body, res, headers in order if i % 2 == 0 else order[::-1]:
                t0 = time.perf_counter()
                async with session.post(url, json=body, headers=headers) as resp:
                    await resp.read()
                    ok = resp.status == 200
                if ok:
                    res.latencies_ms.append((time.perf_counter() - t0) * 1000)
                else:
                    res.errors += 1
    for res in (a, b):
        res.wall_s = sum(res.latencies_ms) / 1000
    return a, b
