"""Data plane: the model-less ``/v1/infer`` and the Open Inference Protocol v2 (with Triton's
statistics extension, ``/v2/models/stats``).

Routes only decode, call ``DataPlane.infer`` and encode; each answer (or refusal) is counted in
``Services.telemetry`` on the way out.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from infaas.api.deps import Services, require, services
from infaas.api.docs import errors
from infaas.app.identity import Principal
from infaas.core import oip, tier
from infaas.core.domain import Query
from infaas.core.errors import InfaasError, InvalidInput, NotFound
from infaas.core.signature import describe as describe_signature
from infaas.core.tensors import compact_json

router = APIRouter(tags=["data plane"])

_INFER_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "task": {"type": "string", "example": "classification/digits"},
                        "architecture": {"type": "string"},
                        "variant": {"type": "string"},
                        "objective": {
                            "type": "object",
                            "properties": {
                                "min_accuracy": {"type": "number"},
                                "latency_ms": {"type": "number"},
                                "max_cost": {"type": "number", "description": "dollars per query"},
                                "if_late": {"type": "string", "enum": ["serve", "refuse"],
                                            "description": "when every replica would answer past latency_ms: "
                                                           "serve late (flagged) or refuse at once (503)"},
                            },
                        },
                        "inputs": {
                            "description": "a list of rows for a single-input model, or a list of OIP tensors",
                            "type": "array",
                        },
                    },
                }
            }
        },
    },
    "responses": {"200": {"description": "The outputs; `decision` (variant, worker, batch, `predicted_latency_ms`: "
                                         "from the query's arrival at the API to its answer: compute and queueing "
                                         "as the profiles predict them plus `overhead_ms`, the API's own work and "
                                         "the hop to that worker as measured on recent answers; cost, accuracy, "
                                         "why); `latency_ms`: measured in the service from taking the query to its "
                                         "outputs; `objective_met`: whether that is within the objective's "
                                         "latency_ms (null without one). Objective `if_late`: `serve` (default) or "
                                         "`refuse` a query every replica would answer late (503, Retry-After, the "
                                         "best latency and accuracy to be had)"}},
}


_OIP_INFER_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object", "properties": {
                "id": {"type": "string"},
                "parameters": {"type": "object", "description": "the objective: min_accuracy, latency_ms, max_cost; "
                                                               "binary_data_output"},
                "inputs": {"type": "array", "items": {"type": "object", "properties": {
                    "name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
                    "datatype": {"type": "string", "example": "FP32"}, "data": {"type": "array"}}}},
                "outputs": {"type": "array", "items": {"type": "object"}},
            }}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary",
                                                    "description": "binary tensor extension: the JSON header "
                                                                   "(Inference-Header-Content-Length bytes), then the tensors"}},
        },
    },
    "responses": {"200": {"description": "OIP v2 outputs; `parameters` holds `decision`, `latency_ms` (measured "
                                         "in the service) and `objective_met` (null without a latency objective)"}},
}
# What the inference routes answer besides bad input (400), a body too large (413) and the key's errors.
_INFER_ERRORS = errors(404, 413, 415, 422, 502, 503, s413="The body is larger than INFAAS_MAX_BODY_BYTES (as sent or "
                                                           "once inflated), or has more rows than INFAAS_MAX_ROWS")
# A query no variant answered: the console shows these among the decisions.
_REFUSED = frozenset({422, 502, 503})


def _target(doc: dict[str, Any]) -> dict[str, str]:
    named = {k: doc[k] for k in ("variant", "architecture", "task") if doc.get(k) is not None}
    if len(named) != 1 or not all(isinstance(v, str) for v in named.values()):
        raise InvalidInput("name exactly one of 'variant', 'architecture' or 'task' (a string)", field="target")
    return named


def _target_from_name(name: str) -> dict[str, str]:
    """OIP ``{name}``: a variant has ':' in it, a task has '/', else an architecture."""
    if ":" in name:
        return {"variant": name}
    if "/" in name:
        return {"task": name}
    return {"architecture": name}


VERSIONS = "/versions/"


def split_version(name: str) -> tuple[str, str | None]:
    """``{model}/versions/{version}`` (the OIP's versioned paths) as (model, version); else (name, None)."""
    model, sep, version = name.rpartition(VERSIONS)
    if not sep:
        return name, None
    if not model or not version or "/" in version:
        raise NotFound(f"no model version at {name!r}: the path is /v2/models/{{model}}/versions/{{version}}",
                       field="version")
    return model, version


def versions(svc: Services, model: str, who: str) -> list[str]:
    """The versions of a model as its metadata lists them: the ids of its variants the tenant may use."""
    from infaas.core.selection import candidates

    query = Query(rows=1, tenant=who, **_target_from_name(model))
    svc.data.input_specs(query)  # 404 for a name nobody may use, after a refresh for one just registered
    catalogue, _ = svc.data.snapshot()
    return [v.id for v in candidates(query, catalogue)]


def resolve(svc: Services, name: str, who: str) -> tuple[str, dict[str, str], str | None]:
    """An OIP path's ``{name}`` (maybe ``{model}/versions/{version}``) as (model, the query's target,
    version). A version is one of the model's variants (``versions``); any other is a 404."""
    model, version = split_version(name)
    if version is None:
        return model, _target_from_name(model), None
    try:
        known = versions(svc, model, who)
    except NotFound as exc:
        raise why_not_ready(svc, _target_from_name(model), who, exc) from None
    if version not in known:
        svc.data.snapshot(force=True)  # built a moment ago?
        known = versions(svc, model, who)
    if version not in known:
        shown = ", ".join(known[:8]) + (f" and {len(known) - 8} more" if len(known) > 8 else "")
        raise NotFound(f"model {model!r} has no version {version!r}; its versions are {shown}", field="version")
    return model, {"variant": version}, version


def decision_dict(d) -> dict[str, Any]:
    """``Decision.to_dict()`` without ``dataclasses.asdict``'s deep copy (every answer carries one)."""
    return {"variant": d.variant, "worker": d.worker, "batch": d.batch, "predicted_latency_ms": d.predicted_latency_ms,
            "cost_per_query": d.cost_per_query, "accuracy": d.accuracy, "loaded": d.loaded, "reason": d.reason,
            "overhead_ms": d.overhead_ms}


def _answer_json(answer, query: Query, model_name: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "outputs": oip.tensors_to_json(answer.outputs),
        "decision": decision_dict(answer.decision),
        "latency_ms": round(answer.latency_ms, 4),
        "objective_met": query.objective.met_by(answer.latency_ms),
    }
    if model_name is not None:
        body["model_name"] = model_name
        body["model_version"] = answer.decision.variant
    return body


@dataclass(frozen=True)
class Reply:
    body: bytes
    media_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def media_bytes(self) -> bytes:
        return _MEDIA.get(self.media_type) or self.media_type.encode()

    @property
    def header_pairs(self) -> list[tuple[bytes, bytes]]:
        return [(k.lower().encode(), v.encode()) for k, v in self.headers.items()] if self.headers else []


_MEDIA = {"application/json": b"application/json", "application/octet-stream": b"application/octet-stream"}


def _json(doc: Any) -> Reply:
    return Reply(compact_json(doc))


def why_not_ready(svc: Services, target: dict[str, str], who: str, exc: NotFound) -> NotFound:
    """The 404 of a query whose model exists but has no ready variant, with the reason: each of its
    variants' state and message (a failed build's error, a skip, waiting for a worker), also in
    ``details.variants``. A name the tenant may not see keeps the plain 404."""
    if exc.field != "target":
        return exc
    store = svc.control.store
    if "task" in target:
        archs = store.architectures(target["task"])
    else:
        name = target.get("architecture") or target.get("variant", "").split(":")[0]
        found = store.find_architecture(name) if name else None
        archs = [found] if found is not None else []
    archs = [a for a in archs if a.tenant == who or a.visibility == "shared"]
    variants = [v for a in archs for v in store.variants_of(a.name)
                if "variant" not in target or v.id == target["variant"]]
    if not variants:
        return exc
    lines = [f"{v.id} {v.status}" + (f" ({v.message})" if v.message else "") for v in variants]
    return NotFound(f"{exc.message}: " + "; ".join(lines)[:4000], field="target",
                    variants={v.id: {"status": v.status, "message": v.message} for v in variants})


async def answer_plain(svc: Services, body: bytes, who: str) -> Reply:
    """``POST /v1/infer``: the model-less form."""
    doc = oip.parse_json(body)
    target = _target(doc)
    try:
        return await _answer_plain(svc, doc, target, who)
    except NotFound as exc:
        raise why_not_ready(svc, target, who, exc) from None


async def _answer_plain(svc: Services, doc: dict, target: dict[str, str], who: str) -> Reply:
    query = Query(rows=1, objective=oip.parse_objective(doc.get("objective")), tenant=who, **target)
    inputs = doc.get("inputs")
    if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict):
        arrays = oip.tensors_from_json(inputs)
    else:
        specs = svc.data.input_specs(query)
        if len(specs) != 1:
            raise InvalidInput("this model has several inputs: send them as a list of named tensors", field="inputs")
        arrays = {specs[0].name: oip.rows_to_array(inputs, specs[0].dtype)}
    answer = await _infer(svc, query, arrays)
    return _json(_answer_json(answer, query))


