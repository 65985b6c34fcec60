"""``infaas.core.selection.select``: a pure function, tested on hand-built snapshots.

Prices (see ``fakes.HARDWARE``): cpu costs $3.6/h = $0.001 per second, so a
one-row query that runs one batch of 1 costs ``p50(1) ms * 1e-6`` dollars.
"""

from __future__ import annotations

import dataclasses

import pytest
from fakes import HARDWARE, make_profile, make_variant, make_worker

from infaas.core.domain import BUILDING, WORKER_DRAINING, Objective, Query, ReplicaLoad
from infaas.core.errors import InvalidInput, NoFeasibleVariant, NotFound, Unavailable
from infaas.core.selection import Catalogue, Cluster, cost_per_query, select, service_ms

DIGITS = "classification/digits"
IRIS = "classification/iris"

# p99 at batch 1 is 2 ms (FAST) and 5 ms (SLOW); both load in 50 ms.
FAST = make_profile({1: (1.0, 2.0), 8: (3.0, 4.0), 32: (8.0, 10.0)}, load_ms=50)
SLOW = make_profile({1: (4.0, 5.0), 8: (10.0, 12.0), 32: (30.0, 40.0)}, load_ms=50)
FASTEST = make_profile({1: (0.5, 1.0), 32: (5.0, 6.0)}, load_ms=50)

MLP_FP32 = make_variant("mlp", fmt="fp32", accuracy=0.95, profile=SLOW)  # cost 4e-6 $ per row
MLP_INT8 = make_variant("mlp", fmt="int8", accuracy=0.88, profile=FAST)  # cost 1e-6 $ per row
CNN = make_variant("cnn", accuracy=0.90, profile=FASTEST)  # cost 0.5e-6 $ per row
IRIS_NET = make_variant("tiny", accuracy=0.99, profile=make_profile({1: (0.1, 0.2)}), task=IRIS, max_batch=1)


def pick(query: Query, variants, workers):
    return select(query, Catalogue.build(variants), Cluster.build(workers, HARDWARE))


def q(rows: int = 1, **kw) -> Query:
    objective = Objective(**{k: kw.pop(k) for k in ("min_accuracy", "latency_ms", "max_cost") if k in kw})
    return Query(rows=rows, objective=objective, **kw)


# -- the three query forms -----------------------------------------------------


def test_query_by_variant_uses_exactly_that_variant():
    d = pick(q(variant=MLP_FP32.id), [MLP_FP32, MLP_INT8, CNN], [make_worker("w1")])
    assert d.variant == MLP_FP32.id  # even though cheaper variants exist
    assert d.accuracy == 0.95


def test_query_by_architecture_picks_the_cheapest_variant_of_that_architecture():
    d = pick(q(architecture="mlp"), [MLP_FP32, MLP_INT8, CNN], [make_worker("w1")])
    assert d.variant == MLP_INT8.id  # cnn is cheaper still but another architecture


def test_query_by_task_considers_every_architecture_of_that_task_only():
    d = pick(q(task=DIGITS), [MLP_FP32, MLP_INT8, CNN, IRIS_NET], [make_worker("w1")])
    assert d.variant == CNN.id  # the iris model is cheaper but does another task
    assert pick(q(task=IRIS), [MLP_FP32, IRIS_NET], [make_worker("w1")]).variant == IRIS_NET.id


@pytest.mark.parametrize(
    "query",
    [
        Query(rows=1),
        Query(rows=1, variant=MLP_INT8.id, architecture="mlp"),
        Query(rows=1, architecture="mlp", task=DIGITS),
        Query(rows=0, architecture="mlp"),
    ],
)
def test_malformed_queries_are_invalid_input(query):
    with pytest.raises(InvalidInput):
        pick(query, [MLP_INT8], [make_worker("w1")])


