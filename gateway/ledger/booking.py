"""What the ledger learns about one request while it is served: the ``RequestRecord``.

The request path fills the record in as it goes (tier, route decision, usage, status) and the
ledger books it as one row when the request ends, whichever way it ends. It lives in the ledger
package because its fields are the ledger's columns; it knows nothing about HTTP or tiers (a
failure is anything with a status code and a message, relayed-token counts arrive as plain numbers).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from gateway.auth.keys import ApiKey
from gateway.limits.reservations import Reservation
from gateway.routing.cascade import CascadeOutcome
from gateway.routing.policy import RouteDecision


class _Failure(Protocol):
    status_code: int
    message: str


class RelayedTokens(Protocol):
    content_chunks: int
    completion_tokens: int


# Request ids: a random per-process prefix and a counter. Unique across replicas and
# restarts, and without a urandom syscall per request (uuid4 showed in profiles).
_ID_PREFIX = "req-" + os.urandom(6).hex()
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):010x}"


@dataclass
class RequestRecord:
    """What the ledger learns about one request, filled in as it goes."""

    endpoint: str
    key: ApiKey | None = None
    started: float = field(default_factory=time.perf_counter)
    ts: datetime = field(default_factory=lambda: datetime.now(UTC))
    request_id: str = field(default_factory=new_request_id)
    requested_model: str = ""
    tier: str | None = None
    fallback_from: str | None = None
    attempts: int = 0
    decision: RouteDecision | None = None
    stream: bool = False
    user: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_source: str | None = None  # 'upstream': the tier said; 'counted': the relay estimated
    ttft_ms: float | None = None
    status: str = "ok"
    http_status: int = 200
    error: str | None = None
    reservation: Reservation | None = None  # the key's budget hold, released when the row is booked
    prompt: str | None = None
    texts: list[str] | None = None  # the answer's text, kept when storing content or shadowing
    cascade: CascadeOutcome | None = None
    shadow_body: dict | None = None  # the request, kept when this answer is a shadow sample

    def fail(self, exc: _Failure, status: str = "error") -> None:
        self.status, self.http_status, self.error = status, exc.status_code, exc.message

    def take_usage(self, usage: dict | None) -> None:
        if usage:
            self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            self.completion_tokens = int(usage.get("completion_tokens") or 0)
            self.usage_source = "upstream"

    def take_counted(self, relayed: RelayedTokens, prompt_tokens_estimate: Callable[[], int]) -> None:
        """Book what the relay counted, unless the tier reported usage (which is exact)."""
        if self.usage_source is None and relayed.content_chunks:
            self.prompt_tokens = prompt_tokens_estimate()
            self.completion_tokens = relayed.completion_tokens
            self.usage_source = "counted"
