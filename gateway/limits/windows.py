"""Time windows shared by both limiter back-ends: fixed minute windows and budget periods (UTC)."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta

from gateway.errors import GatewayError


def minute_window(now: float) -> tuple[int, float]:
    """(window id, seconds until it ends)."""
    return int(now // 60), 60 - now % 60


def budget_period(now: float, period: str) -> tuple[str, datetime, float]:
    """(period id, its start, seconds until it ends) for 'day' or 'month' budgets."""
    t = datetime.fromtimestamp(now, UTC)
    if period == "day":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(days=1)
        pid = start.strftime("%Y-%m-%d")
    else:
        start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(days=calendar.monthrange(t.year, t.month)[1])
        pid = start.strftime("%Y-%m")
    return pid, start, (end - t).total_seconds()


def too_many(what: str, limit: float, retry_after_s: float) -> GatewayError:
    seconds = max(1, int(retry_after_s + 0.999))
    return GatewayError(f"Rate limit reached: {what} limit of {limit:g} for this API key. Retry in {seconds} s.",
                        status_code=429, type="rate_limit_error", code="rate_limit_exceeded",
                        headers={"retry-after": str(seconds)})


def over_budget(budget: float, period: str, retry_after_s: float) -> GatewayError:
    seconds = max(1, int(retry_after_s + 0.999))
    return GatewayError(f"This API key has used its budget of {budget:g} for this {period}.",
                        status_code=429, type="insufficient_quota", code="budget_exceeded",
                        headers={"retry-after": str(seconds)})

