"""A ledger with known rows, and the report figures worked out by hand from them.

The rows span three UTC days (plus one row before and one after the reported period), two
tiers plus a refused request with no tier, two API keys plus a key-less request, and every
status. Costs are round numbers so the expected totals below can be checked on paper.

A plain module rather than a ``conftest.py``: the suite's top-level ``conftest`` is imported
by name from test modules, and a second ``conftest`` module would shadow it.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.ledger.schema import make_engine, requests_table

SINCE = datetime(2026, 3, 1, tzinfo=UTC)
UNTIL = datetime(2026, 3, 4, tzinfo=UTC)


def _row(n: int, ts: str, key: str | None, tier: str | None, status: str, prompt: int, completion: int,
         cost: float, teacher_cost: float, latency: float | None, score: float | None = None,
         ttft: float | None = None, user: str | None = None) -> dict:
    return {
        "ts": datetime.fromisoformat(ts).replace(tzinfo=UTC), "request_id": f"req-{n}", "api_key_id": key,
        "endpoint": "chat", "requested_model": "auto" if score is not None else (tier or "nope"), "tier": tier,
        "route_policy": "trained" if score is not None else None, "route_score": score,
        "route_threshold": 0.5 if score is not None else None, "stream": ttft is not None,
        "prompt_tokens": prompt, "completion_tokens": completion, "latency_ms": latency, "ttft_ms": ttft,
        "status": status, "http_status": {"ok": 200, "error": 502, "rejected": 404}.get(status, 499),
        "error": None if status == "ok" else status, "cost": cost, "teacher_cost": teacher_cost,
        "user": user, "workload": None if tier is None else ("support" if tier == "student" else "general"),
    }


# n, ts (UTC), key, tier, status, prompt, completion, cost, teacher_cost, latency ms, score, ttft ms
ROWS = [
    _row(0, "2026-02-28T23:59:59", "key-a", "teacher", "ok", 100, 50, 100.0, 100.0, 10.0, 0.95),  # before
    _row(1, "2026-03-01T00:30:00", "key-a", "teacher", "ok", 100, 50, 2.0, 2.0, 100.0, 0.92, user="u1"),
    _row(2, "2026-03-01T10:00:00", "key-a", "student", "ok", 100, 50, 0.5, 2.0, 40.0, 0.18, ttft=10.0, user="u1"),
    _row(3, "2026-03-01T23:59:59.5", "key-b", "student", "ok", 200, 100, 1.0, 4.0, 60.0, 0.3, user="u2"),
    _row(4, "2026-03-02T00:00:00", "key-b", "teacher", "ok", 200, 100, 4.0, 4.0, 300.0, 0.71, ttft=50.0, user="u1"),
    _row(5, "2026-03-02T12:00:00", "key-a", "student", "error", 10, 0, 0.0, 0.0, 5000.0, 0.27),
    _row(6, "2026-03-02T13:00:00", None, None, "rejected", 0, 0, 0.0, 0.0, 1.0),
    _row(7, "2026-03-03T08:00:00", "key-b", "student", "ok", 400, 200, 2.0, 8.0, 80.0, 0.05, ttft=30.0, user="u2"),
    _row(8, "2026-03-03T09:00:00", "key-a", "student", "ok", 100, 50, 0.5, 2.0, 20.0, 0.46),
    _row(9, "2026-03-03T09:30:00", "key-a", "teacher", "client_disconnected", 100, 50, 2.0, 2.0, 200.0),
    _row(10, "2026-03-04T00:00:00", "key-b", "student", "ok", 100, 50, 50.0, 50.0, 10.0),  # after (until excl.)
]

# Worked out by hand from ROWS 1-9 (the period [SINCE, UNTIL)).
EXPECTED = {
    "requests": 9, "cost": 12.0, "teacher_cost": 24.0, "savings": 12.0, "savings_pct": 50.0,
    "tiers": {  # name: requests, errors, prompt, completion, cost, teacher_cost, savings %, share %
        "teacher": (3, 1, 400, 200, 8.0, 8.0, 0.0, 100 * 3 / 9),        # rows 1, 4, 9
        "student": (5, 1, 810, 400, 4.0, 16.0, 75.0, 100 * 5 / 9),      # rows 2, 3, 5, 7, 8
        "none": (1, 1, 0, 0, 0.0, 0.0, 0.0, 100 * 1 / 9),               # row 6
    },
    "keys": {
        "key-a": (5, 2, 410, 200, 5.0, 8.0, 37.5, 100 * 5 / 9),         # rows 1, 2, 5, 8, 9
        "key-b": (3, 0, 800, 400, 7.0, 16.0, 56.25, 100 * 3 / 9),       # rows 3, 4, 7
        "none": (1, 1, 0, 0, 0.0, 0.0, 0.0, 100 * 1 / 9),               # row 6
    },
    "users": {  # the request's `user` (the tenant a support backend names)
        "u1": (3, 0, 400, 200, 6.5, 8.0, 18.75, 100 * 3 / 9),         # rows 1, 2, 4
        "u2": (2, 0, 600, 300, 3.0, 12.0, 75.0, 100 * 2 / 9),          # rows 3, 7
        "none": (4, 3, 210, 100, 2.5, 4.0, 37.5, 100 * 4 / 9),         # rows 5, 6, 8, 9
    },
    "workloads": {  # student rows 'support', teacher rows 'general', the refused row none
        "support": (5, 1, 810, 400, 4.0, 16.0, 75.0, 100 * 5 / 9),
        "general": (3, 1, 400, 200, 8.0, 8.0, 0.0, 100 * 3 / 9),
        "none": (1, 1, 0, 0, 0.0, 0.0, 0.0, 100 * 1 / 9),
    },
    "days": {  # UTC day: requests, cost, teacher_cost
        "2026-03-01": (3, 3.5, 8.0),                                    # rows 1, 2, 3 (row 3 at 23:59:59.5)
        "2026-03-02": (3, 4.0, 4.0),                                    # rows 4, 5, 6 (row 4 at midnight)
        "2026-03-03": (3, 4.5, 12.0),                                   # rows 7, 8, 9
    },
    # Answered (status ok) latencies. teacher: 100, 300 -> linear p50 200, p95 290, p99 298.
    # student: 20, 40, 60, 80 -> p50 50; p95 at rank 2.85 = 60 + 0.85*20 = 77; p99 at 2.97 = 79.4.
    "latency": {"teacher": (2, 200.0, 290.0, 298.0), "student": (4, 50.0, 77.0, 79.4)},
    # ttft: student 10, 30 -> p50 20; teacher 50.
    "ttft_p50": {"student": 20.0, "teacher": 50.0},
    "statuses": {"ok": 6, "error": 1, "rejected": 1, "client_disconnected": 1},
    # Scores in the period: .92 .18 .3 .71 .27 .05 .46 ; threshold .5 -> 2 at or above.
    "scores": {"scored": 7, "above": 2, "threshold": 0.5,
               "bins_of_0.05": {18: 1, 3: 1, 6: 1, 14: 1, 5: 1, 1: 1, 9: 1}},
}


def fill(url: str) -> None:
    """Create the table (as the gateway does) and insert ``ROWS``."""
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(requests_table.insert(), ROWS)
    engine.dispose()


@pytest.fixture
def ledger_url(tmp_path) -> str:
    """A SQLite ledger file holding ``ROWS``."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    fill(url)
    return url


