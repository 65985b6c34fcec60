"""``GET /console``: a live page of the service for people, served by the API itself.

One HTML page and one small script (``static/console.html``, ``static/console.js``: no CDN, no
build step) that poll ``GET /v1/console`` every 2 s and draw the models and their variants with
their profiles (latency against batch size, one plot per architecture), the workers and their
replicas, the objective-met rate per task and the last decisions with their reasons
(``Services.telemetry``, a bounded ring in this process).

The page loads without a key; with keys on it asks for one, keeps it in the tab's
sessionStorage and sends it as ``Authorization: Bearer``. ``/v1/console`` needs the ``query``
scope and shows a tenant its own models (and shared ones), its own decisions and objectives;
an ``admin`` key also sees the workers and every tenant's decisions.
"""

from __future__ import annotations

import os
import time
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from infaas.api.deps import Services, require, services
from infaas.app.identity import Principal
from infaas.core.errors import HttpStatus, NotFound

router = APIRouter(tags=["console"])

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
_FILES = {"console.html": "text/html; charset=utf-8", "console.js": "text/javascript; charset=utf-8"}
_HEADERS = {
    "content-security-policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "x-content-type-options": "nosniff",
    "cache-control": "no-cache",
}
_cache: dict[str, bytes] = {}


def _file(name: str) -> Response:
    body = _cache.get(name)
    if body is None:
        try:
            with open(os.path.join(STATIC, name), "rb") as f:
                body = _cache[name] = f.read()
        except OSError:
            raise HttpStatus(501, f"the console's {name} is not installed with this package") from None
    return Response(body, media_type=_FILES[name], headers=_HEADERS)


@router.get("/console", include_in_schema=False)
def page() -> Response:
    return _file("console.html")


@router.get("/console/console.js", include_in_schema=False)
def script() -> Response:
    return _file("console.js")


@router.get("/v1/console", summary="What the console shows: models with profiles, workers (admin), objectives, "
                                   "recent decisions")
def console_state(svc: Services = Depends(services), caller: Principal = Depends(require("query"))) -> dict[str, Any]:
    return state(svc, caller)


@router.get("/v1/decisions", summary="The last decisions (and refusals) with their reasons: yours, or everyone's "
                                     "with an admin key")
def recent_decisions(limit: int = 50, svc: Services = Depends(services),
                     caller: Principal = Depends(require("query"))) -> dict[str, Any]:
    return {"decisions": svc.telemetry.recent(None if "admin" in caller.scopes else caller.tenant, max(0, limit))}


def state(svc: Services, who: Principal) -> dict[str, Any]:
    admin = "admin" in who.scopes
    models = []
    for m in svc.control.models_list(who.tenant):
        try:
            models.append(svc.control.model_status(m["name"], who.tenant))
        except NotFound:  # deleted meanwhile
            continue
    workers = None
    if admin:
        now = svc.data.clock()
        suspects = {w for w, until in dict(getattr(svc.data, "_suspect_until", {})).items() if until > now}
        workers = [{**w.to_dict(), "suspect": w.id in suspects}
                   for w in sorted(svc.control.store.workers(), key=lambda w: w.id)]
    mine = None if admin else who.tenant
    t = svc.telemetry
    return {
        "time": time.time(), "tenant": who.tenant, "admin": admin, "auth": svc.settings.auth,
        "models": models, "workers": workers,
        "objectives": t.objective_rates(mine), "decisions": t.recent(mine, 50), "counting_since": t.started_at,
    }
