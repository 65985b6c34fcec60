"""The worker credential on AWS: one Secrets Manager secret that only the selector function
and the worker fleets may read (``cdk/infaas_cdk/data.py`` creates it and grants the reads)."""

from __future__ import annotations

from typing import Any

from infaas.adapters.aws._sdk import default_client, sdk_errors


def read_secret(arn: str, client: Any = None) -> str:
    """The secret's string value."""
    client = client or default_client("secretsmanager")
    with sdk_errors(f"reading the worker key {arn}"):
        value = client.get_secret_value(SecretId=arn)["SecretString"]
    return value.strip()
