"""The FastAPI dependencies the routes share: the app's state, the serving objects, the
calling key, admin access.

They live with the entrypoints (not in ``gateway/auth`` or ``gateway/state.py``) so that the
lower layers never import the web layer and the state never imports back into auth.
"""

from __future__ import annotations

from fastapi import Depends, Request

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


async def chat_serving(request: Request) -> SamplingServing:
    """The ``/v1/chat/completions`` serving object, built by the lifespan."""
    return request.app.state.serving_chat


async def completion_serving(request: Request) -> SamplingServing:
    """The ``/v1/completions`` serving object, built by the lifespan."""
    return request.app.state.serving_completion


async def embedding_serving(request: Request) -> SamplingServing:
    """The ``/v1/embeddings`` serving object, built by the lifespan."""
    return request.app.state.serving_embedding


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