async def _infer(svc: Services, query: Query, arrays: dict):
    """``DataPlane.infer``, counted (``api.telemetry``)."""
    try:
        answer = await svc.data.infer(query, arrays)
    except InfaasError as exc:
        if exc.status in _REFUSED:
            svc.telemetry.refused(query, exc, _rows(arrays))
        raise
    svc.telemetry.answered(query, answer, _rows(arrays))
    return answer


def _rows(arrays: dict) -> int:
    first = next(iter(arrays.values()), None)
    return first.shape[0] if first is not None and first.ndim else 1


async def request_body(svc: Services, body: bytes, encoding: str | None) -> bytes:
    """The body as sent before its ``Content-Encoding`` (gzip, deflate), within the body limit:
    inflated on a thread (zlib lets the event loop run meanwhile)."""
    if not encoding or encoding.strip().lower() == "identity" or not body:
        return oip.inflate(body, encoding, svc.settings.max_body_bytes)
    return await asyncio.to_thread(oip.inflate, body, encoding, svc.settings.max_body_bytes)


async def answer_oip(svc: Services, name: str, body: bytes, header_len: str | None, who: str) -> Reply:
    """``POST /v2/models/{name}[/versions/{version}]/infer``: OIP v2, JSON or binary extension."""
    model, target, _ = resolve(svc, name, who)
    try:
        return await _answer_oip(svc, model, target, body, header_len, who)
    except NotFound as exc:
        raise why_not_ready(svc, target, who, exc) from None


