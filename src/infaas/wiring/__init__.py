"""Chooses the adapters for a process from its settings (``INFAAS_BACKEND``).

Everything that needs the store, the model files or the job queue (the API,
the workers, the Lambda functions) gets them from here, so the same code runs
on SQLite and a folder locally and on DynamoDB, S3 and SQS on AWS.

May import: ``infaas.app``, ``infaas.adapters`` and below (the front ends import this).
"""

from __future__ import annotations

import os
from typing import Protocol

from infaas.app.store import MetadataStore
from infaas.core.ports import JobQueue, ModelStore
from infaas.core.settings import Settings


class Adapters(Protocol):
    store: MetadataStore
    models: ModelStore
    queue: JobQueue


def make_adapters(settings: Settings) -> Adapters:
    if settings.backend == "aws":
        from infaas.wiring.aws import AwsAdapters  # boto3 only where it is used

        return AwsAdapters(settings)
    from infaas.wiring.local import LocalAdapters

    return LocalAdapters(settings)


def make_function_tier(settings: Settings, models: ModelStore | None = None):
    """The serverless tier's ``FunctionTier`` where ``INFAAS_FUNCTION_TIER=on``, else None: on AWS the
    stack's inference functions (``INFAAS_FUNCTION_NAMES``); locally processes running the same
    handler on the model folder (``adapters/local/functions.py``)."""
    if settings.function_tier != "on":
        return None
    if settings.backend == "aws":
        from infaas.adapters.aws.functions import LambdaFunctionTier, function_names
        from infaas.core.tier import DEFAULT_CONCURRENCY

        return LambdaFunctionTier(function_names(), concurrency=settings.function_concurrency or DEFAULT_CONCURRENCY)
    from infaas.adapters.local.functions import DEFAULT_CONCURRENCY, LocalFunctionTier

    return LocalFunctionTier(settings.models_dir, keep_warm_s=settings.function_keep_warm_s,
                             concurrency=settings.function_concurrency or DEFAULT_CONCURRENCY)


def worker_secret(settings: Settings) -> str:
    """The credential every call to a worker carries: ``INFAAS_WORKER_SECRET`` when set; on AWS the
    Secrets Manager secret ``INFAAS_WORKER_SECRET_ARN`` names (the selector function and the workers
    may read it, nothing else); locally the data dir's ``worker.secret``."""
    if settings.worker_secret:
        return settings.worker_secret
    if settings.backend == "aws":
        if settings.worker_secret_arn:
            from infaas.adapters.aws.secrets import read_secret

            return read_secret(settings.worker_secret_arn)
        from infaas.core.settings import SettingsError

        raise SettingsError("INFAAS_WORKER_SECRET_ARN is not set: the selector and the workers read the worker key "
                            "from that Secrets Manager secret (the deployment sets it)")
    from infaas.adapters.local.secret import worker_secret as local_secret

    return local_secret(settings.data_dir)


LOCATION_MAX_BYTES = 900  # a location's key prefix: S3 keys are at most 1,024 bytes, file names need the rest


def open_location(uri: str, settings: Settings, tenant: str, s3_client=None):
    """Where a tenant's offline job reads or writes (``app.offline.Location``): a folder in the
    tenant's own area under ``settings.offline_root_dir`` (``<root>/<tenant>/``), or, where the
    deployment allows S3 (``INFAAS_OFFLINE_S3_ROOT``), ``s3://bucket/prefix`` inside
    ``<s3 root>/<tenant>/``. Anything else, another tenant's area included, is refused, and so is a
    location whose path (the S3 key prefix) is over ``LOCATION_MAX_BYTES``."""
    from infaas.core.errors import Forbidden, InvalidInput
    from infaas.core.keys import tenant_folder

    if not isinstance(uri, str) or not uri:
        raise InvalidInput("a location is required (a folder in your offline area, or s3://bucket/prefix)",
                           field="location")
    area = tenant_folder(tenant)
    key = uri[len("s3://"):].partition("/")[2] if uri.startswith("s3://") else uri
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > LOCATION_MAX_BYTES:
        raise InvalidInput(f"a location's path is at most {LOCATION_MAX_BYTES} bytes (S3 keys are at most 1,024, "
                           f"with room for the file names); got {size:,}", field="location")
    if uri.startswith("s3://"):
        if not settings.offline_s3_root:
            raise InvalidInput("s3:// locations are not enabled here: set INFAAS_OFFLINE_S3_ROOT (the deployment does "
                               "on AWS) or use a folder in your offline area", field="location")
        mine = settings.offline_s3_root.rstrip("/") + f"/{area}/"
        if not (uri.rstrip("/") + "/").startswith(mine) or "/../" in uri + "/" or "//" in uri[len("s3://"):]:
            raise Forbidden(f"location {uri!r} is outside your offline area {mine!r}", field="location")
        from infaas.adapters.aws.offline import S3Location

        return S3Location(uri, s3_client)
    from infaas.adapters.local.offline import FolderLocation

    return FolderLocation(os.path.join(settings.offline_root_dir, area), uri)