def test_variants_that_are_not_ready_or_unprofiled_are_not_candidates():
    building = make_variant("wip", status=BUILDING)
    unprofiled = dataclasses.replace(make_variant("raw"), profile=None)
    unscored = make_variant("unscored", accuracy=None)
    for v in (building, unprofiled, unscored):
        with pytest.raises(NotFound):
            pick(q(variant=v.id), [v, MLP_INT8], [make_worker("w1")])
    # And a task query skips them.
    assert pick(q(task=DIGITS), [building, unprofiled, MLP_INT8], [make_worker("w1")]).variant == MLP_INT8.id


# -- accuracy --------------------------------------------------------------------


def test_min_accuracy_filters_out_less_accurate_variants():
    workers = [make_worker("w1")]
    assert pick(q(architecture="mlp"), [MLP_FP32, MLP_INT8], workers).variant == MLP_INT8.id

    d = pick(q(architecture="mlp", min_accuracy=0.9), [MLP_FP32, MLP_INT8], workers)
    assert d.variant == MLP_FP32.id
    assert d.accuracy == 0.95
    assert "accuracy 0.950 >= 0.9" in d.reason

    # The bound is inclusive.
    assert pick(q(architecture="mlp", min_accuracy=0.88), [MLP_FP32, MLP_INT8], workers).variant == MLP_INT8.id


# -- loaded replicas, queueing, loading ------------------------------------------


def test_a_loaded_replica_that_meets_the_objective_beats_a_cheaper_unloaded_variant():
    workers = [make_worker("w1", replicas=[MLP_FP32]), make_worker("w2")]
    d = pick(q(architecture="mlp", latency_ms=100), [MLP_FP32, MLP_INT8], workers)
    assert (d.variant, d.worker, d.loaded) == (MLP_FP32.id, "w1", True)
    assert d.predicted_latency_ms == 5.0  # 1 batch at p99(1) = 5 ms, nothing queued
    assert d.cost_per_query == pytest.approx(4e-6)  # $0.001/s * 4 ms (p50) * 1 row / 1 row
    assert d.reason.startswith("loaded replica")

    # Without the replica, the cheaper int8 variant wins.
    d = pick(q(architecture="mlp", latency_ms=100), [MLP_FP32, MLP_INT8], [make_worker("w1"), make_worker("w2")])
    assert (d.variant, d.loaded) == (MLP_INT8.id, False)


def test_queued_rows_raise_the_predicted_latency():
    v = make_variant("q", profile=make_profile({1: (1.0, 2.0), 8: (6.0, 8.0)}), max_batch=8)
    idle = pick(q(rows=3, variant=v.id), [v], [make_worker("w1", replicas=[ReplicaLoad(v.id, queued_rows=0)])])
    # ceil(3/8) = 1 batch at p99(3) = 2 + (8 - 2) * (3 - 1) / (8 - 1) = 3.714285... ms
    assert idle.predicted_latency_ms == pytest.approx(2 + 6 * 2 / 7, abs=1e-4)
    assert idle.batch == 3

    busy = pick(q(rows=3, variant=v.id), [v], [make_worker("w1", replicas=[ReplicaLoad(v.id, queued_rows=13)])])
    # q + r = 13 + 3 = 16 rows; batches of B = 8: ceil(16 / 8) = 2 batches at p99(min(16, 8)) = 8 ms -> 16 ms
    assert busy.predicted_latency_ms == 16.0
    assert busy.loaded and busy.batch == 3


def test_the_less_queued_replica_wins():
    v = make_variant("q", profile=make_profile({1: (1.0, 2.0), 8: (6.0, 8.0)}), max_batch=8)
    workers = [
        make_worker("w1", replicas=[ReplicaLoad(v.id, queued_rows=13)]),
        make_worker("w2", replicas=[ReplicaLoad(v.id, queued_rows=0)]),
    ]
    d = pick(q(rows=3, variant=v.id), [v], workers)
    assert d.worker == "w2"
    assert d.fallback_workers == (("w1", workers[0].url),)


