"""HTTP client from the API (or the selector function) to workers.

One pooled ``httpx.AsyncClient`` per process: connections to each worker are
kept alive and reused. Connection failures, resets and timeouts become
``WorkerFault`` so the caller can retry elsewhere; errors the worker reports
(bad input, not ready) come back as the same domain error.
"""

from __future__ import annotations

import httpx

from .. import errors, tensors
from ..service import WorkerClient

_BY_CODE = {
    cls.code: cls
    for cls in (
        errors.InvalidInput,
        errors.NotFound,
        errors.Unavailable,
        errors.PayloadTooLarge,
        errors.NoFeasibleVariant,
    )
}


class HttpWorkerClient(WorkerClient):
    def __init__(self, timeout_s: float = 10.0, max_connections: int = 256) -> None:
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=1.0),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    async def infer(self, url: str, variant_id: str, frame: bytes, objective_ms: float | None) -> bytes:
        headers = {"content-type": tensors.CONTENT_TYPE}
        if objective_ms is not None:
            headers["x-infaas-objective-ms"] = repr(float(objective_ms))
        try:
            resp = await self._client.post(f"{url}/v1/infer/{variant_id}", content=frame, headers=headers)
        except (httpx.TransportError, httpx.TimeoutException) as exc:
            raise errors.WorkerFault(f"worker at {url} failed: {type(exc).__name__}") from None
        if resp.status_code == 200:
            return resp.content
        try:
            body = resp.json()
        except ValueError:
            raise errors.WorkerFault(f"worker at {url} answered {resp.status_code} without an error body") from None
        if resp.status_code >= 500 and body.get("error") not in _BY_CODE:
            raise errors.WorkerFault(f"worker at {url} failed: {body.get('message', resp.status_code)}")
        cls = _BY_CODE.get(body.get("error"), errors.InvalidInput)
        raise cls(body.get("message", "worker rejected the request"), field=body.get("field"))

    async def close(self) -> None:
        await self._client.aclose()
