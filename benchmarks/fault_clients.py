"""Clients for benchmarks/faults.py: well-behaved ones (open loop, measured) and abusive ones.

The abusive ones have child-process entry points (``abuse_*``): run in the measuring process, their
CPU would delay the well-behaved requests and be counted as the gateway's latency.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass, field

import aiohttp

from benchmarks.loadgen import RunResult

Sample = tuple[float, float, int | None, str | None]  # due time, latency ms, status (None: no answer), request id


@dataclass
class Probe:
    """Every request one group of clients sent, as :data:`Sample` s; summaries per time window."""

    samples: list[Sample] = field(default_factory=list)

    def served_ids(self) -> list[str]:
        return [rid for _, _, status, rid in self.samples if status == 200 and rid]

    def summary(self, since: float = float("-inf"), until: float = float("inf")) -> dict:
        """Requests due in [since, until): latency of every one, answered or not (a timeout counts its
        whole wait, so a stalled gateway cannot look fast by failing), and how many were not a 200."""
        chosen = [s for s in self.samples if since <= s[0] < until]
        result = RunResult(latencies_ms=[lat for _, lat, _, _ in chosen],
                           errors=sum(status != 200 for _, _, status, _ in chosen))
        out = result.summary()
        del out["rps"]
        return {k: None if isinstance(v, float) and v != v else v for k, v in out.items()}  # NaN is not JSON


def _session(headers: dict | None) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(headers={"content-type": "application/json", **(headers or {})},
                                 connector=aiohttp.TCPConnector(limit=0))


async def one_request(session: aiohttp.ClientSession, url: str, data: bytes, due: float, probe: Probe,
                      timeout_s: float, headers: dict | None = None) -> None:
    """One POST; a timeout or a connection error is recorded as status None, never raised."""
    status, rid = None, None
    try:
        async with session.post(url, data=data, headers=headers,
                                timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            await resp.read()
            status, rid = resp.status, resp.headers.get("x-request-id")
    except (aiohttp.ClientError, asyncio.TimeoutError):
        pass
    probe.samples.append((due, (time.monotonic() - due) * 1000, status, rid))


async def paced(url: str, body: dict, headers: dict, rps: float, until: float, probe: Probe,
                timeout_s: float = 30) -> None:
    """The well-behaved clients: open loop, a request every ``1/rps`` s whatever the answers do.

    Latency counts from the time a request was due, so a stalled gateway shows up as the latency of every
    request due meanwhile, not as fewer requests (a closed loop's coordinated omission).
    """
    data = json.dumps(body).encode()
    async with _session(headers) as session:
        tasks, due = [], time.monotonic()
        while due < until:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            tasks.append(asyncio.create_task(one_request(session, url + "/v1/chat/completions", data, due, probe,
                                                         timeout_s)))
            due += 1 / rps
        await asyncio.gather(*tasks)


async def closed_loop(url: str, body: dict, headers: dict | None, n: int, until: float, probe: Probe,
                      timeout_s: float, wrong_keys: bool) -> None:
    """The abusive clients: ``n`` loops back to back; ``wrong_keys``: a new random key on every request."""
    data = json.dumps(body).encode()

    async def one() -> None:
        async with _session(headers) as session:
            while time.monotonic() < until:
                key = {"authorization": f"Bearer tw-{secrets.token_urlsafe(32)}"} if wrong_keys else None
                await one_request(session, url + "/v1/chat/completions", data, time.monotonic(), probe, timeout_s,
                                  key)

    await asyncio.gather(*(one() for _ in range(n)))


def abuse_requests(url: str, body: dict, headers: dict | None, n: int, until: float, timeout_s: float,
                   wrong_keys: bool = False) -> list[Sample]:
    """Child-process entry point (``until`` is CLOCK_MONOTONIC, shared by all processes on Linux)."""
    probe = Probe()
    asyncio.run(closed_loop(url, body, headers, n, until, probe, timeout_s, wrong_keys))
    return probe.samples


def abuse_hangups(port: int, secret: str, n: int) -> int:
    """Child-process entry point: ``n`` hang-ups at once; returns how many were sent."""
    async def storm() -> int:
        return sum(await asyncio.gather(*(hang_up(port, secret) for _ in range(n))))

    return asyncio.run(storm())


async def hang_up(port: int, secret: str) -> bool:
    """Send a POST's headers (a body is promised) and close: Starlette's ClientDisconnect path."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.write((f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {secret}\r\n"
                  "Content-Type: application/json\r\nContent-Length: 2000\r\n\r\n").encode())
    try:
        await writer.drain()
    except OSError:
        return False
    finally:
        writer.close()
    return True
