"""Read-side of the ledger: the aggregates that cost reports are made of.

Every query takes the same filters (``since`` inclusive, ``until`` exclusive, ``api_key_id``)
and works on SQLite and PostgreSQL alike. Two portability traps are handled here, once:

* SQLite stores ``DateTime`` as naive text, so an aware bound in another zone would be
  compared by its wall clock; every bound is converted to UTC first (the writer stores UTC).
* Day/hour buckets are computed in UTC on both (Postgres' ``date_trunc`` would otherwise use
  the session's time zone), and returned as the same ISO strings.

Percentiles and histograms are not computed in SQL (SQLite has no ``percentile_cont``): the
queries return the raw values per tier and the caller does the arithmetic.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import Select, case, func, literal_column, select
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement

from gateway.ledger.schema import requests_table as t

Bucket = Literal["day", "hour"]
GroupBy = Literal["tier", "user", "workload", "key"]
NO_TIER = "none"  # label of rows refused before a tier was chosen (unknown model, bad input)
NO_VALUE = "none"  # label of rows without a value in the grouped dimension (no `user`, ...)

# The dimensions costs can be grouped by: the tier, the request's `user` (the tenant or end user
# a support backend names), its workload header, and the API key.
GROUP_COLUMNS = {"tier": t.c.tier, "user": t.c.user, "workload": t.c.workload, "key": t.c.api_key_id}


def group_column(group_by: GroupBy) -> ColumnElement:
    if group_by not in GROUP_COLUMNS:
        raise ValueError(f"group_by must be one of {', '.join(GROUP_COLUMNS)}, not {group_by!r}")
    return GROUP_COLUMNS[group_by]

# Bucket labels: ISO strings identical on both databases, parsed back by ``bucket_start``.
_SQLITE_BUCKET = {"day": "%Y-%m-%d", "hour": "%Y-%m-%dT%H:00"}
_PG_BUCKET = {"day": "YYYY-MM-DD", "hour": "YYYY-MM-DD\"T\"HH24:00"}


def to_utc(value: datetime | None) -> datetime | None:
    """A naive bound means UTC; an aware one is converted (SQLite compares wall-clock text).

    Raises ``ValueError`` (a bad bound, for callers to report) when the offset pushes the time out
    of datetime's range, e.g. ``0001-01-01T00:00:00+05:00``, rather than an ``OverflowError``.
    """
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{value.isoformat()} is out of range once converted to UTC") from None


def _filtered(stmt: Select, since: datetime | None, until: datetime | None, api_key_id: str | None) -> Select:
    since, until = to_utc(since), to_utc(until)
    if since is not None:
        stmt = stmt.where(t.c.ts >= since)
    if until is not None:
        stmt = stmt.where(t.c.ts < until)
    if api_key_id is not None:
        stmt = stmt.where(t.c.api_key_id == api_key_id)
    return stmt


def _money_columns() -> list[ColumnElement]:
    """The aggregate columns every grouped query shares."""
    return [
        func.count().label("requests"),
        func.coalesce(func.sum(t.c.prompt_tokens), 0).label("prompt_tokens"),
        func.coalesce(func.sum(t.c.completion_tokens), 0).label("completion_tokens"),
        func.coalesce(func.sum(t.c.cost), 0.0).label("cost"),
        func.coalesce(func.sum(t.c.teacher_cost), 0.0).label("teacher_cost"),
        func.sum(case((t.c.status != "ok", 1), else_=0)).label("errors"),
    ]


def _figures(row) -> dict:
    return {
        "requests": int(row.requests),
        "errors": int(row.errors or 0),
        "prompt_tokens": int(row.prompt_tokens),
        "completion_tokens": int(row.completion_tokens),
        "cost": float(row.cost),
        "teacher_cost": float(row.teacher_cost),
    }


def grouped(engine: Engine, since: datetime | None = None, until: datetime | None = None,
            api_key_id: str | None = None, group_by: GroupBy = "tier") -> dict[str, dict]:
    """Requests, tokens, spend and counterfactual per value of ``group_by`` (missing: ``none``)."""
    column = group_column(group_by).label("dimension")
    stmt = _filtered(select(column, *_money_columns()).group_by(column), since, until, api_key_id)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return {(r.dimension or NO_VALUE): _figures(r) for r in rows}


def summary(engine: Engine, since: datetime | None = None, until: datetime | None = None,
            api_key_id: str | None = None, group_by: GroupBy = "tier") -> dict:
    """Total cost, the all-teacher counterfactual, savings, per-tier figures and, for another
    ``group_by``, the same figures per user, workload or key."""
    tiers = grouped(engine, since, until, api_key_id, "tier")
    total = sum(v["cost"] for v in tiers.values())
    counterfactual = sum(v["teacher_cost"] for v in tiers.values())
    savings = counterfactual - total
    return {
        "requests": sum(v["requests"] for v in tiers.values()),
        "total_cost": total,
        "teacher_counterfactual_cost": counterfactual,
        "savings": savings,
        "savings_pct": savings_pct(total, counterfactual),
        "tiers": tiers,
        "group_by": group_by,
        "groups": tiers if group_by == "tier" else grouped(engine, since, until, api_key_id, group_by),
    }


def savings_pct(cost: float, teacher_cost: float) -> float:
    """Share of the counterfactual that was not spent; 0 when nothing would have been spent."""
    return 100.0 * (teacher_cost - cost) / teacher_cost if teacher_cost > 0 else 0.0


def by_status(engine: Engine, since: datetime | None = None, until: datetime | None = None,
              api_key_id: str | None = None) -> dict[str, int]:
    """Request counts per outcome (``ok``, ``error``, ``rejected``, ``client_disconnected``)."""
    stmt = _filtered(select(t.c.status, func.count().label("n")).group_by(t.c.status), since, until, api_key_id)
    with engine.connect() as conn:
        return {r.status: int(r.n) for r in conn.execute(stmt)}


def bucket_expr(engine: Engine, bucket: Bucket) -> ColumnElement:
    """The UTC day/hour a row falls in, as an ISO string, on either database."""
    if bucket not in _SQLITE_BUCKET:
        raise ValueError(f"bucket must be 'day' or 'hour', not {bucket!r}")
    if engine.dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", t.c.ts), literal_column(f"'{_PG_BUCKET[bucket]}'"))
    if engine.dialect.name == "sqlite":
        return func.strftime(_SQLITE_BUCKET[bucket], t.c.ts)
    raise NotImplementedError(f"time buckets on {engine.dialect.name}")


def bucket_start(label: str) -> datetime:
    """Parse a bucket label back into its (aware, UTC) start time."""
    return datetime.fromisoformat(label).replace(tzinfo=UTC)


def timeseries(engine: Engine, since: datetime | None = None, until: datetime | None = None,
               api_key_id: str | None = None, bucket: Bucket = "day", group_by: GroupBy = "tier") -> list[dict]:
    """Per UTC day (or hour), per tier (or user, workload, key): requests, tokens, cost and counterfactual.

    Only buckets that have rows are returned, oldest first, each as
    ``{"start": datetime, "tiers": {value: figures}}`` (the key stays ``tiers`` whatever the grouping).
    """
    label = bucket_expr(engine, bucket).label("bucket")
    column = group_column(group_by).label("dimension")
    stmt = _filtered(select(label, column, *_money_columns()).group_by(label, column), since, until, api_key_id)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    series: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in rows:
        series[r.bucket][r.dimension or NO_VALUE] = _figures(r)
    return [{"start": bucket_start(b), "tiers": series[b]} for b in sorted(series)]


def latencies(engine: Engine, since: datetime | None = None, until: datetime | None = None,
              api_key_id: str | None = None, statuses: tuple[str, ...] = ("ok",)) -> dict[str, dict[str, list[float]]]:
    """Raw end-to-end latency and TTFT (ms) per tier, for percentiles computed by the caller.

    Only ``statuses`` count (default: answered requests), since a refusal's millisecond would
    otherwise pull a tier's p50 down.
    """
    stmt = _filtered(select(t.c.tier, t.c.latency_ms, t.c.ttft_ms).where(t.c.status.in_(statuses)),
                     since, until, api_key_id)
    out: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"latency_ms": [], "ttft_ms": []})
    with engine.connect() as conn:
        for r in conn.execute(stmt):
            entry = out[r.tier or NO_TIER]
            if r.latency_ms is not None:
                entry["latency_ms"].append(float(r.latency_ms))
            if r.ttft_ms is not None:
                entry["ttft_ms"].append(float(r.ttft_ms))
    return dict(out)


def route_scores(engine: Engine, since: datetime | None = None, until: datetime | None = None,
                 api_key_id: str | None = None) -> tuple[list[float], float | None]:
    """Every router score in the period, and the threshold in force at the latest scored request."""
    scored = t.c.route_score.is_not(None)
    stmt = _filtered(select(t.c.route_score).where(scored), since, until, api_key_id)
    latest = _filtered(select(t.c.route_threshold).where(scored, t.c.route_threshold.is_not(None)),
                       since, until, api_key_id).order_by(t.c.ts.desc(), t.c.id.desc()).limit(1)
    with engine.connect() as conn:
        scores = [float(s) for (s,) in conn.execute(stmt)]
        threshold = conn.execute(latest).scalar()
    return scores, (float(threshold) if threshold is not None else None)


def time_range(engine: Engine, since: datetime | None = None, until: datetime | None = None,
               api_key_id: str | None = None) -> tuple[datetime | None, datetime | None]:
    """First and last request time in the period (aware UTC), or ``(None, None)`` if empty."""
    stmt = _filtered(select(func.min(t.c.ts), func.max(t.c.ts)), since, until, api_key_id)
    with engine.connect() as conn:
        first, last = conn.execute(stmt).one()
    return to_utc(first), to_utc(last)


def spent_since(engine: Engine, api_key_id: str, since: datetime) -> float:
    """What one API key has spent since ``since`` (seeds budget counters)."""
    stmt = select(func.coalesce(func.sum(t.c.cost), 0.0)).where(t.c.api_key_id == api_key_id, t.c.ts >= since)
    with engine.connect() as conn:
        return float(conn.execute(stmt).scalar_one())
