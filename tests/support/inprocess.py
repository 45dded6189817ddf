"""The gateway app in the test's own process: ``create_app`` behind ``httpx.ASGITransport``.

For logic that needs no server process (request validation, error shapes, admin checks, the
health and model views): no port, no uvicorn start-up, and ``app.dependency_overrides`` to
stand in for who is calling. The lifespan still runs in full (ledger writer, key store, tiers'
health checks), so the app under test is the one ``python -m gateway serve`` builds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant

from gateway.app import create_app
from gateway.config import parse_config


@asynccontextmanager
async def running_app(raw_config: dict, *, tier_wait_s: float = 10.0) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app for ``raw_config`` with its lifespan entered, and a client that calls it in-process."""
    app = create_app(parse_config(raw_config), tier_wait_s=tier_wait_s)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test", timeout=30) as client:
            yield app, client


def dependency_named(app: FastAPI, name: str) -> Callable[..., Any]:
    """The dependency callable called ``name`` that the app's routes use, wherever its module is.

    Overrides are keyed by the callable itself; finding it through the routes keeps these tests
    about what the app depends on, not about which module defines it.
    """
    def walk(dependant: Dependant) -> Callable[..., Any] | None:
        for sub in dependant.dependencies:
            if getattr(sub.call, "__name__", None) == name:
                return sub.call
            found = walk(sub)
            if found is not None:
                return found
        return None

    for route in app.routes:
        dependant = getattr(route, "dependant", None)
        found = walk(dependant) if dependant is not None else None
        if found is not None:
            return found
    raise LookupError(f"no route of the app depends on a callable named {name!r}")
