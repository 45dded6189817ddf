"""Report figures against a ledger with known rows: totals, per tier/key/day, percentiles,
router scores, and every filter (period, key, time zones, hour buckets)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from known_ledger import ROWS, SINCE, UNTIL, check_report, ledger_url  # noqa: F401 (fixture)

from gateway.ledger import queries
from gateway.ledger.schema import make_engine
from gateway.reports import formatting
from gateway.reports.data import Filters, build_report


@pytest.fixture
def engine(ledger_url):  # noqa: F811
    engine = make_engine(ledger_url)
    yield engine
    engine.dispose()


def test_report_matches_hand_computed_figures(engine):
    check_report(build_report(engine, Filters(SINCE, UNTIL), teacher_tier="teacher"))


def test_summary_keeps_its_keys_and_agrees_with_the_report(engine):
    s = queries.summary(engine, SINCE, UNTIL)
    assert set(s) == {"requests", "total_cost", "teacher_counterfactual_cost", "savings", "savings_pct", "tiers",
                      "group_by", "groups"}
    assert s["group_by"] == "tier" and s["groups"] == s["tiers"]
    assert set(s["tiers"]["student"]) == {"requests", "errors", "prompt_tokens", "completion_tokens", "cost",
                                          "teacher_cost"}
    assert (s["requests"], s["total_cost"], s["teacher_counterfactual_cost"]) == (9, 12.0, 24.0)


@pytest.mark.parametrize("group_by", ["user", "workload", "key", "tier"])
def test_report_grouped_by_each_dimension(engine, group_by):
    """Per-tenant reporting: the second breakdown by the request's `user`, its workload, key or tier."""
    check_report(build_report(engine, Filters(SINCE, UNTIL), teacher_tier="teacher", group_by=group_by))


def test_timeseries_grouped_by_user_sums_to_the_tier_series(engine):
    by_user = queries.timeseries(engine, SINCE, UNTIL, group_by="user")
    by_tier = queries.timeseries(engine, SINCE, UNTIL)
    assert [p["start"] for p in by_user] == [p["start"] for p in by_tier]
    mar1 = by_user[0]["tiers"]  # rows 1, 2 (u1) and 3 (u2)
    assert {u: (f["requests"], f["cost"]) for u, f in mar1.items()} == {"u1": (2, 2.5), "u2": (1, 1.0)}
    for user_point, tier_point in zip(by_user, by_tier):
        assert sum(f["cost"] for f in user_point["tiers"].values()) == pytest.approx(
            sum(f["cost"] for f in tier_point["tiers"].values()))


def test_unknown_grouping_is_refused(engine):
    with pytest.raises(ValueError, match="group_by"):
        queries.summary(engine, SINCE, UNTIL, group_by="color")  # type: ignore[arg-type]


def test_unfiltered_report_includes_rows_outside_the_period(engine):
    report = build_report(engine)
    assert report.total.requests == len(ROWS) == 11
    assert report.total.cost == pytest.approx(12.0 + 100.0 + 50.0)  # rows 0 and 10 cost 100 and 50
    assert report.first_request == datetime(2026, 2, 28, 23, 59, 59, tzinfo=UTC)
    assert report.last_request == datetime(2026, 3, 4, tzinfo=UTC)


def test_key_filter(engine):
    report = build_report(engine, Filters(SINCE, UNTIL, api_key_id="key-b"))
    # rows 3, 4, 7: costs 1 + 4 + 2, teacher 4 + 4 + 8
    assert (report.total.requests, report.total.cost, report.total.teacher_cost) == (3, 7.0, 16.0)
    assert [k.name for k in report.groups] == ["key-b"]
    assert {t.name: t.requests for t in report.tiers} == {"student": 2, "teacher": 1}
    assert report.scores.scored == 3 and report.scores.at_or_above_threshold == 1  # .3 .71 .05


def test_since_until_with_a_time_zone_offset_are_converted_to_utc(engine):
    # 12:00 at +02:00 is 10:00 UTC: row 2 (10:00) is in, row 1 (00:30) out; until midnight UTC
    # excludes row 4 (exactly 2026-03-02T00:00) but keeps row 3 (23:59:59.5).
    plus2 = timezone(timedelta(hours=2))
    report = build_report(engine, Filters(datetime(2026, 3, 1, 12, tzinfo=plus2), datetime(2026, 3, 2, 2, tzinfo=plus2)))
    assert (report.total.requests, report.total.cost, report.total.teacher_cost) == (2, 1.5, 6.0)
    naive = build_report(engine, Filters(datetime(2026, 3, 1, 10), datetime(2026, 3, 2)))
    assert naive.total.requests == 2  # naive means UTC


def test_hour_buckets(engine):
    series = queries.timeseries(engine, SINCE, UNTIL, bucket="hour")
    starts = [p["start"] for p in series]
    # one bucket per distinct row hour in the period (rows 8 and 9 share 09:00 on 2026-03-03)
    assert starts == [datetime(2026, 3, 1, 0, tzinfo=UTC), datetime(2026, 3, 1, 10, tzinfo=UTC),
                      datetime(2026, 3, 1, 23, tzinfo=UTC), datetime(2026, 3, 2, 0, tzinfo=UTC),
                      datetime(2026, 3, 2, 12, tzinfo=UTC), datetime(2026, 3, 2, 13, tzinfo=UTC),
                      datetime(2026, 3, 3, 8, tzinfo=UTC), datetime(2026, 3, 3, 9, tzinfo=UTC)]
    nine = series[-1]["tiers"]
    assert (nine["student"]["cost"], nine["teacher"]["cost"], nine["teacher"]["errors"]) == (0.5, 2.0, 1)
    with pytest.raises(ValueError):
        queries.timeseries(engine, bucket="week")  # type: ignore[arg-type]


def test_empty_period_gives_zeros_not_errors(engine):
    report = build_report(engine, Filters(datetime(2030, 1, 1), datetime(2030, 1, 2)))
    assert report.total.requests == 0 and report.total.savings_pct == 0.0
    assert report.tiers == [] and report.days == [] and report.latency == [] and report.scores.scored == 0


def test_since_must_precede_until():
    with pytest.raises(ValueError, match="before"):
        Filters(UNTIL, SINCE)


@pytest.mark.parametrize(("value", "text"), [
    (12.0, "$12.00"), (1234.5, "$1,234.50"), (0.5, "$0.50"), (0.0456, "$0.0456"), (0.00123456, "$0.00123"),
    (0.0, "$0"),
    (-3.0, "-$3.00"), (0.00001234, "$1.234e-05"),
])
def test_money_reads_well_at_every_scale(value, text):
    assert formatting.money(value) == text