def test_a_queue_that_breaks_the_objective_sends_the_query_elsewhere():
    v = make_variant("q", profile=make_profile({1: (1.0, 2.0), 8: (6.0, 8.0)}, load_ms=50), max_batch=8)
    workers = [make_worker("w1", replicas=[ReplicaLoad(v.id, queued_rows=13)]), make_worker("w2")]
    d = pick(q(rows=3, variant=v.id, latency_ms=15), [v], workers)
    # On w1: 16 ms > 15 (see above). On w2: steady 3.714 ms <= 15, but load 50 + 3.714 > 15: a cold start.
    assert (d.worker, d.loaded) == ("w2", False)
    assert d.reason.startswith("cold start")
    assert d.predicted_latency_ms == pytest.approx(50 + 2 + 6 * 2 / 7, abs=1e-4)


def test_an_unloaded_variant_is_chosen_when_it_can_load_in_time():
    workers = [
        make_worker("w1", memory_used_bytes=1500 << 20),
        make_worker("w2", memory_used_bytes=500 << 20),  # the roomiest
    ]
    d = pick(q(variant=MLP_INT8.id, latency_ms=60), [MLP_INT8], workers)
    assert (d.worker, d.loaded) == ("w2", False)
    assert d.predicted_latency_ms == 52.0  # load 50 ms + 1 batch at p99(1) = 2 ms
    assert "loads in time" in d.reason
    assert "objective 60 ms" in d.reason


def test_cold_start_when_only_the_steady_latency_meets_the_objective():
    d = pick(q(variant=MLP_INT8.id, latency_ms=10), [MLP_INT8], [make_worker("w1")])
    # load 50 + 2 = 52 ms > 10 ms, but steady 2 ms <= 10 ms: this query pays the load.
    assert d.predicted_latency_ms == 52.0
    assert not d.loaded
    assert d.reason.startswith("cold start")


def test_loading_in_time_beats_a_cheaper_cold_start():
    slow_to_load = make_variant("big", accuracy=0.9, profile=make_profile({1: (1.0, 2.0)}, load_ms=500), max_batch=1)
    quick_to_load = make_variant("small", accuracy=0.9, profile=make_profile({1: (4.0, 5.0)}, load_ms=5), max_batch=1)
    d = pick(q(task=DIGITS, latency_ms=20), [slow_to_load, quick_to_load], [make_worker("w1")])
    # big: 500 + 2 > 20 (cold start only); small: 5 + 5 = 10 <= 20 (loads in time), though 4x the cost.
    assert d.variant == quick_to_load.id
    assert d.predicted_latency_ms == 10.0


def test_multi_batch_query_latency_and_cost():
    d = pick(q(rows=40, variant=MLP_INT8.id), [MLP_INT8], [make_worker("w1", replicas=[MLP_INT8])])
    # 40 rows, B = 32: ceil(40/32) = 2 batches at p99(32) = 10 ms -> 20 ms
    assert d.predicted_latency_ms == 20.0
    assert d.batch == 32
    # 2 runs * p50(32) = 8 ms -> 0.016 s * $0.001/s * 40 rows / (2 * 32 rows) = $1e-5
    assert d.cost_per_query == pytest.approx(1e-5)
    assert service_ms(MLP_INT8, 0, 40) == 20.0
    assert cost_per_query(MLP_INT8, 40, 3.6) == pytest.approx(1e-5)


# -- cost ---------------------------------------------------------------------


def test_max_cost_filters_out_expensive_variants_even_when_loaded():
    workers = [make_worker("w1", replicas=[MLP_FP32]), make_worker("w2")]
    assert pick(q(architecture="mlp"), [MLP_FP32, MLP_INT8], workers).variant == MLP_FP32.id

    d = pick(q(architecture="mlp", max_cost=2e-6), [MLP_FP32, MLP_INT8], workers)
    # fp32 costs 4 ms * 1e-6 = 4e-6 > 2e-6; int8 costs 1 ms * 1e-6 = 1e-6.
    assert (d.variant, d.loaded) == (MLP_INT8.id, False)
    assert d.cost_per_query == pytest.approx(1e-6)


def test_max_cost_below_every_variant_is_unreachable_not_unavailable():
    with pytest.raises(NoFeasibleVariant) as err:
        pick(q(architecture="mlp", max_cost=0.5e-6), [MLP_FP32, MLP_INT8], [make_worker("w1")])
    assert err.value.status == 422
    assert "max_cost" in err.value.message
    assert err.value.details["best_cost_per_query"] == pytest.approx(1e-6)


