"""Strict drain: a draining worker refuses new queries (503 ``worker_draining``) and the data plane
sends them to another worker at once, drops the draining one from its snapshot without a store
read, and counts nothing against the variant.

Real parts: the SQLite store, the data plane, the selector, the HTTP worker client over the frame
socket, and the worker's own ``WorkerAgent.answer`` for the refusal; the two workers the data plane
calls are frame servers, one answering as a draining worker does."""

from __future__ import annotations

import asyncio
import random
import socket
import time

import numpy as np
import pytest
from fakes import make_architecture, make_profile, make_variant, make_worker

from infaas.adapters import frames
from infaas.adapters.local.secret import socket_dir, socket_path
from infaas.adapters.local.sqlite import SqliteDatabase, SqliteItemTable
from infaas.adapters.workerclient import HttpWorkerClient, worker_error
from infaas.app.data import DataPlane
from infaas.app.store import MetadataStore
from infaas.core import errors, tensors
from infaas.core.domain import WORKER_DRAINING, Query, ReplicaLoad
from infaas.core.settings import Settings

KEY = "k" * 32
MODEL = make_variant("drain-model", profile=make_profile({1: (0.1, 0.2)}), tenant="t")


def test_a_draining_workers_answer_is_a_worker_draining_error():
    status, _, _, body = errors.encode(errors.WorkerDraining("leaving"))
    exc = worker_error("http://w", status, body)
    assert status == 503 and isinstance(exc, errors.WorkerDraining) and isinstance(exc, errors.WorkerFault)
    assert exc.code == "worker_draining"


def test_the_worker_refuses_new_queries_once_draining(tmp_path):
    from infaas.worker.server import WorkerAgent

    settings = Settings(data_dir=str(tmp_path / "data"))
    agent = WorkerAgent(settings, hardware="cpu", worker_id="w-drain", url="http://127.0.0.1:1", key=KEY)
    frame = tensors.encode({"input": np.ones((1, 64), np.float32)})
    up = asyncio.run(agent.answer("no-such-variant", None, None, frame))
    assert up[0] == 404  # up: the query is looked at (no such variant here)
    agent.drain()
    assert agent.store.get_worker("w-drain").state == WORKER_DRAINING
    status, _, _, body = asyncio.run(agent.answer("no-such-variant", None, None, frame))
    assert status == 503 and errors.decode(status, body).code == "worker_draining"
    assert agent.inflight == 0


@pytest.fixture
def plane(tmp_path):
    store = MetadataStore(SqliteItemTable(SqliteDatabase(str(tmp_path / "db.sqlite3"))))
    store.create_architecture(make_architecture(MODEL.architecture, tenant=MODEL.tenant))
    store.put_variant(MODEL)
    directory = socket_dir(str(tmp_path / "data"))
    socks = {}
    for wid, replicas in (("w-leaving", [ReplicaLoad(MODEL.id)]), ("w-staying", [])):
        port = random.randint(20000, 60000)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(socket_path(directory, port))
        socks[wid] = sock
        worker = make_worker(wid, replicas=replicas, heartbeat_at=time.time())
        store.heartbeat(type(worker)(**{**worker.__dict__, "url": f"http://127.0.0.1:{port}"}), ttl_s=3600)
    settings = Settings(data_dir=str(tmp_path / "data"), suspect_s=60.0, snapshot_s=3600.0)
    yield DataPlane(store, HttpWorkerClient(socket_dir=directory, key=KEY), settings), store, socks
    for sock in socks.values():
        sock.close()


def test_a_query_sent_to_a_draining_worker_is_served_elsewhere_at_once(plane):
    plane, store, socks = plane
    hits = {"w-leaving": 0, "w-staying": 0}

    def serving(wid):
        async def answer(variant_id, objective, rid, body, model=None):
            hits[wid] += 1
            if wid == "w-leaving":  # what WorkerAgent.answer says once draining
                return errors.encode(errors.WorkerDraining(f"worker {wid} is draining"))
            return 200, tensors.CONTENT_TYPE.encode(), [], tensors.encode(
                {"probabilities": np.zeros((1, 10), np.float32) + next(iter(tensors.decode(body).values())).sum()})
        return answer

    x = {"input": np.ones((1, 64), np.float32)}

    async def main():
        servers = [await asyncio.start_unix_server(lambda r, w, a=serving(wid): frames.serve(r, w, a, 1 << 20, KEY),
                                                   sock=sock) for wid, sock in socks.items()]
        answers = [await plane.infer(Query(1, architecture="drain-model", tenant="t"), x) for _ in range(5)]
        for s in servers:
            s.close()
        return answers

    _, cluster = plane.snapshot()
    assert "w-leaving" in cluster.workers  # the store still says up: the view a warm selector has
    answers = asyncio.run(main())
    assert [a.decision.worker for a in answers] == ["w-staying"] * 5  # every query served, none by the leaver
    first = answers[0]
    assert first.retried and first.retry_reason == "worker_draining" and "draining" in first.decision.reason
    assert hits["w-leaving"] == 1  # dropped from the snapshot at once: asked once, never again
    assert not any(a.retried for a in answers[1:])
    assert "w-leaving" not in plane.snapshot()[1].workers
    assert plane._faults == {} and store.get_variant(MODEL.id).status == "ready"  # no fault of the variant
