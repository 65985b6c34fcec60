"""The FastAPI app factory. Errors map to HTTP here, and only here."""

from __future__ import annotations

import json
import logging
import math
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from infaas.core.errors import InfaasError, NotFound, TooManyRequests, Unavailable
from infaas.api import control
from infaas.api import data
from infaas.api import jobs
from infaas.api.deps import Services
from infaas.adapters.http.hotpath import serve_asgi

log = logging.getLogger("infaas.api")


def error_headers(exc: InfaasError) -> dict[str, str]:
    if isinstance(exc, (Unavailable, TooManyRequests)):
        return {"Retry-After": str(max(1, math.ceil(getattr(exc, "retry_after_s", 1.0))))}
    return {}


def error_response(exc: InfaasError) -> JSONResponse:
    return JSONResponse(exc.to_dict(), status_code=exc.status, headers=error_headers(exc))


class DataRoutes:
    """The inference routes, as one handler shared by the lean HTTP path
    (``infaas.adapters.http.hotpath``) and the ASGI fast path below: ``POST /v1/infer`` and
    ``POST /v2/models/{name}/infer`` call the same functions the FastAPI routes
    call (``api.data.answer_*``)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.limit = services.settings.max_body_bytes

    def match(self, path: str):
        if path == "/v1/infer" or (path.startswith("/v2/models/") and path.endswith("/infer")):
            return self.answer
        return None

    async def answer(self, path: str, headers: list, body: bytes) -> tuple[int, bytes, list, bytes]:
        authorization = binary = None
        for k, v in headers:
            if k == b"authorization":
                authorization = v.decode("latin-1")
            elif k == b"inference-header-content-length":
                binary = v.decode("latin-1")
        try:
            who = self.services.principal(authorization, "query").tenant
            if path == "/v1/infer":
                reply = await data.answer_plain(self.services, body, who)
            else:
                name = path[len("/v2/models/") : -len("/infer")]
                if not name:
                    raise NotFound("no model name in the path", field="name")
                reply = await data.answer_oip(self.services, name, body, binary, who)
            return 200, reply.media_bytes, reply.header_pairs, reply.body
        except InfaasError as exc:
            extra = [(k.lower().encode(), v.encode()) for k, v in error_headers(exc).items()]
            return exc.status, b"application/json", extra, json.dumps(exc.to_dict()).encode()
        except Exception:
            log.exception("unexpected error on POST %s", path)
            return 500, b"application/json", [], b'{"error":"internal","message":"internal error; it has been logged"}'


class DataPlaneFastPath:
    """Inference requests skip the framework's routing and dependency solving.

    Requests that did not take the lean HTTP path (``infaas.adapters.http.hotpath``: pipelined
    ones, another ASGI server, the test client) come here; everything else,
    and the OpenAPI description of these two routes, stays with FastAPI.
    """

    def __init__(self, app, services: Services) -> None:
        self.app, self.routes = app, DataRoutes(services)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            handler = self.routes.match(path)
            if handler is not None:
                return await serve_asgi(handler, path, scope, receive, send, self.routes.limit)
        return await self.app(scope, receive, send)


class BodyLimit:
    """Refuses bodies over the limit with 413 before they are read whole.

    Uploads to ``POST /v1/models`` get ``upload_limit``; everything else ``limit``.
    Both the declared Content-Length and the bytes actually streamed count.
    """

    def __init__(self, app, limit: int, upload_limit: int) -> None:
        self.app, self.limit, self.upload_limit = app, limit, upload_limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.upload_limit if scope["path"].rstrip("/") == "/v1/models" else self.limit
        for k, v in scope["headers"]:
            if k == b"content-length" and v.isdigit() and int(v) > limit:
                return await self._reject(send, limit)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge()
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._reject(send, limit)

    @staticmethod
    async def _reject(send, limit: int) -> None:
        body = f'{{"error":"payload_too_large","field":"body","message":"request body exceeds the limit of {limit} bytes"}}'
        await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body.encode()})


class _TooLarge(Exception):
    pass


def create_app(services: Services) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await services.data.client.close()

    app = FastAPI(
        title="INFaaS",
        version="0.1.0",
        summary="Model-less inference serving: say what you need, the service decides how.",
        lifespan=lifespan,
    )
    app.state.services = services
    app.include_router(control.router)
    app.include_router(data.router)
    app.include_router(jobs.router)

    @app.exception_handler(InfaasError)
    async def _domain(_request: Request, exc: InfaasError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {}
        field = ".".join(str(p) for p in first.get("loc", ())[1:]) or "body"
        return JSONResponse(
            {"error": "invalid_input", "field": field, "message": f"{field}: {first.get('msg', 'invalid')}",
             "details": {"errors": [{"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in errors]}},
            status_code=400,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": "http", "message": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": "internal", "message": "internal error; it has been logged"}, status_code=500)

    app.add_middleware(BodyLimit, limit=services.settings.max_body_bytes, upload_limit=services.settings.max_upload_bytes * 2 + (1 << 20))
    app.add_middleware(DataPlaneFastPath, services=services)
    return app
