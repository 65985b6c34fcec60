"""What routes share: the services of this process and the caller's identity."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from fastapi import Request

from infaas.app.control import ControlPlane
from infaas.app.data import DataPlane
from infaas.app.identity import Authenticator, Principal
from infaas.app.offline import JobService
from infaas.core.ratelimit import RateLimiter
from infaas.core.settings import Settings
from infaas.wiring import open_location

PRINCIPAL_CACHE_S = 0.5


@dataclass
class Services:
    control: ControlPlane
    data: DataPlane
    settings: Settings
    auth: Authenticator = field(default=None)  # type: ignore[assignment]
    limiter: RateLimiter = field(default=None)  # type: ignore[assignment]
    jobs: JobService = field(default=None)  # type: ignore[assignment]

    _principals: dict = field(default_factory=dict, repr=False)  # authorization header -> (until, Principal)

    def __post_init__(self) -> None:
        if self.jobs is None:
            self.jobs = JobService(self.control.store, self.control.queue, self.settings,
                                   catalogue=lambda: self.data.snapshot(force=True)[0],
                                   locations=lambda uri, tenant: open_location(uri, self.settings, tenant))
        if self.auth is None:
            self.auth = Authenticator(self.control.store, enabled=self.settings.auth == "keys")
        if self.limiter is None:
            self.limiter = RateLimiter(self.settings.tenant_rps, self.settings.tenant_burst)

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


def require(scope: str) -> Callable[[Request], Principal]:
    """A dependency that yields the caller's Principal if it holds ``scope``."""

    def dependency(request: Request) -> Principal:
        return services(request).principal(request.headers.get("authorization"), scope)

    return dependency
