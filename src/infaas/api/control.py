"""Control plane: register models, read the catalogue and its status."""

from __future__ import annotations

from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from infaas.api.deps import Services, require, services
from infaas.app.identity import Principal
from infaas.core.errors import PayloadTooLarge

router = APIRouter(prefix="/v1", tags=["control plane"])


async def _read_limited(upload: UploadFile, limit: int, field: str) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"{field} is larger than the limit of {limit} bytes", field=field)
    return data


@router.post("/models", summary="Register a model (ONNX) once; variants are generated and profiled in the background",
             status_code=201,
             responses={201: {"description": "Registered: its variants are being built and profiled"},
                        200: {"description": "The same file, task, accuracy and visibility again: what is stored"},
                        409: {"description": "A different file, or another task, under a name that exists"}})
async def register_model(
    file: UploadFile = File(..., description="the ONNX model"),
    name: str = Form(..., description="architecture name: letters, digits, '.', '_', '-'"),
    task: str = Form(..., description="kind/dataset, e.g. classification/digits"),
    accuracy: float = Form(..., description="declared accuracy, 0..1 (re-measured when validation data is given)"),
    visibility: str = Form("private", description="private (only your tenant) or shared (every tenant)"),
    validation: UploadFile | None = File(None, description=".npz with arrays 'inputs' and 'labels'"),
    signature: str | None = Form(None, description="JSON overriding the inferred signature: "
                                 "{\"dims\": {NAME: SIZE}, \"inputs\": {INPUT: {\"batch_axis\": AXIS|null, "
                                 "\"sizes\": {AXIS: SIZE}}}, \"outputs\": {OUTPUT: {\"batch_axis\": AXIS|null}}} "
                                 "(docs/models.md)"),
    svc: Services = Depends(services),
    caller: Principal = Depends(require("register")),
):
    who = caller.tenant
    limit = svc.settings.max_upload_bytes
    data = await _read_limited(file, limit, "file")
    val = await _read_limited(validation, limit, "validation") if validation is not None else None
    arch, created = await run_in_threadpool(
        lambda: svc.control.register(
            name=name, task=task, accuracy=accuracy, data=data, tenant=who, visibility=visibility, validation=val,
            signature=signature,
        )
    )
    status = await run_in_threadpool(svc.control.model_status, arch.name, who)
    return JSONResponse(status, status_code=201 if created else 200)


@router.get("/models", summary="Architectures you can query, with their status")
def list_models(task: str | None = None, svc: Services = Depends(services), caller: Principal = Depends(require("query"))):
    return {"models": svc.control.models_list(caller.tenant, task)}


@router.get("/models/{name}", summary="One architecture: variants, profiles, status",
            responses={404: {"description": "No architecture of that name that your tenant may see"}})
def get_model(name: str, svc: Services = Depends(services), caller: Principal = Depends(require("query"))):
    return svc.control.model_status(name, caller.tenant)


@router.delete("/models/{name}", status_code=204, summary="Delete an architecture you own and its variants",
               responses={403: {"description": "The key lacks the register scope, or the model is another tenant's "
                                               "shared one"},
                          404: {"description": "No architecture of that name that your tenant may see"}})
def delete_model(name: str, svc: Services = Depends(services), caller: Principal = Depends(require("register"))):
    svc.control.delete(name, caller.tenant)
    svc.telemetry.forget(name)


@router.get("/tasks", summary="Tasks with at least one architecture, and their input spec")
def list_tasks(svc: Services = Depends(services), caller: Principal = Depends(require("query"))):
    return {"tasks": svc.control.tasks(caller.tenant)}


@router.get("/workers", summary="Live workers, their replicas and load (admin)")
def list_workers(svc: Services = Depends(services), _caller: Principal = Depends(require("admin"))):
    return {"workers": [w.to_dict() for w in svc.control.store.workers()]}


@router.get("/events", summary="Autoscaling decisions with their inputs and reasons (admin)")
def list_events(since: float = 0.0, svc: Services = Depends(services), _caller: Principal = Depends(require("admin"))):
    return {"events": svc.control.store.events(since)}


@router.get("/models/{name}/logs", summary="Each variant's full build and profiling log",
            responses={404: {"description": "No architecture of that name that your tenant may see"}})
def model_logs(name: str, svc: Services = Depends(services), caller: Principal = Depends(require("query"))):
    return svc.control.build_logs(name, caller.tenant)
