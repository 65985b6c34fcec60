"""Lambda: the REQUEST authorizer of the API-key entry point (``ApiUrl``).

API Gateway calls it with the request's ``Authorization`` header (its identity source; a request
without one is answered 401 before this runs) and caches the answer per header value for the
authorizer's result TTL (``AUTHORIZER_TTL_S`` in ``cdk/infaas_cdk/api.py``), so a key costs one
call per TTL, and a revoked key stops working within it.

The key is checked exactly as the local stack checks it (``infaas.app.identity.authenticate``):
``infaas_<key id>_<secret>``, one strongly consistent read of the key's item in the metadata table
(the function's role may read ``KEY#*`` items and nothing else), the secret's SHA-256 compared in
constant time, revoked keys refused. A missing, malformed, unknown or revoked key raises
``Unauthorized``, which API Gateway answers with 401.

A valid key gets a policy allowing the whole stage, with the key's tenant, scopes and id as the
context: the answer is cached for every method the key calls, and each route of the app enforces
its scope (query, register, admin) from that context as locally (403 from the app, with its JSON
error), never from a cached, method-specific policy.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger

from infaas.app.identity import authenticate
from infaas.core.errors import InfaasError, Unauthenticated
from infaas.wiring.aws import key_store

logger = Logger()
STORE = key_store()  # INFAAS_TABLE, validated at the cold start


def _header(event: dict, name: str) -> str | None:
    for key, value in (event.get("headers") or {}).items():
        if key.lower() == name and isinstance(value, str):
            return value
    return None


def stage_arn(method_arn: str) -> str:
    """``arn:aws:execute-api:<region>:<account>:<api id>/<stage>/*`` from the method's ARN."""
    prefix, _, resource = method_arn.rpartition(":")
    api_id, stage = (resource.split("/") + ["", ""])[:2]
    if not prefix.startswith("arn:") or not api_id or not stage:
        raise ValueError(f"not a method ARN: {method_arn!r}")
    return f"{prefix}:{api_id}/{stage}/*"


def handler(event, context):
    try:
        who = authenticate(STORE, _header(event, "authorization"))
    except Unauthenticated:
        raise Exception("Unauthorized") from None  # API Gateway's 401; nothing about the key is said or logged
    except InfaasError as exc:  # the store did not answer: API Gateway answers 500, nothing is cached
        logger.warning("key lookup failed", extra={"code": exc.code, "error": exc.message})
        raise
    return {
        "principalId": who.tenant,
        "policyDocument": {"Version": "2012-10-17", "Statement": [
            {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": stage_arn(event["methodArn"])}]},
        "context": {"tenant": who.tenant, "scopes": ",".join(sorted(who.scopes)), "key_id": who.key_id},
    }
