"""The Grafana dashboard only queries metrics that the gateway really exposes.

A renamed metric in gateway/metrics.py would otherwise leave panels silently empty: this
test builds the gateway's registry, feeds it a ledger row (as a finished request does),
and checks every PromQL expression in deploy/grafana/ against the names it exposes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.ledger.booking import RequestRecord
from gateway.metrics import GatewayMetrics
from gateway.routing.policy import RouteDecision

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "tierwise-dashboard.json"

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or",
                "unless", "inf", "nan"}


def exposed_names() -> set[str]:
    metrics = GatewayMetrics()
    metrics.observe(RequestRecord(endpoint="chat", tier="student", prompt_tokens=5, completion_tokens=7, cost=0.1,
                                  teacher_cost=0.4, latency_ms=120.0, ttft_ms=30.0,
                                  decision=RouteDecision("student", score=0.3, threshold=0.5, policy="trained")))
    metrics.tier_up.labels("student").set(1)  # as GET /metrics does
    metrics.ledger_backlog.set(0)
    text = generate_latest(metrics.registry).decode()
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords,
    label names (inside ``{}``/``by ()``), durations (``[...]``) or Grafana variables."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\$\{?\w+\}?", "", expr)  # $__range, ${datasource}
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", expr):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def expressions(dashboard: dict) -> list[str]:
    exprs = []

    def walk(panels: list[dict]) -> None:
        for panel in panels:
            exprs.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    for var in dashboard["templating"]["list"]:
        query = var.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        match = re.fullmatch(r"label_values\((\w+),\s*\w+\)", query or "")
        if match:
            exprs.append(match.group(1))
    return exprs


def test_metric_name_extraction():
    assert metric_names('histogram_quantile(0.95, sum by (le, tier) (rate(a_bucket{status="ok",tier=~"$tier"}[5m])))') == {"a_bucket"}
    assert metric_names("100 * (1 - sum(increase(x_total[$__range])) / sum(increase(y_total[$__range])))") == {"x_total", "y_total"}
    assert metric_names("max(backlog) offset 5m") == {"backlog"}


def test_every_dashboard_query_uses_exposed_metrics():
    dashboard = json.loads(DASHBOARD.read_text())
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    exposed = exposed_names()
    exprs = expressions(dashboard)
    assert len(exprs) >= 15
    used = set()
    for expr in exprs:
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= exposed, f"{expr!r} uses {names - exposed}, not exposed by the gateway"
        used |= names
    # the panels the dashboard promises
    for name in ("tierwise_cost_total", "tierwise_teacher_counterfactual_cost_total", "tierwise_requests_total",
                 "tierwise_request_latency_seconds_bucket", "tierwise_time_to_first_token_seconds_bucket",
                 "tierwise_route_score_bucket", "tierwise_tier_up", "tierwise_ledger_backlog_rows"):
        assert name in used, name
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
