"""One error hierarchy for the whole service.

Every error a user can cause or see is an ``InfaasError``; each class names
the HTTP status a server must answer with (``status``) and a stable machine
readable ``code``. Adapters translate SDK and driver errors into these.

The codec at the end of this module is the only place an error becomes an
HTTP answer (``encode``: status, headers, JSON body) and an answer becomes an
error again (``decode``): the FastAPI app, the inference routes' ASGI path, the worker and
the API's client to workers all call it.
"""

from __future__ import annotations

import json
import math
from typing import Any


class InfaasError(Exception):
    """Base of every error the service raises on purpose."""

    status: int = 500
    code: str = "internal"

    def __init__(self, message: str, *, field: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        """The error's JSON body. ``error`` is the human message, as the Open Inference Protocol has it
        (its clients show that field); ``code`` the stable machine-readable code; ``message`` the
        message again, for readers of the service's own earlier shape."""
        body: dict[str, Any] = {"error": self.message, "code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.details:
            body["details"] = self.details
        return body


class InvalidInput(InfaasError):
    """A request is malformed or breaks a documented limit (400)."""

    status = 400
    code = "invalid_input"


class InvalidModel(InvalidInput):
    """An uploaded model file is not a usable ONNX model (400)."""

    code = "invalid_model"


class Unauthenticated(InfaasError):
    """No credentials, or credentials that are not valid (401)."""

    status = 401
    code = "unauthenticated"


class Forbidden(InfaasError):
    """Valid credentials without the scope the route needs (403)."""

    status = 403
    code = "forbidden"


class NotFound(InfaasError):
    """The named model, variant, task, worker or job does not exist (404)."""

    status = 404
    code = "not_found"


class Conflict(InfaasError):
    """A write would contradict an existing record (409)."""

    status = 409
    code = "conflict"


class PayloadTooLarge(InfaasError):
    """A body or file is larger than the documented limit (413)."""

    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(InfaasError):
    """A body in an encoding the service does not read (an unknown ``Content-Encoding``) (415)."""

    status = 415
    code = "unsupported_media_type"


class NoFeasibleVariant(InfaasError):
    """No variant can meet the objective (422); details say the best achievable."""

    status = 422
    code = "objective_unreachable"


class TooManyRequests(InfaasError):
    """A tenant sends faster than its limit (429)."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: float = 1.0, **details: Any) -> None:
        super().__init__(message, **details)
        self.retry_after_s = retry_after_s


class WorkerFault(InfaasError):
    """A worker failed to answer (connection refused, reset, timeout) (502)."""

    status = 502
    code = "worker_fault"


class WorkerDraining(WorkerFault):
    """A worker that is leaving (draining) refused a new query (503): it finishes the queries it
    already took and takes no more. The caller tries another worker at once; not a fault of the
    variant, and not a failing worker."""

    status = 503
    code = "worker_draining"


class VariantFault(InfaasError):
    """A worker answered, but the variant failed on it (502): the model's fault, not the worker's,
    so the worker stays in selection for everyone else (``app.data.DataPlane``)."""

    status = 502
    code = "variant_fault"


class Unavailable(InfaasError):
    """No capacity or a briefly unavailable dependency (503); retry later."""

    status = 503
    code = "unavailable"

    def __init__(self, message: str, *, retry_after_s: float = 1.0, **details: Any) -> None:
        super().__init__(message, **details)
        self.retry_after_s = retry_after_s


class ConditionFailed(InfaasError):
    """A conditional store write lost (the record exists or changed) (409)."""

    status = 409
    code = "condition_failed"


class HttpStatus(InfaasError):
    """An HTTP-level refusal with no domain meaning (an unknown route, a wrong method)."""

    code = "http"

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# Errors raised where the variants are built, profiled and run (``infaas.runtime``).
class ProfilingFailed(InfaasError):
    """A variant could not be profiled within its time and memory limits (the variant is marked failed)."""

    status = 422
    code = "profiling_failed"


class NotApplicable(InfaasError):
    """The graph does not allow this variant (e.g. nothing to quantise): the variant is marked skipped."""

    status = 422
    code = "variant_not_applicable"


class ExecutorError(InfaasError):
    """The runtime a variant needs is missing or would fall back (500 on a worker)."""

    status = 500
    code = "executor_unavailable"


class NeuronUnavailable(ExecutorError):
    """torch-neuronx (the Neuron SDK) is not installed where a Neuron step ran."""


# -- the codec: errors to HTTP answers and back -------------------------------------------------
JSON = b"application/json"
INTERNAL_MESSAGE = "internal error; it has been logged"
# status, media type, extra headers (lower-case name, value), body
Answer = tuple[int, bytes, list[tuple[bytes, bytes]], bytes]


def encode(exc: InfaasError) -> Answer:
    """The HTTP answer for ``exc``: its status, ``Retry-After`` where it says when to retry, JSON body."""
    headers = []
    retry = getattr(exc, "retry_after_s", None)
    if retry is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(retry))).encode()))
    return exc.status, JSON, headers, json.dumps(exc.to_dict()).encode()


def internal(message: str = INTERNAL_MESSAGE) -> Answer:
    """The answer to a bug: 500, with nothing of the exception in it (it is logged instead)."""
    return encode(InfaasError(message))


def too_large(limit: int) -> Answer:
    return encode(PayloadTooLarge(f"request body exceeds the limit of {limit} bytes", field="body"))


def _classes() -> dict[str, type[InfaasError]]:
    out: dict[str, type[InfaasError]] = {}
    stack = [InfaasError]
    while stack:
        cls = stack.pop()
        out.setdefault(cls.code, cls)
        stack.extend(cls.__subclasses__())
    return out


def decode(status: int, body: bytes) -> InfaasError:
    """The error an answer carries (the inverse of ``encode``). A body that is not one of
    ours becomes an ``InfaasError`` with the answer's status and the start of its text."""
    try:
        doc = json.loads(body)
        if not isinstance(doc, dict) or not isinstance(doc.get("error"), str):
            raise ValueError("not an error body")
        code, message = doc.get("code"), str(doc.get("message", doc["error"]))
    except (ValueError, KeyError, TypeError):
        exc = InfaasError(f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}")
        exc.status = status
        return exc
    cls = _classes().get(code) if isinstance(code, str) else None
    if cls is None or cls is HttpStatus:
        return HttpStatus(status, message)
    exc = cls.__new__(cls)
    InfaasError.__init__(exc, message, field=doc.get("field"), **(doc.get("details") or {}))
    if status != cls.status:
        exc.status = status
    return exc
