"""The serverless CPU tier on AWS Lambda: ``FunctionTier`` over ``lambda:InvokeFunction``.

The stack deploys one inference function (``functions/inference``) per memory size in use
(``cdk/infaas_cdk/tier.py``) and names them to the selector in ``INFAAS_FUNCTION_NAMES``, a JSON
object ``{"<memory MB>": "<function name or ARN>"}``. A variant profiled at ``memory_mb`` runs on
the function of that size, else on the smallest larger one (``core.tier.function_size``).

Each invocation is synchronous (``RequestResponse``), made in a thread off the event loop, with
no SDK retries (a throttled invocation is answered at once as ``Unavailable`` so the data plane
can send the query elsewhere) and a read timeout of the function's own (29 s, the API's).
Errors, as the port says: throttling (``TooManyRequestsException`` and Lambda's other capacity
codes) -> ``Unavailable`` (503, retry); a request over 6 MB (``RequestTooLargeException``) ->
``PayloadTooLarge`` (413); the function's own failure (``FunctionError``: an exception, a
timeout, out of memory), an unknown function or an unreachable endpoint -> ``VariantFault``
(502); the function's refusals (``{"error", "status"}``) -> the product's error they name.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any, Mapping

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from infaas.adapters.aws._sdk import RETRYABLE_CODES, error_code
from infaas.core import tier
from infaas.core.errors import PayloadTooLarge, Unavailable, VariantFault, WorkerFault
from infaas.core.ports import FunctionTier
from infaas.core.settings import SettingsError, env_json_object

# Lambda's codes for "no capacity now": the account's or function's concurrency, ENIs, or a burst.
THROTTLE_CODES = frozenset({"TooManyRequestsException", "EC2ThrottledException", "ENILimitReachedException",
                            "ResourceNotReadyException", "ServiceException", "SnapStartNotReadyException"}) | RETRYABLE_CODES
TOO_LARGE_CODES = frozenset({"RequestTooLargeException", "413"})


def function_names(env: Mapping[str, str] | None = None) -> dict[int, str]:
    """``INFAAS_FUNCTION_NAMES``: ``{memory MB: function name}`` (a non-empty JSON object)."""
    env = os.environ if env is None else env
    raw = env_json_object(env, "INFAAS_FUNCTION_NAMES", "{memory MB: function name}", required=True, non_empty=True)
    assert raw is not None
    out = {}
    for size, name in raw.items():
        try:
            mb = tier.check_memory(int(size))
        except ValueError:
            raise SettingsError(f"INFAAS_FUNCTION_NAMES: {size!r} is not a memory size in MB "
                                f"({tier.MIN_MEMORY_MB}..{tier.MAX_MEMORY_MB})") from None
        out[mb] = name
    return out


def lambda_client(timeout_s: float = 30.0) -> Any:
    """A Lambda client for synchronous invocations: no retries of its own, reads up to ``timeout_s``."""
    import boto3

    return boto3.client("lambda", config=Config(retries={"mode": "standard", "total_max_attempts": 1},
                                                read_timeout=timeout_s, connect_timeout=5,
                                                max_pool_connections=64))


class LambdaFunctionTier(FunctionTier):
    def __init__(self, names: Mapping[int, str], *, client: Any = None, timeout_s: float = 30.0,
                 concurrency: int = tier.DEFAULT_CONCURRENCY) -> None:
        if not names:
            raise SettingsError("the function tier needs at least one function (INFAAS_FUNCTION_NAMES)")
        self.names = dict(names)
        self.timeout_s, self.concurrency = timeout_s, concurrency
        self.client = client if client is not None else lambda_client(timeout_s)

    def function_for(self, memory_mb: int) -> tuple[str, int]:
        size = tier.function_size(memory_mb, self.names)
        if size is None:
            size = max(self.names)  # no larger size deployed: the largest there is (it may be slower)
        return self.names[size], size

    async def invoke(self, variant_id: str, model_key: str, arrays: Mapping[str, Any], *, memory_mb: int,
                     outputs: tuple[str, ...] | None = None, query_id: str | None = None,
                     timeout_s: float | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        payload = tier.invocation_event(variant_id, model_key, arrays, outputs, query_id)
        name, size = self.function_for(memory_mb)
        t0 = time.perf_counter()
        body = await asyncio.get_running_loop().run_in_executor(None, self._invoke, name, payload)
        out, info = tier.invocation_answer(body, size)
        info.update(function=name, round_trip_ms=(time.perf_counter() - t0) * 1000)
        return out, info

    def _invoke(self, name: str, payload: bytes) -> bytes:
        try:
            resp = self.client.invoke(FunctionName=name, InvocationType="RequestResponse", Payload=payload)
        except ClientError as exc:
            code = error_code(exc)
            message = (exc.response.get("Error", {}) or {}).get("Message", "") or str(exc)
            if code in THROTTLE_CODES:
                raise Unavailable(f"the function tier is throttled ({code}): {message[:200]}",
                                  retry_after_s=1.0, aws_code=code) from None
            if code in TOO_LARGE_CODES:
                raise PayloadTooLarge(f"the invocation is over Lambda's synchronous payload limit ({code})",
                                      field="inputs") from None
            raise VariantFault(f"invoking {name} failed: {code}: {message[:300]}", aws_code=code) from None
        except BotoCoreError as exc:  # unreachable, reset, read timeout: the tier's, not the variant's
            raise WorkerFault(f"invoking {name} failed: {type(exc).__name__}: {str(exc)[:300]}") from None
        body = resp["Payload"].read()
        if resp.get("FunctionError"):
            try:
                err = json.loads(body)
                what = f"{err.get('errorType', 'Error')}: {str(err.get('errorMessage', ''))[:300]}"
            except (ValueError, AttributeError):
                what = body[:300].decode("utf-8", "replace")
            raise VariantFault(f"the function {name} failed ({resp['FunctionError']}): {what}")
        return body
