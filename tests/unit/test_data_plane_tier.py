"""The data plane with the serverless tier, on a fake clock: the real SQLite store, the real selector and
the local tier (processes running the inference function's handler on a real digits model).

With no worker up, a query goes to the tier (cold, then warm as the warm pool says); the pool is
acquired and released around each invocation and ages out on the fake clock; rows over the function's
6 MB payload are never sent to it; a throttled tier sends the query back to selection without it; the
tier's counts and recent rate per variant are kept and published to the store for the autoscaler.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil

import numpy as np
import pytest
from fakes import make_architecture, make_variant

from infaas.adapters.local.folder import FolderModelStore
from infaas.adapters.local.functions import LocalFunctionTier
from infaas.adapters.local.sqlite import SqliteDatabase, SqliteItemTable
from infaas.adapters.workerclient import InProcessWorkerClient
from infaas.app.data import TIER_RATE_WINDOW_S, DataPlane, tier_demand
from infaas.app.store import MetadataStore
from infaas.cli import digits
from infaas.core import tier
from infaas.core.domain import Profile, Query, TensorSpec
from infaas.core.errors import (
    NoFeasibleVariant,
    PayloadTooLarge,
    Unavailable,
    WorkerFault,
)
from infaas.core.settings import Settings

ARCH = "digits-fn"


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    (trained,) = digits.train(str(tmp_path_factory.mktemp("fn-model")), names=["logistic-regression"])
    return trained


@pytest.fixture
def setup(tmp_path, model_file):
    clock = Clock()
    settings = Settings(data_dir=str(tmp_path / "data"), function_tier="on", function_keep_warm_s=60.0,
                        build_hardware="cpu,lambda")
    store = MetadataStore(SqliteItemTable(SqliteDatabase(str(tmp_path / "db.sqlite3"))), clock=clock)
    arch = dataclasses.replace(make_architecture(ARCH), inputs=(TensorSpec("X", "float32", (-1, 64)),),
                               outputs=(TensorSpec("label", "int64", (-1,)),
                                        TensorSpec("probabilities", "float32", (-1, 10))))
    store.create_architecture(arch)
    profile = Profile(hardware="lambda", latency_ms={1: (0.05, 0.1), 8: (0.1, 0.2)}, load_ms=500.0,
                      peak_memory_bytes=50 << 20, memory_mb=512)
    v = make_variant(ARCH, hardware="lambda", max_batch=8, profile=profile)
    store.put_variant(v)
    models = FolderModelStore(settings.models_dir)
    models.put(v.model_key, open(model_file.path, "rb").read())
    functions = LocalFunctionTier(settings.models_dir, keep_warm_s=60.0, concurrency=2, clock=clock)
    plane = DataPlane(store, InProcessWorkerClient({}), settings, clock=clock, functions=functions)
    yield plane, store, functions, clock, v
    functions.shutdown()
    shutil.rmtree(tmp_path, ignore_errors=True)


def query(rows: int = 2, latency_ms: float = 2000.0) -> Query:
    from infaas.core.domain import Objective

    return Query(rows, Objective(latency_ms=latency_ms), architecture=ARCH)


def test_with_no_worker_the_tier_answers_cold_then_warm_and_the_pool_follows(setup, model_file):
    plane, store, functions, clock, v = setup
    x = digits.split().x_test[:2].astype(np.float32)

    async def main():
        a = await plane.infer(query(), {"X": x})
        clock.t += 1
        b = await plane.infer(query(), {"X": x})
        return a, b

    a, b = asyncio.run(main())
    assert a.decision.worker == tier.HARDWARE and a.decision.variant == v.id and a.decision.loaded is False
    assert "cold start 500 ms included" in a.decision.reason
    assert a.outputs["label"].tolist() == model_file.model.predict(x).tolist()
    assert b.decision.loaded is True and b.decision.predicted_latency_ms < a.decision.predicted_latency_ms
    s = plane.tier_stats[v.id]
    assert (s.invocations, s.cold_starts, s.errors, s.throttles) == (2, 1, 0, 0) and s.cost > 0
    assert plane.tier_state.pool(v.id).in_flight == 0 and len(plane.tier_state.pool(v.id).idle) == 1
    assert plane.tier_rates() == {v.id: pytest.approx(2 / TIER_RATE_WINDOW_S)}
    # the rate is published for an autoscaler in another process, and read back summed
    plane._publish_tier_demand(clock())
    assert tier_demand(store, clock()) == {v.id: pytest.approx(2 / TIER_RATE_WINDOW_S)}
    # past keep-warm the pool forgets the environment and the local instance stops: the next query is cold
    clock.t += 61
    assert plane.tier_rates() == {}
    assert tier_demand(store, clock() + 3 * TIER_RATE_WINDOW_S) == {}
    assert functions.expire() == 1 and functions.warm() == {}
    c = asyncio.run(plane.infer(query(), {"X": x}))
    assert c.decision.worker == tier.HARDWARE and c.decision.loaded is False
    assert plane.tier_stats[v.id].cold_starts == 2


def test_rows_over_the_payload_limit_never_go_to_the_tier(setup):
    plane, _, _, _, v = setup
    # the snapshot a query is decided on has no tier for rows whose invocation would pass 6 MB (a base64 .npz:
    # 4/3 of their bytes), so the selector never chooses it for them (a model with wider rows than digits')
    big = plane._with_tier(plane.snapshot()[1], {"X": np.zeros((4096, 300), np.float32)})
    assert big.tier is None
    small = plane._with_tier(plane.snapshot()[1], {"X": np.zeros((4096, 64), np.float32)})
    assert small.tier is plane.tier_state
    assert v.id not in plane.tier_stats


def test_a_throttled_tier_sends_the_query_back_to_selection(setup):
    plane, _, functions, _, v = setup
    x = digits.split().x_test[:1].astype(np.float32)
    functions._running = functions.concurrency  # every instance slot taken, as by other invocations
    with pytest.raises((NoFeasibleVariant, Unavailable)):  # decided again without the tier: no machine is up
        asyncio.run(plane.infer(query(rows=1), {"X": x}))
    assert plane.tier_stats[v.id].throttles == 1 and plane.tier_stats[v.id].invocations == 0
    assert plane.tier_state.pool(v.id).in_flight == 0  # released although it failed
    functions._running = 0
    # the pool's own limit: no concurrency left in the snapshot means the selector does not choose the tier
    plane.tier_state = dataclasses.replace(plane.tier_state, concurrency=0)
    with pytest.raises((NoFeasibleVariant, Unavailable)):
        asyncio.run(plane.infer(query(rows=1), {"X": x}))
    assert plane.tier_stats[v.id].invocations == 0


def test_a_query_the_tier_answers_for_a_busy_replica_counts_as_that_replicas_demand(setup):
    """The selector sends a query to the tier when the loaded machine replica would answer late: no
    heartbeat shows that query, so the plane counts it for the machine variant (``Unserved``), as it
    counts a refusal, and publishes it for the autoscaler."""
    from fakes import make_profile, make_worker

    from infaas.app.data import unserved_demand
    from infaas.core.domain import ReplicaLoad

    plane, store, _, clock, fn = setup
    cpu = make_variant(ARCH, max_batch=8, profile=make_profile({1: (50.0, 60.0), 8: (90.0, 100.0)}))
    store.put_variant(cpu)
    # 64 rows queued: 8 batches of 100 ms, past a 700 ms objective the cold tier (500 ms) meets
    store.heartbeat(make_worker("w0", replicas=[ReplicaLoad(cpu.id, queued_rows=64)], heartbeat_at=clock()), ttl_s=1e10)
    clock.t += 0.5  # past the snapshot's refresh period: the plane reads the worker
    x = digits.split().x_test[:2].astype(np.float32)
    a = asyncio.run(plane.infer(query(rows=2, latency_ms=700.0), {"X": x}))
    assert a.decision.worker == tier.HARDWARE and a.decision.variant == fn.id
    assert a.decision.displaced == cpu.id
    clock.t += 1.0
    plane._publish_tier_demand(clock())
    rate, peak = unserved_demand(store, clock())[cpu.id]
    assert peak == 2 and rate > 0


class OutOfReach(LocalFunctionTier):
    """The tier as seen while its endpoint is unreachable (the AWS adapter's ``WorkerFault``)."""

    async def invoke(self, variant_id, model_key, arrays, **kw):
        raise WorkerFault("invoking infaas-inference-512 failed: EndpointConnectionError: could not connect")


def test_a_tier_out_of_reach_is_not_the_variants_fault(setup, tmp_path):
    """A connection refused, reset or timed out on the way to the function is the tier's failure: the
    query goes back to selection without the tier (no machine here: the tier's error is the answer), and
    the variant stays in service however often it happens (a function that fails takes it out after
    ``FAULTY_AFTER`` in a row)."""
    from infaas.app.data import FAULTY_AFTER

    plane, store, functions, clock, v = setup
    plane.functions = OutOfReach(str(tmp_path), keep_warm_s=60.0, concurrency=2, clock=clock)
    x = digits.split().x_test[:1].astype(np.float32)
    for _ in range(FAULTY_AFTER + 2):
        with pytest.raises(WorkerFault):
            asyncio.run(plane.infer(query(rows=1), {"X": x}))
        clock.t += 1
    assert store.get_variant(v.id).status == "ready"
    s = plane.tier_stats[v.id]
    assert (s.errors, s.invocations, s.throttles) == (FAULTY_AFTER + 2, 0, 0)
    assert plane.tier_state.pool(v.id).in_flight == 0


def test_a_query_naming_a_lambda_variant_the_tier_cannot_take_says_why(setup):
    """Rows over the function's 6 MB payload are a 413 naming the limit, and a tier at its concurrency
    limit a 503 saying so (not "no worker of hardware type lambda is up": a client would retry a
    413 for ever); by architecture, with no machine up, the 503 names the tier too."""
    from infaas.core.domain import Objective

    plane, _, functions, _, v = setup
    plane.settings = dataclasses.replace(plane.settings, max_rows=20_000)  # a deployment's larger row limit
    wide = {"X": np.zeros((20_000, 64), np.float32)}  # 5.1 MB of rows: 6.8 MB as an invocation
    named = Query(20_000, Objective(), variant=v.id)
    with pytest.raises(PayloadTooLarge) as too_big:
        asyncio.run(plane.infer(named, wide))
    assert too_big.value.field == "inputs" and "6 MB" in too_big.value.message
    assert too_big.value.details["limit_bytes"] == tier.MAX_PAYLOAD_BYTES
    x = digits.split().x_test[:1].astype(np.float32)
    plane.tier_state = dataclasses.replace(plane.tier_state, concurrency=0)
    with pytest.raises(Unavailable) as busy:
        asyncio.run(plane.infer(Query(1, Objective(), variant=v.id), {"X": x}))
    assert "concurrency limit" in busy.value.message and busy.value.retry_after_s > 0
    with pytest.raises(Unavailable) as by_name:
        asyncio.run(plane.infer(query(rows=1), {"X": x}))
    assert "the function tier cannot take this query now" in by_name.value.message
    assert plane.tier_stats.get(v.id) is None  # nothing was invoked


def test_one_tenant_holds_at_most_its_share_of_the_tiers_concurrency(setup):
    """``function_tenant_share`` (0.5 of the 2 here: one): a tenant whose invocations run long holds at
    most its share; its next query is refused by the tier (and, no machine being up, answered 503
    saying so) while another tenant's query still finds room."""
    from infaas.core.domain import Objective

    plane, store, _, _, v = setup
    store.put_variant(dataclasses.replace(v, visibility="shared"))  # published: both tenants query it
    plane.snapshot(force=True)
    x = digits.split().x_test[:1].astype(np.float32)
    ask = lambda tenant: plane.infer(Query(1, Objective(latency_ms=2000.0), architecture=ARCH, tenant=tenant),  # noqa: E731
                                     {"X": x})
    plane._tier_by_tenant["attacker"] = 1  # one invocation of the attacker's in flight, running long
    with pytest.raises(Unavailable) as refused:
        asyncio.run(ask("attacker"))
    assert "your share" in refused.value.message and refused.value.retry_after_s > 0
    answered = asyncio.run(ask("victim"))
    assert answered.decision.worker == tier.HARDWARE and answered.decision.variant == v.id
    assert plane._tier_by_tenant == {"attacker": 1}  # the victim's slot was given back
    assert plane.tier_stats[v.id].throttles == 1 and plane.tier_stats[v.id].invocations == 1
