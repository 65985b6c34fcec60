"""Offline jobs: submit, list, status, cancel. See ``infaas.app.offline``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from infaas.api.deps import Services, require, services
from infaas.api.docs import errors
from infaas.app.identity import Principal
from infaas.core import oip

router = APIRouter(prefix="/v1/jobs", tags=["offline jobs"])

_SUBMIT_DOC = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {
            "type": "object",
            "properties": {
                "input": {"type": "string", "description": "folder under the offline root, or s3://bucket/prefix"},
                "output": {"type": "string", "description": "folder under the offline root, or s3://bucket/prefix"},
                "task": {"type": "string"}, "architecture": {"type": "string"}, "variant": {"type": "string"},
                "objective": {"type": "object", "properties": {"min_accuracy": {"type": "number"},
                                                               "max_cost": {"type": "number"}}},
                "deadline_s": {"type": "number"},
                "idempotency_key": {"type": "string", "description": "makes a retried submission answer the "
                                    "job the first one made (also the Idempotency-Key header); the same key with "
                                    "a different request is a 409"},
            },
            "required": ["input", "output"],
        }}},
    }
}


@router.post("", summary="Submit an offline job; answers at once with its id (state queued until its items are "
                         "made)", openapi_extra=_SUBMIT_DOC,
             status_code=201,
             responses=errors(403, 404, 409, 422, s403="The key lacks the query scope, or a location is outside "
                                                       "your offline area",
                              s409="The idempotency key was first used for a different request",
                              s404="No model of that name that your tenant may use, or no input location",
                              s422="No variant meets the objective"))
async def submit(request: Request, svc: Services = Depends(services), caller: Principal = Depends(require("query"))):
    doc = oip.parse_json(await request.body())
    status = await run_in_threadpool(svc.offline().submit, doc, caller.tenant,
                                     request.headers.get("idempotency-key"))
    return JSONResponse(status, status_code=201)


@router.get("", summary="Your jobs")
def list_jobs(svc: Services = Depends(services), caller: Principal = Depends(require("query"))):
    return {"jobs": svc.offline().jobs(caller.tenant)}


@router.get("/{job_id}", summary="Items done, failed (with errors) and left; estimated time to finish",
            responses=errors(404))
def job_status(job_id: str, svc: Services = Depends(services), caller: Principal = Depends(require("query"))):
    return svc.offline().status(job_id, caller.tenant)


@router.post("/{job_id}/cancel", summary="Cancel a job; items not yet started are dropped", responses=errors(404))
def cancel(job_id: str, svc: Services = Depends(services), caller: Principal = Depends(require("query"))):
    return svc.offline().cancel(job_id, caller.tenant)
