"""The HTML report: one self-contained file a finance reader can open and forward.

The plots are embedded as base64 ``data:`` URIs and the styling is inline, so the file has no
dependencies (no JS, no image files next to it) and survives being e-mailed.
"""

from __future__ import annotations

import base64
from importlib import resources

import jinja2

from gateway.reports import formatting as f
from gateway.reports.data import CostReport
from gateway.reports.figures import PIXELS

STATUS_WORDS = {
    "ok": "Answered",
    "error": "Failed at the model (upstream error)",
    "rejected": "Refused (bad request, unknown model, or tier unavailable)",
    "client_disconnected": "Client hung up before the answer finished",
}


def _environment(currency: str) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(
            lambda name: resources.files("gateway.reports").joinpath("templates", name).read_text()),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a typo in the template fails the render, not silently blank
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(money=lambda v: f.money(v, currency), pct=f.pct, count=f.count, ms=f.ms,
                       status_words=STATUS_WORDS)
    return env


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_html(report: CostReport, images: dict[str, bytes], *, bucket: str = "day",
                currency: str = f.DEFAULT_CURRENCY) -> str:
    """The report as one HTML document; ``images`` are ``figures.render_all``'s PNGs."""
    template = _environment(currency).get_template("report.html.j2")
    return template.render(
        report=report,
        total=report.total,
        days=[p.total for p in report.days],
        scores=report.scores,
        teacher=report.teacher_tier,
        key=report.filters.api_key_id,
        period=f.period(report.filters.since, report.filters.until, report.first_request, report.last_request),
        generated=report.generated_at.strftime("%Y-%m-%d %H:%M UTC"),
        bucket_word=bucket,
        images={name: data_uri(png) for name, png in images.items()},
        width=PIXELS[0],
        height=PIXELS[1],
    )
