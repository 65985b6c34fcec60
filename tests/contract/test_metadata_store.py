"""Contract of ``MetadataStore`` on top of every ``ItemTable`` implementation."""

from __future__ import annotations

import dataclasses

import pytest
from fakes import make_architecture, make_profile, make_variant, make_worker

from infaas.core.domain import BUILDING, READY, WORKER_DRAINING, ReplicaLoad
from infaas.core.errors import ConditionFailed, NotFound

# -- architectures -------------------------------------------------------------


def test_create_architecture_stores_and_returns_it(metadata_store):
    arch = make_architecture("mlp-64", accuracy=0.93)
    assert metadata_store.create_architecture(arch) == arch
    assert metadata_store.get_architecture("mlp-64") == arch
    assert metadata_store.find_architecture("mlp-64") == arch


def test_create_architecture_is_idempotent_and_returns_the_existing_one(metadata_store):
    first = make_architecture("mlp-64", sha256="a" * 64)
    metadata_store.create_architecture(first)
    version = metadata_store.catalogue_version()

    again = metadata_store.create_architecture(dataclasses.replace(first, sha256="b" * 64, accuracy=0.1))

    assert again == first  # the stored one, so callers can compare sha256
    assert again.sha256 == "a" * 64
    assert metadata_store.get_architecture("mlp-64") == first
    assert metadata_store.catalogue_version() == version  # nothing changed


def test_missing_architecture(metadata_store):
    with pytest.raises(NotFound):
        metadata_store.get_architecture("ghost")
    assert metadata_store.find_architecture("ghost") is None


def test_tasks_and_architectures_by_task(metadata_store):
    metadata_store.create_architecture(make_architecture("b-net", task="classification/digits"))
    metadata_store.create_architecture(make_architecture("a-net", task="classification/digits"))
    metadata_store.create_architecture(make_architecture("c-net", task="classification/iris"))

    assert metadata_store.tasks() == ["classification/digits", "classification/iris"]
    assert [a.name for a in metadata_store.architectures("classification/digits")] == ["a-net", "b-net"]
    assert [a.name for a in metadata_store.architectures("classification/iris")] == ["c-net"]
    assert sorted(a.name for a in metadata_store.architectures()) == ["a-net", "b-net", "c-net"]


# -- variants ------------------------------------------------------------------


def test_put_and_get_variant_round_trip(metadata_store):
    profile = make_profile({1: (0.5, 0.75), 8: (1.25, 2.5), 32: (4.0, 6.125)}, load_ms=12.5)
    v = make_variant("mlp-64", fmt="int8", accuracy=0.912, profile=profile, max_batch=32)
    metadata_store.create_architecture(make_architecture("mlp-64"))
    metadata_store.put_variant(v)

    got = metadata_store.get_variant(v.id)
    assert got == v
    assert got.profile.latency_at(8) == 2.5  # integer batch keys survive the store


def test_get_variant_not_found(metadata_store):
    metadata_store.create_architecture(make_architecture("mlp-64"))
    metadata_store.put_variant(make_variant("mlp-64", fmt="fp32"))

    with pytest.raises(NotFound):
        metadata_store.get_variant(make_variant("mlp-64", fmt="int8").id)
    with pytest.raises(NotFound):
        metadata_store.get_variant(make_variant("ghost").id)
    with pytest.raises(NotFound):
        metadata_store.get_variant("no-colons-at-all")


def test_put_variant_overwrites_the_same_id(metadata_store):
    metadata_store.create_architecture(make_architecture("mlp-64"))
    v = dataclasses.replace(make_variant("mlp-64", status=BUILDING), profile=None)
    metadata_store.put_variant(v)
    metadata_store.put_variant(dataclasses.replace(v, status=READY, profile=make_profile({1: (1, 2)})))

    (only,) = metadata_store.variants_of("mlp-64")
    assert only.status == READY
    assert only.profile is not None


def test_variants_of_variants_for_task_and_all_variants(metadata_store):
    metadata_store.create_architecture(make_architecture("a-net", task="classification/digits"))
    metadata_store.create_architecture(make_architecture("b-net", task="classification/digits"))
    metadata_store.create_architecture(make_architecture("c-net", task="classification/iris"))
    a32 = make_variant("a-net", fmt="fp32")
    a8 = make_variant("a-net", fmt="int8")
    b32 = make_variant("b-net", fmt="fp32")
    c32 = make_variant("c-net", fmt="fp32", task="classification/iris")
    for v in (b32, a8, c32, a32):
        metadata_store.put_variant(v)

    # variants_of returns only variants (not the architecture record) of that architecture.
    assert sorted(v.id for v in metadata_store.variants_of("a-net")) == sorted([a32.id, a8.id])
    assert metadata_store.variants_of("ghost") == []
    assert sorted(v.id for v in metadata_store.variants_for_task("classification/digits")) == sorted(
        [a32.id, a8.id, b32.id]
    )
    assert [v.id for v in metadata_store.variants_for_task("classification/iris")] == [c32.id]
    assert metadata_store.variants_for_task("classification/none") == []
    assert sorted(v.id for v in metadata_store.all_variants()) == sorted([a32.id, a8.id, b32.id, c32.id])
    # Architectures are not variants and variants are not architectures.
    assert sorted(a.name for a in metadata_store.architectures("classification/digits")) == ["a-net", "b-net"]


