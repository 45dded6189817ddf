"""Machine-readable exports: one CSV per table, and one JSON document.

Numbers are written raw (full float precision, no currency sign) so a spreadsheet or a script
gets exactly what the ledger holds; formatting for people is the HTML/Markdown renderers' job.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

from gateway.reports.data import CostReport, Spend

SPEND_FIELDS = ["name", "requests", "errors", "share_pct", "prompt_tokens", "completion_tokens", "cost",
                "teacher_cost", "savings", "savings_pct"]
LATENCY_FIELDS = ["tier", "count", "p50_ms", "p95_ms", "p99_ms", "ttft_count", "ttft_p50_ms", "ttft_p95_ms",
                  "ttft_p99_ms"]
CSV_FILES = {"tiers": "tiers.csv", "key": "keys.csv", "user": "users.csv", "workload": "workloads.csv", "day": "days.csv", "hour": "hours.csv", "latency": "latency.csv"}


def _write(path: Path, fields: list[str], rows: list[dict], first_header: str | None = None) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        # e.g. "tier" instead of "name": the first column says what it holds
        csv.writer(fh).writerow([first_header or fields[0], *fields[1:]])
        writer.writerows(rows)
    return path


def _spend_rows(rows: list[Spend]) -> list[dict]:
    return [{k: v for k, v in s.as_dict().items() if k in SPEND_FIELDS} for s in rows]


def write_csv(report: CostReport, out: Path, bucket: str = "day") -> list[Path]:
    """``tiers.csv``, ``keys.csv`` (``users.csv``/``workloads.csv`` when grouped so), ``days.csv``
    (``hours.csv`` per hour) and ``latency.csv`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    return [
        _write(out / CSV_FILES["tiers"], SPEND_FIELDS, _spend_rows(report.tiers), "tier"),
        *([_write(out / CSV_FILES[report.group_by], SPEND_FIELDS, _spend_rows(report.groups),
                  {"key": "api_key_id"}.get(report.group_by, report.group_by))] if report.group_by != "tier" else []),
        _write(out / CSV_FILES[bucket], SPEND_FIELDS, _spend_rows([p.total for p in report.days]), bucket),
        _write(out / CSV_FILES["latency"], LATENCY_FIELDS, [asdict(x) for x in report.latency]),
    ]


def write_json(report: CostReport, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.json"
    path.write_text(json.dumps(report.as_dict(), indent=2) + "\n", encoding="utf-8")
    return path