# -- objective cannot be met -----------------------------------------------------


def test_latency_objective_below_the_fastest_variant_is_422_with_the_best_achievable():
    with pytest.raises(NoFeasibleVariant) as err:
        pick(q(architecture="mlp", latency_ms=1.0), [MLP_FP32, MLP_INT8], [make_worker("w1")])
    e = err.value
    assert (e.status, e.code, e.field) == (422, "objective_unreachable", "objective")
    assert e.details["best_latency_ms"] == 2.0  # int8's p99(1)
    assert e.details["best_accuracy"] == 0.95  # fp32
    assert "latency_ms 1" in e.message
    assert e.to_dict()["details"]["best_latency_ms"] == 2.0


def test_accuracy_objective_above_every_variant_is_422_with_the_best_accuracy():
    with pytest.raises(NoFeasibleVariant) as err:
        pick(q(task=DIGITS, min_accuracy=0.99), [MLP_FP32, MLP_INT8, CNN], [make_worker("w1")])
    e = err.value
    assert e.details["best_accuracy"] == 0.95
    assert e.details["best_latency_ms"] == 1.0  # cnn's p99(1), the fastest of all
    assert "min_accuracy 0.99" in e.message


# -- tenants -------------------------------------------------------------------


def test_another_tenants_private_model_looks_exactly_like_a_missing_one():
    secret = make_variant("secret", tenant="alice", visibility="private")
    workers = [make_worker("w1")]
    for query in (
        q(architecture="secret", tenant="bob"),
        q(variant=secret.id, tenant="bob"),
        q(task=DIGITS, tenant="bob"),
    ):
        with pytest.raises(NotFound) as hidden:
            pick(query, [secret], workers)
        with pytest.raises(NotFound) as missing:
            pick(query, [], workers)
        assert hidden.value.to_dict() == missing.value.to_dict()
        assert hidden.value.status == 404

    # The owner sees it.
    assert pick(q(architecture="secret", tenant="alice"), [secret], workers).variant == secret.id


def test_shared_models_are_visible_to_other_tenants_private_ones_are_not():
    alice_private = make_variant("cheap", tenant="alice", visibility="private", profile=FASTEST)
    carol_shared = make_variant("shared", tenant="carol", visibility="shared", profile=SLOW)
    workers = [make_worker("w1")]

    assert pick(q(architecture="shared", tenant="bob"), [carol_shared], workers).variant == carol_shared.id
    # In a task query bob gets the shared one although alice's private one is cheaper.
    assert pick(q(task=DIGITS, tenant="bob"), [alice_private, carol_shared], workers).variant == carol_shared.id
    assert pick(q(task=DIGITS, tenant="alice"), [alice_private, carol_shared], workers).variant == alice_private.id


# -- workers ---------------------------------------------------------------------


def test_draining_workers_take_no_new_work():
    draining = make_worker("w1", replicas=[MLP_INT8], state=WORKER_DRAINING)
    up = make_worker("w2")
    d = pick(q(variant=MLP_INT8.id), [MLP_INT8], [draining, up])
    assert (d.worker, d.loaded) == ("w2", False)
    assert all(wid != "w1" for wid, _ in d.fallback_workers)

    with pytest.raises(Unavailable):
        pick(q(variant=MLP_INT8.id), [MLP_INT8], [draining])


def test_no_worker_of_the_hardware_type_is_unavailable():
    gpu_only = make_variant("mlp", hardware="gpu", profile=make_profile({1: (0.2, 0.3)}, hardware="gpu"))
    with pytest.raises(Unavailable) as err:
        pick(q(variant=gpu_only.id, latency_ms=1000), [gpu_only], [make_worker("c1", hardware="cpu")])
    assert err.value.status == 503
    assert "gpu" in err.value.message
    assert err.value.retry_after_s > 0


