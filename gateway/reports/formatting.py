"""How numbers read in reports meant for people (HTML, Markdown, the terminal).

Per-request costs of self-hosted tiers are fractions of a cent, so a fixed two decimals would
print most figures as 0.00: amounts under a tenth keep three significant digits instead.
CSV and JSON keep the raw floats; only human formats go through here.
"""

from __future__ import annotations

from datetime import datetime

DEFAULT_CURRENCY = "$"


def money(value: float, currency: str = DEFAULT_CURRENCY) -> str:
    """``$1,234.57``, ``$0.50``; ``$0.00123`` for small amounts; ``-$0.50`` when negative; ``$0`` for zero."""
    sign = "-" if value < 0 else ""
    v = abs(value)
    if v == 0:
        text = "0"
    elif v >= 0.1:
        text = f"{v:,.2f}"
    else:
        text = f"{v:.3g}" if v >= 1e-4 else f"{v:.3e}"
    return f"{sign}{currency}{text}"


def pct(value: float) -> str:
    return f"{value:.1f}%"


def count(value: int) -> str:
    return f"{value:,}"


def ms(value: float | None) -> str:
    """Milliseconds, or a dash when there were no requests to measure."""
    if value is None:
        return "–"
    return f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


def when(value: datetime | None, bucket: str = "day") -> str:
    if value is None:
        return "–"
    return value.strftime("%Y-%m-%d" if bucket == "day" else "%Y-%m-%d %H:00")


def period(since: datetime | None, until: datetime | None, first: datetime | None, last: datetime | None) -> str:
    """The period a report covers, in words: the filters if given, else the data's own span."""
    start = since or first
    end = until or last
    if start is None and end is None:
        return "no requests recorded"
    fmt = "%Y-%m-%d %H:%M UTC"
    left = start.strftime(fmt) if start else "the first request"
    right = end.strftime(fmt) if end else "the last request"
    return f"{left} to {right}"
