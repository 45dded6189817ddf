"""The FastAPI dependencies the routes share: the app's state, the serving objects, the
calling key, admin access.

They live with the entrypoints (not in ``gateway/auth`` or ``gateway/state.py``) so that the
lower layers never import the web layer and the state never imports back into auth.
"""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.responses import Response

from gateway.auth.keys import ApiKey
from gateway.entrypoints.engine.serving import SamplingServing
from gateway.errors import GatewayError
from gateway.state import GatewayState


async def get_state(request: Request) -> GatewayState:
    """The app's state (set up by the lifespan).

    ``async`` on purpose: FastAPI runs a plain ``def`` dependency in a thread pool, a
    thread hop on every request for what is an attribute read.
    """
    return request.app.state.tierwise


async def serve_sampling(request: Request, serving: str) -> Response:
    """Authenticate the caller and hand the request to the serving object ``app.state.<serving>``.

    The three inference routes (chat, completions, embeddings) resolve what they need here, by
    hand, instead of through ``Depends``: FastAPI's dependency solving was ~12 % of the gateway's
    CPU per proxied request (benchmarks/gateway_overhead.py, A/B in one run). It is the same
    two steps as ``Depends(caller)`` and a serving dependency, in the same order.
    """
    state = request.app.state
    key = await state.tierwise.auth.authenticate(request)
    handler: SamplingServing = getattr(state, serving)
    return await handler.handle(request, key)


async def admin_serving(request: Request):
    """The runtime control serving object (``entrypoints.admin``), built by the lifespan."""
    return request.app.state.serving_admin


async def caller(request: Request, state: GatewayState = Depends(get_state)) -> ApiKey | None:
    """The calling key (None when auth is off)."""
    return await state.auth.authenticate(request)


async def admin_caller(key: ApiKey | None = Depends(caller), state: GatewayState = Depends(get_state)) -> ApiKey | None:
    """The caller, who must hold an admin key (when auth is on)."""
    if state.auth.enabled and (key is None or not key.admin):
        raise GatewayError("This endpoint needs an admin key.", status_code=403, type="permission_error",
                           code="admin_required")
    return key
