"""Runtime control over HTTP: register and retire tiers, canary, promote and roll back a
workload's student, show what is live. Every change is written to the database (all replicas
follow within ``server.runtime_poll_s``) and applied on this replica before the answer."""

from __future__ import annotations

import asyncio
import os

from pydantic import ValidationError

from gateway.config import TierConfig
from gateway.control.reloader import RuntimeReloader
from gateway.control.store import ControlError, ControlStore
from gateway.entrypoints.admin.protocol import CanaryRequest, RouterRequest
from gateway.errors import GatewayError, from_validation_error
from gateway.tiers.registry import TierRegistry


class AdminServing:
    def __init__(self, store: ControlStore, reloader: RuntimeReloader, tiers: TierRegistry,
                 configured: set[str]) -> None:
        self.store = store
        self.reloader = reloader
        self.tiers = tiers
        self.configured = configured  # names from the config file: not replaceable at runtime

    async def show(self) -> dict:
        snapshot = await asyncio.to_thread(self.store.snapshot)
        return {"version": snapshot.version, "applied_version": self.reloader.version,
                "tiers": {name: {**t.model_dump(mode="json", exclude_none=True),
                                 "status": (self.tiers.resolve(name).status.value if self.tiers.resolve(name) else "absent")}
                          for name, t in snapshot.tiers.items()},
                "workloads": {w: r.public() for w, r in snapshot.routes.items()},
                "router": snapshot.router.__dict__ if snapshot.router else None}

    async def register(self, body: dict) -> dict:
        try:
            tier = TierConfig.model_validate(body)
        except ValidationError as exc:
            raise from_validation_error(exc) from None
        if tier.model_name in self.configured:
            raise GatewayError(f"Tier `{tier.model_name}` is defined in the config file; register another name.",
                               param="model_name", code="tier_exists")
        if tier.served_by:
            raise GatewayError("Adapter tiers (served_by) cannot be registered at runtime.", param="served_by")
        return await self._apply(self.store.register_tier, tier)

    async def retire(self, name: str) -> dict:
        return await self._apply(self.store.retire_tier, name)

    async def canary(self, workload: str, spec: CanaryRequest) -> dict:
        if self.tiers.resolve(spec.tier) is None and spec.tier not in (await asyncio.to_thread(self.store.snapshot)).tiers:
            raise GatewayError(f"No tier `{spec.tier}`: register it first.", status_code=404, param="tier",
                               code="model_not_found")
        await self._check_files(spec.competence_artifact, spec.cascade_artifact)
        return await self._apply(self.store.set_canary, workload, spec.tier, spec.share, spec.competence_artifact,
                                 spec.cascade_artifact)

    async def set_router(self, spec: RouterRequest) -> dict:
        await self._check_files(spec.artifact, spec.competence_artifact)
        return await self._apply(self.store.set_router, spec.artifact, spec.threshold, spec.competence_artifact)

    @staticmethod
    async def _check_files(*paths: str | None) -> None:
        for path in paths:
            if path is not None and not await asyncio.to_thread(os.path.isfile, path):
                raise GatewayError(f"No file {path} on this replica.", status_code=404, code="artifact_not_found")

    async def promote(self, workload: str) -> dict:
        return await self._apply(self.store.promote, workload)

    async def rollback(self, workload: str) -> dict:
        return await self._apply(self.store.rollback, workload)

    async def _apply(self, change, *args) -> dict:
        try:
            version = await asyncio.to_thread(change, *args)
        except ControlError as exc:
            raise GatewayError(str(exc), status_code=409, code="conflict") from None
        await self.reloader.poke()
        return {"version": version, "applied": self.reloader.version >= version}
