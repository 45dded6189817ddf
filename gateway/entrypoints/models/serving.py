"""The OpenAI model list: one entry per ready tier and alias, and the routed ``auto``."""

from __future__ import annotations

import time

from gateway.state import GatewayState

_CREATED = int(time.time())


def _card(model_id: str, **extra: object) -> dict:
    return {"id": model_id, "object": "model", "created": _CREATED, "owned_by": "tierwise", **extra}


def list_models(state: GatewayState) -> dict:
    data = []
    ready = state.tiers.ready()
    if ready:
        data.append(_card("auto", tierwise={"routes_to": [t.name for t in ready], "policy": state.policy.name}))
    for tier in ready:
        meta = {"tier": tier.name, "role": tier.config.role, "max_model_len": tier.max_model_len,
                "supports": tier.config.supports.model_dump()}
        data.extend(_card(name, tierwise=meta) for name in tier.names)
    return {"object": "list", "data": data}
