"""The edge of every request: its id, the body limit, the model version header, the timing."""

import math
import time
import uuid
from typing import Any

from fastapi import HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders

from recsys.serving.champion import ChampionHolder
from recsys.serving.metrics import Metrics

REQUEST_ID_HEADER = "X-Request-ID"
MODEL_VERSION_HEADER = "X-Model-Version"


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as text: JSON has no such numbers, and a 422 that echoes
    ``{"value": NaN}`` back must not become a 500."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse({"detail": _finite(jsonable_encoder(exc.errors()))}, status_code=422)


class EdgeMiddleware:
    """Gives each request an id (``X-Request-ID``), refuses bodies over ``max_body`` bytes with
    413, adds ``X-Model-Version``, and times every request into ``metrics``."""

    def __init__(self, app: Any, metrics: Metrics, holder: ChampionHolder, max_body: int,
                 max_in_flight: int = 1_000_000) -> None:  # fmt: skip
        self.app, self.metrics, self.holder, self.max_body = app, metrics, holder, max_body
        self.max_in_flight, self.in_flight = max_in_flight, 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500
        request_id = scope["recsys.request_id"] = uuid.uuid4().hex
        received = 0

        async def receive_limited() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:
                raise HTTPException(413, f"request body over {self.max_body} bytes")
            return message

        async def send_with_ids(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = scope.get("recsys.request_id", request_id)
                loaded = self.holder.current
                version = scope.get("recsys.model_version") or (loaded and loaded.version)
                if version:
                    headers[MODEL_VERSION_HEADER] = version
            await send(message)

        if self.in_flight >= self.max_in_flight:  # shed load before doing any work
            self.metrics.inc("recsys_overloaded_total")
            busy = JSONResponse({"detail": "too many requests in flight; retry"}, 429,
                                headers={"Retry-After": "1"})  # fmt: skip
            await busy(scope, receive, send_with_ids)
            return
        self.in_flight += 1  # one event loop: no lock needed
        try:
            length = dict(scope["headers"]).get(b"content-length", b"0")
            if not length.isdigit() or int(length) > self.max_body:
                detail = f"request body over {self.max_body} bytes or a bad Content-Length"
                await JSONResponse({"detail": detail}, 413)(scope, receive, send_with_ids)
                return
            await self.app(scope, receive_limited, send_with_ids)
        finally:
            self.in_flight -= 1
            route = getattr(scope.get("route"), "path", "unmatched")  # templates, not raw paths
            self.metrics.observe(route, scope["method"], status, time.perf_counter() - start)
