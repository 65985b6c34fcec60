"""Tenants, API keys and scopes.

A key looks like ``infaas_<key id>_<secret>``. Only ``sha256(secret)`` is
stored, next to the key id, the tenant and the scopes; a presented key is
looked up by its id and its secret compared in constant time. The secret is
never stored, logged or echoed in an error.

Scopes: ``query`` (inference and reading the catalogue), ``register``
(registering and deleting one's own models), ``admin`` (the fleet, every
tenant's keys). On AWS the authorizer's identity maps to the same
``Principal`` (see docs/security.md).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from infaas.app.store import MetadataStore
from infaas.core.domain import DEFAULT_TENANT, check_name
from infaas.core.errors import Forbidden, InvalidInput, NotFound, Unauthenticated

SCOPES = ("query", "register", "admin")
_KEY_RE = re.compile(r"^infaas_([0-9a-f]{16})_([A-Za-z0-9_-]{20,128})$")


@dataclass(frozen=True)
class Principal:
    tenant: str
    scopes: frozenset[str]
    key_id: str | None = None

    def require(self, scope: str) -> "Principal":
        if scope not in self.scopes:
            raise Forbidden(f"this key lacks the {scope!r} scope", field="authorization")
        return self


# Every caller when authentication is off (INFAAS_AUTH=off): one local tenant, all scopes.
LOCAL_ROOT = Principal(DEFAULT_TENANT, frozenset(SCOPES))


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_scopes(text: str) -> tuple[str, ...]:
    scopes = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise InvalidInput(f"scopes must be a comma-separated subset of {list(SCOPES)}, got {text!r}", field="scopes")
    return scopes


def create_key(store: MetadataStore, tenant: str, scopes: tuple[str, ...], *, clock=time.time) -> tuple[str, str]:
    """Create a key for ``tenant``; returns (key id, the full key). The full key is shown once."""
    check_name(tenant, "tenant")
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    store.put_key(key_id, {"tenant": tenant, "scopes": list(scopes), "sha256": _digest(secret),
                           "created_at": clock(), "revoked": False})
    return key_id, f"infaas_{key_id}_{secret}"


def revoke_key(store: MetadataStore, key_id: str) -> None:
    record = store.get_key(key_id)
    if record is None:
        raise NotFound(f"no key with id {key_id!r}", field="key_id")
    store.put_key(key_id, {**record, "revoked": True})


def authenticate(store, authorization: str | None) -> Principal:
    """The principal behind an ``Authorization: Bearer <key>`` header value.

    Every failure says the same thing, so a caller learns nothing about which
    key ids exist.
    """
    fail = Unauthenticated("missing, unknown or revoked API key; send 'Authorization: Bearer <key>'",
                           field="authorization")
    if not authorization:
        raise fail
    scheme, _, token = authorization.partition(" ")
    m = _KEY_RE.match(token.strip()) if scheme.lower() == "bearer" else None
    if m is None:
        raise fail
    key_id, secret = m.groups()
    record = store.get_key(key_id)
    expected = record["sha256"] if record else _digest("")  # compare anyway: same time either way
    if not hmac.compare_digest(_digest(secret), expected) or record is None or record.get("revoked"):
        raise fail
    return Principal(record["tenant"], frozenset(record["scopes"]), key_id)


class Authenticator:
    """``authenticate`` with a short cache of key records, so a query costs no
    store read; a revocation takes effect within ``cache_s`` seconds."""

    def __init__(self, store: MetadataStore, *, enabled: bool = True, cache_s: float = 2.0, clock=time.monotonic) -> None:
        self.store, self.enabled, self.cache_s, self.clock = store, enabled, cache_s, clock
        self._cache: dict[str, tuple[float, dict | None]] = {}
        self._cached_store = _CachedKeys(self)

    def __call__(self, authorization: str | None) -> Principal:
        if not self.enabled:
            return LOCAL_ROOT
        return authenticate(self._cached_store, authorization)

    def _get_key(self, key_id: str) -> dict | None:
        now = self.clock()
        hit = self._cache.get(key_id)
        if hit is not None and now - hit[0] < self.cache_s:
            return hit[1]
        record = self.store.get_key(key_id)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key_id] = (now, record)
        return record


class _CachedKeys:
    def __init__(self, auth: Authenticator) -> None:
        self._auth = auth

    def get_key(self, key_id: str) -> dict | None:
        return self._auth._get_key(key_id)