async def _answer_oip(svc: Services, model: str, target: dict[str, str], body: bytes, header_len: str | None,
                      who: str) -> Reply:
    if header_len is not None:
        try:
            n = int(header_len)
        except ValueError:
            raise InvalidInput("Inference-Header-Content-Length must be an integer", field="headers") from None
        doc, arrays = oip.parse_binary(body, n)
    else:
        doc = oip.parse_json(body)
        arrays = oip.tensors_from_json(doc.get("inputs"))
    rid = oip.request_id(doc)
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidInput("parameters must be an object", field="parameters")
    query = Query(rows=1, objective=oip.parse_objective(params, "parameters"), tenant=who, **target)
    names, binary, default_binary = oip.requested_outputs(doc, params)
    if names is not None:  # refused before anything runs
        known = svc.data.output_names(query)
        for i, n in enumerate(names):
            if n not in known:
                raise InvalidInput(f"{n!r} is not an output of {model!r}; its outputs are {sorted(known)}",
                                   field=f"outputs[{i}].name")
    answer = await _infer(svc, query, arrays)
    outputs = oip.select_outputs(answer.outputs, names)
    header: dict[str, Any] = {"model_name": model, "model_version": answer.decision.variant}
    if rid is not None:
        header["id"] = rid
    header["parameters"] = {"decision": decision_dict(answer.decision), "latency_ms": round(answer.latency_ms, 4),
                            "objective_met": query.objective.met_by(answer.latency_ms)}
    payload, hlen = oip.encode_response(header, outputs, binary, default_binary)
    if hlen is None:
        return Reply(payload)
    return Reply(payload, "application/octet-stream", {"Inference-Header-Content-Length": str(hlen)})


