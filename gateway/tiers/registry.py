"""All configured tiers, looked up by name or alias, started and stopped together."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp

from gateway.config import GatewayConfig, TierConfig
from gateway.tiers.base import Tier
from gateway.tiers.openai_http import OpenAIHTTPTier
from gateway.tiers.throughput import metrics_url_of
from gateway.tiers.vllm_process import AdapterTier, VLLMProcessTier

log = logging.getLogger("gateway.tiers")


def build_tier(config: GatewayConfig, name: str, client: aiohttp.ClientSession,
               built: dict[str, Tier] | None = None) -> Tier:
    """The tier called ``name``; an adapter tier (``served_by``) needs its host in ``built``."""
    return build_tier_from(config.tier(name), client, Path(config.state_dir) / "logs", built)


def build_tier_from(tier_config: TierConfig, client: aiohttp.ClientSession, log_dir: Path,
                    built: dict[str, Tier] | None = None) -> Tier:
    """A tier from its ``model_list`` entry (configured, or registered at runtime)."""
    if tier_config.served_by:
        host = (built or {}).get(tier_config.served_by)
        if not isinstance(host, VLLMProcessTier):
            raise ValueError(f"tier {tier_config.model_name!r}: host tier {tier_config.served_by!r} must be built first")
        return AdapterTier(tier_config, client, host)
    if tier_config.vllm:
        return VLLMProcessTier(tier_config, client, log_dir=log_dir)
    if tier_config.url:
        return OpenAIHTTPTier(tier_config, client)
    from gateway.tiers.litellm_provider import LiteLLMTier

    return LiteLLMTier(tier_config)


class TierRegistry:
    def __init__(self, config: GatewayConfig, client: aiohttp.ClientSession) -> None:
        built: dict[str, Tier] = {}
        # Adapter tiers last: they attach to their host's process.
        for tier in sorted(config.model_list, key=lambda t: t.served_by is not None):
            built[tier.model_name] = build_tier(config, tier.model_name, client, built)
        self.tiers: dict[str, Tier] = {t.model_name: built[t.model_name] for t in config.model_list}
        self._by_name: dict[str, Tier] = {name: tier for tier in self.tiers.values() for name in tier.names}

    def add(self, tier: Tier) -> Tier | None:
        """Add (or replace) a tier at runtime; returns the tier it replaced. One assignment per
        map, so a request resolving a name sees the old registry or the new one."""
        old = self.tiers.get(tier.name)
        self.tiers = {**self.tiers, tier.name: tier}
        self._by_name = {name: t for t in self.tiers.values() for name in t.names}
        return old

    def remove(self, name: str) -> Tier | None:
        """Take a tier out (requests in flight keep their reference and finish)."""
        old = self.tiers.get(name)
        if old is not None:
            self.tiers = {k: v for k, v in self.tiers.items() if k != name}
            self._by_name = {n: t for t in self.tiers.values() for n in t.names}
        return old

    def resolve(self, model: str) -> Tier | None:
        """The tier called ``model`` (its name or an alias), or None."""
        return self._by_name.get(model)

    def __iter__(self):
        return iter(self.tiers.values())

    def metrics_urls(self) -> dict[str, str]:
        """``/metrics`` URL of each compute-priced (``price.per_hour``) tier's server."""
        urls = {}
        for tier in self.tiers.values():
            price = tier.config.price
            if price is not None and price.compute_priced:
                url = metrics_url_of(tier.config, getattr(tier, "base_url", None))
                if url is not None:
                    urls[tier.name] = url
        return urls

    def ready(self) -> list[Tier]:
        return [t for t in self.tiers.values() if t.is_ready]

    async def start(self, wait_s: float) -> None:
        """Start every tier and wait (at most ``wait_s``) for them; say which are missing."""
        await asyncio.gather(*(t.start() for t in self.tiers.values()))
        await asyncio.gather(*(t.wait_ready(wait_s) for t in self.tiers.values()))
        for tier in self.tiers.values():
            if tier.is_ready:
                log.info("tier %s (%s) ready", tier.name, tier.config.kind)
            else:
                log.warning("tier %s is %s: %s; requests are routed to the tiers that exist",
                            tier.name, tier.status.value, tier.detail)

    async def stop(self) -> None:
        await asyncio.gather(*(t.stop() for t in self.tiers.values()), return_exceptions=True)
