"""Who is calling: resolves ``Authorization: Bearer <key>`` to an ApiKey, or refuses with 401.

The active keys are held in memory by hash and reloaded every ``cache_ttl_s`` in the
background (a revocation reaches every replica within that time); an unknown key triggers an
immediate reload unless the keys were loaded in the last 100 ms, so a key created on another
replica works at once while a flood of bad keys costs at most ten reads a second. The secret is never logged or echoed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from fastapi import Depends, Request

from gateway.auth.keys import ApiKey, KeyStore, hash_key
from gateway.config import AuthConfig
from gateway.errors import GatewayError
from gateway.state import GatewayState, get_state

log = logging.getLogger("gateway.auth")

BOOTSTRAP_ADMIN_ID = "key_env_admin"


def _unauthorized(message: str) -> GatewayError:
    return GatewayError(message, status_code=401, code="invalid_api_key",
                        headers={"www-authenticate": 'Bearer realm="tierwise"'})


class Authenticator:
    def __init__(self, config: AuthConfig, store: KeyStore) -> None:
        self.enabled = config.enabled
        self.ttl_s = config.cache_ttl_s
        self.store = store
        self._by_hash: dict[str, ApiKey] = {}
        self._bootstrap: dict[str, ApiKey] = {}
        self._loaded_at = 0.0
        self._reloading: asyncio.Task | None = None
        admin_secret = os.environ.get(config.admin_key_env) if config.admin_key_env else None
        if admin_secret:
            self._bootstrap[hash_key(admin_secret)] = ApiKey(id=BOOTSTRAP_ADMIN_ID, name="bootstrap admin (env)",
                                                             prefix=admin_secret[:6], admin=True)

    async def start(self) -> None:
        if self.enabled:
            await self.reload()
            log.info("auth on: %d active keys%s", len(self._by_hash),
                     " + bootstrap admin from the environment" if self._bootstrap else "")
        else:
            log.warning("auth is OFF: anyone who can reach this port can use it (local demo only)")

    async def reload(self) -> None:
        self._by_hash = await asyncio.to_thread(self.store.active_by_hash)
        self._loaded_at = time.monotonic()

    def _reload_in_background(self) -> None:
        if self._reloading is None or self._reloading.done():
            self._reloading = asyncio.create_task(self.reload())

    async def authenticate(self, request: Request) -> ApiKey | None:
        if not self.enabled:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.")
        digest = hash_key(token)
        now = time.monotonic()
        if now - self._loaded_at > self.ttl_s:
            self._reload_in_background()
        key = self._bootstrap.get(digest) or self._by_hash.get(digest)
        if key is None and now - self._loaded_at > 0.1:
            await self.reload()
            key = self._by_hash.get(digest)
        if key is None:
            raise _unauthorized("Incorrect API key provided. Create one with `python -m gateway keys create`.")
        return key


async def caller(request: Request, state: GatewayState = Depends(get_state)) -> ApiKey | None:
    """FastAPI dependency: the calling key (None when auth is off)."""
    return await state.auth.authenticate(request)


async def admin_caller(key: ApiKey | None = Depends(caller), state: GatewayState = Depends(get_state)) -> ApiKey | None:
    """FastAPI dependency: the caller, who must hold an admin key (when auth is on)."""
    if state.auth.enabled and (key is None or not key.admin):
        raise GatewayError("This endpoint needs an admin key.", status_code=403, type="permission_error",
                           code="admin_required")
    return key
