"""What every AWS adapter shares: a default client, and SDK errors as ``infaas.core.errors``.

The core never sees a ``botocore`` exception: each adapter wraps its calls in
``sdk_errors(...)``, which maps the few error codes that mean something to the
service (a lost conditional write, a missing object, throttling) onto the one
error hierarchy, and everything else onto a plain ``InfaasError`` (500) that
keeps the AWS error code for the logs.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
)

from infaas.core.errors import ConditionFailed, InfaasError, NotFound, Unavailable

# Codes that mean "try again shortly": throttling, and a service that is
# briefly unavailable. The SDK's own retries have already been spent when one
# of these reaches us, so the caller should back off (503 + Retry-After).
RETRYABLE_CODES = frozenset(
    {
        # throttling, all services
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "SlowDown",
        "LimitExceededException",
        "TransactionConflictException",
        "TransactionInProgressException",
        # SQS
        "AWS.SimpleQueueService.RequestThrottled",
        "KmsThrottled",
        # unavailable / internal
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "RequestTimeout",
        "RequestTimeoutException",
        "503",
        "500",
    }
)

# Codes that mean "there is no such object" (S3 answers HEAD with a bare 404).
NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})

CONDITION_FAILED_CODES = frozenset({"ConditionalCheckFailedException"})

DEFAULT_RETRY_AFTER_S = 1.0


def default_client(service: str) -> Any:
    """A boto3 client with the SDK's "standard" retry mode (exponential backoff
    with jitter on throttling and 5xx), so that ``Unavailable`` only reaches the
    core after those retries are spent. Region and credentials come from the
    usual places (environment, instance or task role)."""
    return boto3.client(service, config=Config(retries={"mode": "standard", "max_attempts": 4}))


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ``ClientError`` ('' for anything else)."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _retry_after(exc: BaseException) -> float:
    headers = (getattr(exc, "response", None) or {}).get("ResponseMetadata", {}).get("HTTPHeaders", {}) or {}
    try:
        return max(0.0, float(headers.get("retry-after", DEFAULT_RETRY_AFTER_S)))
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER_S


def translate(exc: BaseException, what: str) -> InfaasError:
    """The ``InfaasError`` for an SDK exception raised while doing ``what``."""
    if isinstance(exc, ClientError):
        code = error_code(exc)
        message = (getattr(exc, "response", None) or {}).get("Error", {}).get("Message", "") or str(exc)
        if code in CONDITION_FAILED_CODES:
            return ConditionFailed(f"{what}: condition failed")
        if code in NOT_FOUND_CODES:
            return NotFound(f"{what}: not found")
        if code in RETRYABLE_CODES:
            return Unavailable(f"{what}: AWS is busy ({code})", retry_after_s=_retry_after(exc), aws_code=code)
        return InfaasError(f"{what}: {code}: {message}", aws_code=code)
    if isinstance(exc, (ConnectionError, HTTPClientError)):
        # Endpoint unreachable, connection reset, read timeout: transient.
        return Unavailable(f"{what}: AWS unreachable ({type(exc).__name__})", retry_after_s=DEFAULT_RETRY_AFTER_S)
    return InfaasError(f"{what}: {type(exc).__name__}: {exc}")


@contextmanager
def sdk_errors(what: str) -> Iterator[None]:
    """Run SDK calls, re-raising botocore errors as ``InfaasError`` subclasses."""
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise translate(exc, what) from exc
