"""The report's figures, read from the ledger once into plain dataclasses.

Everything a renderer shows (HTML, Markdown, CSV, JSON, the terminal, the plots) comes from
one ``CostReport``, so the formats cannot disagree with each other. Building it is the only
step that touches the database; renderers are pure functions of the dataclasses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import numpy as np
from sqlalchemy.engine import Engine

from gateway.ledger import queries
from gateway.ledger.queries import Bucket, savings_pct

PERCENTILES = (50, 95, 99)
SCORE_BINS = 20  # router score histogram: 20 bins of 0.05 over [0, 1]


@dataclass(frozen=True)
class Filters:
    """Which ledger rows a report covers; ``since`` inclusive, ``until`` exclusive, UTC."""

    since: datetime | None = None
    until: datetime | None = None
    api_key_id: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "since", queries.to_utc(self.since))
        object.__setattr__(self, "until", queries.to_utc(self.until))
        if self.since and self.until and self.since >= self.until:
            raise ValueError(f"--since ({self.since.isoformat()}) must be before --until ({self.until.isoformat()})")

    def args(self) -> tuple:
        return self.since, self.until, self.api_key_id


@dataclass
class Spend:
    """Money and volume for one slice of traffic (a tier, a key, a day, or everything)."""

    name: str
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    teacher_cost: float = 0.0
    share_pct: float = 0.0  # this slice's share of all requests in the report

    @property
    def savings(self) -> float:
        return self.teacher_cost - self.cost

    @property
    def savings_pct(self) -> float:
        return savings_pct(self.cost, self.teacher_cost)

    def as_dict(self) -> dict:
        return {**asdict(self), "savings": self.savings, "savings_pct": self.savings_pct}


@dataclass
class Latency:
    """End-to-end latency and time-to-first-token percentiles (ms) of one tier's answered requests."""

    tier: str
    count: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    ttft_count: int = 0
    ttft_p50_ms: float | None = None
    ttft_p95_ms: float | None = None
    ttft_p99_ms: float | None = None


@dataclass
class ScoreHistogram:
    """Router scores of ``auto`` requests, binned over [0, 1], with the threshold in force."""

    edges: list[float]
    counts: list[int]
    threshold: float | None
    scored: int
    at_or_above_threshold: int


@dataclass
class Period:
    """One time bucket: totals, and each tier's slice of it."""

    start: datetime
    total: Spend
    tiers: dict[str, Spend] = field(default_factory=dict)


GROUP_LABELS = {"key": "API key", "user": "User", "workload": "Workload", "tier": "Tier"}


@dataclass
class CostReport:
    filters: Filters
    generated_at: datetime
    teacher_tier: str | None
    first_request: datetime | None
    last_request: datetime | None
    total: Spend
    tiers: list[Spend]
    groups: list[Spend]  # per API key by default, or per `user` / workload / tier (``--by``)
    days: list[Period]
    statuses: dict[str, int]
    latency: list[Latency]
    scores: ScoreHistogram
    group_by: str = "key"

    @property
    def group_label(self) -> str:
        return GROUP_LABELS[self.group_by]

    @property
    def tier_names(self) -> list[str]:
        return [t.name for t in self.tiers]

    def as_dict(self) -> dict:
        """A JSON-ready document (datetimes as ISO strings)."""
        iso = lambda d: d.isoformat() if d else None  # noqa: E731
        return {
            "object": "cost_report",
            "generated_at": iso(self.generated_at),
            "filters": {"since": iso(self.filters.since), "until": iso(self.filters.until),
                        "api_key_id": self.filters.api_key_id},
            "teacher_tier": self.teacher_tier,
            "first_request": iso(self.first_request),
            "last_request": iso(self.last_request),
            "total": self.total.as_dict(),
            "tiers": [s.as_dict() for s in self.tiers],
            "group_by": self.group_by,
            "groups": [s.as_dict() for s in self.groups],
            "days": [{"start": iso(p.start), **p.total.as_dict(), "tiers": {n: s.as_dict() for n, s in p.tiers.items()}}
                     for p in self.days],
            "statuses": self.statuses,
            "latency": [asdict(x) for x in self.latency],
            "router_scores": asdict(self.scores),
        }


