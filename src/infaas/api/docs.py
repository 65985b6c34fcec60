"""The API's own description: ``/docs`` (Swagger UI) and ``/redoc`` served with their scripts and
styles from this process (no CDN: they work on a machine without internet), and an OpenAPI
document whose statuses are the ones the API answers.

- The assets come from the ``fastapi-offline`` package (its ``static/`` folder: Swagger UI's
  bundle and CSS, ReDoc's standalone bundle, a favicon), served under ``/docs/assets/``. Where the
  package is missing (a deployment that left it out), the pages fall back to FastAPI's CDN URLs.
- ``Authorization: Bearer <key>`` is the ``bearer`` security scheme (``deps.BEARER``): Swagger UI
  shows the Authorize button and a lock on every route that needs a key.
- Errors: every error answer is ``{"error", "message", "field", "details"}`` (``ErrorBody``).
  FastAPI's 422 "Validation Error" is not documented anywhere: the API answers bad input with 400
  (``api.app``). 422 is documented only where the API really answers it (an objective no variant
  can meet). Routes list their own statuses in ``responses=`` (``errors(...)``); these are
  added to every route by what it takes (``describe``): 400 where it has parameters or a body,
  413 where it has a body, and 401, 403, 429 and 503 (the key store or the metadata store busy)
  where it needs a key.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel

from infaas.core.errors import NotFound

ASSETS_URL = "/docs/assets"
ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
          "redoc.standalone.js": "text/javascript", "favicon.png": "image/png"}


class ErrorBody(BaseModel):
    """Every error answer."""

    error: str  # the human message (the Open Inference Protocol's field, what its clients show)
    code: str  # a stable code: invalid_input, unauthenticated, forbidden, not_found, ...
    message: str  # the message again
    field: str | None = None  # the request field at fault (body, inputs, objective.latency_ms, name, ...)
    details: dict[str, Any] | None = None


STATUS = {
    400: "Bad input: `field` names the part of the request at fault and `message` the problem",
    401: "No valid API key: send `Authorization: Bearer <key>`",
    403: "The key lacks the scope this route needs",
    404: "Nothing of that name that your tenant may use (another tenant's private model looks the same)",
    409: "Conflicts with what exists",
    413: "The body is larger than the limit (`INFAAS_MAX_BODY_BYTES`; uploads `INFAAS_MAX_UPLOAD_BYTES`)",
    415: "A `Content-Encoding` the service does not read (it reads gzip, deflate and identity)",
    422: "No variant can meet the objective: `details` has the best accuracy, latency and cost available",
    429: "Over your tenant's request rate: `Retry-After` says when to try again",
    502: "The worker failed to answer (after one retry on another worker)",
    503: "Busy or no worker up for the hardware needed: `Retry-After` says when to try again",
}


def errors(*statuses: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: ``errors(404, 409, s409="a different file under that name")``."""
    out: dict[int | str, dict[str, Any]] = {}
    for s in statuses:
        out[s] = {"model": ErrorBody, "description": descriptions.get(f"s{s}", STATUS[s])}
    return out


def _assets_dir() -> str | None:
    try:
        import fastapi_offline
    except ImportError:
        return None
    folder = os.path.join(os.path.dirname(fastapi_offline.__file__), "static")
    return folder if all(os.path.isfile(os.path.join(folder, n)) for n in ASSETS) else None


def install(app: FastAPI) -> None:
    """``/docs``, ``/redoc`` and their assets on ``app`` (made with ``docs_url=None, redoc_url=None``),
    and the OpenAPI document as ``describe`` makes it."""
    folder = _assets_dir()
    title = app.title

    def url(request: Request, name: str) -> str | None:
        return f"{request.scope.get('root_path', '')}{ASSETS_URL}/{name}" if folder else None

    def cdn(**kw: str | None) -> dict[str, str]:  # the package is missing: FastAPI's defaults
        return {k: v for k, v in kw.items() if v is not None}

    @app.get("/docs", include_in_schema=False)
    async def swagger(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{title} - API",
            swagger_ui_parameters={"validatorUrl": None, "tryItOutEnabled": False},
            **cdn(swagger_js_url=url(request, "swagger-ui-bundle.js"), swagger_css_url=url(request, "swagger-ui.css"),
                  swagger_favicon_url=url(request, "favicon.png")))

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(openapi_url=f"{root}{app.openapi_url}", title=f"{title} - API", with_google_fonts=False,
                              **cdn(redoc_js_url=url(request, "redoc.standalone.js"),
                                    redoc_favicon_url=url(request, "favicon.png")))

    @app.get(ASSETS_URL + "/{name}", include_in_schema=False)
    async def asset(name: str) -> FileResponse:
        if folder is None or name not in ASSETS:
            raise NotFound(f"no documentation asset {name!r}", field="path")
        return FileResponse(os.path.join(folder, name), media_type=ASSETS[name],
                            headers={"cache-control": "public, max-age=86400"})

    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe(plain())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


_ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}


def describe(schema: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's document with the statuses the API answers (see the module's docstring), and the
    scope each route needs (its security requirement's role) at the head of its description."""
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    if "ErrorBody" not in schemas:
        schemas["ErrorBody"] = ErrorBody.model_json_schema()
    for ops in schema.get("paths", {}).values():
        for op in ops.values():
            roles = [r for req in op.get("security", ()) for r in req.get("bearer", ())]
            scope = roles[0] if roles else None
            if scope is not None:
                op["description"] = "\n\n".join(filter(None, [f"Needs the `{scope}` scope.", op.get("description")]))
            responses = op.setdefault("responses", {})
            documented = responses.get("422")
            if documented is not None and "HTTPValidationError" in repr(documented):
                del responses["422"]
            add = []
            if op.get("parameters") or op.get("requestBody"):
                add.append(400)
            if op.get("requestBody"):
                add.append(413)
            if op.get("security"):
                add += [401, 403, 429, 503]
            for status in add:
                text = STATUS[status]
                if status == 403 and scope is not None:
                    text = f"The key lacks the `{scope}` scope"
                responses.setdefault(str(status), {"description": text})
            for status, r in responses.items():
                if status[:1] in "45":
                    r["content"] = {"application/json": {"schema": _ERROR_REF}}
            op["responses"] = dict(sorted(responses.items()))
    for name in ("HTTPValidationError", "ValidationError"):
        if name in schemas and f"#/components/schemas/{name}" not in repr(schema["paths"]):
            del schemas[name]
    return schema
