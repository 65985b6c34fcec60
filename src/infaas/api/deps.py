"""What routes share: the services of this process and the caller's identity."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from fastapi import Request, Security
from fastapi.security import HTTPBearer

from infaas.api.telemetry import MeteredClient, Telemetry
from infaas.app.data import DataPlane
from infaas.app.identity import Authenticator, Principal
from infaas.core.ratelimit import RateLimiter
from infaas.core.settings import Settings

if TYPE_CHECKING:  # the data-plane function (functions/selector) never loads the control plane or offline jobs
    from infaas.app.control import ControlPlane
    from infaas.app.offline import JobService

PRINCIPAL_CACHE_S = 0.5


@dataclass
class Services:
    control: "ControlPlane"
    data: DataPlane
    settings: Settings
    auth: Authenticator = field(default=None)  # type: ignore[assignment]
    limiter: RateLimiter = field(default=None)  # type: ignore[assignment]
    jobs: "JobService" = field(default=None)  # type: ignore[assignment]  # made at first use (``offline``)
    telemetry: Telemetry = field(default=None)  # type: ignore[assignment]

    _principals: dict = field(default_factory=dict, repr=False)  # authorization header -> (until, Principal)

    def __post_init__(self) -> None:
        if self.auth is None:
            self.auth = Authenticator(self.control.store, enabled=self.settings.auth == "keys")
        if self.limiter is None:
            self.limiter = RateLimiter(self.settings.tenant_rps, self.settings.tenant_burst)
        if self.telemetry is None:
            self.telemetry = Telemetry(lambda: self.data.snapshot()[0])
        if not isinstance(self.data.client, MeteredClient):  # counts worker calls per variant (telemetry)
            self.data.client = MeteredClient(self.data.client, self.telemetry)

    def offline(self) -> "JobService":
        """The offline job service, made at its first use (the data plane alone never needs it)."""
        if self.jobs is None:
            from infaas.app.offline import JobService
            from infaas.wiring import open_location

            self.jobs = JobService(self.control.store, self.control.queue, self.settings,
                                   catalogue=lambda: self.data.snapshot(force=True)[0],
                                   locations=lambda uri, tenant: open_location(uri, self.settings, tenant))
        return self.jobs

    def principal(self, authorization: str | None, scope: str) -> Principal:
        """Authenticate, authorise ``scope``, and count the request against the tenant's rate.

        A header that authenticated within the last ``PRINCIPAL_CACHE_S`` is not
        parsed and hashed again (every query carries one); a revocation still
        takes effect within the authenticator's cache time plus that.
        """
        now = time.monotonic()
        hit = self._principals.get(authorization) if authorization else None
        if hit is not None and now < hit[0]:
            who = hit[1]
        else:
            who = self.auth(authorization)
            if authorization:
                if len(self._principals) > 10_000:
                    self._principals.clear()
                self._principals[authorization] = (now + PRINCIPAL_CACHE_S, who)
        who.require(scope)
        self.limiter.check(who.tenant)
        return who


def services(request: Request) -> Services:
    return request.app.state.services


# Where the outermost ASGI layer (``api.app.DataPlaneFastPath``) keeps what it logs about a request
# (``RequestInfo``) in the ASGI scope: ``require`` fills in the tenant.
REQUEST_INFO = "infaas.request"


class RequestInfo:
    __slots__ = ("status", "tenant")

    def __init__(self) -> None:
        self.status: int | None = None
        self.tenant: str | None = None


# Documents ``Authorization: Bearer <key>`` in the OpenAPI description (the Authorize button, a
# lock on each route that needs a key, with the scope it needs: OpenAPI 3.1's role names);
# ``Services.principal`` reads the header itself.
BEARER = HTTPBearer(auto_error=False, scheme_name="bearer",
                    description="An API key: `Authorization: Bearer infaas_...` (`infaas tenants create`). "
                                "Each route needs a scope (query, register or admin); with INFAAS_AUTH=off none is needed.")


def require(scope: str) -> Callable[..., Principal]:
    """A dependency that yields the caller's Principal if it holds ``scope``."""

    def dependency(request: Request, _documented=Security(BEARER, scopes=[scope])) -> Principal:
        who = services(request).principal(request.headers.get("authorization"), scope)
        info = request.scope.get(REQUEST_INFO)
        if info is not None:
            info.tenant = who.tenant
        return who

    return dependency