def test_catalogue_version_increases_on_every_catalogue_write(metadata_store):
    seen = [metadata_store.catalogue_version()]
    assert seen[0] == 0

    metadata_store.create_architecture(make_architecture("mlp-64"))
    seen.append(metadata_store.catalogue_version())
    v = make_variant("mlp-64", status=BUILDING)
    metadata_store.put_variant(v)
    seen.append(metadata_store.catalogue_version())
    metadata_store.put_variant(dataclasses.replace(v, status=READY))
    seen.append(metadata_store.catalogue_version())
    metadata_store.delete_architecture("mlp-64")
    seen.append(metadata_store.catalogue_version())

    assert all(a < b for a, b in zip(seen, seen[1:])), seen


def test_delete_architecture_removes_it_and_its_variants(metadata_store):
    metadata_store.create_architecture(make_architecture("a-net"))
    metadata_store.create_architecture(make_architecture("b-net"))
    a = make_variant("a-net")
    b = make_variant("b-net")
    metadata_store.put_variant(a)
    metadata_store.put_variant(b)

    removed = metadata_store.delete_architecture("a-net")

    assert [v.id for v in removed] == [a.id]
    assert metadata_store.find_architecture("a-net") is None
    assert metadata_store.variants_of("a-net") == []
    with pytest.raises(NotFound):
        metadata_store.get_variant(a.id)
    assert [v.id for v in metadata_store.all_variants()] == [b.id]
    # The name is free again.
    assert metadata_store.create_architecture(make_architecture("a-net", accuracy=0.5)).accuracy == 0.5


# -- workers -------------------------------------------------------------------


def test_heartbeat_and_expiry_after_ttl(metadata_store, clock):
    w = make_worker("w1", replicas=[ReplicaLoad("m:onnx-fp32:cpu:b32", queued_rows=3, rate_rps=1.5)], heartbeat_at=clock())
    metadata_store.heartbeat(w, ttl_s=10)

    assert metadata_store.workers() == [w]
    assert metadata_store.get_worker("w1") == w

    clock.advance(9)
    assert [x.id for x in metadata_store.workers()] == ["w1"]

    clock.advance(2)  # 11 s since its last heartbeat, ttl 10 s
    assert metadata_store.workers() == []
    with pytest.raises(NotFound):
        metadata_store.get_worker("w1")


def test_heartbeats_keep_a_worker_alive_and_update_it(metadata_store, clock):
    metadata_store.heartbeat(make_worker("w1", heartbeat_at=clock()), ttl_s=10)
    metadata_store.heartbeat(make_worker("w2", heartbeat_at=clock()), ttl_s=10)
    clock.advance(8)
    metadata_store.heartbeat(make_worker("w1", heartbeat_at=clock(), state=WORKER_DRAINING), ttl_s=10)
    clock.advance(8)

    assert [(w.id, w.state) for w in metadata_store.workers()] == [("w1", WORKER_DRAINING)]


def test_workers_are_listed_by_id(metadata_store, clock):
    for wid in ["w3", "w1", "w2"]:
        metadata_store.heartbeat(make_worker(wid, heartbeat_at=clock()), ttl_s=10)
    assert [w.id for w in metadata_store.workers()] == ["w1", "w2", "w3"]


def test_remove_worker(metadata_store, clock):
    metadata_store.heartbeat(make_worker("w1", heartbeat_at=clock()), ttl_s=60)
    metadata_store.heartbeat(make_worker("w2", heartbeat_at=clock()), ttl_s=60)
    metadata_store.remove_worker("w1")
    assert [w.id for w in metadata_store.workers()] == ["w2"]
    with pytest.raises(NotFound):
        metadata_store.get_worker("w1")
    metadata_store.remove_worker("w1")  # already gone: fine


# -- events and policy state ---------------------------------------------------


def test_events_in_time_order_and_since(metadata_store, clock):
    t0 = clock()
    metadata_store.record_event("scale", "queue deep", hardware="cpu", desired=2)
    clock.advance(5)
    metadata_store.record_event("load", "first query", variant="m:onnx-fp32:cpu:b32")
    clock.advance(5)
    metadata_store.record_event("evict", "memory", variant="x")

    events = metadata_store.events()
    assert [e["kind"] for e in events] == ["scale", "load", "evict"]
    assert events[0] == {"at": t0, "kind": "scale", "reason": "queue deep", "data": {"hardware": "cpu", "desired": 2}}
    assert [e["kind"] for e in metadata_store.events(since=t0 + 5)] == ["load", "evict"]
    assert metadata_store.events(since=t0 + 11) == []


def test_events_at_the_same_instant_are_all_kept(metadata_store):
    for i in range(5):
        metadata_store.record_event("tick", f"n{i}")
    assert sorted(e["reason"] for e in metadata_store.events()) == [f"n{i}" for i in range(5)]


def test_policy_state_with_conditional_versions(metadata_store):
    assert metadata_store.get_state("autoscaler") == ({}, 0)

    metadata_store.put_state("autoscaler", {"desired": {"cpu": 1}}, expect_version=0)
    assert metadata_store.get_state("autoscaler") == ({"desired": {"cpu": 1}}, 1)

    # A second writer that also saw "nothing saved yet" loses.
    with pytest.raises(ConditionFailed):
        metadata_store.put_state("autoscaler", {"desired": {"cpu": 9}}, expect_version=0)

    metadata_store.put_state("autoscaler", {"desired": {"cpu": 2}, "ema": 0.25}, expect_version=1)
    assert metadata_store.get_state("autoscaler") == ({"desired": {"cpu": 2}, "ema": 0.25}, 2)

    with pytest.raises(ConditionFailed):
        metadata_store.put_state("autoscaler", {"desired": {"cpu": 3}}, expect_version=1)
    assert metadata_store.get_state("autoscaler")[1] == 2

    # States of different names are independent.
    assert metadata_store.get_state("placement") == ({}, 0)