def test_a_variant_on_another_hardware_type_is_used_when_its_workers_are_up():
    gpu_int8 = make_variant("mlp", fmt="int8", hardware="gpu", accuracy=0.88, profile=make_profile({1: (0.2, 0.3)}, hardware="gpu"))
    d = pick(q(architecture="mlp"), [MLP_FP32, gpu_int8], [make_worker("c1"), make_worker("g1", hardware="gpu")])
    # gpu: $36/h = $0.01/s * 0.2 ms = 2e-6 < cpu fp32 4e-6
    assert (d.variant, d.worker) == (gpu_int8.id, "g1")
    assert d.cost_per_query == pytest.approx(2e-6)


def test_decision_has_a_reason_and_up_to_two_fallback_workers_of_the_same_hardware():
    w1 = make_worker("w1", replicas=[ReplicaLoad(MLP_INT8.id, queued_rows=0)])
    w2 = make_worker("w2")
    w3 = make_worker("w3", replicas=[ReplicaLoad(MLP_INT8.id, queued_rows=20)])
    w4 = make_worker("w4")
    g1 = make_worker("g1", hardware="gpu")
    d = pick(q(variant=MLP_INT8.id, latency_ms=100), [MLP_INT8], [w1, w2, w3, w4, g1])

    assert (d.worker, d.worker_url, d.loaded) == ("w1", w1.url, True)
    assert d.reason == "loaded replica meets the objective at the lowest cost; predicted 2.00 ms; objective 100 ms"
    # Another replica holder first, then another worker of the same hardware; never the chosen one or a gpu.
    assert d.fallback_workers == (("w3", w3.url), ("w2", w2.url))
    assert "fallback_workers" not in d.to_dict() and d.to_dict()["reason"] == d.reason


def test_over_capacity_serves_the_shortest_queue_instead_of_refusing():
    """Every replica's queue breaks the objective, but an empty one would not:
    the query is served where it waits least (tier 4), not refused with 422."""
    v = make_variant("mlp")  # p99 2 ms at batch 1, 10 ms at 32
    busy = make_worker("w1", replicas=[ReplicaLoad(v.id, queued_rows=320)])
    busier = make_worker("w2", replicas=[ReplicaLoad(v.id, queued_rows=640)])
    # w1: ceil(321 / 32) = 11 batches * p99(32) 10 ms = 110 ms; w2: ceil(641 / 32) = 21 * 10 = 210 ms
    q = Query(rows=1, architecture="mlp", objective=Objective(latency_ms=50.0))
    d = select(q, Catalogue.build([v]), Cluster.build([busy, busier], HARDWARE))
    assert d.worker == "w1" and d.predicted_latency_ms == 110.0
    assert d.reason.startswith("over capacity")
    # An objective no variant meets even with an empty queue is still a 422: 1 ms < p99(1) = 2 ms.
    with pytest.raises(NoFeasibleVariant):
        select(Query(rows=1, architecture="mlp", objective=Objective(latency_ms=1.0)),
               Catalogue.build([v]), Cluster.build([busy, busier], HARDWARE))


def test_refuse_late_answers_503_instead_of_queueing_a_query_every_replica_would_answer_late():
    """With the deployment's ``refuse_late`` on, the same over-capacity query is refused
    (503 with Retry-After, the predicted wait in the message); a replica that meets the
    objective still serves."""
    v = make_variant("mlp")
    busy = make_worker("w1", replicas=[ReplicaLoad(v.id, queued_rows=320)])  # 110 ms predicted, as above
    q = Query(rows=1, architecture="mlp", objective=Objective(latency_ms=50.0))
    with pytest.raises(Unavailable) as exc:
        select(q, Catalogue.build([v]), Cluster.build([busy], HARDWARE, refuse_late=True))
    assert "110 ms > latency_ms 50" in str(exc.value) and exc.value.retry_after_s >= 1.0
    # 320 queued rows -> 110 ms; an objective of 200 ms is met: served, not refused
    d = select(Query(rows=1, architecture="mlp", objective=Objective(latency_ms=200.0)),
               Catalogue.build([v]), Cluster.build([busy], HARDWARE, refuse_late=True))
    assert d.worker == "w1" and d.predicted_latency_ms == 110.0


