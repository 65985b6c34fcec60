"""Workers reconcile toward the replicas the autoscaler assigned them.

``reconcile`` is pure and returns intents; the worker's heartbeat loop
carries them out: load what is assigned and missing (before traffic arrives),
unload what is loaded, not assigned, idle and past a grace period (so a
replica the selector just loaded on demand is not thrown away before the
next plan has seen it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class Loaded:
    busy: bool
    last_used: float


def reconcile(assigned: tuple[str, ...] | None, loaded: Mapping[str, Loaded], now: float,
              grace_s: float) -> tuple[list[str], list[str]]:
    """(variants to load, variants to unload). ``assigned`` None: no plan yet, change nothing."""
    if assigned is None:
        return [], []
    to_load = [v for v in assigned if v not in loaded]
    to_unload = [v for v, r in loaded.items() if v not in assigned and not r.busy and now - r.last_used >= grace_s]
    return sorted(to_load), sorted(to_unload)


def grace_s(period_s: float) -> float:
    """How long an unassigned, idle replica stays loaded: three control periods,
    at least five seconds (a plan that flaps back within it costs no reload)."""
    return max(5.0, 3 * period_s)
