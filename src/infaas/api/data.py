"""Data plane: the model-less ``/v1/infer`` and the Open Inference Protocol v2 (with Triton's
statistics extension, ``/v2/models/stats``).

Routes only decode, call ``DataPlane.infer`` and encode; each answer (or refusal) is counted in
``Services.telemetry`` on the way out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from infaas.api.deps import Services, require, services
from infaas.api.docs import errors
from infaas.app.identity import Principal
from infaas.core import oip
from infaas.core.domain import Query
from infaas.core.errors import InfaasError, InvalidInput, NotFound
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
                                         "compute and queueing as the profiles predict them, cost, accuracy, why); "
                                         "`latency_ms`: measured in the service from taking the query to its "
                                         "outputs; `objective_met`: whether that is within the objective's "
                                         "latency_ms (null without one)"}},
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
_INFER_ERRORS = errors(404, 413, 422, 502, 503, s413="The body is larger than INFAAS_MAX_BODY_BYTES, or has more "
                                                      "rows than INFAAS_MAX_ROWS")
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


def decision_dict(d) -> dict[str, Any]:
    """``Decision.to_dict()`` without ``dataclasses.asdict``'s deep copy (every answer carries one)."""
    return {"variant": d.variant, "worker": d.worker, "batch": d.batch, "predicted_latency_ms": d.predicted_latency_ms,
            "cost_per_query": d.cost_per_query, "accuracy": d.accuracy, "loaded": d.loaded, "reason": d.reason}


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


async def answer_plain(svc: Services, body: bytes, who: str) -> Reply:
    """``POST /v1/infer``: the model-less form."""
    doc = oip.parse_json(body)
    target = _target(doc)
    query = Query(rows=1, objective=oip.parse_objective(doc.get("objective")), tenant=who, **target)
    inputs = doc.get("inputs")
    if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict):
        arrays = dict(oip.tensor_from_json(t, i) for i, t in enumerate(inputs))
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


async def answer_oip(svc: Services, name: str, body: bytes, header_len: str | None, who: str) -> Reply:
    """``POST /v2/models/{name}/infer``: OIP v2, JSON or binary extension."""
    if header_len is not None:
        try:
            n = int(header_len)
        except ValueError:
            raise InvalidInput("Inference-Header-Content-Length must be an integer", field="headers") from None
        doc, arrays = oip.parse_binary(body, n)
    else:
        doc = oip.parse_json(body)
        inputs = doc.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise InvalidInput("inputs must be a non-empty list of tensors", field="inputs")
        arrays = dict(oip.tensor_from_json(t, i) for i, t in enumerate(inputs))
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidInput("parameters must be an object", field="parameters")
    query = Query(rows=1, objective=oip.parse_objective(params, "parameters"), tenant=who, **_target_from_name(name))
    outputs = doc.get("outputs") or []
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("parameters") or {}, dict) for o in outputs
    ):
        raise InvalidInput("outputs must be a list of objects with an optional 'parameters' object", field="outputs")
    wants_binary = bool(params.get("binary_data_output")) or any(
        (o.get("parameters") or {}).get("binary_data") for o in outputs
    )
    answer = await _infer(svc, query, arrays)
    header = {"model_name": name, "model_version": answer.decision.variant, "id": doc.get("id"),
              "parameters": {"decision": decision_dict(answer.decision), "latency_ms": round(answer.latency_ms, 4),
                             "objective_met": query.objective.met_by(answer.latency_ms)}}
    if wants_binary:
        payload, hlen = oip.binary_response(header, answer.outputs)
        return Reply(payload, "application/octet-stream", {"Inference-Header-Content-Length": str(hlen)})
    header["outputs"] = oip.tensors_to_json(answer.outputs)
    return _json(header)


def _response(reply: Reply) -> Response:
    return Response(reply.body, media_type=reply.media_type, headers=reply.headers)


