"""Wires the AWS adapters (DynamoDB, S3, SQS) from the environment.

``infaas.wiring.make_adapters`` returns an ``AwsAdapters`` when
``INFAAS_BACKEND=aws``. The resource names are not fields of ``Settings``
(they mean nothing to the local stack); they are read here, once per process,
from their own variables, and a missing or malformed one stops the process
with a message naming it:

| variable | meaning | set by |
|---|---|---|
| ``INFAAS_TABLE`` | the metadata table's name | the CDK stack (Lambda environment, worker ``/etc/infaas/worker.env``) |
| ``INFAAS_BUCKET`` | the model bucket's name | same |
| ``INFAAS_QUEUE_PREFIX`` | queues are named ``<prefix><lane>`` (``<prefix>build-cpu``, ``<prefix>build-cpu-dlq``) | same |
| ``INFAAS_QUEUE_URLS`` | instead of a prefix: a JSON object ``{lane: queue URL}`` | tests, scripts |
| ``INFAAS_MAX_RECEIVES`` | deliveries before a job dead-letters; must equal the queues' redrive policy (default 3) | |
| ``INFAAS_QUEUE_WAIT_S`` | SQS long-poll seconds for ``receive`` (0..20, default 0); workers use 10 to cut idle requests | worker env |
| ``INFAAS_MODEL_CACHE_DIR`` | where ``S3ModelStore.local_path`` keeps downloads (default under the temp folder) | |
| ``INFAAS_FLEET_GROUPS`` | the autoscaler's worker groups, a non-empty JSON object ``{hardware: group name}`` (``fleet_groups``) | the CDK stack (autoscaler Lambda) |

Every value goes through the field readers of ``infaas.core.settings``
(``env_int``, ``env_json_object``, ...), as ``Settings`` does.

Region, credentials and endpoint come from the SDK's usual chain
(``AWS_REGION``/``AWS_DEFAULT_REGION``, the function's or instance's role,
``AWS_ENDPOINT_URL`` for a moto server in tests).

Identity behind API Gateway is ``infaas.api.aws``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

from infaas.adapters.aws._sdk import default_client
from infaas.adapters.aws.dynamodb import DynamoItemTable
from infaas.adapters.aws.s3 import S3ModelStore
from infaas.adapters.aws.sqs import SqsJobQueue, queue_urls_by_name
from infaas.app.store import MetadataStore
from infaas.core.settings import (
    Settings,
    SettingsError,
    env_int,
    env_json_object,
    env_str,
    env_str_required,
)


@dataclass(frozen=True)
class AwsResources:
    """The names of this deployment's resources, validated once."""

    table: str
    bucket: str
    queue_prefix: str = ""
    queue_urls: Mapping[str, str] | None = None
    max_receives: int = 3
    queue_wait_s: int = 0
    model_cache_dir: str | None = None

    @staticmethod
    def from_env(env: Mapping[str, str] | None = None) -> "AwsResources":
        env = os.environ if env is None else env
        urls = env_json_object(env, "INFAAS_QUEUE_URLS", "{lane: queue URL}")
        prefix = env_str(env, "INFAAS_QUEUE_PREFIX")
        if urls is None and not prefix:
            raise SettingsError("set INFAAS_QUEUE_PREFIX (queues named <prefix><lane>) or INFAAS_QUEUE_URLS")
        needed = "the AWS backend needs it (see docs/aws.md)"
        return AwsResources(
            table=env_str_required(env, "INFAAS_TABLE", needed),
            bucket=env_str_required(env, "INFAAS_BUCKET", needed),
            queue_prefix=prefix,
            queue_urls=urls,
            max_receives=env_int(env, "INFAAS_MAX_RECEIVES", 3, 1, 1000),
            queue_wait_s=env_int(env, "INFAAS_QUEUE_WAIT_S", 0, 0, 20),
            model_cache_dir=env.get("INFAAS_MODEL_CACHE_DIR") or None,
        )


def fleet_groups(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``INFAAS_FLEET_GROUPS``: the autoscaler's worker groups, a JSON object ``{hardware: group name}``."""
    env = os.environ if env is None else env
    groups = env_json_object(env, "INFAAS_FLEET_GROUPS", "{hardware: group name}", required=True, non_empty=True)
    assert groups is not None
    return groups


def key_store(env: Mapping[str, str] | None = None, *, client: Any = None) -> MetadataStore:
    """The metadata store over ``INFAAS_TABLE`` alone, for what only reads and writes API keys
    (the authorizer function, ``infaas tenants`` against an AWS deployment): no bucket or queues."""
    env = os.environ if env is None else env
    table = env_str_required(env, "INFAAS_TABLE", "the API keys are in the deployment's metadata table")
    return MetadataStore(DynamoItemTable(table, client=client if client is not None else default_client("dynamodb")))


class AwsAdapters:
    """The store, the model files and the job queue of one AWS deployment."""

    def __init__(
        self,
        settings: Settings,
        resources: AwsResources | None = None,
        *,
        clients: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.resources = resources or AwsResources.from_env()
        clients = dict(clients or {})

        def client(service: str) -> Any:
            if service not in clients:
                clients[service] = default_client(service)
            return clients[service]

        r = self.resources
        self.store = MetadataStore(DynamoItemTable(r.table, client=client("dynamodb")))
        self.models = S3ModelStore(r.bucket, client=client("s3"), cache_dir=r.model_cache_dir)
        sqs = client("sqs")
        urls = r.queue_urls if r.queue_urls is not None else queue_urls_by_name(sqs, r.queue_prefix)
        self.queue = SqsJobQueue(urls, client=sqs, max_receives=r.max_receives, wait_time_s=r.queue_wait_s)
        self.clients = clients
