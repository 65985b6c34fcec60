"""What routes share: the services of this process and the caller's tenant."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from ..domain import DEFAULT_TENANT
from ..service import ControlPlane, DataPlane
from ..settings import Settings


@dataclass
class Services:
    control: ControlPlane
    data: DataPlane
    settings: Settings


def services(request: Request) -> Services:
    return request.app.state.services


def tenant_of(headers) -> str:
    """The caller's tenant from request headers. Until authentication exists
    every caller is the local tenant."""
    return DEFAULT_TENANT


def tenant(request: Request) -> str:
    return tenant_of(request.headers)
