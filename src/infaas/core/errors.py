"""One error hierarchy for the whole service.

Every error a user can cause or see is an ``InfaasError``; each class names
the HTTP status a server must answer with (``status``) and a stable machine
readable ``code``. The API maps them to responses in exactly one place
(``infaas.api.app``); adapters translate SDK and driver errors into these.
"""

from __future__ import annotations

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
        body: dict[str, Any] = {"error": self.code, "message": self.message}
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
