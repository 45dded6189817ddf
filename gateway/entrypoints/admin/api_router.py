"""``/v1/admin``: runtime tiers and workload routes (admin keys only)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError

from gateway.entrypoints.admin.protocol import CanaryRequest, RouterRequest
from gateway.entrypoints.admin.serving import AdminServing
from gateway.entrypoints.dependencies import admin_caller, admin_serving, get_state
from gateway.entrypoints.engine.body import read_json_object
from gateway.errors import from_validation_error
from gateway.state import GatewayState

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(admin_caller)])


@router.get("/runtime")
async def show_runtime(serving: AdminServing = Depends(admin_serving)) -> dict:
    """Registered tiers, workload routes, and the control version (stored and applied here)."""
    return await serving.show()


@router.post("/tiers")
async def register_tier(request: Request, serving: AdminServing = Depends(admin_serving),
                        state: GatewayState = Depends(get_state)) -> dict:
    """Register a tier (a ``model_list`` entry) at runtime; every replica starts it."""
    return await serving.register(await read_json_object(request, state.config.server.max_body_bytes))


@router.delete("/tiers/{name}")
async def retire_tier(name: str, serving: AdminServing = Depends(admin_serving)) -> dict:
    return await serving.retire(name)


@router.post("/workloads/{workload}/canary")
async def set_canary(workload: str, request: Request, serving: AdminServing = Depends(admin_serving),
                     state: GatewayState = Depends(get_state)) -> dict:
    try:
        spec = CanaryRequest.model_validate(await read_json_object(request, state.config.server.max_body_bytes))
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    return await serving.canary(workload, spec)


@router.post("/workloads/{workload}/promote")
async def promote(workload: str, serving: AdminServing = Depends(admin_serving)) -> dict:
    return await serving.promote(workload)


@router.post("/workloads/{workload}/rollback")
async def rollback(workload: str, serving: AdminServing = Depends(admin_serving)) -> dict:
    return await serving.rollback(workload)


@router.put("/router")
async def set_router(request: Request, serving: AdminServing = Depends(admin_serving),
                     state: GatewayState = Depends(get_state)) -> dict:
    """Replace the default chain's router artifact, threshold or competence index on every replica."""
    try:
        spec = RouterRequest.model_validate(await read_json_object(request, state.config.server.max_body_bytes))
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    return await serving.set_router(spec)
