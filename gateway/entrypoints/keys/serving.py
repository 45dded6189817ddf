"""API keys over HTTP: list, create (the secret is returned once), revoke.

The key store is synchronous SQLAlchemy: each call runs on a worker thread so the event loop
never waits on the database; the authenticator's cache is reloaded after every change.
"""

from __future__ import annotations

import asyncio

from gateway.entrypoints.keys.protocol import CreateKeyRequest
from gateway.errors import GatewayError
from gateway.state import GatewayState


async def list_keys(state: GatewayState) -> dict:
    keys = await asyncio.to_thread(state.keys.list)
    return {"object": "list", "data": [k.public() for k in keys]}


async def create_key(state: GatewayState, spec: CreateKeyRequest) -> dict:
    key, secret = await asyncio.to_thread(state.keys.create, **spec.model_dump())
    await state.auth.reload()
    return {**key.public(), "key": secret}


async def revoke_key(state: GatewayState, key_id: str) -> dict:
    if not await asyncio.to_thread(state.keys.revoke, key_id):
        raise GatewayError(f"No active key with id '{key_id}'.", status_code=404, param="key_id",
                           code="key_not_found")
    await state.auth.reload()
    return {"id": key_id, "revoked": True}
