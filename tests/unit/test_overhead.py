"""End-to-end predictions: the data plane measures, per worker, what answers take beyond their
predicted queue and compute (the API's own work, the hop), and the selector adds it, so the
objective is checked against the time from the query's arrival to its answer.

Real parts: the SQLite store, the data plane, the selector, the HTTP worker client over the
frame socket; the worker is a stand-in frame server that takes 5 ms more than its profile says
(as a far or slow hop would)."""

from __future__ import annotations

import asyncio
import random
import socket
import time

import numpy as np
from fakes import make_architecture, make_profile, make_variant, make_worker

from infaas.adapters import frames
from infaas.adapters.local.secret import socket_dir, socket_path
from infaas.adapters.local.sqlite import SqliteDatabase, SqliteItemTable
from infaas.adapters.workerclient import HttpWorkerClient
from infaas.app.data import ARRIVED, DataPlane
from infaas.app.store import MetadataStore
from infaas.core import tensors
from infaas.core.domain import Objective, Query, ReplicaLoad
from infaas.core.settings import Settings

KEY = "k" * 32
HOP_S = 0.005
MODEL = make_variant("hop-model", profile=make_profile({1: (0.1, 0.2)}), tenant="t")


async def answer(variant_id, objective, rid, body, model=None):
    await asyncio.sleep(HOP_S)
    feed = tensors.decode(body)
    return 200, tensors.CONTENT_TYPE.encode(), [], tensors.encode({"y": next(iter(feed.values()))})


def test_answers_teach_the_selector_the_overhead_of_a_worker(tmp_path):
    store = MetadataStore(SqliteItemTable(SqliteDatabase(str(tmp_path / "db.sqlite3"))))
    store.create_architecture(make_architecture(MODEL.architecture, tenant="t"))
    store.put_variant(MODEL)
    directory = socket_dir(str(tmp_path / "data"))
    port = random.randint(20000, 60000)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(socket_path(directory, port))
    worker = make_worker("w1", replicas=[ReplicaLoad(MODEL.id)], heartbeat_at=time.time())
    worker = type(worker)(**{**worker.__dict__, "url": f"http://127.0.0.1:{port}"})
    store.heartbeat(worker, ttl_s=3600)
    plane = DataPlane(store, HttpWorkerClient(socket_dir=directory, key=KEY), Settings(data_dir=str(tmp_path / "data"),
                                                                                       snapshot_s=0.0))
    x = {"input": np.ones((1, 64), np.float32)}

    async def main():
        server = await asyncio.start_unix_server(lambda r, w: frames.serve(r, w, answer, 1 << 20, KEY), sock=sock)
        try:
            first = await plane.infer(Query(1, architecture="hop-model", tenant="t"), x)
            for _ in range(30):
                last = await plane.infer(Query(1, architecture="hop-model", tenant="t"), x)
            # an objective the profile alone meets (0.2 ms) but the measured hop does not
            tight = await plane.infer(Query(1, architecture="hop-model", tenant="t",
                                            objective=Objective(latency_ms=3.0)), x)
            # measured from the query's arrival as the transport recorded it
            ARRIVED.set(time.perf_counter() - 0.1)
            early = await plane.infer(Query(1, architecture="hop-model", tenant="t"), x)
            return first, last, tight, early
        finally:
            server.close()

    first, last, tight, early = asyncio.run(main())
    sock.close()
    assert first.decision.overhead_ms == 0.0 and first.decision.predicted_latency_ms == 0.2  # nothing measured yet
    assert last.decision.overhead_ms >= HOP_S * 1000 * 0.9  # the 5 ms it takes beyond the profile, learnt
    assert last.decision.predicted_latency_ms == round(0.2 + last.decision.overhead_ms, 4)
    assert tight.decision.reason.startswith("over capacity")  # predicted late, and said so
    assert tight.decision.predicted_latency_ms > 3.0
    assert early.latency_ms >= 100.0
