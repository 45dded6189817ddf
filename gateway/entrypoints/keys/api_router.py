"""``/v1/keys``: create, list and revoke API keys (admin keys only)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError

from gateway.auth.keys import ApiKey
from gateway.entrypoints.dependencies import admin_caller, get_state
from gateway.entrypoints.engine.body import openapi_body, read_json_object
from gateway.entrypoints.keys import serving
from gateway.entrypoints.keys.protocol import CreateKeyRequest
from gateway.errors import from_validation_error
from gateway.state import GatewayState

router = APIRouter(tags=["keys"])


@router.get("/v1/keys")
async def list_keys(_: ApiKey | None = Depends(admin_caller), state: GatewayState = Depends(get_state)) -> dict:
    return await serving.list_keys(state)


@router.post("/v1/keys", openapi_extra=openapi_body(CreateKeyRequest))
async def create_key(request: Request, _: ApiKey | None = Depends(admin_caller),
                     state: GatewayState = Depends(get_state)) -> dict:
    """Create a key. The secret is in this response only; it is stored hashed."""
    body = await read_json_object(request, state.config.server.max_body_bytes)
    try:
        spec = CreateKeyRequest.model_validate(body)
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    return await serving.create_key(state, spec)


@router.delete("/v1/keys/{key_id}")
async def revoke_key(key_id: str, _: ApiKey | None = Depends(admin_caller),
                     state: GatewayState = Depends(get_state)) -> dict:
    return await serving.revoke_key(state, key_id)
