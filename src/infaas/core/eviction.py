"""Replica eviction: which loaded variants to unload to make room, least
recently used first. Pure: the worker's replica cache calls it with a snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Resident:
    variant_id: str
    memory_bytes: int
    last_used: float
    busy: bool  # requests queued or running: never evicted


def choose_evictions(residents: Sequence[Resident], budget_bytes: int, incoming_bytes: int) -> list[str] | None:
    """Variant ids to unload, oldest use first, so that ``incoming_bytes`` fit.

    Returns ``[]`` when it already fits, and ``None`` when it cannot fit even
    after unloading every idle replica (the caller answers 503).
    """
    used = sum(r.memory_bytes for r in residents)
    if used + incoming_bytes <= budget_bytes:
        return []
    victims: list[str] = []
    for r in sorted((r for r in residents if not r.busy), key=lambda r: (r.last_used, r.variant_id)):
        victims.append(r.variant_id)
        used -= r.memory_bytes
        if used + incoming_bytes <= budget_bytes:
            return victims
    return None
