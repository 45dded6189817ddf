"""``python -m gateway report``'s work, minus argument parsing: read once, write each format.

Kept apart from ``gateway/cli.py`` so tests and other tools can produce a report in-process.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Literal

from sqlalchemy.engine import Engine

from gateway.ledger.queries import Bucket, GroupBy
from gateway.ledger.schema import open_existing
from gateway.reports import export, figures
from gateway.reports.data import CostReport, Filters, build_report
from gateway.reports.formatting import DEFAULT_CURRENCY
from gateway.reports.render_html import render_html
from gateway.reports.render_text import render_markdown

Format = Literal["html", "md", "csv", "json"]
FORMATS: tuple[Format, ...] = ("html", "md", "csv", "json")
BUCKET_LENGTH = {"day": timedelta(days=1), "hour": timedelta(hours=1)}


def open_ledger(url: str) -> Engine:
    """The ledger engine for ``url`` (SQLite or Postgres), which must exist: a report only reads,
    and a mistyped path must fail (``LedgerNotFound``), not report $0 from a new empty file."""
    return open_existing(url)


def write_report(report: CostReport, formats: Iterable[Format], out: Path, *, bucket: Bucket = "day",
                 currency: str = DEFAULT_CURRENCY) -> list[Path]:
    """Write ``report`` into ``out`` in each format; returns the files written.

    html: ``report.html`` (self-contained); md: ``report.md`` plus the PNGs next to it;
    csv: one file per table; json: ``report.json``.
    """
    formats = list(dict.fromkeys(formats))
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown format(s) {sorted(unknown)}; choose from {', '.join(FORMATS)}")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    images = figures.render_all(report, BUCKET_LENGTH[bucket], currency) if {"html", "md"} & set(formats) else {}
    if "html" in formats:
        path = out / "report.html"
        path.write_text(render_html(report, images, bucket=bucket, currency=currency), encoding="utf-8")
        written.append(path)
    if "md" in formats:
        for key, name in figures.FIGURE_FILES.items():
            (out / name).write_bytes(images[key])
            written.append(out / name)
        path = out / "report.md"
        path.write_text(render_markdown(report, bucket=bucket, currency=currency), encoding="utf-8")
        written.append(path)
    if "csv" in formats:
        written.extend(export.write_csv(report, out, bucket))
    if "json" in formats:
        written.append(export.write_json(report, out))
    return written


def generate(ledger: str | Engine, filters: Filters, formats: Iterable[Format], out: Path, *,
             teacher_tier: str | None = None, bucket: Bucket = "day",
             currency: str = DEFAULT_CURRENCY, group_by: GroupBy = "key") -> tuple[CostReport, list[Path]]:
    """Build the report from a ledger URL (or engine) and write it; returns both."""
    engine = open_ledger(ledger) if isinstance(ledger, str) else ledger
    try:
        report = build_report(engine, filters, teacher_tier=teacher_tier, bucket=bucket, group_by=group_by)
    finally:
        if isinstance(ledger, str):
            engine.dispose()
    return report, write_report(report, formats, out, bucket=bucket, currency=currency)
