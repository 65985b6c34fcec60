"""The FastAPI app factory. Errors map to HTTP here, and only here."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from infaas.adapters import logs
from infaas.adapters.http.asgi import ClientGone, read_body, send_bytes
from infaas.api import data
from infaas.api.deps import REQUEST_INFO, RequestInfo, Services
from infaas.app.data import ARRIVED
from infaas.core import errors, oip
from infaas.core.errors import HttpStatus, InfaasError, InvalidInput, NotFound

log = logging.getLogger("infaas.api")


def error_response(exc: InfaasError) -> Response:
    """``errors.encode`` as a Starlette response (the FastAPI routes)."""
    status, media, extra, body = errors.encode(exc)
    return Response(body, status_code=status, media_type=media.decode(),
                    headers={k.decode(): v.decode() for k, v in extra})


OIP_INFER = "/v2/models/{name}/infer"  # the route template, as the OpenAPI document and the metrics name it
_BINARY = oip.BINARY_HEADER.encode()


class DataRoutes:
    """The inference routes as one handler: ``POST /v1/infer`` and ``POST /v2/models/{name}/infer``
    call the same functions the FastAPI routes call (``api.data.answer_*``);
    ``DataPlaneFastPath`` serves them in front of FastAPI."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.limit = services.settings.max_body_bytes

    @staticmethod
    def route(path: str) -> str | None:
        """The route template of an inference path, else None."""
        if path == "/v1/infer":
            return path
        if path.startswith("/v2/models/") and path.endswith("/infer") and len(path) > len("/v2/models//infer"):
            return OIP_INFER
        return None

    async def answer(self, path: str, authorization: str | None, binary: str | None, body: bytes,
                     info: RequestInfo, encoding: str | None = None) -> tuple[int, bytes, list, bytes]:
        try:
            who = self.services.principal(authorization, "query").tenant
            info.tenant = who
            body = await data.request_body(self.services, body, encoding)
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
    """The outermost ASGI layer: every request gets its request id (the caller's ``x-request-id``
    when it is safe to log, else a new one; answered in ``x-request-id``), one access log line
    (``logs.access``) and its counts (``Services.telemetry``: route, status, duration).

    Inference requests (``POST`` to an inference route) skip the framework's routing and
    dependency solving: the body is read here (413 past the limit, without keeping it), handed to
    ``DataRoutes`` and the answer sent in two ASGI messages. Everything else, and the OpenAPI
    description of these two routes, stays with FastAPI. Nothing here reads a body that is not an
    inference request's."""

    def __init__(self, app, services: Services, site: FastAPI | None = None) -> None:
        self.app, self.routes, self.services = app, DataRoutes(services), services
        self.telemetry = services.telemetry
        self.site = site  # the FastAPI app: its plain routes (``/openapi.json``) name no template in the scope
        self._plain: list | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        method, path = scope["method"], scope["path"]
        route = self.routes.route(path)
        authorization = binary = given = length = encoding = None
        authorizations = 0
        for k, v in scope["headers"]:
            if k == b"authorization":
                authorization = v
                authorizations += 1
            elif k == logs.HEADER:
                given = v
            elif k == b"content-length":
                length = v
            elif k == _BINARY:
                binary = v
            elif k == b"content-encoding":
                encoding = v
        rid = logs.request_id_from(given)
        token = logs.REQUEST_ID.set(rid)
        ARRIVED.set(started)  # answers measure their latency from here (this task's context only)
        info = RequestInfo()
        try:
            if authorizations > 1:  # which one would count? Proxies and frameworks disagree (first, last, joined)
                status, media, extra, payload = errors.encode(InvalidInput(
                    f"send one Authorization header, not {authorizations}", field="authorization"))
                info.status = status
                await send_bytes(send, status, media, payload, [*extra, (logs.HEADER, rid.encode())])
            elif method == "POST" and path.rstrip("/") == "/v1/models" and (refusal := self._unregistering(authorization)):
                # an upload is authenticated before a byte of its body is read (FastAPI would parse and
                # spool the whole form first): a caller without the register scope sends nothing big
                status, media, extra, payload = errors.encode(refusal)
                info.status = status
                await send_bytes(send, status, media, payload, [*extra, (logs.HEADER, rid.encode())])
            elif route is not None and method != "POST":  # an inference route takes POST only
                status, media, extra, payload = errors.encode(HttpStatus(405, f"{method} is not allowed on {path}: "
                                                                              "inference takes POST"))
                info.status = status
                await send_bytes(send, status, media, payload, [*extra, (b"allow", b"POST"), (logs.HEADER, rid.encode())])
            elif route is not None:
                await self._infer(path, receive, send, rid, authorization, binary, length, info, encoding)
            else:
                scope[REQUEST_INFO] = info
                await self.app(scope, receive, _answering(send, rid.encode(), info))
        except asyncio.CancelledError:  # the client went away before its answer
            info.status = info.status or 499
            raise
        finally:
            status = info.status or 500
            elapsed = time.perf_counter() - started
            if route is None:
                route = getattr(scope.get("route"), "path_format", None) or self._template(scope)
            self.telemetry.request(method, route, status, elapsed)
            logs.access(method, path, route, status, elapsed * 1000.0, info.tenant, rid)
            logs.REQUEST_ID.reset(token)

    def _unregistering(self, authorization: bytes | None) -> InfaasError | None:
        """Why this caller may not register models (401/403), or None."""
        try:
            self.services.principal(None if authorization is None else authorization.decode("latin-1"), "register")
        except InfaasError as exc:
            return exc
        return None

    def _template(self, scope) -> str:
        """The template of a route FastAPI does not name in the scope (its own plain routes), else
        ``unmatched``: a label for the metrics that never holds a path as sent."""
        if self._plain is None:
            self._plain = [r for r in (self.site.routes if self.site else ())
                           if isinstance(r, Route) and not isinstance(r, APIRoute)]
        for r in self._plain:
            if r.matches(scope)[0] is Match.FULL:
                return r.path_format
        return "unmatched"

    async def _infer(self, path, receive, send, rid, authorization, binary, length, info, encoding=None) -> None:
        limit = self.routes.limit
        try:  # who asks, before a byte of the body is read: nobody without a key holds a connection with one
            self.services.principal(None if authorization is None else authorization.decode("latin-1"), "query")
        except InfaasError as exc:
            status, media, extra, payload = errors.encode(exc)
            info.status = status
            await send_bytes(send, status, media, payload, [*extra, (logs.HEADER, rid.encode())])
            return
        try:
            body = None if length is not None and length.isdigit() and int(length) > limit else await read_body(receive, limit)
        except ClientGone:
            info.status = 499  # gone before its body arrived: nobody to answer
            return
        if body is None:
            status, media, extra, payload = errors.too_large(limit)
        else:
            status, media, extra, payload = await self.routes.answer(
                path, None if authorization is None else authorization.decode("latin-1"),
                None if binary is None else binary.decode("latin-1"), body, info,
                None if encoding is None else encoding.decode("latin-1"))
        info.status = status
        await send_bytes(send, status, media, payload, [*extra, (logs.HEADER, rid.encode())])


