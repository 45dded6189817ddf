"""Text renderings: the Markdown report and the short summary printed to the terminal."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from gateway.reports import formatting as f
from gateway.reports.data import CostReport, Spend
from gateway.reports.figures import FIGURE_FILES

_SPEND_HEADER = ["Requests", "Share", "Failed", "Tokens in", "Tokens out", "Spent", "Teacher alone", "Saved",
                 "Saved %"]


def _spend_cells(s: Spend, currency: str) -> list[str]:
    return [f.count(s.requests), f.pct(s.share_pct), f.count(s.errors), f.count(s.prompt_tokens),
            f.count(s.completion_tokens), f.money(s.cost, currency), f.money(s.teacher_cost, currency),
            f.money(s.savings, currency), f.pct(s.savings_pct)]


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    align = ["---"] + ["---:"] * (len(header) - 1)
    return "\n".join([line(header), "| " + " | ".join(align) + " |", *(line(r) for r in rows)])


def _spend_md(first: str, rows: list[Spend], total: Spend, currency: str) -> str:
    body = [[r.name, *_spend_cells(r, currency)] for r in rows]
    body.append(["**Total**", *(f"**{c}**" for c in _spend_cells(total, currency))])
    return _md_table([first, *_SPEND_HEADER], body)


def render_markdown(report: CostReport, *, bucket: str = "day", currency: str = f.DEFAULT_CURRENCY,
                    images: dict[str, str] | None = None) -> str:
    """The report as Markdown tables; ``images`` maps figure keys to paths relative to the file."""
    images = images if images is not None else FIGURE_FILES
    t = report.total
    m = lambda v: f.money(v, currency)  # noqa: E731
    period = f.period(report.filters.since, report.filters.until, report.first_request, report.last_request)
    parts = [
        "# tierwise cost report",
        f"{period}" + (f" · API key `{report.filters.api_key_id}`" if report.filters.api_key_id else "")
        + f" · generated {report.generated_at:%Y-%m-%d %H:%M} UTC",
        _md_table(["", "Amount"], [
            ["What we spent", m(t.cost)],
            ["What it would have cost on the teacher alone", m(t.teacher_cost)],
            ["Saved", f"{m(t.savings)} ({f.pct(t.savings_pct)})"],
            ["Requests", f.count(t.requests)],
        ]),
        "## Per tier",
        _spend_md("Tier", report.tiers, t, currency),
        f"## Per {report.group_label.lower() if report.group_by != 'key' else 'API key'}",
        _spend_md(report.group_label, report.groups, t, currency),
        f"## Per {bucket} (UTC)",
        _spend_md("Day" if bucket == "day" else "Hour", [p.total for p in report.days], t, currency),
        "## Latency of answered requests",
        _md_table(["Tier", "Answered", "p50", "p95", "p99", "TTFT p50", "TTFT p95", "TTFT p99"],
                  [[x.tier, f.count(x.count), f.ms(x.p50_ms), f.ms(x.p95_ms), f.ms(x.p99_ms), f.ms(x.ttft_p50_ms),
                    f.ms(x.ttft_p95_ms), f.ms(x.ttft_p99_ms)] for x in report.latency]),
        "## Outcomes",
        _md_table(["Status", "Requests"], [[k, f.count(v)] for k, v in report.statuses.items()]),
        "## Router scores",
        (f"{f.count(report.scores.scored)} scored requests; {f.count(report.scores.at_or_above_threshold)} at or above "
         f"the threshold ({report.scores.threshold:.2f})." if report.scores.threshold is not None
         else f"{f.count(report.scores.scored)} scored requests."),
        "## Plots",
        *(f"![{name}]({path})" for name, path in images.items()),
    ]
    return "\n\n".join(parts) + "\n"


def print_summary(report: CostReport, console: Console, currency: str = f.DEFAULT_CURRENCY) -> None:
    """A few lines for whoever ran the command: the headline and the per-tier split."""
    m = lambda v: f.money(v, currency)  # noqa: E731
    t = report.total
    period = f.period(report.filters.since, report.filters.until, report.first_request, report.last_request)
    table = Table(title=f"tierwise costs, {period}", show_footer=True)
    table.add_column("Tier", footer="Total")
    for name, footer in [("Requests", f.count(t.requests)), ("Share", f.pct(t.share_pct)),
                         ("Spent", m(t.cost)), ("Teacher alone", m(t.teacher_cost)),
                         ("Saved", f"{m(t.savings)} ({f.pct(t.savings_pct)})")]:
        table.add_column(name, footer=footer, justify="right")
    for s in report.tiers:
        table.add_row(s.name, f.count(s.requests), f.pct(s.share_pct), m(s.cost), m(s.teacher_cost),
                      f"{m(s.savings)} ({f.pct(s.savings_pct)})")
    console.print(table)
