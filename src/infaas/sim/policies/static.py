"""Static serving: one fixed variant per task on a fixed fleet, no autoscaling.

The deployment an operator would write by hand: for each task the variant
chosen as Clipper-style chooses it (``pick``), replicas sized for the mean
load at the product's planning utilisation (70 %) -- or the fixed cluster's
devices split among the tasks --, all up before the first request, never
changed (``sizing="peak"``: for the busiest 10 s of the trace instead of the
mean, the over-provisioned alternative). Batching is the production rule (``batching.batch_limits`` and
``wait_ms``); routing is the shortest queue.
"""

from __future__ import annotations

from infaas.sim.policies.clipper import Clipper


class Static(Clipper):
    def __init__(self, *, pick: str = "floor", devices: dict[str, int] | None = None, utilisation: float = 0.7,
                 name: str | None = None, sizing: str = "mean") -> None:
        default = "static" if pick == "floor" else f"static-{pick}"
        super().__init__(pick=pick, devices=devices, utilisation=utilisation, aimd=False, sizing=sizing,
                         name=name or (default if sizing == "mean" else f"{default}-{sizing}"))