def test_a_query_may_refuse_a_late_answer_itself_and_is_told_the_best_to_be_had():
    """``if_late`` in the objective overrides the deployment's setting either way; the refusal
    carries the best latency, accuracy and variant available now."""
    v = make_variant("mlp", accuracy=0.93)
    busy = make_worker("w1", replicas=[ReplicaLoad(v.id, queued_rows=320)])  # 110 ms predicted
    cat = Catalogue.build([v])
    refuse = Query(rows=1, architecture="mlp", objective=Objective(latency_ms=50.0, if_late="refuse"))
    with pytest.raises(Unavailable) as exc:
        select(refuse, cat, Cluster.build([busy], HARDWARE))  # deployment: serve late
    assert exc.value.details == {"best_latency_ms": 110.0, "best_accuracy": 0.93, "variant": v.id}
    serve = Query(rows=1, architecture="mlp", objective=Objective(latency_ms=50.0, if_late="serve"))
    d = select(serve, cat, Cluster.build([busy], HARDWARE, refuse_late=True))  # deployment: refuse
    assert d.worker == "w1" and d.reason.startswith("over capacity")


def test_a_cold_start_is_served_late_even_when_the_query_refuses_late_answers():
    """Refusing a cold start would never load the variant: it is served, late and said so."""
    v = make_variant("mlp")  # p99(1) 2 ms, load 50 ms
    d = select(Query(rows=1, architecture="mlp", objective=Objective(latency_ms=10.0, if_late="refuse")),
               Catalogue.build([v]), Cluster.build([make_worker("w1")], HARDWARE))
    assert not d.loaded and d.predicted_latency_ms == 52.0


def test_the_overhead_of_reaching_a_worker_is_part_of_the_prediction():
    """Two idle replicas, 2 ms of compute each; reaching w1 costs 6 ms (its API hop, measured),
    w2 0.5 ms: w2 is chosen, predicted 2.5 ms. With a 5 ms objective only w2 meets it; a 3 ms
    objective is met nowhere once the 4 ms worker is gone: the query is over capacity, not met."""
    v = make_variant("mlp")
    w1, w2 = make_worker("w1", replicas=[v]), make_worker("w2", replicas=[v])
    cat = Catalogue.build([v])
    cluster = Cluster.build([w1, w2], HARDWARE, overhead_ms={"w1": 6.0, "w2": 0.5})
    d = select(Query(rows=1, architecture="mlp", objective=Objective(latency_ms=5.0)), cat, cluster)
    assert (d.worker, d.predicted_latency_ms, d.overhead_ms) == ("w2", 2.5, 0.5)
    slow = Cluster.build([w1, w2], HARDWARE, overhead_ms={"w1": 6.0, "w2": 4.0})
    d = select(Query(rows=1, architecture="mlp", objective=Objective(latency_ms=5.0)), cat, slow)
    assert d.predicted_latency_ms == 6.0 and d.reason.startswith("over capacity")  # 2 + 4 > 5, late and said so
    # a worker with no answers yet is assumed as the others' median: cold starts there pay it too
    fresh = Cluster.build([make_worker("w3")], HARDWARE, overhead_ms={"w1": 3.0, "w2": 4.0})
    assert fresh.default_overhead_ms == 4.0
    d = select(Query(rows=1, architecture="mlp"), cat, fresh)
    assert d.worker == "w3" and d.predicted_latency_ms == 50 + 2 + 4.0 and d.overhead_ms == 4.0
    # without measurements (the simulator) the prediction is compute and queueing alone
    assert select(Query(rows=1, architecture="mlp"), cat, Cluster.build([w1], HARDWARE)).predicted_latency_ms == 2.0

