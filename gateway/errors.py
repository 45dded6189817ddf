"""OpenAI-shaped errors.

Clients written against the OpenAI SDK branch on ``error.type``/``error.code`` and the HTTP
status, so every failure the gateway reports (bad input, unknown model, an upstream that is
down) uses the same envelope: ``{"error": {"message", "type", "param", "code"}}``. Nothing
else (no traceback, no framework default body) ever reaches the client.

An exception nobody handled is contained by ``ContainUnhandled``: the client gets a 500
envelope, the log gets one bounded line (``gateway.error_log``), and the exception goes no
further, so uvicorn does not render a second, full traceback on the event loop. A client
that hung up while its request was read gets a quiet 499.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.error_log import BoundedErrorLog

log = logging.getLogger("gateway.errors")

# One rate limit for every unexpected error of the process: a flood of them costs a few log
# lines, not a log line (and a traceback) each.
unhandled_errors = BoundedErrorLog(log)

CLIENT_CLOSED_REQUEST = 499  # nginx's status for "the client went away before the answer"


class GatewayError(Exception):
    """An error with its HTTP status and OpenAI error fields: the gateway's one error type.

    ``upstream`` marks an error a tier sent or caused (unreachable, timed out, refused): the
    request path fails over on those and books them as ``error`` rather than ``rejected``.
    The client sees an upstream 4xx as ``invalid_request_error`` (the request was bad for
    every tier), anything else with the upstream's own type.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int = 400,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        upstream: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers
        self.upstream = upstream

    @property
    def client_type(self) -> str:
        """The OpenAI ``error.type`` the client sees."""
        if self.upstream and self.status_code < 500:
            return "invalid_request_error"
        return self.type

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.client_type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status_code, headers=self.headers)


def upstream_error(status_code: int, message: str, *, type: str = "upstream_error",
                   code: str | None = None) -> GatewayError:
    """A tier answered with an error, or could not be reached.

    ``status_code`` is what the client should see: the upstream's own 4xx is relayed (its
    message is the useful one), connection failures become 502/503/504.
    """
    return GatewayError(message, status_code=status_code, type=type, code=code, upstream=True)


def model_not_found(model: str) -> GatewayError:
    return GatewayError(
        f"The model `{model}` does not exist or you do not have access to it.",
        status_code=404,
        param="model",
        code="model_not_found",
    )


def tier_unavailable(tier: str, detail: str) -> GatewayError:
    return GatewayError(
        f"Tier `{tier}` is unavailable: {detail}",
        status_code=503,
        type="service_unavailable_error",
        code="tier_unavailable",
    )


def database_unavailable(detail: str, retry_after_s: int = 5) -> GatewayError:
    """The ledger/key database is away (a blip, a restart): a retryable 503, never a 500."""
    return GatewayError(
        f"{detail} The gateway's database is unavailable; retry shortly.",
        status_code=503,
        type="service_unavailable_error",
        code="database_unavailable",
        headers={"Retry-After": str(retry_after_s)},
    )


def from_validation_error(exc: ValidationError | RequestValidationError) -> GatewayError:
    """Turn pydantic's error list into one readable message naming the first bad field."""
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    msg = first.get("msg", "invalid value")
    if first.get("type") == "missing":
        message = f"Missing required parameter: '{param}'."
    elif first.get("type") == "json_invalid":
        message = "We could not parse the JSON body of your request. Send valid JSON."
        param = None
    else:
        message = f"Invalid value for '{param}': {msg}." if param else f"Invalid request: {msg}."
    extra = len(errors) - 1
    if extra > 0:
        message += f" ({extra} more error{'s' if extra > 1 else ''})"
    return GatewayError(message, status_code=400, param=param, code="invalid_value" if param else None)


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception through the OpenAI envelope."""

    @app.exception_handler(GatewayError)
    async def _gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
        if exc.status_code == 401:  # not booked in the ledger (a wrong-key flood must not write to it)
            state = getattr(request.app.state, "tierwise", None)
            if state is not None:
                state.metrics.auth_failures.inc()
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return from_validation_error(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return GatewayError(str(exc.detail), status_code=exc.status_code, type=kind).response()

    app.add_middleware(ContainUnhandled)


def client_disconnected() -> GatewayError:
    """The client closed the connection before its request was read (booked as 499)."""
    return GatewayError("The client closed the connection before the request was read.",
                        status_code=CLIENT_CLOSED_REQUEST, code="client_disconnected")


def internal_error() -> GatewayError:
    return GatewayError("The gateway hit an internal error; it has been logged.", status_code=500,
                        type="server_error")


class ContainUnhandled:
    """ASGI middleware: the last stop of an exception that no handler took.

    It sits inside Starlette's ``ServerErrorMiddleware``, which would log a full traceback and
    re-raise it to uvicorn (which logs it again); here it is reported once, bounded, and ends.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ClientDisconnect:
            error = client_disconnected()
        except Exception as exc:  # noqa: BLE001 - this is the catch-all, by design
            unhandled_errors.report(f"unhandled error on {scope.get('method')} {scope.get('path')}", exc)
            error = internal_error()
        else:
            return
        if not started:  # mid-response, the connection is closed by uvicorn instead
            await error.response()(scope, receive, send)


def unsupported_by_tier(tier: str, gaps: list[str], param: str) -> GatewayError:
    """A request names a tier that cannot serve what it asks for (tools, a response_format, an image)."""
    return GatewayError(
        f"Tier `{tier}` does not support {', '.join(gaps)}; send the request to a tier that does "
        f"(see /v1/models) or to `auto`.",
        param=param,
        code="unsupported_by_tier",
    )
