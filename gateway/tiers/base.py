"""What a tier is to the rest of the gateway: a name, a health state, and two calls.

Serving code never cares whether a tier is a vLLM process the gateway supervises, a server
somebody else runs, or a hosted model behind litellm: it calls ``complete`` for a whole
answer and ``stream`` for server-sent events, and reads ``status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from gateway.config import TierConfig
from gateway.tiers.breaker import CircuitBreaker

Endpoint = Literal["chat", "completion", "embeddings"]

# The HTTP clients that reach the tiers (the gateway's aiohttp session, litellm's httpx client):
# every in-flight request holds one connection for its whole (possibly streamed) answer.
UPSTREAM_MAX_CONNECTIONS = 1024
UPSTREAM_KEEPALIVE_S = 30.0
UPSTREAM_TIMEOUT_S = 600.0  # whole answer; each tier's own timeout_s applies per call
UPSTREAM_CONNECT_TIMEOUT_S = 5.0


class TierStatus(str, enum.Enum):
    STARTING = "starting"
    READY = "ready"
    DOWN = "down"
    MISSING = "missing"  # its model dir does not exist (e.g. not distilled yet)


@dataclass(slots=True)
class UpstreamReply:
    """A whole (non-streamed) answer: the bytes to relay and the parsed JSON for the ledger."""

    content: bytes
    data: dict


class Tier(ABC):
    """One configured model tier, with its health state and circuit breaker."""

    health_interval_s = 5.0

    def __init__(self, config: TierConfig) -> None:
        self.config = config
        self.status = TierStatus.STARTING
        self.detail = ""
        self.breaker = CircuitBreaker(config.breaker_failures, config.breaker_cooldown_s)
        self._health_task: asyncio.Task | None = None

    @property
    def name(self) -> str:
        return self.config.model_name

    @property
    def names(self) -> list[str]:
        return [self.config.model_name, *self.config.aliases]

    @property
    def is_ready(self) -> bool:
        return self.status is TierStatus.READY

    @property
    def available(self) -> bool:
        """Ready and not cut off by its circuit breaker: may take traffic now."""
        return self.status is TierStatus.READY and self.breaker.allow()

    @property
    def max_model_len(self) -> int | None:
        return self.config.max_model_len

    def health(self) -> dict:
        return {"status": self.status.value, "kind": self.config.kind, "role": self.config.role,
                "detail": self.detail, "circuit": self.breaker.state()}

    async def start(self) -> None:
        """Bring the tier up (start a process, first health check)."""

    async def stop(self) -> None:
        """Release what ``start`` took."""
        if self._health_task:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task

    async def probe(self) -> bool:
        """One health check (overridden by tiers that have a health endpoint)."""
        return self.is_ready

    def watch_health(self) -> None:
        """Probe periodically (every second while the circuit is open); a pass closes it."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(1.0 if self.breaker.is_open else self.health_interval_s)
                if await self.probe():
                    self.breaker.health_ok()

        self._health_task = asyncio.create_task(loop(), name=f"health:{self.name}")

    def stream_usage_options(self) -> dict:
        """``stream_options`` the gateway adds so a stream reports its usage."""
        return {"include_usage": True}

    async def wait_ready(self, timeout_s: float) -> bool:
        """Wait until the tier is ready or clearly not coming; True if ready."""
        return self.is_ready

    @abstractmethod
    async def complete(self, endpoint: Endpoint, body: dict) -> UpstreamReply:
        """Send a non-streaming request; raise an upstream ``GatewayError`` on failure."""

    @abstractmethod
    def stream(self, endpoint: Endpoint, body: dict) -> AsyncIterator[bytes]:
        """Yield the answer as SSE events (``b"data: {...}\\n\\n"``), ending with ``data: [DONE]``.

        Raises an upstream ``GatewayError`` before the first event if the tier refuses the request.
        """

    def stream_blocks(self, endpoint: Endpoint, body: dict) -> AsyncIterator[bytes]:
        """Like :meth:`stream`, but an item may hold several complete events that arrived together.

        The relay forwards a block to the client in one write: when the gateway falls behind a
        fast tier, events that queued up meanwhile cost one pass through the ASGI stack and one
        socket write instead of one each. By default a block is one event.
        """
        return self.stream(endpoint, body)


def split_events(block: bytes) -> list[bytes]:
    """The SSE events of a block of complete events, each with its blank-line terminator."""
    if block.count(b"\n\n") <= 1:
        return [block]
    return [part + b"\n\n" for part in block.split(b"\n\n") if part.strip()]
