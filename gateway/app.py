"""The FastAPI application factory.

``create_app(config)`` builds an app whose lifespan owns every resource: the shared HTTP
client, the tiers (vLLM children included), the routing policy, the ledger writer and the
booking, and the serving objects the routes fetch (``entrypoints.dependencies``). On
shutdown, tiers stop taking work first, then the ledger drains, so no row is lost.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
from fastapi import FastAPI

from gateway.auth.authenticator import Authenticator
from gateway.auth.keys import KeyStore
from gateway.capture.policy import CapturePolicy
from gateway.capture.store import CaptureStore
from gateway.config import GatewayConfig, TierConfig, load_config
from gateway.control.reloader import RuntimeReloader
from gateway.control.store import ControlStore
from gateway.entrypoints.admin.api_router import router as admin_router
from gateway.entrypoints.admin.serving import AdminServing
from gateway.entrypoints.chat_completion.api_router import router as chat_router
from gateway.entrypoints.chat_completion.serving import ServingChat
from gateway.entrypoints.completion.api_router import router as completion_router
from gateway.entrypoints.completion.serving import ServingCompletion
from gateway.entrypoints.embeddings.api_router import router as embeddings_router
from gateway.entrypoints.embeddings.serving import ServingEmbedding
from gateway.entrypoints.costs.api_router import router as costs_router
from gateway.entrypoints.health.api_router import router as health_router
from gateway.entrypoints.keys.api_router import router as keys_router
from gateway.entrypoints.engine.capture import capture_sink
from gateway.entrypoints.engine.sinks import settle_sink, shadow_sink
from gateway.entrypoints.metrics.api_router import router as metrics_router
from gateway.entrypoints.models.api_router import router as models_router
from gateway.errors import install_error_handlers
from gateway.ledger import queries
from gateway.ledger.booking import Booking
from gateway.ledger.pricing import Pricing
from gateway.ledger.schema import make_engine
from gateway.ledger.writer import LedgerWriter
from gateway.limits import build_limiter
from gateway.loop_monitor import LoopMonitor
from gateway.metrics import GatewayMetrics, process_exiting
from gateway.routing.build import build_policy
from gateway.routing.workloads import RoutingTable
from gateway.shadow.sampler import ShadowSampler
from gateway.state import GatewayState
from gateway.tiers.base import (UPSTREAM_CONNECT_TIMEOUT_S, UPSTREAM_KEEPALIVE_S, UPSTREAM_MAX_CONNECTIONS,
                                UPSTREAM_TIMEOUT_S)
from gateway.tiers.registry import TierRegistry
from gateway.tiers.throughput import ThroughputMeter

log = logging.getLogger("gateway")

_POOL = {"limit": UPSTREAM_MAX_CONNECTIONS, "limit_per_host": 0, "keepalive_timeout": UPSTREAM_KEEPALIVE_S}


def create_app(config: GatewayConfig | None = None, *, tier_wait_s: float | None = None) -> FastAPI:
    """Build the gateway for ``config`` (the embedded defaults when None).

    ``tier_wait_s`` bounds how long start-up waits for tiers to become healthy (default: the
    longest vLLM start-up timeout in the config); tiers that are not ready by then keep
    starting in the background and are reported on ``/health``.
    """
    config = config or load_config()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The configured chain, behind per-workload routes; the table is what runtime control swaps.
        routing = RoutingTable(build_policy(config.router))
        engine = make_engine(config.ledger.url)
        ledger = LedgerWriter(engine, config.ledger.max_batch, max_backlog=config.ledger.max_backlog_rows,
                              state_dir=Path(config.state_dir))
        await ledger.start()
        # One session serves every client, so it keeps no cookies: one a tier sets on one answer
        # (a sticky-session balancer, a provider's bot check) would go out with everyone's next request.
        client = aiohttp.ClientSession(connector=aiohttp.TCPConnector(**_POOL), raise_for_status=False,
                                       timeout=aiohttp.ClientTimeout(total=UPSTREAM_TIMEOUT_S,
                                                                     connect=UPSTREAM_CONNECT_TIMEOUT_S),
                                       cookie_jar=aiohttp.DummyCookieJar())
        tiers = TierRegistry(config, client)
        keys = KeyStore(engine)
        meter = ThroughputMeter(tiers.metrics_urls(), client, poll_s=config.server.throughput_poll_s,  # per_hour tiers
                                window_s=config.server.throughput_window_s, min_busy_s=5 * config.server.throughput_poll_s)
        pricing, metrics = Pricing(config, meter.tokens_per_s), GatewayMetrics()
        loop_monitor = LoopMonitor(metrics.registry, config.server.loop_monitor_interval_s)
        auth = Authenticator(config.auth, keys, on_store_read=metrics.key_store_reads.inc)
        await auth.start()
        limiter = build_limiter(config.limits, lambda key_id, since: queries.spent_since(engine, key_id, since))
        shadow = ShadowSampler(config, tiers, engine, pricing, metrics, routing)
        await shadow.start()
        captures = CaptureStore(engine, config.capture)
        capture_tiers = set(config.capture.tiers or [t.model_name for t in config.model_list if t.role == "teacher"])
        capture = CapturePolicy(config.capture, capture_tiers, auth_enabled=config.auth.enabled,
                                counts=await asyncio.to_thread(captures.counts) if config.capture.enabled else {})
        if config.capture.enabled:
            await captures.start()
        booking = Booking(ledger, pricing, metrics, durability=config.ledger.durability,
                          commit_timeout_s=config.ledger.commit_timeout_s,
                          sinks=[shadow_sink(shadow), settle_sink(limiter), capture_sink(capture, captures)])
        app.state.tierwise = GatewayState(config=config, client=client, tiers=tiers, policy=routing, engine=engine,
                                          ledger=ledger, pricing=pricing, metrics=metrics, keys=keys, auth=auth,
                                          limiter=limiter, shadow=shadow, booking=booking)
        control = ControlStore(engine)

        def runtime_tiers_changed(runtime: dict[str, TierConfig]) -> None:
            shadow.student_roles = {t.model_name for t in config.model_list if t.role == "student"} | {
                name for name, t in runtime.items() if t.role == "student"}

        reloader = RuntimeReloader(control, tiers, routing, pricing, client, strong_tier=config.router.strong_tier,
                                   log_dir=Path(config.state_dir) / "logs", poll_s=config.server.runtime_poll_s,
                                   on_tiers_changed=runtime_tiers_changed,
                                   workload_teachers=config.shadow.workload_reference_tiers,
                                   router_config=config.router)
        app.state.serving_admin = AdminServing(control, reloader, tiers, {t.model_name for t in config.model_list})
        engine_collaborators = dict(config=config, tiers=tiers, policy=routing, booking=booking, pricing=pricing,
                                    limiter=limiter, shadow=shadow, metrics=metrics, capture=capture)
        app.state.serving_chat = ServingChat(**engine_collaborators)
        app.state.serving_completion = ServingCompletion(**engine_collaborators)
        app.state.serving_embedding = ServingEmbedding(**engine_collaborators)
        wait = tier_wait_s if tier_wait_s is not None else max(
            [t.vllm.startup_timeout_s for t in config.model_list if t.vllm] or [10.0])
        try:
            await tiers.start(wait)
            await reloader.start()  # runtime tiers and workload routes from the database
            meter.start()
            # Everything allocated so far lives as long as the app: keep the collector from
            # re-scanning it on every cycle (as vLLM does), which shortens GC pauses under load.
            gc.collect()
            gc.freeze()
            if config.server.gc_thresholds is not None:
                gc.set_threshold(*config.server.gc_thresholds)
            loop_monitor.start()  # after the start-up collection, which is no stall
            log.info("gateway ready: %d of %d tiers serving", len(tiers.ready()), len(config.model_list))
            yield
        finally:
            await loop_monitor.stop()
            await reloader.stop()
            await meter.stop()
            await shadow.stop()
            await tiers.stop()
            await captures.stop()
            await client.close()
            await limiter.close()
            await ledger.stop()
            process_exiting()
            log.info("gateway stopped; ledger drained")

    # The API docs describe every admin endpoint: served only where the config opens them.
    docs = config.server.expose_docs if config.server.expose_docs is not None else not config.auth.enabled
    app = FastAPI(title="tierwise gateway", version="0.1.0", lifespan=lifespan,
                  openapi_url="/openapi.json" if docs else None, docs_url="/docs" if docs else None,
                  redoc_url="/redoc" if docs else None,
                  description="OpenAI-compatible gateway that routes each request to the cheapest tier "
                              "that is good enough, and books what it cost.")
    install_error_handlers(app)
    for router in (chat_router, completion_router, embeddings_router, models_router, costs_router, keys_router,
                   health_router, metrics_router, admin_router):
        app.include_router(router)
    return app
