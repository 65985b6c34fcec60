"""The API's own counts (``api.telemetry``): each tenant's recent decisions are its own ring, so one
tenant's flood pushes out nobody else's; a deleted architecture's counts go with it."""

from __future__ import annotations

from types import SimpleNamespace

from infaas.api.telemetry import Telemetry
from infaas.core.domain import Decision, Objective, Query
from infaas.core.errors import NoFeasibleVariant


def answer(variant: str, latency_ms: float = 1.0):
    d = Decision(variant, "cpu-1", "inproc://cpu-1", 1, 0.5, 1e-7, 0.9, True, "cheapest loaded")
    return SimpleNamespace(decision=d, latency_ms=latency_ms)


def test_a_flood_of_one_tenant_leaves_the_others_decisions_in_view():
    t = Telemetry(decisions=50)
    for _ in range(3):
        t.answered(Query(1, Objective(latency_ms=10), architecture="m", tenant="victim"), answer("m:onnx-fp32:cpu:b32"), 1)
    for _ in range(500):
        t.refused(Query(1, Objective(min_accuracy=0.9999), architecture="m", tenant="attacker"),
                  NoFeasibleVariant("nothing that accurate", field="objective"), 1)
    mine = t.recent("victim")
    assert len(mine) == 3 and all(d["tenant"] == "victim" and d["variant"] for d in mine)
    theirs = t.recent("attacker")
    assert len(theirs) == 50  # bounded
    everyone = t.recent(None, limit=1000)
    assert len(everyone) == 53 and [d["time"] for d in everyone] == sorted((d["time"] for d in everyone), reverse=True)


def test_a_deleted_architecture_starts_again_at_zero():
    t = Telemetry()
    q = Query(2, Objective(latency_ms=10), architecture="reuse", task="private/task", tenant="victim")
    t.answered(q, answer("reuse:onnx-fp32:cpu:b32"), 2)
    t.answered(Query(1, architecture="other", tenant="victim"), answer("other:onnx-fp32:cpu:b32"), 1)
    assert t.variants["reuse:onnx-fp32:cpu:b32"].rows == 2
    t.forget("reuse")
    assert "reuse:onnx-fp32:cpu:b32" not in t.variants and "other:onnx-fp32:cpu:b32" in t.variants
    t.answered(Query(1, architecture="reuse", task="public/task", tenant="attacker"), answer("reuse:onnx-fp32:cpu:b32"), 1)
    assert t.variants["reuse:onnx-fp32:cpu:b32"].rows == 1 and t.variants["reuse:onnx-fp32:cpu:b32"].task == "public/task"
