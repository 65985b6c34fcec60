"""Applies the scaling policy: read a snapshot, plan, act, remember.

One control period is ``Autoscaler.run_once``: it reads the workers, the
ready variants and the policy state from the metadata store, calls the pure
``scaling.plan``, sets the fleet's desired worker counts, drains the workers
the plan releases, writes the new state and every worker's assigned replicas
back (one conditional write, so two overlapping runs cannot both apply), and
records an event with the inputs and the reasons whenever something changed.

The local stack calls it from a loop every ``scale_period_s``; on AWS the
autoscaler function calls it on each alarm state change and on a schedule.
Workers read their assignment from the same state item and reconcile.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Mapping

from infaas.app.data import tier_demand, unserved_demand
from infaas.app.store import MetadataStore, ready_variants
from infaas.core.domain import HardwareType
from infaas.core.errors import ConditionFailed
from infaas.core.ports import Fleet
from infaas.core.scaling import (
    PolicyState,
    ScalingParams,
    ScalingPlan,
    Snapshot,
    control_period,
)

log = logging.getLogger("infaas.app.autoscaler")

STATE_NAME = "scaling"


def assignments_for(store: MetadataStore, worker_id: str) -> tuple[str, ...] | None:
    """What the last plan assigned to ``worker_id``; None while no plan exists."""
    state, version = store.get_state(STATE_NAME)
    if not version:
        return None
    return tuple(state.get("assignments", {}).get(worker_id, ()))


def placement_changes(before: Mapping[str, tuple[str, ...]], after: Mapping[str, tuple[str, ...]]) -> list[str]:
    """One line per replica the plan assigns or takes away, for the event log."""
    lines = []
    for wid in sorted(set(before) | set(after)):
        old, new = set(before.get(wid, ())), set(after.get(wid, ()))
        lines += [f"assign {v} to {wid}" for v in sorted(new - old)]
        lines += [f"unassign {v} from {wid}" for v in sorted(old - new)]
    return lines


class Autoscaler:
    def __init__(self, store: MetadataStore, fleet: Fleet, params: ScalingParams,
                 hardware: Mapping[str, HardwareType], clock: Callable[[], float] = time.time) -> None:
        self.store, self.fleet, self.params, self.hardware, self.clock = store, fleet, params, hardware, clock

    def run_once(self) -> ScalingPlan | None:
        doc, version = self.store.get_state(STATE_NAME)
        state = PolicyState.from_dict(doc.get("policy"))
        workers = tuple(self.store.workers())
        live = {w.id for w in workers}
        previous = {wid: tuple(vs) for wid, vs in doc.get("assignments", {}).items() if wid in live}
        desired = self.fleet.desired()
        now = self.clock()
        snap = Snapshot(now, workers, {v.id: v for v in ready_variants(self.store.all_variants())},
                        self.hardware, desired, self.params, tier_rps=tier_demand(self.store, now),
                        unserved=unserved_demand(self.store, now))
        result, new_state = control_period(snap, state, previous)
        try:
            self.store.put_state(STATE_NAME, {"policy": new_state.to_dict(), "assignments": result.assignments},
                                 expect_version=version)
        except ConditionFailed:
            log.info("another autoscaler run applied a plan meanwhile; skipping this one")
            return None
        for hw, n in result.desired_workers.items():
            if n != desired.get(hw):
                self.fleet.set_desired(hw, n)
        for worker_id in result.drain:
            self.fleet.drain(worker_id)
        moves = placement_changes(previous, result.assignments)
        if moves:
            result = ScalingPlan(result.desired_workers, result.assignments, result.drain, (*result.reasons, *moves))
        if result.changed:
            self.store.record_event(
                "scaling",
                "; ".join(result.reasons),
                desired_workers=result.desired_workers,
                drain=list(result.drain),
                assignments={k: list(v) for k, v in result.assignments.items()},
                demand_rps={k: round(v, 2) for k, v in new_state.demand_rps.items()},
                workers={w.id: {"hardware": w.hardware, "state": w.state,
                                "replicas": {r.variant_id: {"rate_rps": round(r.rate_rps, 1), "queued_rows": r.queued_rows}
                                             for r in w.replicas}} for w in workers},
            )
            log.info("scaling: %s", "; ".join(result.reasons))
        return result
