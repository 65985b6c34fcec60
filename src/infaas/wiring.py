"""Chooses the adapters for a process from its settings (``INFAAS_BACKEND``).

Everything that needs the store, the model files or the job queue (the API,
the workers, the Lambda functions) gets them from here, so the same code runs
on SQLite and a folder locally and on DynamoDB, S3 and SQS on AWS.
"""

from __future__ import annotations

from typing import Protocol

from .ports import JobQueue, ModelStore
from .settings import Settings
from .store import MetadataStore


class Adapters(Protocol):
    store: MetadataStore
    models: ModelStore
    queue: JobQueue


def make_adapters(settings: Settings) -> Adapters:
    if settings.backend == "aws":
        from .adapters.aws.wiring import AwsAdapters  # boto3 only where it is used

        return AwsAdapters(settings)
    from .local.wiring import LocalAdapters

    return LocalAdapters(settings)
