"""Read-side of the ledger: the aggregates that cost reports are made of."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.engine import Engine

from gateway.ledger.schema import requests_table as t


def summary(engine: Engine, since: datetime | None = None, until: datetime | None = None,
            api_key_id: str | None = None) -> dict:
    """Total cost, the all-teacher counterfactual, savings, and per-tier counts."""
    stmt = select(
        t.c.tier,
        func.count().label("requests"),
        func.coalesce(func.sum(t.c.prompt_tokens), 0).label("prompt_tokens"),
        func.coalesce(func.sum(t.c.completion_tokens), 0).label("completion_tokens"),
        func.coalesce(func.sum(t.c.cost), 0.0).label("cost"),
        func.coalesce(func.sum(t.c.teacher_cost), 0.0).label("teacher_cost"),
        func.sum(case((t.c.status != "ok", 1), else_=0)).label("errors"),
    ).group_by(t.c.tier)
    if since is not None:
        stmt = stmt.where(t.c.ts >= since)
    if until is not None:
        stmt = stmt.where(t.c.ts < until)
    if api_key_id is not None:
        stmt = stmt.where(t.c.api_key_id == api_key_id)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    tiers = {
        (r.tier or "none"): {
            "requests": int(r.requests),
            "errors": int(r.errors or 0),
            "prompt_tokens": int(r.prompt_tokens),
            "completion_tokens": int(r.completion_tokens),
            "cost": float(r.cost),
            "teacher_cost": float(r.teacher_cost),
        }
        for r in rows
    }
    total = sum(v["cost"] for v in tiers.values())
    counterfactual = sum(v["teacher_cost"] for v in tiers.values())
    savings = counterfactual - total
    return {
        "requests": sum(v["requests"] for v in tiers.values()),
        "total_cost": total,
        "teacher_counterfactual_cost": counterfactual,
        "savings": savings,
        "savings_pct": (100.0 * savings / counterfactual) if counterfactual > 0 else 0.0,
        "tiers": tiers,
    }
