"""The API on AWS Lambda: who the caller is, and the services a function serves.

API Gateway's IAM authorizer has verified the caller's SigV4 signature before
a function runs; ``ApiGatewayIdentity`` puts the identity it established
(``requestContext.identity.userArn``) where the app looks for a caller
(``Authorization: aws-iam <arn>``), replacing whatever the client sent, and
``IamAuthenticator`` turns it into the same ``Principal`` the local stack's
API keys give: the tenant is the IAM user's or role's name, and every scope
is granted because IAM already decided which methods and paths the caller may
invoke (``execute-api:Invoke`` on ``.../POST/v1/infer`` and so on: scopes are
IAM policies here, see docs/aws.md).
"""

from __future__ import annotations

import re
from typing import Any

from infaas.api.deps import Services
from infaas.app.identity import SCOPES, Principal
from infaas.core.errors import Unauthenticated
from infaas.core.settings import Settings

# -- identity behind API Gateway's IAM authorizer -------------------------------------
IAM_SCHEME = "aws-iam"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def tenant_of_arn(arn: str) -> str:
    """The tenant of an IAM principal: a user's or role's name (an assumed
    role's session name is ignored, so every session of a role is one tenant),
    the account id for the root user; made a safe name (``domain.check_name``)."""
    _, _, resource = arn.partition(":iam::") if ":iam::" in arn else arn.partition(":sts::")
    account, _, path = resource.partition(":")
    kind, _, rest = path.partition("/")
    if kind == "assumed-role":
        name = rest.split("/", 1)[0]
    elif kind in ("user", "role"):
        name = rest.rsplit("/", 1)[-1]
    else:  # root, federated users and anything else: the account
        name = account
    name = _UNSAFE.sub("-", name).strip(".-")[:64]
    if not name:
        raise Unauthenticated(f"cannot derive a tenant from the caller {arn!r}", field="authorization")
    return name


class IamAuthenticator:
    """``Services.auth`` on AWS: the caller API Gateway verified, as a ``Principal``."""

    def __call__(self, authorization: str | None) -> Principal:
        scheme, _, arn = (authorization or "").partition(" ")
        if scheme != IAM_SCHEME or not arn.startswith("arn:"):
            raise Unauthenticated("no IAM identity on this request; sign it with SigV4 (execute-api)",
                                  field="authorization")
        return Principal(tenant_of_arn(arn), frozenset(SCOPES))


class ApiGatewayIdentity:
    """ASGI middleware (outermost, under Mangum): replaces the request's
    ``authorization`` header by the identity API Gateway verified, taken from
    the Lambda event Mangum passes in ``scope["aws.event"]``. A request
    without one (not through the IAM-authorised API) has no caller at all."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            event = scope.get("aws.event") or {}
            identity = (event.get("requestContext") or {}).get("identity") or {}
            arn = identity.get("userArn")
            headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"authorization"]
            if arn:
                headers.append((b"authorization", f"{IAM_SCHEME} {arn}".encode()))
            scope = dict(scope, headers=headers)
        await self.app(scope, receive, send)


def lambda_services(settings: Settings, adapters: Any, data_plane: Any = None):
    """The ``Services`` an API function serves: the adapters' store, models and
    queue, a data plane (``DataPlane`` over the HTTP worker client unless one
    is given), and the IAM identity."""
    from infaas.adapters.workerclient import HttpWorkerClient
    from infaas.app.control import ControlPlane
    from infaas.app.data import DataPlane
    from infaas.wiring import worker_secret

    if data_plane is None:
        client = HttpWorkerClient(timeout_s=settings.request_timeout_s, key=lambda: worker_secret(settings))
        data_plane = DataPlane(adapters.store, client, settings)
    control = ControlPlane(adapters.store, adapters.models, adapters.queue, settings)
    return Services(control, data_plane, settings, auth=IamAuthenticator())
