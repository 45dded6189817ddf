"""Cost summary: flush the ledger first so the answer includes every finished request."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from gateway.ledger import queries
from gateway.state import GatewayState


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


async def cost_summary(state: GatewayState, since: datetime | None, until: datetime | None) -> dict:
    await state.ledger.flush()
    result = await asyncio.to_thread(queries.summary, state.engine, _utc(since), _utc(until))
    return {"object": "cost_summary", "teacher_tier": state.config.teacher_tier, **result}
