"""Lambda: the control-plane API (register, catalogue, status, workers, uploads).

API Gateway (REST, IAM-authorised) routes ``/v1/models*``, ``/v1/tasks``,
``/v1/workers``, ``/v1/uploads*`` and the OpenAPI description here. The
FastAPI app is the one ``infaas up`` serves, built once per container over
the AWS adapters and served through Mangum; the caller is the IAM identity
API Gateway verified (``ApiGatewayIdentity``); ``upload_routes.py`` adds the
presigned-upload routes for models too large for a Lambda request (6 MB).

Settings and resource names are read and validated once, at import (a bad
value fails the cold start with a message naming the variable).
"""

from __future__ import annotations

import logging

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from mangum import Mangum
from upload_routes import (
    router as uploads_router,  # beside this file (the function's folder is on sys.path)
)

from infaas.api.app import create_app
from infaas.api.aws import ApiGatewayIdentity, lambda_services
from infaas.core.settings import Settings
from infaas.wiring import make_adapters

logger = Logger()  # service name and level from POWERTOOLS_SERVICE_NAME / POWERTOOLS_LOG_LEVEL
# the package's own loggers (infaas.*) log through Powertools too: JSON, with the correlation id
logging.getLogger("infaas")
copy_config_to_registered_loggers(source_logger=logger, include={"infaas"})
metrics = Metrics()  # namespace from POWERTOOLS_METRICS_NAMESPACE

SETTINGS = Settings.from_env()
ADAPTERS = make_adapters(SETTINGS)
APP = create_app(lambda_services(SETTINGS, ADAPTERS))
APP.state.adapters = ADAPTERS
APP.include_router(uploads_router)
ASGI = Mangum(ApiGatewayIdentity(APP), lifespan="off")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event, context):
    return ASGI(event, context)