def _response(reply: Reply) -> Response:
    return Response(reply.body, media_type=reply.media_type, headers=reply.headers)


@router.post("/v1/infer", summary="Model-less query: name a task, architecture or variant and an objective",
             openapi_extra=_INFER_DOC, responses=_INFER_ERRORS)
async def infer(request: Request, svc: Services = Depends(services), caller: Principal = Depends(require("query"))):
    body = await request_body(svc, await request.body(), request.headers.get("content-encoding"))
    return _response(await answer_plain(svc, body, caller.tenant))


@router.post("/v2/models/{name:path}/infer", tags=["open inference protocol"],
             summary="OIP v2 inference ({name} or {name}/versions/{variant}); objective in parameters (min_accuracy, "
                     "latency_ms, max_cost); requested outputs, binary extension, gzip or deflate bodies (docs/models.md)",
             openapi_extra=_OIP_INFER_DOC, responses=_INFER_ERRORS)
async def oip_infer(name: str, request: Request, svc: Services = Depends(services),
                    caller: Principal = Depends(require("query"))):
    body = await request_body(svc, await request.body(), request.headers.get("content-encoding"))
    return _response(await answer_oip(svc, name, body, request.headers.get(oip.BINARY_HEADER), caller.tenant))


@router.get("/v2/health/live", tags=["open inference protocol"])
def live():
    return {"live": True}


@router.get("/v2/health/ready", tags=["open inference protocol"],
            responses=errors(503, s503="Nothing can answer: no worker is up and the function tier has no ready variant "
                                       "(the body is {\"ready\": false, \"workers\": 0, \"function_variants\": 0})"))
def ready(svc: Services = Depends(services)):
    """Ready when something can answer a query: a worker is up, or the serverless tier is on and has a
    ready variant (a fleet whose minimum is zero is ready while its workers are all gone)."""
    catalogue, cluster = svc.data.snapshot()
    functions = 0 if svc.data.tier_state is None else sum(
        1 for v in catalogue.variants.values() if v.hardware == tier.HARDWARE)
    ok = bool(cluster.workers) or functions > 0
    return JSONResponse({"ready": ok, "workers": len(cluster.workers), "function_variants": functions},
                        status_code=200 if ok else 503)


@router.get("/v2", tags=["open inference protocol"])
def server_metadata():
    from infaas import __version__

    return {"name": "infaas", "version": __version__,
            "extensions": ["binary_tensor_data", "statistics", "model_less"]}


@router.get("/v2/models/stats", tags=["open inference protocol"],
            summary="Statistics of every model you own (Triton's statistics extension)")
def all_model_stats(svc: Services = Depends(services), caller: Principal = Depends(require("query"))):
    return model_stats(svc, caller.tenant)


@router.get("/v2/models/{name:path}/versions/{version}/stats", tags=["open inference protocol"], responses=errors(404),
            summary="Statistics of one version (variant) of a model you own (Triton's statistics extension)")
def version_stats(name: str, version: str, svc: Services = Depends(services),
                  caller: Principal = Depends(require("query"))):
    return model_stats(svc, caller.tenant, f"{name}{VERSIONS}{version}")


@router.get("/v2/models/{name:path}/stats", tags=["open inference protocol"], responses=errors(404),
            summary="Statistics of a variant, an architecture's variants or a task's (Triton's statistics extension)")
def one_model_stats(name: str, svc: Services = Depends(services), caller: Principal = Depends(require("query"))):
    return model_stats(svc, caller.tenant, name)