def check_spend(rows, expected: dict) -> None:
    """Spend rows (per tier, key, user, ...) against hand-computed figures."""
    got = {s.name: (s.requests, s.errors, s.prompt_tokens, s.completion_tokens, s.cost, s.teacher_cost,
                    s.savings_pct, s.share_pct) for s in rows}
    assert set(got) == set(expected)
    for name, values in expected.items():
        assert got[name] == pytest.approx(values), name


def check_report(report) -> None:
    """Assert that a ``CostReport`` over [SINCE, UNTIL) holds the hand-computed ``EXPECTED`` figures."""
    e = EXPECTED
    t = report.total
    assert (t.requests, t.cost, t.teacher_cost) == (e["requests"], pytest.approx(e["cost"]),
                                                    pytest.approx(e["teacher_cost"]))
    assert t.savings == pytest.approx(e["savings"]) and t.savings_pct == pytest.approx(e["savings_pct"])
    check_spend(report.tiers, e["tiers"])
    check_spend(report.groups, e[{"key": "keys", "user": "users", "workload": "workloads", "tier": "tiers"}[
        report.group_by]])
    days = {p.start.strftime("%Y-%m-%d"): (p.total.requests, p.total.cost, p.total.teacher_cost) for p in report.days}
    assert set(days) == set(e["days"])
    for day, values in e["days"].items():
        assert days[day] == pytest.approx(values), day
    assert all(p.start.tzinfo is not None and p.start.utcoffset().total_seconds() == 0 for p in report.days)
    # Tier share within a day: 2026-03-02 is one teacher, one student, one refused.
    mar2 = next(p for p in report.days if p.start.day == 2)
    assert {n: s.share_pct for n, s in mar2.tiers.items()} == pytest.approx(
        {"teacher": 100 / 3, "student": 100 / 3, "none": 100 / 3})
    lat = {x.tier: (x.count, x.p50_ms, x.p95_ms, x.p99_ms) for x in report.latency}
    assert set(lat) == set(e["latency"])
    for tier, values in e["latency"].items():
        assert lat[tier] == pytest.approx(values), tier
    assert {x.tier: x.ttft_p50_ms for x in report.latency} == pytest.approx(e["ttft_p50"])
    assert report.statuses == e["statuses"]
    h = report.scores
    assert (h.scored, h.at_or_above_threshold, h.threshold) == (e["scores"]["scored"], e["scores"]["above"],
                                                                pytest.approx(e["scores"]["threshold"]))
    assert {i: c for i, c in enumerate(h.counts) if c} == e["scores"]["bins_of_0.05"]
    assert h.edges[0] == 0 and h.edges[-1] == 1 and len(h.edges) == len(h.counts) + 1
