"""A tier reached over HTTP at an OpenAI-compatible base URL (vLLM, or any such server).

All tiers share the app's one ``aiohttp.ClientSession`` (connection pooling, keep-alive), and
streaming relays each server-sent event as soon as it is complete: nothing is buffered
beyond the event being assembled.

aiohttp rather than httpx on this path: profiling the gateway under load showed httpcore's
pool checking every idle connection's socket on every request (``is_socket_readable``),
which made the upstream client the largest cost of a proxied request.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator

import aiohttp

from gateway import fastjson
from gateway.config import TierConfig
from gateway.errors import GatewayError, upstream_error
from gateway.tiers.base import Endpoint, Tier, TierStatus, UpstreamReply, split_events

log = logging.getLogger("gateway.tiers")

PATHS: dict[Endpoint, str] = {"chat": "/chat/completions", "completion": "/completions", "embeddings": "/embeddings"}


def _error_message(content: bytes) -> str:
    """Pull the message out of an upstream error body, whatever its shape."""
    try:
        data = json.loads(content)
    except ValueError:
        return content.decode("utf-8", "replace")[:500] or "upstream error"
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and "message" in err:
            return str(err["message"])
        if isinstance(data.get("message"), str):
            return data["message"]
    return str(data)[:500]


TransportErrors = (aiohttp.ClientError, TimeoutError)
STALE_CONNECTION = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


def _transport_error(tier: str, exc: BaseException) -> GatewayError:
    if isinstance(exc, TimeoutError):
        return upstream_error(504, f"tier `{tier}` timed out", type="timeout_error", code="upstream_timeout")
    return upstream_error(502, f"tier `{tier}` could not be reached: {type(exc).__name__}", code="upstream_unreachable")


class OpenAIHTTPTier(Tier):
    """A tier at ``base_url`` (ending in ``/v1``)."""

    def __init__(self, config: TierConfig, client: aiohttp.ClientSession, base_url: str | None = None) -> None:
        super().__init__(config)
        self.client = client
        self.base_url = (base_url or (config.url.base_url if config.url else "")).rstrip("/")
        self.upstream_model = (config.url.upstream_model if config.url else None) or config.model_name
        key_env = config.url.api_key_env if config.url else None
        key = os.environ.get(key_env, "") if key_env else ""
        self.headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
        self.timeout = aiohttp.ClientTimeout(total=config.timeout_s, connect=5.0)

    def health(self) -> dict:
        return {**super().health(), "base_url": self.base_url}

    async def start(self) -> None:
        await self.probe()
        self.watch_health()

    async def probe(self) -> bool:
        """Ask the server for its model list; ready when it answers 200."""
        try:
            async with self.client.get(f"{self.base_url}/models", headers=self.headers,
                                       timeout=aiohttp.ClientTimeout(total=5.0)) as resp:
                ok = resp.status == 200
            self.detail = "" if ok else f"/models answered {resp.status}"
        except TransportErrors as exc:
            ok, self.detail = False, f"unreachable: {type(exc).__name__}"
        self.status = TierStatus.READY if ok else TierStatus.DOWN
        return ok

    def stream_usage_options(self) -> dict:
        """Usage on every chunk where the server declares it can (``url: {continuous_usage: true}``).

        Without it the server's usage comes only at the end, and a stream cut short is booked
        by counting what was relayed (see ``gateway.tiers.stream_usage``).
        """
        if self.config.url is not None and self.config.url.continuous_usage:
            return {"include_usage": True, "continuous_usage_stats": True}
        return super().stream_usage_options()

    def _payload(self, body: dict) -> bytes:
        """The JSON body sent to the server: the request with the server's own model name."""
        return fastjson.dumps({**body, "model": self.upstream_model})

    async def complete(self, endpoint: Endpoint, body: dict) -> UpstreamReply:
        url, payload = self.base_url + PATHS[endpoint], self._payload(body)
        for attempt in (1, 2):
            try:
                async with self.client.post(url, data=payload, headers=self.headers, timeout=self.timeout) as resp:
                    content = await resp.read()
                    status = resp.status
                break
            except STALE_CONNECTION as exc:
                # A pooled keep-alive connection the server had already closed: nothing was
                # processed, so one retry on a fresh connection is safe.
                if attempt == 2:
                    raise _transport_error(self.name, exc) from exc
            except TransportErrors as exc:
                raise _transport_error(self.name, exc) from exc
        if status != 200:
            raise upstream_error(status if status < 500 else 502, _error_message(content))
        try:
            data = fastjson.loads(content)
        except ValueError as exc:
            raise upstream_error(502, f"tier `{self.name}` sent a body that is not JSON") from exc
        return UpstreamReply(content=content, data=data)

    async def stream(self, endpoint: Endpoint, body: dict) -> AsyncIterator[bytes]:
        async for block in self.stream_blocks(endpoint, body):
            for event in split_events(block):
                yield event

    async def stream_blocks(self, endpoint: Endpoint, body: dict) -> AsyncIterator[bytes]:
        """Every complete event of each read from the server, as one block (see ``Tier.stream_blocks``)."""
        url = self.base_url + PATHS[endpoint]
        try:
            resp = await self.client.post(url, data=self._payload(body), headers=self.headers, timeout=self.timeout)
        except TransportErrors as exc:
            raise _transport_error(self.name, exc) from exc
        complete = False
        try:
            if resp.status != 200:
                content = await resp.read()
                raise upstream_error(resp.status if resp.status < 500 else 502, _error_message(content))
            buffer = b""
            async for chunk in resp.content.iter_any():
                buffer += chunk
                cut = buffer.rfind(b"\n\n")
                if cut >= 0:
                    block, buffer = buffer[: cut + 2], buffer[cut + 2 :]
                    yield block
            if buffer.strip():
                yield buffer + b"\n\n"
            complete = True
        except TransportErrors as exc:
            raise _transport_error(self.name, exc) from exc
        finally:
            # Closing (not releasing) an unfinished stream drops the connection, which is how
            # the server learns the client is gone and stops generating.
            if complete:
                resp.release()
            else:
                resp.close()

