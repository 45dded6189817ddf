"""The same known ledger in PostgreSQL gives the same report as in SQLite, with the session
in a far-off time zone so that day buckets and bounds are proven to be UTC."""

from __future__ import annotations

import pytest
from known_ledger import SINCE, UNTIL, check_report, fill

from gateway.ledger import queries
from gateway.reports.data import Filters
from gateway.reports.run import FORMATS, generate

pytestmark = pytest.mark.postgres


def test_report_from_postgres(postgres_url, tmp_path):
    # Tokyo is UTC+9: a bucket taken in the session zone would move rows 1 and 4 to other days.
    url = postgres_url + "%20-ctimezone%3DAsia/Tokyo"
    fill(url)
    report, written = generate(url, Filters(SINCE, UNTIL), FORMATS, tmp_path / "out", teacher_tier="teacher")
    check_report(report)
    assert (tmp_path / "out" / "report.html").stat().st_size > 10_000 and len(written) >= 10

    from gateway.ledger.schema import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW timezone").scalar() == "Asia/Tokyo"
        hours = [p["start"].hour for p in queries.timeseries(engine, SINCE, UNTIL, bucket="hour")]
        assert hours == [0, 10, 23, 0, 12, 13, 8, 9]
    finally:
        engine.dispose()