def _spend(name: str, figures: dict, all_requests: int) -> Spend:
    keep = {k: figures[k] for k in ("requests", "errors", "prompt_tokens", "completion_tokens", "cost", "teacher_cost")}
    share = 100.0 * figures["requests"] / all_requests if all_requests else 0.0
    return Spend(name=name, share_pct=share, **keep)


def _sum(name: str, parts: list[Spend], all_requests: int) -> Spend:
    total = Spend(name=name)
    for p in parts:
        total.requests += p.requests
        total.errors += p.errors
        total.prompt_tokens += p.prompt_tokens
        total.completion_tokens += p.completion_tokens
        total.cost += p.cost
        total.teacher_cost += p.teacher_cost
    total.share_pct = 100.0 * total.requests / all_requests if all_requests else 0.0
    return total


def periods(series: list[dict], all_requests: int | None = None, bucket: Bucket = "day") -> list[Period]:
    """Turn ``queries.timeseries`` rows into ``Period``s.

    A tier's ``share_pct`` is its share of the bucket's requests (tier share over time); the
    bucket total's is its share of ``all_requests`` (the whole report), when given.
    """
    out = []
    for row in series:
        n = sum(f["requests"] for f in row["tiers"].values())
        tiers = {name: _spend(name, f, n) for name, f in sorted(row["tiers"].items())}
        label = row["start"].strftime("%Y-%m-%d" if bucket == "day" else "%Y-%m-%d %H:00")
        out.append(Period(start=row["start"], total=_sum(label, list(tiers.values()), all_requests or n), tiers=tiers))
    return out


def percentiles(values: list[float]) -> list[float | None]:
    """p50/p95/p99 with numpy's default (linear) interpolation; None for no data."""
    if not values:
        return [None] * len(PERCENTILES)
    return [float(v) for v in np.percentile(np.asarray(values, dtype=float), PERCENTILES)]


def score_histogram(scores: list[float], threshold: float | None, bins: int = SCORE_BINS) -> ScoreHistogram:
    # Integer arithmetic on the bin index: np.linspace edges like 0.30000000000000004 would
    # put a score of exactly 0.3 in the bin below.
    counts = [0] * bins
    for s in scores:
        counts[min(bins - 1, max(0, int(np.floor(round(s * bins, 9)))))] += 1
    above = sum(1 for s in scores if threshold is not None and s >= threshold)
    return ScoreHistogram(edges=[i / bins for i in range(bins + 1)], counts=counts, threshold=threshold,
                          scored=len(scores), at_or_above_threshold=above)


def build_report(engine: Engine, filters: Filters = Filters(), *, teacher_tier: str | None = None,
                 bucket: Bucket = "day", now: datetime | None = None, group_by: queries.GroupBy = "key") -> CostReport:
    """Read everything a report needs from the ledger behind ``engine``."""
    args = filters.args()
    s = queries.summary(engine, *args)
    n = s["requests"]
    tiers = sorted((_spend(name, f, n) for name, f in s["tiers"].items()), key=lambda x: (-x.requests, x.name))
    groups = sorted((_spend(name, f, n) for name, f in queries.grouped(engine, *args, group_by).items()),
                    key=lambda x: (-x.cost, x.name))
    lat = []
    for tier, values in sorted(queries.latencies(engine, *args).items()):
        p = percentiles(values["latency_ms"])
        q = percentiles(values["ttft_ms"])
        lat.append(Latency(tier, len(values["latency_ms"]), *p, len(values["ttft_ms"]), *q))
    scores, threshold = queries.route_scores(engine, *args)
    first, last = queries.time_range(engine, *args)
    return CostReport(
        filters=filters,
        generated_at=now or datetime.now(UTC),
        teacher_tier=teacher_tier,
        first_request=first,
        last_request=last,
        total=_sum("total", tiers, n),
        tiers=tiers,
        groups=groups,
        group_by=group_by,
        days=periods(queries.timeseries(engine, *args, bucket=bucket), n, bucket),
        statuses=dict(sorted(queries.by_status(engine, *args).items())),
        latency=lat,
        scores=score_histogram(scores, threshold),
    )
