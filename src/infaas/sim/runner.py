"""Run one policy over one workload: the two set-ups of docs/evaluation.md.

* **cloud** (autoscaling): machines are launched and released; prices per
  hardware type from ``data.HARDWARE``; each request carries its tenant's
  accuracy floor (``data.DEFAULT_TENANTS``) and the trace's 300 ms objective.
* **fixed** (the Proteus evaluation set-up): 40 devices up from the start and
  never more -- 10 ``cpu``, 10 ``vpu`` (the CPU profile), 10 ``gpu-ampere``,
  10 ``gpu-pascal`` --, one variant per device, batches 1 to 8, 300 ms for
  every request, no accuracy floor. A drained device restarts in 2 s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from infaas.sim import data
from infaas.sim.engine import ClusterSpec, Simulator
from infaas.sim.metrics import Result, Series, evaluate

FIXED_DEVICES = {"cpu": 10, "vpu": 10, "gpu-ampere": 10, "gpu-pascal": 10}
CLOUD_TYPES = ("cpu", "gpu-pascal", "gpu-ampere")


@dataclass
class Setup:
    mode: str  # "cloud" | "fixed"
    spec: ClusterSpec
    variants: list
    devices: dict = field(default_factory=dict)  # fixed mode: machines per type


def cloud_setup(variants=None, *, objective_ms: float = 300.0, path=None, tier: bool = False) -> Setup:
    """``tier``: the serverless tier too -- a ``lambda`` variant of every cpu variant
    (``data.tier_variants``), run as function invocations (``ClusterSpec.tier``)."""
    vs = variants if variants is not None else data.proteus_variants(path, objective_ms=objective_ms)
    if tier:
        vs = list(vs) + data.tier_variants(vs)
    hw = {h: data.HARDWARE[h] for h in CLOUD_TYPES}
    spec = ClusterSpec(hardware=hw, start_s={h: data.START_S[h] for h in hw}, memory_bytes={h: data.MEMORY_BUDGET[h] for h in hw},
                       tier=tier)
    return Setup("cloud", spec, vs)


def fixed_setup(*, objective_ms: float = 300.0, path=None, restart_s: float = 2.0) -> Setup:
    vs = data.proteus_variants(path, objective_ms=objective_ms, max_batch=8, fixed_cluster=True)
    hw = {h: data.HARDWARE[h] for h in FIXED_DEVICES}
    spec = ClusterSpec(hardware=hw, start_s={h: restart_s for h in hw}, memory_bytes={h: data.MEMORY_BUDGET[h] for h in hw},
                       max_machines=dict(FIXED_DEVICES))
    return Setup("fixed", spec, vs, dict(FIXED_DEVICES))


def run(workload: data.Workload, setup: Setup, policy, *, seed: int = 0) -> tuple[Result, Series, Simulator]:
    t0 = time.perf_counter()
    sim = Simulator(workload, setup.variants, policy, setup.spec, seed=seed)
    sim.run()
    wall = time.perf_counter() - t0
    res, series = evaluate(sim, policy.name, wall)
    return res, series, sim
