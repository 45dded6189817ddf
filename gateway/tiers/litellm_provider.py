"""A hosted flagship (OpenAI, Anthropic, ...) reached through litellm.

litellm translates the OpenAI request to the provider's API and back, and its cost map
prices the tokens when the config gives no price. It is imported only when a config has a
litellm tier: the import is slow and would otherwise tax every gateway start.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from gateway.config import TierConfig
from gateway.errors import GatewayError, upstream_error
from gateway.tiers.base import (UPSTREAM_CONNECT_TIMEOUT_S, UPSTREAM_KEEPALIVE_S, UPSTREAM_MAX_CONNECTIONS,
                                UPSTREAM_TIMEOUT_S, Endpoint, Tier, TierStatus, UpstreamReply)

# litellm fetches its cost map from the network at import unless told not to; the copy in
# the package is what a gateway with no egress must use.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


MISSING = ("tier {name!r} is a litellm: tier, but the litellm package is not installed here: use the "
           "tierwise/gateway-litellm image, or `pip install --no-deps -r requirements/lock-gateway-litellm.txt`")


def require_litellm(tier_name: str) -> None:
    """Fail with what to do, not a ModuleNotFoundError from the first request: the default
    gateway image leaves litellm out (deploy/README.md)."""
    if importlib.util.find_spec("litellm") is None:
        raise ValueError(MISSING.format(name=tier_name))


def _litellm() -> Any:
    import litellm

    if litellm.aclient_session is None:
        litellm.aclient_session = _cookieless_client()
    return litellm


def _cookieless_client() -> Any:
    """The HTTP client of litellm's OpenAI-compatible calls: one per process, shared by every
    client of the gateway, so it must keep no cookies (a cookie set on one answer would go
    out with everyone's next request). httpx keeps them unless its jar's policy refuses every
    domain. Pool and timeouts as the gateway's own upstream session (``UPSTREAM_*``); each call
    still passes the tier's ``timeout_s``."""
    from http.cookiejar import CookieJar, DefaultCookiePolicy

    import httpx

    # the jar itself: httpx copies a ``Cookies`` object into a fresh, default jar
    return httpx.AsyncClient(cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
                             limits=httpx.Limits(max_connections=UPSTREAM_MAX_CONNECTIONS,
                                                 max_keepalive_connections=UPSTREAM_MAX_CONNECTIONS,
                                                 keepalive_expiry=UPSTREAM_KEEPALIVE_S),
                             timeout=httpx.Timeout(UPSTREAM_TIMEOUT_S, connect=UPSTREAM_CONNECT_TIMEOUT_S))


def _as_upstream_error(exc: Exception) -> GatewayError:
    """litellm maps provider errors to exceptions carrying ``status_code``; keep the client's 4xx,
    make everything else a 502 (the tier's fault, which counts against its circuit)."""
    status = int(getattr(exc, "status_code", 502) or 502)
    return upstream_error(status if 400 <= status < 500 else 502, str(getattr(exc, "message", exc)))


class LiteLLMTier(Tier):
    """A hosted tier. It has no health endpoint the gateway can read for free, so its health
    check is a one-token completion, made only while its circuit is open and at most once per
    ``breaker_cooldown_s``: a healthy tier costs nothing to watch, a broken one a token a while.
    """

    PROBE_BODY = {"messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}

    def __init__(self, config: TierConfig) -> None:
        require_litellm(config.model_name)
        super().__init__(config)
        assert config.litellm is not None
        self.provider = config.litellm
        self._last_probe = 0.0

    async def start(self) -> None:
        _litellm()
        self.status = TierStatus.READY
        self.watch_health()

    async def probe(self) -> bool:
        """Closed circuit: healthy as far as anyone knows. Open: one tiny call, once per cooldown."""
        if not self.breaker.is_open:
            return True
        now = time.monotonic()
        if now - self._last_probe < self.config.breaker_cooldown_s:
            return False
        self._last_probe = now
        try:
            await self._call("chat", {**self._kwargs(self.PROBE_BODY), "timeout": min(self.config.timeout_s, 10.0)})
        except GatewayError as exc:
            self.detail = f"health probe failed: {exc.message[:200]}"
            return False
        self.detail = ""
        return True

    def _kwargs(self, body: dict) -> dict:
        kwargs = {k: v for k, v in body.items() if k != "model"}
        kwargs["model"] = self.provider.model
        if self.provider.api_base:
            kwargs["api_base"] = self.provider.api_base
        if self.provider.api_key_env:
            kwargs["api_key"] = os.environ.get(self.provider.api_key_env, "")
        kwargs["timeout"] = self.config.timeout_s
        return kwargs

    async def _call(self, endpoint: Endpoint, kwargs: dict) -> Any:
        litellm = _litellm()
        try:
            if endpoint == "chat":
                return await litellm.acompletion(**kwargs)
            if endpoint == "embeddings":
                return await litellm.aembedding(**kwargs)
            return await litellm.atext_completion(**kwargs)
        except Exception as exc:  # litellm raises its own exception classes, all Exceptions
            raise _as_upstream_error(exc) from exc

    async def complete(self, endpoint: Endpoint, body: dict) -> UpstreamReply:
        response = await self._call(endpoint, self._kwargs(body))
        data = response.model_dump(exclude_none=True)
        return UpstreamReply(content=json.dumps(data).encode(), data=data)

    async def stream(self, endpoint: Endpoint, body: dict) -> AsyncIterator[bytes]:
        response = await self._call(endpoint, self._kwargs(body))
        chunks = aiter(response)
        while True:
            # An error mid-stream (the provider dropped the connection, sent an error event)
            # must reach the relay as an upstream GatewayError, so the row says `error`, not `ok`.
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                break
            except Exception as exc:
                raise _as_upstream_error(exc) from exc
            yield b"data: " + json.dumps(chunk.model_dump(exclude_none=True)).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"
