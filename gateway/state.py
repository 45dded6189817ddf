"""Everything a request handler needs, built once per app and reached by dependency injection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
from fastapi import Request
from sqlalchemy.engine import Engine

from gateway.auth.keys import KeyStore
from gateway.config import GatewayConfig
from gateway.ledger.pricing import Pricing
from gateway.ledger.writer import LedgerWriter
from gateway.metrics import GatewayMetrics
from gateway.routing.policy import RoutingPolicy
from gateway.tiers.registry import TierRegistry

if TYPE_CHECKING:  # the authenticator's module imports this one for its dependencies
    from gateway.auth.authenticator import Authenticator
    from gateway.limits import Limiter
    from gateway.shadow.sampler import ShadowSampler


@dataclass
class GatewayState:
    config: GatewayConfig
    client: aiohttp.ClientSession
    tiers: TierRegistry
    policy: RoutingPolicy
    engine: Engine
    ledger: LedgerWriter
    pricing: Pricing
    metrics: GatewayMetrics
    keys: KeyStore
    auth: Authenticator
    limiter: Limiter
    shadow: ShadowSampler
    in_flight: int = 0  # sampling requests being handled now (the ledger's inline-commit signal)


async def get_state(request: Request) -> GatewayState:
    """FastAPI dependency: the app's state (set up by the lifespan).

    ``async`` on purpose: FastAPI runs a plain ``def`` dependency in a thread pool, a
    thread hop on every request for what is an attribute read.
    """
    return request.app.state.tierwise
