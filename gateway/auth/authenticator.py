"""Who is calling: resolves ``Authorization: Bearer <key>`` to an ApiKey, or refuses with 401.

The active keys are held in memory by hash (:class:`KeyCache`). Guarantees, per replica:

* A revocation is refused within ``cache_ttl_s``: a request arriving when the snapshot is
  older than that waits for a fresh read (one read shared by every request waiting) instead
  of being answered from the stale snapshot. If the key store cannot be read, known keys are
  answered from the last snapshot (logged) rather than refusing everyone.
* A key created anywhere is accepted at once: a key the snapshot does not know makes its
  request wait for a read that starts after it arrived (at most ``unknown_key_reload_s`` plus
  one read), so it is never refused for being new.
* A flood of wrong keys costs at most one key-store read per ``unknown_key_reload_s`` (10 a
  second by default), however many arrive; a repeated wrong key is refused from memory; and
  an address that sent ``max_failures_per_ip`` wrong keys this minute gets 429s without any lookup.
* An unknown key while the key store is down gets a 503 with Retry-After, not a 500.

The secret is never logged or echoed.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from fastapi import Request

from gateway.auth.failures import FailureLimit
from gateway.auth.key_cache import KeyCache, KeyStoreUnavailable
from gateway.auth.keys import ApiKey, KeyStore, hash_key
from gateway.config import AuthConfig
from gateway.errors import GatewayError, database_unavailable

log = logging.getLogger("gateway.auth")

BOOTSTRAP_ADMIN_ID = "key_env_admin"
RETRY_AFTER_S = 1  # told to callers refused because the key store is unreachable


def _unauthorized(message: str) -> GatewayError:
    return GatewayError(message, status_code=401, code="invalid_api_key",
                        headers={"www-authenticate": 'Bearer realm="tierwise"'})




class Authenticator:
    def __init__(self, config: AuthConfig, store: KeyStore, on_store_read: Callable[[], None] | None = None) -> None:
        self.enabled = config.enabled
        self.ttl_s = config.cache_ttl_s
        self.unknown_key_reload_s = config.unknown_key_reload_s
        self.store = store
        self.cache = KeyCache(store.active_by_hash, read_timeout_s=config.key_store_timeout_s,
                              on_read=on_store_read)
        self.failures = FailureLimit(config.max_failures_per_ip)
        self._bootstrap: dict[str, ApiKey] = {}
        admin_secret = os.environ.get(config.admin_key_env) if config.admin_key_env else None
        if admin_secret:
            self._bootstrap[hash_key(admin_secret)] = ApiKey(id=BOOTSTRAP_ADMIN_ID, name="bootstrap admin (env)",
                                                             prefix=admin_secret[:6], admin=True)

    async def start(self) -> None:
        if self.enabled:
            await self.reload()
            log.info("auth on: %d active keys%s", len(self.cache.by_hash),
                     " + bootstrap admin from the environment" if self._bootstrap else "")
        else:
            log.warning("auth is OFF: anyone who can reach this port can use it (local demo only)")

    async def reload(self) -> None:
        """Read the keys now (after this replica created or revoked one); raises if the store is down."""
        await self.cache.ensure(time.monotonic())

    async def authenticate(self, request: Request) -> ApiKey | None:
        if not self.enabled:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.")
        digest = hash_key(token)
        key = self._bootstrap.get(digest)
        if key is not None:
            return key
        arrived = time.monotonic()
        if arrived - self.cache.as_of > self.ttl_s:
            try:
                await self.cache.ensure(arrived - self.ttl_s)
            except KeyStoreUnavailable:
                pass  # answer from the last snapshot; the cache logged the failure
        key = self.cache.by_hash.get(digest)
        if key is not None:
            return key
        address = request.client.host if request.client else "unknown"
        self.failures.check(address)
        if not self.cache.known_unknown(digest):
            try:
                await self.cache.ensure(arrived, min_interval_s=self.unknown_key_reload_s)
            except KeyStoreUnavailable:
                raise database_unavailable("API keys cannot be checked right now.", RETRY_AFTER_S) from None
            key = self.cache.by_hash.get(digest)
            if key is not None:
                return key
            self.cache.remember_unknown(digest)
        self.failures.failed(address)
        raise _unauthorized("Incorrect API key provided. Create one with `python -m gateway keys create`.")