def _answering(send, rid: bytes, info: RequestInfo):
    """``send`` that notes the status and adds ``x-request-id`` to the answer."""

    async def answering(message):
        if message["type"] == "http.response.start":
            info.status = message["status"]
            message = {**message, "headers": [*message.get("headers", ()), (logs.HEADER, rid)]}
        await send(message)

    return answering


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
        answered = False

        async def counted():
            nonlocal seen, answered
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                if not answered:  # the 413 now: a form parser that catches the error would answer 400
                    answered = True
                    await self._reject(send, limit)
                raise _TooLarge()
            return message

        async def unless_answered(message):
            if not answered:
                await send(message)

        try:
            await self.app(scope, counted, unless_answered)
        except _TooLarge:
            if not answered:
                await self._reject(send, limit)

    @staticmethod
    async def _reject(send, limit: int) -> None:
        status, media, extra, body = errors.too_large(limit)
        await send_bytes(send, status, media, body, extra)


class _TooLarge(Exception):
    pass


DESCRIPTION = """\
Send an API key as `Authorization: Bearer <key>` (the **Authorize** button): each route needs a
scope, `query`, `register` or `admin` (`GET /metrics`, `GET /v1/workers` and `GET /v1/events` are
admin's). With `INFAAS_AUTH=off` no key is needed.

Every error is JSON `{"error", "code", "message", "field", "details"}`: `error` is the message (as the Open
Inference Protocol has it), `code` a stable code; bad input is a 400 naming the field.
Every answer carries `x-request-id` (yours when you send a safe one, else a new one), which the
service's log lines carry too. `GET /console` is a live view of models, workers and decisions.
"""


def create_app(services: Services, *, control_plane: bool = True) -> FastAPI:
    """The API: every route, or with ``control_plane=False`` only the data plane's (``/v1/infer`` and the
    Open Inference Protocol's ``/v2`` routes), which is what the selector function serves: it then loads
    neither the registration routes (python-multipart, onnx) nor offline jobs, metrics, the console or
    the documentation pages, and starts in a fraction of the time."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await services.data.client.close()

    app = FastAPI(
        title="INFaaS",
        version="0.1.0",
        summary="Model-less inference serving: say what you need, the service decides how.",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # docs.install: the same pages, with their assets served from here
        redoc_url=None,
    )
    app.state.services = services
    if control_plane:
        from infaas.api import console, control, docs, jobs, metrics

        app.include_router(control.router)
        app.include_router(data.router)
        app.include_router(jobs.router)
        app.include_router(metrics.router)
        app.include_router(console.router)
        docs.install(app)
    else:
        app.include_router(data.router)

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

    # one upload limit: the whole registration request (model, validation file and form fields together)
    app.add_middleware(BodyLimit, limit=services.settings.max_body_bytes, upload_limit=services.settings.max_upload_bytes)
    app.add_middleware(DataPlaneFastPath, services=services, site=app)
    return app
