"""The API on AWS Lambda: who the caller is, and the services a function serves.

The stack has two entry points to the same functions (docs/aws.md, *Identity and tenants*):

* **API keys** (``ApiUrl``): every method has the REQUEST authorizer (``functions/authorizer``),
  which checks ``Authorization: Bearer <key>`` against the hashed key store -- the keys
  ``infaas tenants create`` makes, as locally -- and hands API Gateway the key's tenant, scopes and
  id (``requestContext.authorizer``).
* **IAM** (``IamApiUrl``): every method has IAM (SigV4) authorisation; API Gateway hands the
  verified principal (``requestContext.identity.userArn``).

``ApiGatewayIdentity`` puts the identity API Gateway established where the app looks for a caller
(the ``authorization`` header), replacing whatever the client sent, and ``GatewayAuthenticator``
turns it into the same ``Principal`` the local stack's keys give, so every route enforces its scope
exactly as locally. A key's principal is its tenant and scopes. An IAM principal's tenant is
``iam:<account>:<kind>/<name>`` (``tenant_of_arn``): key tenants are names without ':'
(``domain.check_name``), so the two can never collide; IAM callers hold every scope, because IAM
policies on the API's ``execute-api`` ARNs decide which methods and paths each may call.
"""

from __future__ import annotations

import re
from typing import Any

from infaas.api.deps import Services
from infaas.app.identity import SCOPES, Principal
from infaas.core.errors import Unauthenticated
from infaas.core.settings import Settings

# -- identity behind API Gateway ----------------------------------------------------------
IAM_SCHEME = "aws-iam"  # authorization: aws-iam <principal ARN>
KEY_SCHEME = "aws-key"  # authorization: aws-key <tenant> <scopes, comma-separated> <key id>
IAM_TENANT_PREFIX = "iam:"
_ACCOUNT = re.compile(r"^[0-9]{12}$")
_IAM_NAME = re.compile(r"^[A-Za-z0-9+=,.@_-]{1,128}$")


def tenant_of_arn(arn: str) -> str:
    """The tenant of an IAM principal: ``iam:<account>:user/<name>``, ``iam:<account>:role/<name>``
    (an assumed role's session is ignored: every session of a role is one tenant, as a role is one
    identity), ``iam:<account>:federated-user/<name>`` or ``iam:<account>:root``. Paths are dropped
    (IAM names are unique in an account whatever their path); a user and a role of the same name
    are two tenants; nothing is rewritten, so two principals never share a tenant."""
    parts = arn.split(":", 5) if isinstance(arn, str) else []
    if len(parts) != 6 or parts[0] != "arn" or parts[2] not in ("iam", "sts") or not _ACCOUNT.match(parts[4]):
        raise Unauthenticated(f"cannot derive a tenant from the caller {arn!r}", field="authorization")
    account, resource = parts[4], parts[5]
    kind, _, rest = resource.partition("/")
    if parts[2] == "sts" and kind == "assumed-role":
        kind, name = "role", rest.split("/", 1)[0]
    elif parts[2] == "sts" and kind == "federated-user":
        name = rest
    elif parts[2] == "iam" and kind in ("user", "role"):
        name = rest.rsplit("/", 1)[-1]
    elif parts[2] == "iam" and resource == "root":
        return f"{IAM_TENANT_PREFIX}{account}:root"
    else:
        raise Unauthenticated(f"cannot derive a tenant from the caller {arn!r}", field="authorization")
    if not _IAM_NAME.match(name):
        raise Unauthenticated(f"cannot derive a tenant from the caller {arn!r}", field="authorization")
    return f"{IAM_TENANT_PREFIX}{account}:{kind}/{name}"


class GatewayAuthenticator:
    """``Services.auth`` on AWS: the caller API Gateway established (``ApiGatewayIdentity``), as a
    ``Principal`` -- a key's tenant and scopes, or an IAM principal's tenant with every scope."""

    def __call__(self, authorization: str | None) -> Principal:
        scheme, _, rest = (authorization or "").partition(" ")
        if scheme == KEY_SCHEME:
            tenant, scopes, key_id = (rest.split(" ") + ["", "", ""])[:3]
            granted = frozenset(s for s in scopes.split(",") if s in SCOPES)
            if tenant and key_id:
                return Principal(tenant, granted, key_id)
        elif scheme == IAM_SCHEME and rest.startswith("arn:"):
            return Principal(tenant_of_arn(rest), frozenset(SCOPES))
        raise Unauthenticated("no identity on this request: send 'Authorization: Bearer <key>' to the API's URL, "
                              "or sign the request with SigV4 (execute-api) to its IAM URL", field="authorization")


def gateway_identity(event: dict) -> str | None:
    """The ``authorization`` value for the identity API Gateway established on ``event``: the
    authorizer's context (the API-key entry point; a client cannot set it) or the IAM principal."""
    context = event.get("requestContext") or {}
    authorizer = context.get("authorizer") or {}
    tenant, scopes, key_id = authorizer.get("tenant"), authorizer.get("scopes"), authorizer.get("key_id")
    if isinstance(tenant, str) and isinstance(scopes, str) and isinstance(key_id, str) and tenant and key_id:
        return f"{KEY_SCHEME} {tenant} {scopes} {key_id}"
    arn = (context.get("identity") or {}).get("userArn")
    if isinstance(arn, str) and arn:
        return f"{IAM_SCHEME} {arn}"
    return None


class ApiGatewayIdentity:
    """ASGI middleware (outermost, under Mangum): replaces the request's ``authorization`` header
    by the identity API Gateway established, taken from the Lambda event Mangum passes in
    ``scope["aws.event"]`` (``gateway_identity``). A request without one (not through either
    entry point) has no caller at all; a bearer key the client sent is never read here -- the
    authorizer checked it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            who = gateway_identity(scope.get("aws.event") or {})
            headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"authorization"]
            if who:
                headers.append((b"authorization", who.encode()))
            scope = dict(scope, headers=headers)
        await self.app(scope, receive, send)


def lambda_services(settings: Settings, adapters: Any, data_plane: Any = None):
    """The ``Services`` an API function serves: the adapters' store, models and
    queue, a data plane (``DataPlane`` over the HTTP worker client unless one
    is given), and the identity API Gateway established (``GatewayAuthenticator``)."""
    from infaas.adapters.workerclient import HttpWorkerClient
    from infaas.app.control import ControlPlane
    from infaas.app.data import DataPlane
    from infaas.wiring import worker_secret

    if data_plane is None:
        client = HttpWorkerClient(timeout_s=settings.request_timeout_s, key=lambda: worker_secret(settings))
        data_plane = DataPlane(adapters.store, client, settings)
    control = ControlPlane(adapters.store, adapters.models, adapters.queue, settings)
    return Services(control, data_plane, settings, auth=GatewayAuthenticator())
