"""Every report format renders from the known ledger and carries the hand-computed figures:
HTML parsed, PNGs checked byte-wise, CSV round-tripped, JSON loaded, the CLI run for real."""

from __future__ import annotations

import base64
import csv
import io
import json
import struct
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from known_ledger import EXPECTED, SINCE, UNTIL, ledger_url  # noqa: F401 (fixture)

from PIL import Image  # pillow comes with matplotlib

from gateway.ledger.schema import make_engine
from gateway.reports import figures
from gateway.reports.data import Filters
from gateway.reports.run import FORMATS, generate

REPO = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class _Page(HTMLParser):
    """Collects headings, table cells (per row) and image sources; fails on nothing by itself."""

    def __init__(self) -> None:
        super().__init__()
        self.headings: list[str] = []
        self.tables: list[list[list[str]]] = []
        self.table_classes: list[str | None] = []
        self.images: list[dict] = []
        self.scripts = 0
        self._text: list[str] | None = None
        self._row: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag in ("h1", "h2", "td", "th"):
            self._text = []
        if tag == "table":
            self.tables.append([])
            self.table_classes.append(dict(attrs).get("class"))
        if tag == "tr":
            self._row = []
        if tag == "img":
            self.images.append(dict(attrs))
        if tag == "script":
            self.scripts += 1

    def handle_endtag(self, tag):
        if tag in ("h1", "h2") and self._text is not None:
            self.headings.append(" ".join("".join(self._text).split()))
        if tag in ("td", "th") and self._text is not None and self._row is not None:
            self._row.append(" ".join("".join(self._text).split()))
        if tag == "tr" and self._row is not None:
            self.tables[-1].append(self._row)
            self._row = None
        if tag in ("h1", "h2", "td", "th"):
            self._text = None

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which the PNG spec puts first."""
    assert data[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


def check_png(data: bytes) -> None:
    assert len(data) > 5000  # a real plot, not an empty canvas
    assert png_size(data) == (figures.FIGSIZE[0] * figures.DPI, figures.FIGSIZE[1] * figures.DPI)
    grey = Image.open(io.BytesIO(data)).convert("L")
    assert len(grey.getcolors(256)) > 10, "the image is (nearly) one colour"


@pytest.fixture
def rendered(ledger_url, tmp_path):  # noqa: F811
    report, written = generate(ledger_url, Filters(SINCE, UNTIL), FORMATS, tmp_path / "out", teacher_tier="teacher")
    return report, tmp_path / "out", written


def test_html_is_self_contained_and_states_the_figures(rendered):
    _, out, _ = rendered
    page = _Page()
    page.feed((out / "report.html").read_text())
    page.close()
    for heading in ("What we spent", "What it would have cost on the teacher alone", "Saved"):
        assert heading in page.headings
    assert page.scripts == 0
    # Headline cards come right after their headings: $12.00 spent, $24.00 counterfactual, $12.00 saved.
    text = (out / "report.html").read_text()
    for heading, value in (("What we spent", "$12.00"), ("What it would have cost on the teacher alone", "$24.00"),
                           ("Saved", "$12.00")):
        after = text.split(f"<h2>{heading}</h2>", 1)[1][:200]
        assert f'<div class="value">{value}</div>' in after
    assert "50.0% less than the teacher alone" in text
    assert page.table_classes == ["spend", "spend", "spend", "latency", "statuses"]
    tiers, keys, days, latency, _ = ({r[0]: r for r in table} for table in page.tables)
    # student: 5 requests, 55.6% share, 1 failed, 810/400 tokens, $4 spent, $16 teacher, $12 saved, 75%
    assert tiers["student"] == ["student", "5", "55.6%", "1", "810", "400", "$4.00", "$16.00", "$12.00", "75.0%"]
    assert tiers["none (refused before a tier was chosen)"][1] == "1"
    assert keys["key-b"][6:] == ["$7.00", "$16.00", "$9.00", "56.2%"]
    assert keys["no key"][1] == "1"
    assert days["2026-03-03"][1] == "3" and days["2026-03-03"][6:8] == ["$4.50", "$12.00"]
    for table in (tiers, keys, days):
        assert table["Total"][1] == "9" and table["Total"][6:] == ["$12.00", "$24.00", "$12.00", "50.0%"]
    assert latency["teacher"][1:5] == ["2", "200 ms", "290 ms", "298 ms"]
    assert latency["student"][1:5] == ["4", "50 ms", "77 ms", "79 ms"]
    # three plots, embedded, each a valid PNG of the declared size
    assert len(page.images) == 3
    for img in page.images:
        assert img["src"].startswith("data:image/png;base64,")
        check_png(base64.b64decode(img["src"].split(",", 1)[1]))
        assert (int(img["width"]), int(img["height"])) == figures.PIXELS


def test_png_files_are_written_for_markdown(rendered):
    _, out, _ = rendered
    md = (out / "report.md").read_text()
    for name in figures.FIGURE_FILES.values():
        check_png((out / name).read_bytes())
        assert f"]({name})" in md
    assert "| What we spent | $12.00 |" in md
    assert "| What it would have cost on the teacher alone | $24.00 |" in md
    assert "| Saved | $12.00 (50.0%) |" in md
    assert "| student | 5 | 55.6% | 1 | 810 | 400 | $4.00 | $16.00 | $12.00 | 75.0% |" in md


def test_csv_round_trips_to_the_computed_figures(rendered):
    _, out, _ = rendered
    numeric = ("requests", "errors", "prompt_tokens", "completion_tokens", "cost", "teacher_cost", "savings_pct",
               "share_pct")
    for file, first, expected in (("tiers.csv", "tier", EXPECTED["tiers"]), ("keys.csv", "api_key_id", EXPECTED["keys"])):
        with (out / file).open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        got = {r[first]: tuple(float(r[k]) for k in numeric) for r in rows}
        assert set(got) == set(expected)
        for name, values in expected.items():
            assert got[name] == pytest.approx(values)
        assert {r[first]: float(r["savings"]) for r in rows} == pytest.approx(
            {n: v[5] - v[4] for n, v in expected.items()})
    with (out / "days.csv").open(newline="") as fh:
        days = {r["day"]: (int(r["requests"]), float(r["cost"]), float(r["teacher_cost"])) for r in csv.DictReader(fh)}
    assert days == EXPECTED["days"]  # exact: the CSV holds the floats as stored
    with (out / "latency.csv").open(newline="") as fh:
        lat = {r["tier"]: (int(r["count"]), float(r["p50_ms"]), float(r["p95_ms"]), float(r["p99_ms"]))
               for r in csv.DictReader(fh)}
    for tier, values in EXPECTED["latency"].items():
        assert lat[tier] == pytest.approx(values)


def test_json_is_one_document_with_the_figures(rendered):
    report, out, written = rendered
    doc = json.loads((out / "report.json").read_text())
    assert doc["object"] == "cost_report" and doc["teacher_tier"] == "teacher"
    assert (doc["total"]["cost"], doc["total"]["teacher_cost"], doc["total"]["savings_pct"]) == (12.0, 24.0, 50.0)
    assert doc["filters"]["since"] == SINCE.isoformat() and doc["filters"]["until"] == UNTIL.isoformat()
    assert [d["start"][:10] for d in doc["days"]] == sorted(EXPECTED["days"])
    assert doc["router_scores"]["at_or_above_threshold"] == 2
    assert {p.name for p in written} >= {"report.html", "report.md", "report.json", "tiers.csv", "keys.csv",
                                         "days.csv"} | set(figures.FIGURE_FILES.values())


def test_empty_ledger_still_renders_every_format(tmp_path):
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    make_engine(empty).dispose()  # a report only reads: the (empty) ledger must exist
    report, written = generate(empty, Filters(), FORMATS, tmp_path / "out")
    assert report.total.requests == 0
    for name in figures.FIGURE_FILES.values():
        check_png((tmp_path / "out" / name).read_bytes())
    assert "no requests in this period" in (tmp_path / "out" / "report.html").read_text()


def test_cli_writes_the_report_and_prints_a_summary(ledger_url, tmp_path):  # noqa: F811
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "gateway", "report", "--ledger-url", ledger_url,
                           "--since", "2026-03-01", "--until", "2026-03-04T00:00:00Z", "--key", "key-a",
                           "-f", "json", "-f", "csv", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "report.json").read_text())
    # key-a, rows 1, 2, 5, 8, 9: spent 2 + .5 + 0 + .5 + 2 = 5, teacher alone 2 + 2 + 0 + 2 + 2 = 8
    assert (doc["total"]["requests"], doc["total"]["cost"], doc["total"]["teacher_cost"]) == (5, 5.0, 8.0)
    assert (out / "tiers.csv").exists() and not (out / "report.html").exists()
    assert "$5.00" in proc.stdout and "$8.00" in proc.stdout and "37.5%" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "gateway", "report", "--ledger-url", ledger_url, "--since", "yesterday",
                          "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "--since" in bad.stderr


def test_cli_breaks_spend_down_by_user(ledger_url, tmp_path):  # noqa: F811
    out = tmp_path / "by-user"
    proc = subprocess.run([sys.executable, "-m", "gateway", "report", "--ledger-url", ledger_url,
                           "--since", "2026-03-01", "--until", "2026-03-04", "--by", "user", "-f", "csv", "-f", "md",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    with (out / "users.csv").open(newline="") as fh:
        rows = {r["user"]: (int(r["requests"]), float(r["cost"]), float(r["teacher_cost"])) for r in csv.DictReader(fh)}
    assert rows == {name: (v[0], v[4], v[5]) for name, v in EXPECTED["users"].items()}
    assert not (out / "keys.csv").exists() and "## Per user" in (out / "report.md").read_text()
    bad = subprocess.run([sys.executable, "-m", "gateway", "report", "--ledger-url", ledger_url, "--by", "colour",
                          "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "--by" in bad.stderr


def test_hourly_report_tables(ledger_url, tmp_path):  # noqa: F811
    report, _ = generate(ledger_url, Filters(SINCE, UNTIL), ["csv", "md"], tmp_path, bucket="hour")
    with (tmp_path / "hours.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    # rows 1-9 fall in 8 distinct UTC hours (rows 8 and 9 share 2026-03-03 09:00)
    assert [r["hour"] for r in rows][:3] == ["2026-03-01 00:00", "2026-03-01 10:00", "2026-03-01 23:00"]
    assert len(rows) == 8 and rows[-1]["hour"] == "2026-03-03 09:00" and rows[-1]["requests"] == "2"
    assert sum(float(r["cost"]) for r in rows) == pytest.approx(EXPECTED["cost"])
    assert "## Per hour (UTC)" in (tmp_path / "report.md").read_text()
    check_png((tmp_path / figures.FIGURE_FILES["cost"]).read_bytes())
