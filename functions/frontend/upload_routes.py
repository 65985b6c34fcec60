"""Registration of large models through a presigned S3 upload.

A request through API Gateway and Lambda carries at most 6 MB (base64 makes a
multipart upload of a ~4.5 MB file the practical limit of ``POST
/v1/models``). Larger files go straight to S3:

1. ``POST /v1/uploads`` answers an ``upload_id`` and, for the model file and
   its optional validation data, a presigned POST (``url`` + form ``fields``)
   valid for ``EXPIRES_S``; S3 itself refuses a file larger than
   ``INFAAS_MAX_UPLOAD_BYTES`` (a ``content-length-range`` condition).
2. The client POSTs each file to its URL as a multipart form: the ``fields``
   first, then ``file``.
3. ``POST /v1/uploads/{upload_id}/register`` with the form fields of ``POST
   /v1/models`` (name, task, accuracy, visibility) as JSON registers the
   uploaded files exactly as a direct upload would, then deletes the upload.

Uploads that are never registered expire through the bucket's lifecycle rule
on ``uploads/`` (one day).
"""

from __future__ import annotations

import re
import uuid

from fastapi import APIRouter, Body, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from infaas.api.deps import Services, require, services
from infaas.app.identity import Principal
from infaas.core.errors import InvalidInput, NotFound

router = APIRouter(prefix="/v1/uploads", tags=["control plane"])

EXPIRES_S = 900
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
FILES = {"model": "model.onnx", "validation": "validation.npz"}


def upload_key(upload_id: str, part: str) -> str:
    if not _UPLOAD_ID.match(upload_id):
        raise InvalidInput("upload_id must be the 32 hex digits POST /v1/uploads returned", field="upload_id")
    return f"uploads/{upload_id}/{FILES[part]}"


@router.post("", summary="Start a large upload: presigned S3 POSTs for the model and its validation data")
def start_upload(request: Request, svc: Services = Depends(services), _caller: Principal = Depends(require("register"))):
    models = request.app.state.adapters.models
    upload_id = uuid.uuid4().hex
    limit = svc.settings.max_upload_bytes
    targets = {}
    for part in FILES:
        post = models.client.generate_presigned_post(
            Bucket=models.bucket,
            Key=upload_key(upload_id, part),
            Conditions=[["content-length-range", 1, limit]],
            ExpiresIn=EXPIRES_S,
        )
        targets[part] = {"url": post["url"], "fields": post["fields"]}
    return JSONResponse(
        {"upload_id": upload_id, "expires_in_s": EXPIRES_S, "max_bytes": limit, **targets}, status_code=201
    )


@router.post("/{upload_id}/register", summary="Register the model uploaded under upload_id")
async def register_upload(
    upload_id: str,
    request: Request,
    name: str = Body(...),
    task: str = Body(...),
    accuracy: float = Body(...),
    visibility: str = Body("private"),
    svc: Services = Depends(services),
    caller: Principal = Depends(require("register")),
):
    models = request.app.state.adapters.models
    model_key, validation_key = upload_key(upload_id, "model"), upload_key(upload_id, "validation")

    def register():
        try:
            data = models.get(model_key)
        except NotFound:
            raise NotFound(f"nothing was uploaded under {upload_id}: POST the model file first", field="upload_id") from None
        validation = models.get(validation_key) if models.exists(validation_key) else None
        arch, created = svc.control.register(
            name=name, task=task, accuracy=accuracy, data=data, tenant=caller.tenant, visibility=visibility, validation=validation
        )
        for key in (model_key, validation_key):
            models.delete(key)
        return arch, created

    arch, created = await run_in_threadpool(register)
    status = await run_in_threadpool(svc.control.model_status, arch.name, caller.tenant)
    return JSONResponse(status, status_code=201 if created else 200)
