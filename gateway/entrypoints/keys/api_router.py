"""``/v1/keys``: create, list and revoke API keys (admin keys only)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError

from gateway.entrypoints.dependencies import admin_caller
from gateway.auth.keys import ApiKey
from gateway.entrypoints.body import openapi_body, read_json_object
from gateway.entrypoints.keys.protocol import CreateKeyRequest
from gateway.errors import GatewayError, from_validation_error
from gateway.entrypoints.dependencies import get_state
from gateway.state import GatewayState

router = APIRouter(tags=["keys"])


@router.get("/v1/keys")
async def list_keys(_: ApiKey | None = Depends(admin_caller), state: GatewayState = Depends(get_state)) -> dict:
    keys = await asyncio.to_thread(state.keys.list)
    return {"object": "list", "data": [k.public() for k in keys]}


@router.post("/v1/keys", openapi_extra=openapi_body(CreateKeyRequest))
async def create_key(request: Request, _: ApiKey | None = Depends(admin_caller),
                     state: GatewayState = Depends(get_state)) -> dict:
    """Create a key. The secret is in this response only; it is stored hashed."""
    body = await read_json_object(request, state.config.server.max_body_bytes)
    try:
        spec = CreateKeyRequest.model_validate(body)
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    key, secret = await asyncio.to_thread(state.keys.create, **spec.model_dump())
    await state.auth.reload()
    return {**key.public(), "key": secret}


@router.delete("/v1/keys/{key_id}")
async def revoke_key(key_id: str, _: ApiKey | None = Depends(admin_caller),
                     state: GatewayState = Depends(get_state)) -> dict:
    if not await asyncio.to_thread(state.keys.revoke, key_id):
        raise GatewayError(f"No active key with id '{key_id}'.", status_code=404, param="key_id",
                           code="key_not_found")
    await state.auth.reload()
    return {"id": key_id, "revoked": True}
