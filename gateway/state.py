"""Everything a request handler needs, built once per app and reached by dependency injection."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from sqlalchemy.engine import Engine

from gateway.auth.authenticator import Authenticator
from gateway.auth.keys import KeyStore
from gateway.config import GatewayConfig
from gateway.ledger.booking import Booking
from gateway.ledger.pricing import Pricing
from gateway.ledger.writer import LedgerWriter
from gateway.limits import Limiter
from gateway.metrics import GatewayMetrics
from gateway.routing.workloads import RoutingTable
from gateway.shadow.sampler import ShadowSampler
from gateway.tiers.registry import TierRegistry


@dataclass
class GatewayState:
    config: GatewayConfig
    client: aiohttp.ClientSession
    tiers: TierRegistry
    policy: RoutingTable  # the configured chain behind per-workload routes (runtime control swaps both)
    engine: Engine
    ledger: LedgerWriter
    pricing: Pricing
    metrics: GatewayMetrics
    keys: KeyStore
    auth: Authenticator
    limiter: Limiter
    shadow: ShadowSampler
    booking: Booking
