"""The parts of a live replay that do not talk to a stack (``infaas.sim.live``): time-scaling a
trace, mapping its families onto the stack's tasks, absolute accuracy floors, the simulated run
on a pinned fleet, and reading variants as ``GET /v1/models/<name>`` shows them."""

from __future__ import annotations

import numpy as np
import pytest

from infaas.core.domain import READY, HardwareType, Profile, Variant
from infaas.core.scaling import ScalingParams
from infaas.sim import data, live


def _variant(arch: str, acc: float, fmt: str = "fp32", p50: float = 1.0) -> Variant:
    prof = Profile(hardware="cpu", latency_ms={1: (p50, p50 * 1.2), 8: (4 * p50, 5 * p50)}, load_ms=50.0,
                   peak_memory_bytes=10 << 20)
    return Variant(architecture=arch, format=fmt, runtime="onnxruntime", hardware="cpu", max_batch=8, task="t/x",
                   tenant="local", status=READY, accuracy=acc, profile=prof)


def test_scale_by_rate_keeps_the_order_and_reaches_the_rate():
    w = data.explicit_workload([(1000.0 + 10.0 * k, "p/a") for k in range(101)])  # 100 per second
    s = live.scale(w, rate=25.0)
    assert s.arrival_ms[0] == 0.0 and np.all(np.diff(s.arrival_ms) > 0)
    assert live.trace_rate(s) == pytest.approx(25.0, rel=1e-6)
    assert s.meta["scale_factor"] == pytest.approx(25.0 / live.trace_rate(w), rel=1e-6)
    assert s.arrival_ms[-1] == pytest.approx(4 * (w.arrival_ms[-1] - w.arrival_ms[0]) * live.trace_rate(w) / 100, rel=1e-6)
    cut = live.scale(w, factor=0.5, duration_s=1.0, latency_ms=20.0)
    assert len(cut) == 50 and np.all(cut.arrival_ms < 1000.0) and np.all(cut.latency_ms == 20.0)
    assert len(live.scale(w, factor=1.0, max_queries=7)) == 7
    with pytest.raises(ValueError):
        live.scale(w, rate=1.0, factor=1.0)


def test_families_take_the_tasks_in_turn():
    w = data.explicit_workload([(1.0, "p/c"), (2.0, "p/a"), (3.0, "p/b"), (4.0, "p/a")])
    m = live.map_tasks(w, ["t/x", "t/y"])
    assert m.meta["task_map"] == {"p/a": "t/x", "p/b": "t/y", "p/c": "t/x"}
    assert [m.tasks[k] for k in m.task] == ["t/x", "t/x", "t/y", "t/x"]


def test_floors_rank_the_architectures():
    vs = [_variant("a", 0.99), _variant("a", 0.985, "int8"), _variant("b", 0.97), _variant("c", 0.95), _variant("d", 0.90)]
    floors = {t.name: t.min_accuracy for t in live.tenant_floors(vs, data.DEFAULT_TENANTS)}
    assert floors == {"free": None, "premium": 0.97, "standard": 0.95}
    only_one = {t.name: t.min_accuracy for t in live.tenant_floors(vs[:1], data.DEFAULT_TENANTS)}
    assert only_one == {"free": None, "premium": 0.99, "standard": 0.99}


def test_variants_read_from_the_catalogue_answer():
    v = _variant("mlp", 0.97)
    record = {k: x for k, x in v.to_dict().items() if k not in ("architecture", "task", "tenant", "visibility")}
    record["accuracy_source"] = "measured"
    doc = {"name": "mlp", "task": "t/x", "tenant": "local", "visibility": "private", "variants": [record]}
    [back] = live.variants_from_catalogue([doc])
    assert back == v and back.id == v.id


def test_simulated_run_on_the_pinned_fleet_serves_every_tenant():
    vs = [_variant("a", 0.99, p50=2.0), _variant("b", 0.97, p50=1.5), _variant("c", 0.95, p50=0.5)]
    w = live.map_tasks(data.synthetic_workload({"p/a": 50.0}, 20.0, tenants=data.DEFAULT_TENANTS, seed=3), ["t/x"])
    tenants = live.tenant_floors(vs, w.tenants)
    w = live.with_tenants(w, tenants)
    res, sim = live.simulate(w, vs, workers=2, params=ScalingParams(), hardware=HardwareType("cpu", 0.085, 1 << 30))
    assert res.requests == len(w) and res.refused == 0 and res.accuracy_violations == 0
    by_tenant: dict[str, set] = {}
    for i, k in enumerate(sim.served_by):
        if k >= 0:
            by_tenant.setdefault(w.tenants[int(w.tenant[i])].name, set()).add(sim.info_by_index[k].variant.architecture)
    assert by_tenant["premium"] <= {"a", "b"} and by_tenant["free"] == {"c"}  # the floor 0.97 rules c out
    assert sum(res.machine_seconds.values()) == pytest.approx(2 * sim.end_ms / 1000.0, rel=0.05)
