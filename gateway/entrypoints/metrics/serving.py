"""Prometheus exposition: the gauges read at scrape time, then the registry in text format."""

from __future__ import annotations

from gateway.metrics import render
from gateway.state import GatewayState


def render_metrics(state: GatewayState) -> bytes:
    """Set the scrape-time gauges (tier up, ledger backlog) and render every metric."""
    for tier in state.tiers:
        state.metrics.tier_up.labels(tier.name).set(1 if tier.is_ready else 0)
    state.metrics.ledger_backlog.set(state.ledger.backlog)
    return render(state.metrics.registry)
