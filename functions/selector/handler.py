"""Lambda: the data-plane API (``/v1/infer``, Open Inference Protocol ``/v2/*``).

The hot path is API Gateway -> this function -> a worker on the private
network: the function runs in the VPC (the workers' security group admits
only this function's), parses and validates the query, selects a variant and
a worker (``infaas.core.selection``), sends the rows to the worker and, on a
worker fault, retries once on another worker (``DataPlane.infer``). The only
other Lambda it may call on a query is the serverless tier's (below).

The catalogue and the cluster view are cached per container and refreshed
every ``INFAAS_SNAPSHOT_S`` (the catalogue only when its version moved), so a
warm container answers with one DynamoDB read per refresh, not per query.
Each answer is measured in embedded metric format (``QueryLatency`` and
``Queries`` per hardware type, ``WorkerFaults``, ``Rejected``): the
autoscaler's latency alarms read them. With the serverless tier on, a query
no worker answers in time goes to an inference function
(``functions/inference``, ``lambda:InvokeFunction``), counted as
``FunctionInvocations``, ``FunctionColdStarts``, ``FunctionDuration`` per
variant and ``FunctionErrors``, ``FunctionThrottles`` (alarmed).
"""

from __future__ import annotations

import logging

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from mangum import Mangum

from infaas.adapters.aws import metrics as names
from infaas.adapters.workerclient import HttpWorkerClient
from infaas.api.app import create_app
from infaas.api.aws import ApiGatewayIdentity, lambda_services
from infaas.app.data import DataPlane
from infaas.core.errors import InfaasError
from infaas.core.settings import Settings
from infaas.wiring import make_adapters, make_function_tier, worker_secret

logger = Logger()
# the package's own loggers (infaas.*) log through Powertools too: JSON, with the correlation id
logging.getLogger("infaas")
copy_config_to_registered_loggers(source_logger=logger, include={"infaas"})


def _hardware(variant_id: str) -> str:
    parts = variant_id.split(":")  # architecture:format:hardware:bN
    return parts[2] if len(parts) > 2 else "unknown"


class MeasuredDataPlane(DataPlane):
    """The data plane, with one metric line per answer (EMF on stdout)."""

    async def infer(self, query, arrays):
        try:
            answer = await super().infer(query, arrays)
        except InfaasError as exc:
            names.emf(names.REJECTED, 1, Reason=exc.code)
            raise
        hardware = _hardware(answer.decision.variant)
        names.emf(names.QUERY_LATENCY, answer.latency_ms, Hardware=hardware)
        names.emf(names.QUERIES, 1, Hardware=hardware)
        if answer.retried and answer.retry_reason != "worker_draining":  # a draining worker's refusal is no fault
            names.emf(names.WORKER_FAULTS, 1)
        return answer

    def function_called(self, variant_id, outcome, info):
        """One invocation of the serverless tier: its counts per variant, errors and throttles (alarmed)."""
        if outcome == "ok":
            names.emf(names.FUNCTION_INVOCATIONS, 1, Variant=variant_id)
            names.emf(names.FUNCTION_DURATION, round(float(info["duration_ms"]), 3), Variant=variant_id)
            if info.get("cold"):
                names.emf(names.FUNCTION_COLD_STARTS, 1, Variant=variant_id)
        elif outcome == "throttled":
            names.emf(names.FUNCTION_THROTTLES, 1)
        else:
            names.emf(names.FUNCTION_ERRORS, 1)


SETTINGS = Settings.from_env()
ADAPTERS = make_adapters(SETTINGS)  # the role only allows reading the table: the store is all this function uses
# every call to a worker carries the worker key, read from Secrets Manager at the first query
# the serverless tier (INFAAS_FUNCTION_TIER=on, the stack's -c infaas:tier=on): the inference functions, invoked
# here when no worker answers in time (INFAAS_FUNCTION_NAMES; the role may invoke those and no other)
DATA = MeasuredDataPlane(ADAPTERS.store, HttpWorkerClient(timeout_s=SETTINGS.request_timeout_s,
                                                           key=lambda: worker_secret(SETTINGS)), SETTINGS,
                         functions=make_function_tier(SETTINGS))
# only the data plane's routes: no registration (python-multipart, onnx), offline jobs, metrics or pages to load
ASGI = Mangum(ApiGatewayIdentity(create_app(lambda_services(SETTINGS, ADAPTERS, DATA), control_plane=False)),
              lifespan="off")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def handler(event, context):
    return ASGI(event, context)
