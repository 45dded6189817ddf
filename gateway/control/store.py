"""Runtime control in the ledger database: tiers registered while the gateway runs, the route
of each workload (its promoted student, competence index, canary and share), and a version
number that every change bumps in the same transaction.

Replicas poll ``version()`` (one indexed row; cheap) and reload ``snapshot()`` when it moved,
so the admin API, the CLI and the flywheel may write from any process and every replica
follows within a poll interval, without a restart. Synchronous SQLAlchemy: callers on the
event loop run it in a thread.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from gateway.config import TierConfig
from gateway.ledger.schema import runtime_router_table as router_t
from gateway.ledger.schema import runtime_tiers_table as tiers_t
from gateway.ledger.schema import runtime_version_table as version_t
from gateway.ledger.schema import workload_routes_table as routes_t


class ControlError(ValueError):
    """A control change that cannot apply (unknown tier, no canary to promote ...)."""


@dataclass(frozen=True)
class WorkloadRoute:
    workload: str
    tier: str | None = None
    competence_artifact: str | None = None
    canary_tier: str | None = None
    canary_share: float = 0.0
    previous_tier: str | None = None
    # the cascade confidence model of each tier (None: that tier answers alone)
    cascade_artifact: str | None = None
    canary_cascade_artifact: str | None = None
    previous_cascade_artifact: str | None = None

    def public(self) -> dict:
        return {"workload": self.workload, "tier": self.tier, "competence_artifact": self.competence_artifact,
                "canary_tier": self.canary_tier, "canary_share": self.canary_share, "previous_tier": self.previous_tier,
                "cascade_artifact": self.cascade_artifact, "canary_cascade_artifact": self.canary_cascade_artifact,
                "previous_cascade_artifact": self.previous_cascade_artifact}


@dataclass(frozen=True)
class RouterOverride:
    """The default chain's router artifact, threshold and competence index, set at runtime
    (None: the config's)."""

    artifact: str | None = None
    threshold: float | None = None
    competence_artifact: str | None = None


@dataclass(frozen=True)
class ControlSnapshot:
    version: int
    tiers: dict[str, TierConfig] = field(default_factory=dict)  # registered, not retired
    routes: dict[str, WorkloadRoute] = field(default_factory=dict)
    router: RouterOverride | None = None


class ControlStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- reads ---------------------------------------------------------------------------
    def version(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(version_t.c.version).where(version_t.c.id == 1)).scalar() or 0

    def snapshot(self) -> ControlSnapshot:
        with self.engine.connect() as conn:
            version = conn.execute(sa.select(version_t.c.version).where(version_t.c.id == 1)).scalar() or 0
            tiers = {r.name: TierConfig.model_validate(json.loads(r.config_json))
                     for r in conn.execute(sa.select(tiers_t).where(tiers_t.c.retired.is_(False)))}
            routes = {r.workload: WorkloadRoute(r.workload, r.tier, r.competence_artifact, r.canary_tier,
                                                float(r.canary_share or 0.0), r.previous_tier, r.cascade_artifact,
                                                r.canary_cascade_artifact, r.previous_cascade_artifact)
                      for r in conn.execute(sa.select(routes_t))}
            row = conn.execute(sa.select(router_t).where(router_t.c.id == 1)).first()
        router = RouterOverride(row.artifact, row.threshold, row.competence_artifact) if row is not None else None
        return ControlSnapshot(version, tiers, routes, router)

    # -- writes (each bumps the version in its transaction) --------------------------------
    def register_tier(self, tier: TierConfig) -> int:
        """Add (or replace) a tier; replicas build and start it on their next poll."""
        now = datetime.now(UTC)
        values = {"config_json": tier.model_dump_json(exclude_none=True), "retired": False, "updated_at": now}
        with self.engine.begin() as conn:
            updated = conn.execute(tiers_t.update().where(tiers_t.c.name == tier.model_name).values(**values)).rowcount
            if not updated:
                conn.execute(tiers_t.insert().values(name=tier.model_name, **values))
            return self._bump(conn)

    def retire_tier(self, name: str) -> int:
        with self.engine.begin() as conn:
            if not conn.execute(tiers_t.update().where(tiers_t.c.name == name)
                                .values(retired=True, updated_at=datetime.now(UTC))).rowcount:
                raise ControlError(f"no runtime tier {name!r}")
            return self._bump(conn)

    def set_router(self, artifact: str | None = None, threshold: float | None = None,
                   competence_artifact: str | None = None) -> int:
        """Replace the default chain's router artifact / threshold / competence index (None: the config's)."""
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ControlError("a router threshold is in [0, 1]")
        values = {"artifact": artifact, "threshold": threshold, "competence_artifact": competence_artifact,
                  "updated_at": datetime.now(UTC)}
        with self.engine.begin() as conn:
            if not conn.execute(router_t.update().where(router_t.c.id == 1).values(**values)).rowcount:
                conn.execute(router_t.insert().values(id=1, **values))
            return self._bump(conn)

    def set_canary(self, workload: str, tier: str, share: float, competence_artifact: str | None = None,
                   cascade_artifact: str | None = None) -> int:
        """Send ``share`` of ``workload``'s in-scope auto traffic to ``tier`` (0 < share <= 1);
        with ``cascade_artifact``, behind that student's cascade (the teacher answers when it is unsure)."""
        if not 0.0 < share <= 1.0:
            raise ControlError("a canary share is in (0, 1]")
        return self._update_route(workload, canary_tier=tier, canary_share=share,
                                  canary_cascade_artifact=cascade_artifact,
                                  **({"competence_artifact": competence_artifact} if competence_artifact else {}))

    def promote(self, workload: str) -> int:
        """The canary becomes the workload's tier (the old one is kept for rollback)."""
        route = self._route(workload)
        if route is None or route.canary_tier is None:
            raise ControlError(f"workload {workload!r} has no canary to promote")
        return self._update_route(workload, tier=route.canary_tier, previous_tier=route.tier, canary_tier=None,
                                  canary_share=0.0, cascade_artifact=route.canary_cascade_artifact,
                                  previous_cascade_artifact=route.cascade_artifact, canary_cascade_artifact=None)

    def rollback(self, workload: str) -> int:
        """Drop the canary if there is one; otherwise restore the previously promoted tier."""
        route = self._route(workload)
        if route is None:
            raise ControlError(f"workload {workload!r} has no route")
        if route.canary_tier is not None:
            return self._update_route(workload, canary_tier=None, canary_share=0.0, canary_cascade_artifact=None)
        return self._update_route(workload, tier=route.previous_tier, previous_tier=None,
                                  cascade_artifact=route.previous_cascade_artifact, previous_cascade_artifact=None)

    def _route(self, workload: str) -> WorkloadRoute | None:
        return self.snapshot().routes.get(workload)

    def _update_route(self, workload: str, **values: object) -> int:
        values["updated_at"] = datetime.now(UTC)
        with self.engine.begin() as conn:
            if not conn.execute(routes_t.update().where(routes_t.c.workload == workload).values(**values)).rowcount:
                conn.execute(routes_t.insert().values(workload=workload, **values))
            return self._bump(conn)

    @staticmethod
    def _bump(conn: Connection) -> int:
        now = datetime.now(UTC)
        if not conn.execute(version_t.update().where(version_t.c.id == 1)
                            .values(version=version_t.c.version + 1, updated_at=now)).rowcount:
            conn.execute(version_t.insert().values(id=1, version=1, updated_at=now))
        return conn.execute(sa.select(version_t.c.version).where(version_t.c.id == 1)).scalar_one()