@router.post("/v1/infer", summary="Model-less query: name a task, architecture or variant and an objective",
             openapi_extra=_INFER_DOC, responses=_INFER_ERRORS)
async def infer(request: Request, svc: Services = Depends(services), caller: Principal = Depends(require("query"))):
    return _response(await answer_plain(svc, await request.body(), caller.tenant))


@router.post("/v2/models/{name:path}/infer", tags=["open inference protocol"],
             summary="OIP v2 inference; objective in parameters (min_accuracy, latency_ms, max_cost); binary extension supported",
             openapi_extra=_OIP_INFER_DOC, responses=_INFER_ERRORS)
async def oip_infer(name: str, request: Request, svc: Services = Depends(services),
                    caller: Principal = Depends(require("query"))):
    body = await request.body()
    return _response(await answer_oip(svc, name, body, request.headers.get(oip.BINARY_HEADER), caller.tenant))


@router.get("/v2/health/live", tags=["open inference protocol"])
def live():
    return {"live": True}


@router.get("/v2/health/ready", tags=["open inference protocol"],
            responses=errors(503, s503="No worker is up (the body is {\"ready\": false, \"workers\": 0})"))
def ready(svc: Services = Depends(services)):
    _, cluster = svc.data.snapshot()
    ok = bool(cluster.workers)
    return JSONResponse({"ready": ok, "workers": len(cluster.workers)}, status_code=200 if ok else 503)


@router.get("/v2", tags=["open inference protocol"])
def server_metadata():
    from infaas import __version__

    return {"name": "infaas", "version": __version__, "extensions": ["binary_tensor_data", "model_less"]}


@router.get("/v2/models/stats", tags=["open inference protocol"],
            summary="Statistics of every model you own (Triton's statistics extension)")
def all_model_stats(svc: Services = Depends(services), caller: Principal = Depends(require("query"))):
    return model_stats(svc, caller.tenant)


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
    Only the tenant's own variants are listed (``name`` is a variant, architecture or task): the
    figures count every tenant's queries, so those of a shared model are its owner's to see."""
    from infaas.core.selection import candidates

    catalogue, _ = svc.data.snapshot()
    if name is None:
        variants = [v for v in catalogue.variants.values() if v.tenant == who]
    else:
        variants = [v for v in candidates(Query(rows=1, tenant=who, **_target_from_name(name)), catalogue)
                    if v.tenant == who]
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


@router.get("/v2/models/{name:path}/ready", tags=["open inference protocol"], responses=errors(404))
def model_ready(name: str, svc: Services = Depends(services), caller: Principal = Depends(require("query"))):
    _metadata(name, svc, caller.tenant)
    return {"name": name, "ready": True}


@router.get("/v2/models/{name:path}", tags=["open inference protocol"], responses=errors(404),
            summary="Metadata of a variant, architecture or task (inputs, outputs, variants)")
def model_metadata(name: str, svc: Services = Depends(services), caller: Principal = Depends(require("query"))):
    return _metadata(name, svc, caller.tenant)


def _metadata(name: str, svc: Services, who: str) -> dict[str, Any]:
    from infaas.core.selection import candidates

    target = _target_from_name(name)
    catalogue, _ = svc.data.snapshot()
    variants = candidates(Query(rows=1, tenant=who, **target), catalogue)
    specs = svc.data.input_specs(Query(rows=1, tenant=who, **target))
    arch = svc.control.store.find_architecture(variants[0].architecture)
    if arch is None:
        raise NotFound(f"no model named {name!r}", field="name")
    as_oip = lambda ts: [{"name": t.name, "datatype": oip.NUMPY_TO_OIP.get(t.dtype, "BYTES"), "shape": list(t.shape)} for t in ts]
    return {
        "name": name,
        "versions": [v.id for v in variants],
        "platform": "onnxruntime",
        "inputs": as_oip(specs),
        "outputs": as_oip(arch.outputs),
    }
