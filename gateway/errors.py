"""OpenAI-shaped errors.

Clients written against the OpenAI SDK branch on ``error.type``/``error.code`` and the HTTP
status, so every failure the gateway reports (bad input, unknown model, an upstream that is
down) uses the same envelope: ``{"error": {"message", "type", "param", "code"}}``. Nothing
else (no traceback, no framework default body) ever reaches the client.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("gateway.errors")


class GatewayError(Exception):
    """An error with its HTTP status and OpenAI error fields."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int = 400,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status_code, headers=self.headers)


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
    async def _gateway_error(_: Request, exc: GatewayError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return from_validation_error(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return GatewayError(str(exc.detail), status_code=exc.status_code, type=kind).response()

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return GatewayError(
            "The gateway hit an internal error; it has been logged.", status_code=500, type="server_error"
        ).response()
