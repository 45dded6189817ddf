"""The report's three plots, as PNG bytes.

Built on ``matplotlib.figure.Figure`` with the Agg canvas rather than pyplot: no global
figure state, no GUI backend, safe to call from a server thread. Every figure has the same
pixel size (``FIGSIZE * DPI``; saved without ``bbox_inches="tight"`` so the size is exact)
and renders something even for an empty ledger, so a report never lacks an image.
"""

from __future__ import annotations

import io
from datetime import timedelta

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

from gateway.reports.data import CostReport
from gateway.reports.formatting import DEFAULT_CURRENCY, money

FIGSIZE = (9.0, 4.0)  # inches
DPI = 100
PIXELS = (int(FIGSIZE[0] * DPI), int(FIGSIZE[1] * DPI))  # (width, height) of every PNG

ACTUAL, COUNTERFACTUAL = "#1f77b4", "#d62728"

# File names double as the keys renderers use to place each figure.
FIGURE_FILES = {"cost": "cost_over_time.png", "share": "tier_share_over_time.png", "scores": "router_scores.png"}


def _figure() -> Figure:
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _empty(ax, title: str) -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, "no requests in this period", ha="center", va="center", transform=ax.transAxes,
            color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


def _dates(ax, ticks: list, bucket: timedelta) -> None:
    """Label each bucket by its date (or hour) when they fit; fall back to automatic dates."""
    if len(ticks) <= 16:
        ax.set_xticks(ticks, [t.strftime("%b %d" if bucket >= timedelta(days=1) else "%b %d %H:00") for t in ticks])
        for label in ax.get_xticklabels():
            label.set_rotation(30 if len(ticks) > 7 else 0)
        return
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))


def cost_over_time(report: CostReport, bucket: timedelta = timedelta(days=1),
                   currency: str = DEFAULT_CURRENCY) -> bytes:
    """Actual spend per bucket next to the all-teacher counterfactual; the gap is the saving."""
    fig = _figure()
    ax = fig.add_subplot()
    title = "What we spent vs. what the teacher alone would have cost"
    if not report.days:
        _empty(ax, title)
        return _png(fig)
    x = [p.start.replace(tzinfo=None) for p in report.days]
    actual = [p.total.cost for p in report.days]
    teacher = [p.total.teacher_cost for p in report.days]
    ax.plot(x, teacher, marker="o", color=COUNTERFACTUAL, label="teacher alone (counterfactual)")
    ax.plot(x, actual, marker="o", color=ACTUAL, label="actual spend")
    ax.fill_between(x, actual, teacher, color="#2ca02c", alpha=0.15, label="saved")
    ax.set_title(title)
    ax.set_ylabel(f"cost per {'day' if bucket >= timedelta(days=1) else 'hour'}")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: money(v, currency)))
    ax.set_ylim(bottom=0)
    _dates(ax, x, bucket)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    return _png(fig)


def tier_share_over_time(report: CostReport, bucket: timedelta = timedelta(days=1)) -> bytes:
    """Stacked bars: which share of each bucket's requests each tier answered."""
    fig = _figure()
    ax = fig.add_subplot()
    title = "Share of requests per tier"
    if not report.days:
        _empty(ax, title)
        return _png(fig)
    x = [p.start.replace(tzinfo=None) + bucket / 2 for p in report.days]
    width = bucket * 0.8
    bottom = [0.0] * len(x)
    for name in report.tier_names:
        share = [p.tiers[name].share_pct if name in p.tiers else 0.0 for p in report.days]
        ax.bar(x, share, width=width, bottom=bottom, label=name)
        bottom = [b + s for b, s in zip(bottom, share, strict=True)]
    ax.set_title(title)
    ax.set_ylim(0, 100)
    ax.yaxis.set_major_formatter(PercentFormatter())
    _dates(ax, x, bucket)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig)


def router_scores(report: CostReport) -> bytes:
    """Histogram of router scores; requests right of the threshold went to the strong tier."""
    fig = _figure()
    ax = fig.add_subplot()
    h = report.scores
    title = "Router scores (how hard the router judged each request)"
    if not h.scored:
        _empty(ax, title)
        return _png(fig)
    lefts = h.edges[:-1]
    width = h.edges[1] - h.edges[0]
    colors = [COUNTERFACTUAL if h.threshold is not None and left >= h.threshold else ACTUAL for left in lefts]
    ax.bar(lefts, h.counts, width=width * 0.95, align="edge", color=colors)
    ax.set_ylim(0, max(h.counts) * 1.25)  # headroom for the legend
    if h.threshold is not None:
        handles = [Patch(color=ACTUAL, label="sent to a student"), Patch(color=COUNTERFACTUAL, label="sent to the teacher"),
                   ax.axvline(h.threshold, color="black", linestyle="--", label=f"threshold {h.threshold:.2f}")]
        ax.legend(handles=handles, loc="upper center", ncols=3)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    ax.set_xlim(0, 1)
    ax.set_xlabel("router score (higher: needs the teacher)")
    ax.set_ylabel("requests")
    ax.grid(alpha=0.3, axis="y")
    return _png(fig)


def render_all(report: CostReport, bucket: timedelta = timedelta(days=1),
               currency: str = DEFAULT_CURRENCY) -> dict[str, bytes]:
    """Every figure, keyed like ``FIGURE_FILES``."""
    return {
        "cost": cost_over_time(report, bucket, currency),
        "share": tier_share_over_time(report, bucket),
        "scores": router_scores(report),
    }