def test_rows_this_selector_has_in_flight_spread_load_between_heartbeats():
    """Both replicas report empty queues (the last heartbeat), but this selector
    has 64 rows outstanding on w1: the next query goes to w2."""
    v = make_variant("mlp")
    w1 = make_worker("w1", replicas=[ReplicaLoad(v.id)])
    w2 = make_worker("w2", replicas=[ReplicaLoad(v.id)])
    q = Query(rows=1, architecture="mlp")
    pending = {("w1", v.id): 64}
    # w1: ceil(65 / 32) = 3 batches * p99(32) 10 ms = 30 ms; w2: p99(1) = 2 ms
    d = select(q, Catalogue.build([v]), Cluster.build([w1, w2], HARDWARE, pending))
    assert d.worker == "w2" and d.predicted_latency_ms == 2.0
    pending[("w1", v.id)] = 0
    pending[("w2", v.id)] = 64  # the mapping is live: the selector's counts as they are now
    d = select(q, Catalogue.build([v]), Cluster.build([w1, w2], HARDWARE, pending))
    assert d.worker == "w1"


def test_predictions_follow_the_live_in_flight_counts_of_one_snapshot():
    """One snapshot, many decisions (as between two refreshes): predictions are remembered
    per heartbeat record, but never across a change of the selector's in-flight rows."""
    v = make_variant("mlp")
    catalogue = Catalogue.build([v])
    w1 = make_worker("w1", replicas=[ReplicaLoad(v.id, queued_rows=32)])  # 2 * p99(32) 10 ms = 20 ms
    w2 = make_worker("w2", replicas=[ReplicaLoad(v.id, queued_rows=64)])  # 3 * 10 = 30 ms
    pending: dict = {}
    cluster = Cluster.build([w1, w2], HARDWARE, pending)
    q = Query(rows=1, architecture="mlp")
    assert [select(q, catalogue, cluster).predicted_latency_ms for _ in range(2)] == [20.0, 20.0]
    pending[("w1", v.id)] = 96  # 97 rows: 4 batches = 40 ms > w2's 30 ms
    d = select(q, catalogue, cluster)
    assert (d.worker, d.predicted_latency_ms) == ("w2", 30.0)
    del pending[("w1", v.id)]  # answered: back to what the heartbeat said
    d = select(q, catalogue, cluster)
    assert (d.worker, d.predicted_latency_ms) == ("w1", 20.0)


def test_on_a_shared_worker_each_further_batch_waits_for_a_batch_of_every_other_busy_replica():
    """A worker runs its replicas' batches in turn. A replica with five batches to go behind a busy
    neighbour waits for about five of the neighbour's batches, not only for what the neighbour has
    queued now: while it stays busy it forms a new batch between two of ours."""
    one = make_variant("one", max_batch=1, profile=make_profile({1: (8.0, 10.0)}))  # batch 1 only
    other = make_variant("other", max_batch=4, profile=make_profile({1: (15.0, 20.0), 4: (30.0, 40.0)}))
    w = make_worker("w1", replicas=[ReplicaLoad(one.id, queued_rows=4), ReplicaLoad(other.id, queued_rows=4)])
    d = pick(q(rows=1, variant=one.id), [one, other], [w])
    # five batches of 10 ms, and between them five batches of the neighbour (40 ms each)
    assert d.predicted_latency_ms == pytest.approx(5 * 10.0 + 5 * 40.0)
    # with an idle neighbour, its queue alone (none) is in the way
    idle = make_worker("w1", replicas=[ReplicaLoad(one.id, queued_rows=4), ReplicaLoad(other.id, queued_rows=0)])
    assert pick(q(rows=1, variant=one.id), [one, other], [idle]).predicted_latency_ms == pytest.approx(5 * 10.0)
    # the same five batches for a query of five rows on an empty queue
    empty = make_worker("w1", replicas=[ReplicaLoad(one.id, queued_rows=0), ReplicaLoad(other.id, queued_rows=4)])
    assert pick(q(rows=5, variant=one.id), [one, other], [empty]).predicted_latency_ms == pytest.approx(5 * 10.0 + 5 * 40.0)
    # a row that runs in the replica's next batch waits for the neighbour's queue once, as before
    short = make_worker("w1", replicas=[ReplicaLoad(one.id, queued_rows=0), ReplicaLoad(other.id, queued_rows=8)])
    assert pick(q(rows=1, variant=one.id), [one, other], [short]).predicted_latency_ms == pytest.approx(10.0 + 2 * 40.0)
