"""Budget reservations: what a request may cost at most, held against the budget while it runs.

Why: spend is only known after a request ends, so checking "spent < budget" alone lets a burst
of concurrent requests all pass before any of them is counted. Instead each request holds its
maximum cost while in flight, and a new one is admitted only while settled spend plus holds is
under the budget; the hold is swapped for the actual cost at the end. At most one request's
maximum can overshoot (the last one admitted), per limiter: one per replica while Redis is
down, one in all through Redis.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.ledger.pricing import Pricing

# A request without max_tokens on a tier whose context is unknown (a hosted URL tier) is
# assumed to answer at most this many tokens.
UNKNOWN_CONTEXT_TOKENS = 4096
# A hold outlives its request only if the replica died mid-request; then it lapses after this
# (longer than any request: the upstream client's total timeout is 600 s).
HOLD_S = 900


@dataclass(frozen=True, slots=True)
class Reservation:
    """One request's hold on a key's budget for one period."""

    period: str  # budget period id ("2026-11-28" or "2026-11")
    amount: float
    local: bool  # held in this process (no Redis, or Redis was down when it was taken)
    id: str = ""

    @property
    def member(self) -> str:
        """How the hold is named in Redis (id and amount, so the amount can be summed by a script)."""
        return f"{self.id}|{self.amount!r}"


def new_reservation(period: str, amount: float, *, local: bool) -> Reservation:
    return Reservation(period=period, amount=amount, local=local, id=secrets.token_hex(8))


def max_request_cost(pricing: Pricing, tier_names: list[str], context_tokens: int | None, body: dict,
                     max_tokens: int | None, n: int) -> float:
    """The most a request can cost on any tier it may be sent to (its failover candidates): its hold."""
    return pricing.max_cost(tier_names, prompt_tokens_estimate(body), completion_tokens_bound(max_tokens, n,
                                                                                              context_tokens))


def prompt_tokens_estimate(body: dict) -> int:
    """A rough upper estimate of the prompt's tokens from its characters (about 3 per token or more)."""
    return _chars(body.get("messages", body.get("prompt"))) // 3 + 16


def completion_tokens_bound(max_tokens: int | None, n: int, context_tokens: int | None) -> int:
    """The most tokens the answer may hold: ``max_tokens`` (else the tier's context) for each choice."""
    return (max_tokens or context_tokens or UNKNOWN_CONTEXT_TOKENS) * max(1, n)


def _chars(value: object) -> int:
    """Characters of text in a message list or prompt (iterative: bodies are already depth-capped)."""
    total, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return total