def model_stats(svc: Services, who: str, name: str | None = None) -> dict[str, Any]:
    """Triton's statistics shape, one entry per variant: ``name`` the architecture, ``version`` the
    variant, as the OIP routes name them. What this API process counted since it started:

    - ``inference_count``: rows answered; ``execution_count``: worker calls (after coalescing);
    - ``inference_stats.success``: queries answered and their total time in the service (ns);
    - ``inference_stats.fail``: worker calls that failed (each failed every query it carried) and their time;
    - ``inference_stats.compute_infer``: worker calls that answered and their round trip from this
      API (the worker's queue and run, and the hop).

    Triton's ``queue``, ``compute_input`` and ``compute_output`` are not measured here and left out.
    Only the tenant's own variants are listed (``name`` is a variant, architecture or task, maybe
    ``{model}/versions/{version}``): the figures count every tenant's queries, so those of a shared
    model are its owner's to see."""
    from infaas.core.selection import candidates

    catalogue, _ = svc.data.snapshot()
    if name is None:
        variants = [v for v in catalogue.variants.values() if v.tenant == who]
    else:
        _, target, _ = resolve(svc, name, who)
        catalogue, _ = svc.data.snapshot()
        variants = [v for v in candidates(Query(rows=1, tenant=who, **target), catalogue) if v.tenant == who]
    counted = svc.telemetry.variants
    out = []
    for v in sorted(variants, key=lambda v: (v.architecture, v.id)):
        s = counted.get(v.id)
        success = (s.success, s.success_ns) if s else (0, 0)
        calls = (s.calls, s.calls_ns, s.failed_calls, s.failed_calls_ns) if s else (0, 0, 0, 0)
        out.append({
            "name": v.architecture, "version": v.id, "last_inference": s.last_ms if s else 0,
            "inference_count": s.rows if s else 0, "execution_count": calls[0],
            "inference_stats": {"success": {"count": success[0], "ns": success[1]},
                                "fail": {"count": calls[2], "ns": calls[3]},
                                "compute_infer": {"count": calls[0], "ns": calls[1]}},
        })
    return {"model_stats": out}


@router.get("/v2/models/{name:path}/versions/{version}/ready", tags=["open inference protocol"], responses=errors(404),
            summary="Whether a version (variant) of a model is ready")
def version_ready(name: str, version: str, svc: Services = Depends(services),
                  caller: Principal = Depends(require("query"))):
    _metadata(f"{name}{VERSIONS}{version}", svc, caller.tenant)
    return {"name": name, "version": version, "ready": True}


@router.get("/v2/models/{name:path}/ready", tags=["open inference protocol"], responses=errors(404))
def model_ready(name: str, svc: Services = Depends(services), caller: Principal = Depends(require("query"))):
    _metadata(name, svc, caller.tenant)  # 404 for no such model or version
    model, version = split_version(name)
    return {"name": model, "ready": True, **({"version": version} if version else {})}


@router.get("/v2/models/{name:path}/versions/{version}", tags=["open inference protocol"], responses=errors(404),
            summary="Metadata of one version (variant) of a model: a version is one of those its metadata lists")
def version_metadata(name: str, version: str, svc: Services = Depends(services),
                     caller: Principal = Depends(require("query"))):
    return _metadata(f"{name}{VERSIONS}{version}", svc, caller.tenant)


@router.get("/v2/models/{name:path}", tags=["open inference protocol"], responses=errors(404),
            summary="Metadata of a variant, architecture or task (inputs, outputs, variants)")
def model_metadata(name: str, svc: Services = Depends(services), caller: Principal = Depends(require("query"))):
    return _metadata(name, svc, caller.tenant)


def _metadata(name: str, svc: Services, who: str) -> dict[str, Any]:
    """OIP model metadata; ``versions`` are the ids of the model's variants the tenant may use,
    each reachable as ``/v2/models/{name}/versions/{version}``."""
    from infaas.core.selection import candidates

    model, target, _ = resolve(svc, name, who)
    query = Query(rows=1, tenant=who, **target)
    try:
        specs = svc.data.input_specs(query)
    except NotFound as exc:
        raise why_not_ready(svc, target, who, exc) from None
    catalogue, _ = svc.data.snapshot()
    variants = candidates(query, catalogue)
    arch = svc.control.store.find_architecture(variants[0].architecture)
    if arch is None:
        raise NotFound(f"no model named {model!r}", field="name")
    as_oip = lambda ts: [{"name": t.name, "datatype": oip.oip_datatype(t.dtype), "shape": list(t.shape)} for t in ts]
    return {
        "name": model,
        "versions": versions(svc, model, who),
        "platform": "onnxruntime",
        "inputs": as_oip(specs),
        "outputs": as_oip(arch.outputs),
        "parameters": {"signature": describe_signature(arch.inputs, arch.outputs, arch.signature_notes)},
    }
