"""The snapshot indexes (``Catalogue.build(..., hardware)``, ``Cluster.build(..., catalogue=...)``,
``Cluster.with_workers``) change no decision: on random catalogues and clusters, a decision
read from the indexes equals one computed from the bare records, and a snapshot updated
with newer worker records decides as a fresh ``build`` of them does."""

from __future__ import annotations

import dataclasses
import random

import pytest

from infaas.core.domain import (
    HardwareType,
    Objective,
    Profile,
    Query,
    ReplicaLoad,
    Variant,
    Worker,
)
from infaas.core.errors import InfaasError
from infaas.core.selection import Catalogue, Cluster, select

HW = {"cpu": HardwareType("cpu", 0.085), "gpu": HardwareType("gpu", 0.526)}


def world(seed: int):
    rng = random.Random(seed)
    variants = []
    for t in range(4):
        for i in range(12):
            hw = ("cpu", "gpu")[i % 2]
            base = rng.uniform(0.05, 20.0)
            prof = Profile(hw, {b: (base * (1 + 0.1 * b), base * (1.3 + 0.12 * b)) for b in (1, 4, 16)},
                           load_ms=rng.uniform(20, 500), peak_memory_bytes=rng.randint(1 << 20, 1 << 28))
            variants.append(Variant(f"arch-{t}-{i // 3}", f"f{i % 3}", "onnxruntime", hw, 16, f"task{t}/d",
                                    rng.choice(["a", "b"]), rng.choice(["shared", "private"]), "ready", "k",
                                    round(rng.uniform(0.6, 0.99), 3), True, prof))
    workers = []
    for w in range(8):
        hw = ("cpu", "gpu")[w % 2]
        mine = rng.sample([v for v in variants if v.hardware == hw], rng.randint(0, 6))
        reps = tuple(ReplicaLoad(v.id, queued_rows=rng.choice([0, 0, 3, 40]), memory_bytes=1 << 20) for v in mine)
        workers.append(Worker(f"w{w}", hw, f"http://w{w}", memory_budget_bytes=1 << 30,
                              memory_used_bytes=rng.randint(0, 1 << 29), replicas=reps))
    queries = []
    for i in range(300):
        obj = Objective(min_accuracy=rng.choice([None, 0.7, 0.9]), latency_ms=rng.choice([None, 2.0, 30.0, 300.0]))
        kind, tenant, rows = i % 3, rng.choice(["a", "b"]), rng.choice([1, 1, 1, 5])
        if kind == 0:
            queries.append(Query(rows, obj, task=f"task{rng.randrange(4)}/d", tenant=tenant))
        elif kind == 1:
            queries.append(Query(rows, obj, architecture=f"arch-{rng.randrange(4)}-{rng.randrange(4)}", tenant=tenant))
        else:
            queries.append(Query(rows, obj, variant=rng.choice(variants).id, tenant=tenant))
    return variants, workers, queries


def outcome(query, catalogue, cluster):
    try:
        d = select(query, catalogue, cluster)
    except InfaasError as exc:
        return type(exc).__name__, str(exc)
    return d.variant, d.worker, d.predicted_latency_ms, d.loaded, d.reason


@pytest.mark.parametrize("seed", range(5))
def test_indexed_snapshots_decide_as_bare_ones(seed):
    variants, workers, queries = world(seed)
    bare = Catalogue.build(variants), Cluster.build(workers, HW)
    indexed_catalogue = Catalogue.build(variants, HW)
    indexed = indexed_catalogue, Cluster.build(workers, HW, catalogue=indexed_catalogue)
    assert indexed[1].loaded_ranked and indexed[1].backlog  # the indexes exist ...
    results = [outcome(q, *bare) for q in queries]
    assert results == [outcome(q, *indexed) for q in queries]  # ... and decide the same
    assert len({r[0] for r in results}) > 5  # many different answers, refusals among them
    assert any(r[0] == "NotFound" for r in results) and any(r[0].startswith("v") or "-" in r[0] for r in results)


@pytest.mark.parametrize("seed", range(5))
def test_with_workers_decides_as_a_fresh_build(seed):
    variants, workers, queries = world(seed)
    rng = random.Random(seed + 100)
    catalogue = Catalogue.build(variants, HW)
    cluster = Cluster.build(workers, HW, catalogue=catalogue)
    for step in range(20):  # queues move on a few workers at a time
        moved = rng.sample(workers, 2)
        newer = [dataclasses.replace(w, replicas=tuple(dataclasses.replace(r, queued_rows=rng.choice([0, 5, 60]))
                                                       for r in w.replicas)) for w in moved]
        if step % 7 == 6:  # now and then a worker's replica set changes too: a full build
            w = newer[0]
            newer[0] = dataclasses.replace(w, replicas=w.replicas[1:])
        workers = [next((n for n in newer if n.id == w.id), w) for w in workers]
        cluster = cluster.with_workers(newer)
        fresh = Cluster.build(workers, HW, catalogue=catalogue)
        assert cluster.workers == fresh.workers and cluster.replicas == fresh.replicas
        assert cluster.backlog == fresh.backlog and cluster.idle_first == fresh.idle_first
        assert cluster.loaded_ranked == fresh.loaded_ranked
        assert [outcome(q, catalogue, cluster) for q in queries[:60]] == [outcome(q, catalogue, fresh) for q in queries[:60]]
