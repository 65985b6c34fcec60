"""Model store keys: the one rule every ``ModelStore`` (a folder, S3) checks a key against; and the
name of a tenant's offline area."""

from __future__ import annotations

import hashlib
import re

from infaas.core.errors import InvalidInput

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def check_key(key: str) -> str:
    """Keys are '/'-joined safe segments: no absolute paths, no '..', no empty parts."""
    parts = key.split("/") if isinstance(key, str) else []
    if not parts or any(not _SEGMENT.match(p) or ".." in p for p in parts):
        raise InvalidInput(f"model store key {key!r} is not a safe relative path", field="key")
    return key


_SAFE_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


_DIGEST_FOLDER = re.compile(r"t-[0-9a-f]{24}")


def tenant_folder(tenant: str) -> str:
    """The folder (or S3 prefix) name of a tenant's offline area: the name itself when it is a
    plain one, else a digest of it (an IAM ARN has ':' and '/'); never '..' or empty.

    A plain name shaped like a digest folder (``t-`` and 24 hex digits, a legal key-tenant name) is
    digested too, so no tenant's folder is ever another tenant's digest: the map stays one to one."""
    if _SAFE_TENANT.fullmatch(tenant) and tenant not in (".", "..") and not _DIGEST_FOLDER.fullmatch(tenant):
        return tenant
    return "t-" + hashlib.sha256(tenant.encode()).hexdigest()[:24]
