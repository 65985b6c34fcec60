"""Queries the live data plane turns away are demand: counted per variant (rows and the busiest
sub-second window), published to the store and read into the autoscaler's snapshot, which adds a
worker for them. Real SQLite store, real selector, real plan; a fake clock; no worker is called
(the query is refused before)."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest
from fakes import make_architecture, make_profile, make_variant, make_worker

from infaas.adapters.local.sqlite import SqliteDatabase, SqliteItemTable
from infaas.adapters.workerclient import InProcessWorkerClient
from infaas.app.autoscaler import Autoscaler
from infaas.app.data import DataPlane, unserved_demand
from infaas.app.store import MetadataStore
from infaas.core.domain import HardwareType, Objective, Query, ReplicaLoad, TensorSpec
from infaas.core.errors import Unavailable
from infaas.core.scaling import ScalingParams
from infaas.core.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


class Fleet:
    def __init__(self) -> None:
        self.counts = {"cpu": 1}

    def desired(self):
        return dict(self.counts)

    def set_desired(self, hardware, count):
        self.counts[hardware] = count

    def drain(self, worker_id):
        pass


def test_turned_away_queries_are_published_and_scale_the_fleet(tmp_path):
    clock = Clock()
    settings = Settings(data_dir=str(tmp_path / "data"), refuse_late="on")
    store = MetadataStore(SqliteItemTable(SqliteDatabase(str(tmp_path / "db.sqlite3"))), clock=clock)
    arch = dataclasses.replace(make_architecture("net"), inputs=(TensorSpec("X", "float32", (-1, 4)),))
    store.create_architecture(arch)
    v = make_variant("net", max_batch=8, profile=make_profile({1: (50.0, 60.0), 8: (90.0, 100.0)}))  # 62 rows/s at 70 %
    store.put_variant(v)
    # one worker whose replica has 16 rows queued: 2 batches of 100 ms, past a 100 ms objective
    store.heartbeat(make_worker("w0", replicas=[ReplicaLoad(v.id, queued_rows=16)], heartbeat_at=clock()), ttl_s=1e10)
    plane = DataPlane(store, InProcessWorkerClient({}), settings, clock=clock)
    q = Query(2, Objective(latency_ms=100.0), architecture="net")
    clock.t += 0.5  # past the snapshot's refresh period: the plane reads the worker
    for _ in range(30):
        with pytest.raises(Unavailable):
            asyncio.run(plane.infer(q, {"X": np.zeros((2, 4), np.float32)}))
    clock.t += 1.0
    plane._publish_tier_demand(clock())
    rate, peak = unserved_demand(store, clock())[v.id]
    # 60 rows in the second since the previous publication (at the first refresh), all in one window
    assert peak == 60 and rate == pytest.approx(60.0)
    assert unserved_demand(store, clock() + 60) == {}  # stale entries are not read
    fleet = Fleet()
    auto = Autoscaler(store, fleet, ScalingParams(min_workers={"cpu": 1}, max_workers={"cpu": 8}, latency_ms=100.0),
                      {"cpu": HardwareType("cpu", 0.085)}, clock=clock)
    auto.run_once()
    # its heartbeat alone asks for 8.8 rows/s (queue growth and backlog): one replica; with the 60
    # rows/s turned away, two (one per worker)
    assert fleet.counts["cpu"] == 2
