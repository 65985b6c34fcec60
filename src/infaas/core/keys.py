"""Model store keys: the one rule every ``ModelStore`` (a folder, S3) checks a key against."""

from __future__ import annotations

import re

from infaas.core.errors import InvalidInput

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def check_key(key: str) -> str:
    """Keys are '/'-joined safe segments: no absolute paths, no '..', no empty parts."""
    parts = key.split("/") if isinstance(key, str) else []
    if not parts or any(not _SEGMENT.match(p) or ".." in p for p in parts):
        raise InvalidInput(f"model store key {key!r} is not a safe relative path", field="key")
    return key
