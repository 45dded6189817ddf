"""Every replica follows the control state in the database, without a restart.

``RuntimeReloader`` polls ``ControlStore.version()`` every ``poll_s``; when it moved, it reads
the snapshot and applies it on this replica: registered tiers are built, started and added
to the registry (and priced); retired ones are taken out and stopped after a grace period
(requests in flight hold their own reference and finish); the per-workload routes are built
(competence indexes and cascade confidence models loaded in a worker thread) and swapped into
the routing table in one assignment. A failed poll or a bad artifact is logged and retried on the next change; the
replica keeps serving with what it had. ``poke()`` applies at once (the admin API calls it
after a change, so the replica that took the call is current when it answers).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from pathlib import Path

import aiohttp

from gateway.config import CompetenceGateConfig, RouterConfig, TierConfig
from gateway.control.store import ControlSnapshot, ControlStore, RouterOverride
from gateway.ledger.pricing import Pricing
from gateway.routing.build import build_policy
from gateway.routing.cascade import Cascade
from gateway.routing.cascade_policy import load_cascade
from gateway.routing.workloads import RoutingTable, WorkloadPolicy
from gateway.tiers.base import Tier
from gateway.tiers.registry import TierRegistry, build_tier_from

log = logging.getLogger("gateway.control")

RETIRE_GRACE_S = 30.0  # a retired tier keeps running this long for the requests still on it


def _cascade(artifact: str | None, teacher: str) -> Cascade | None:
    """A workload tier's cascade, escalating to the workload's own teacher (scikit-learn: in a thread)."""
    if not artifact:
        return None
    from router.confidence import DECISION_TOKENS

    return load_cascade(artifact, None, DECISION_TOKENS, escalate_to=teacher)


class RuntimeReloader:
    def __init__(self, store: ControlStore, registry: TierRegistry, routing: RoutingTable, pricing: Pricing,
                 client: aiohttp.ClientSession, *, strong_tier: str, log_dir: Path, poll_s: float = 1.0,
                 on_tiers_changed: Callable[[dict[str, TierConfig]], None] | None = None,
                 workload_teachers: dict[str, str] | None = None, router_config: RouterConfig | None = None) -> None:
        self.store = store
        self.registry = registry
        self.routing = routing
        self.pricing = pricing
        self.client = client
        self.strong_tier = strong_tier
        # A workload's own teacher (``shadow.workload_reference_tiers``): where its requests
        # beyond the student's competence go, and what its student is compared with.
        self.workload_teachers = workload_teachers or {}
        self.router_config = router_config  # the config's chain, which a runtime router override amends
        self.router_applied: RouterOverride | None = None
        self.log_dir = log_dir
        self.poll_s = poll_s
        self.on_tiers_changed = on_tiers_changed
        self.version = -1
        self.runtime: dict[str, TierConfig] = {}  # the runtime tiers this replica runs
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self._background: set[asyncio.Task] = set()

    async def start(self) -> None:
        await self.poke()
        self._task = asyncio.create_task(self._run(), name="runtime-reloader")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for name in list(self.runtime):
            tier = self.registry.remove(name)
            if tier is not None:
                await tier.stop()

    async def poke(self) -> None:
        """Apply the database's state now if it changed."""
        async with self._lock:
            try:
                version = await asyncio.to_thread(self.store.version)
                if version == self.version:
                    return
                snapshot = await asyncio.to_thread(self.store.snapshot)
                await self._apply(snapshot)
            except Exception as exc:  # noqa: BLE001 - keep serving with what we had
                log.warning("runtime control: not applied (%s); retrying on the next poll", exc)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            await self.poke()

    async def _apply(self, snapshot: ControlSnapshot) -> None:
        for name, config in snapshot.tiers.items():
            if self.runtime.get(name) != config:
                await self._add_tier(config)
        for name in [n for n in self.runtime if n not in snapshot.tiers]:
            self._retire(name)
        self.runtime = dict(snapshot.tiers)
        policies = await asyncio.to_thread(self._build_routes, snapshot)
        if snapshot.router != self.router_applied and self.router_config is not None:
            self.routing.default = await asyncio.to_thread(build_policy, self._router_config(snapshot.router))
            self.router_applied = snapshot.router
            log.info("runtime control: default routing rebuilt: %s", self.routing.default.name)
        self.routing.replace(policies)
        if self.on_tiers_changed is not None:
            self.on_tiers_changed(self.runtime)
        self.version = snapshot.version
        log.info("runtime control: version %d applied (%d runtime tiers, %d workload routes)",
                 snapshot.version, len(snapshot.tiers), len(policies))

    async def _add_tier(self, config: TierConfig) -> None:
        tier = build_tier_from(config, self.client, self.log_dir, self.registry.tiers)
        self.pricing.tiers[config.model_name] = config
        await tier.start()
        await tier.wait_ready(5.0)  # URL tiers are checked now; a vLLM child keeps starting in the background
        old = self.registry.add(tier)
        if old is not None:
            self._stop_later(old)
        log.info("runtime control: tier %s (%s) registered, %s", tier.name, config.kind, tier.status.value)

    def _retire(self, name: str) -> None:
        tier = self.registry.remove(name)
        if tier is not None:
            self._stop_later(tier)
            log.info("runtime control: tier %s retired", name)

    def _stop_later(self, tier: Tier) -> None:
        async def stop() -> None:
            await asyncio.sleep(RETIRE_GRACE_S)
            await tier.stop()

        task = asyncio.create_task(stop())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _router_config(self, override: RouterOverride | None) -> RouterConfig:
        """The config's router section with the runtime override applied (None: as configured)."""
        assert self.router_config is not None
        if override is None:
            return self.router_config
        update: dict = {}
        if override.artifact is not None:
            update.update(artifact=override.artifact, policy="trained")
        if override.threshold is not None:
            update["threshold"] = override.threshold
        if override.competence_artifact is not None:
            # The new student's index with the configured gate's other settings (its out-of-scope
            # tier, its band and the band's check); its own threshold, not an override made for another.
            gate = self.router_config.competence
            update["competence"] = (gate.model_copy(update={"artifact": override.competence_artifact, "threshold": None})
                                    if gate else CompetenceGateConfig(artifact=override.competence_artifact))
        return self.router_config.model_copy(update=update)

    def _build_routes(self, snapshot: ControlSnapshot) -> dict[str, WorkloadPolicy]:
        """The workload policies of ``snapshot`` (loads competence indexes: run in a thread)."""
        policies = {}
        for workload, route in snapshot.routes.items():
            index = None
            if route.competence_artifact:
                from router.competence import load_competence  # scikit-learn + skops, off the loop

                index = load_competence(route.competence_artifact).index
            strong = self.workload_teachers.get(workload, self.strong_tier)
            policies[workload] = WorkloadPolicy(workload, route.tier, strong, index, route.canary_tier,
                                                route.canary_share, random.Random(),
                                                teacher_until_promoted=workload in self.workload_teachers,
                                                cascade=_cascade(route.cascade_artifact, strong),
                                                canary_cascade=_cascade(route.canary_cascade_artifact, strong))
        for workload, teacher in self.workload_teachers.items():  # no route yet: served by its teacher
            policies.setdefault(workload, WorkloadPolicy(workload, None, teacher, teacher_until_promoted=True))
        return policies
