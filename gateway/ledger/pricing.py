"""What a request cost, and what it would have cost on the teacher.

Self-hosted tiers are priced from the config: per million tokens, or ``per_hour`` (the
machine's cost), which is turned into a per-token price with the tier's throughput as
measured from its vLLM server's ``/metrics`` (``gateway/tiers/throughput.py``) -- so savings
are compute-priced without a benchmark run. A hosted tier without a configured price takes
litellm's cost map. The counterfactual prices the *same* tokens at the teacher tier, which is
what "savings" is measured against. Every row also records the basis of its price
(``price_source``, and for compute prices the machine cost and throughput used).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from gateway.config import GatewayConfig, TierConfig

# litellm fetches its cost map from the network at import unless told not to; the copy in
# the package is what a gateway with no egress must use.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

# The measured generation throughput of a compute-priced tier (tokens/s), or None when unmeasured.
ThroughputOf = Callable[[str], float | None]


def _litellm() -> Any:
    """litellm, imported on first use: the import takes seconds and only litellm-priced tiers need it."""
    import litellm

    return litellm


def cost_from_map(model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    """litellm's list price for these tokens, or None if the model is not in its map."""
    try:
        prompt_cost, completion_cost = _litellm().cost_per_token(
            model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
        )
    except Exception:  # litellm raises bare Exceptions for unknown models
        return None
    return float(prompt_cost + completion_cost)


class Pricing:
    def __init__(self, config: GatewayConfig, throughput: ThroughputOf | None = None) -> None:
        self.tiers = {t.model_name: t for t in config.model_list}
        self.teacher = self.tiers[config.teacher_tier]
        self.throughput: ThroughputOf = throughput or (lambda tier: None)

    def tier_cost(self, tier: TierConfig, prompt_tokens: int, completion_tokens: int) -> float:
        if tier.price is not None:
            measured = self.throughput(tier.model_name) if tier.price.compute_priced else None
            return tier.price.cost(prompt_tokens, completion_tokens, measured)
        assert tier.litellm is not None  # the config guarantees a price otherwise
        return cost_from_map(tier.litellm.model, prompt_tokens, completion_tokens) or 0.0

    def costs(self, tier_name: str | None, prompt_tokens: int, completion_tokens: int) -> tuple[float, float]:
        """(actual cost, teacher counterfactual) for one request's tokens."""
        teacher_cost = self.tier_cost(self.teacher, prompt_tokens, completion_tokens)
        if tier_name is None or tier_name not in self.tiers:
            return 0.0, teacher_cost
        return self.tier_cost(self.tiers[tier_name], prompt_tokens, completion_tokens), teacher_cost

    def basis(self, tier_name: str | None) -> dict[str, Any]:
        """The ledger columns saying how ``tier_name`` was priced: ``list`` (configured per-token
        prices), ``map`` (litellm's cost map), ``measured`` or ``assumed`` (a per_hour price at the
        measured throughput, or at ``assumed_tokens_per_s`` before any measurement)."""
        tier = self.tiers.get(tier_name or "")
        if tier is None:
            return {"price_source": None, "price_per_hour": None, "price_tokens_per_s": None}
        if tier.price is None:
            return {"price_source": "map", "price_per_hour": None, "price_tokens_per_s": None}
        if not tier.price.compute_priced:
            return {"price_source": "list", "price_per_hour": None, "price_tokens_per_s": None}
        measured = self.throughput(tier.model_name)
        return {"price_source": "measured" if measured else "assumed", "price_per_hour": tier.price.per_hour,
                "price_tokens_per_s": measured or tier.price.assumed_tokens_per_s}

    def max_cost(self, tier_names: list[str], prompt_tokens: int, completion_tokens: int) -> float:
        """The most these tokens can cost on any of ``tier_names`` (a request's failover candidates):
        what a budget holds while the request runs."""
        return max((self.costs(name, prompt_tokens, completion_tokens)[0] for name in tier_names), default=0.0)
