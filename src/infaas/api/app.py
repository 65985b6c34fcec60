"""The FastAPI app factory. Errors map to HTTP here, and only here."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from infaas.adapters import logs
from infaas.adapters.http.asgi import send_bytes, serve_asgi
from infaas.api import control, data, jobs
from infaas.api.deps import Services
from infaas.core import errors
from infaas.core.errors import HttpStatus, InfaasError, InvalidInput, NotFound

log = logging.getLogger("infaas.api")


def error_response(exc: InfaasError) -> Response:
    """``errors.encode`` as a Starlette response (the FastAPI routes)."""
    status, media, extra, body = errors.encode(exc)
    return Response(body, status_code=status, media_type=media.decode(),
                    headers={k.decode(): v.decode() for k, v in extra})


class DataRoutes:
    """The inference routes as one handler (``adapters.http.asgi``): ``POST /v1/infer`` and
    ``POST /v2/models/{name}/infer`` call the same functions the FastAPI routes call
    (``api.data.answer_*``); ``DataPlaneFastPath`` serves it in front of FastAPI."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.limit = services.settings.max_body_bytes

    def match(self, path: str):
        if path == "/v1/infer" or (path.startswith("/v2/models/") and path.endswith("/infer")):
            return self.answer
        return None

    async def answer(self, path: str, headers: list, body: bytes) -> tuple[int, bytes, list, bytes]:
        authorization = binary = given = None
        for k, v in headers:
            if k == b"authorization":
                authorization = v.decode("latin-1")
            elif k == b"inference-header-content-length":
                binary = v.decode("latin-1")
            elif k == logs.HEADER:
                given = v
        rid = logs.request_id_from(given)
        token = logs.REQUEST_ID.set(rid)
        try:
            status, media, extra, payload = await self._answer(path, authorization, binary, body)
        finally:
            logs.REQUEST_ID.reset(token)
        return status, media, [*extra, (logs.HEADER, rid.encode())], payload

    async def _answer(self, path: str, authorization: str | None, binary: str | None,
                      body: bytes) -> tuple[int, bytes, list, bytes]:
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
            return errors.encode(exc)
        except Exception:
            log.exception("unexpected error on POST %s", path)
            return errors.internal()


class DataPlaneFastPath:
    """Inference requests skip the framework's routing and dependency solving.

    The outermost ASGI layer: ``POST`` to an inference route goes to ``DataRoutes``
    through ``serve_asgi``; everything else, and the OpenAPI description of these
    two routes, stays with FastAPI."""

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
        status, media, extra, body = errors.too_large(limit)
        await send_bytes(send, status, media, body, extra)


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
        problems = exc.errors()
        first = problems[0] if problems else {}
        field = ".".join(str(p) for p in first.get("loc", ())[1:]) or "body"
        return error_response(InvalidInput(
            f"{field}: {first.get('msg', 'invalid')}", field=field,
            errors=[{"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in problems]))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException):
        return error_response(HttpStatus(exc.status_code, str(exc.detail)))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(InfaasError(errors.INTERNAL_MESSAGE))

    app.add_middleware(BodyLimit, limit=services.settings.max_body_bytes, upload_limit=services.settings.max_upload_bytes * 2 + (1 << 20))
    app.add_middleware(DataPlaneFastPath, services=services)
    return app
