"""One tenant's broken model does not take the cluster away from everyone (issue: a model whose
every query failed on the worker made the API suspect each worker in turn). A worker that
answers "this variant failed" stays in selection; the variant is suspended after ``FAULTY_AFTER``
failures in a row (503 with ``Retry-After`` for queries that name it, the reason on the variant's
record), for ``SUSPEND_S``, then for twice as long if it fails as often again: not taken away for
good, since another tenant's inputs may be what made a shared variant fail.

Real parts: the SQLite store, the data plane, the selector, the HTTP worker client over the
frame socket; the worker is a stand-in frame server whose answer fails for one variant."""

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
from infaas.adapters.workerclient import HttpWorkerClient
from infaas.app.data import FAULTY_AFTER, SUSPEND_S, DataPlane
from infaas.app.store import MetadataStore
from infaas.core import errors, tensors
from infaas.core.domain import Query, ReplicaLoad
from infaas.core.settings import Settings

KEY = "k" * 32
GOOD = make_variant("good-model", profile=make_profile({1: (0.1, 0.2)}), tenant="victim")
BROKEN = make_variant("broken-model", profile=make_profile({1: (0.1, 0.2)}), tenant="attacker")


async def answer(variant_id, objective, rid, body, model=None):
    if variant_id == BROKEN.id:  # what a worker answers when encoding the outputs fails
        return errors.internal("worker error: ValueError")
    feed = tensors.decode(body)
    return 200, tensors.CONTENT_TYPE.encode(), [], tensors.encode({"probabilities": np.zeros((1, 10), np.float32)
                                                                   + next(iter(feed.values())).sum()})


class Clock:
    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def plane(tmp_path):
    store = MetadataStore(SqliteItemTable(SqliteDatabase(str(tmp_path / "db.sqlite3"))))
    for v in (GOOD, BROKEN):
        store.create_architecture(make_architecture(v.architecture, tenant=v.tenant))
        store.put_variant(v)
    directory = socket_dir(str(tmp_path / "data"))
    port = random.randint(20000, 60000)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(socket_path(directory, port))
    worker = make_worker("w1", replicas=[ReplicaLoad(GOOD.id), ReplicaLoad(BROKEN.id)], heartbeat_at=time.time())
    worker = type(worker)(**{**worker.__dict__, "url": f"http://127.0.0.1:{port}"})
    store.heartbeat(worker, ttl_s=3600)
    settings = Settings(data_dir=str(tmp_path / "data"), suspect_s=60.0)
    clock = Clock()
    plane = DataPlane(store, HttpWorkerClient(socket_dir=directory, key=KEY), settings, clock=clock)
    yield plane, store, sock, clock
    sock.close()


def test_a_broken_variant_fails_alone_and_is_suspended_for_longer_each_time(plane):
    plane, store, sock, clock = plane
    x = {"input": np.ones((1, 64), np.float32)}

    async def attack(n):
        outcomes = []
        for i in range(n):
            try:
                await plane.infer(Query(1, architecture="broken-model", tenant="attacker"), x)
                outcomes.append("ok")
            except errors.InfaasError as exc:
                outcomes.append((type(exc).__name__, exc.retry_after_s) if isinstance(exc, errors.Unavailable)
                                else type(exc).__name__)
            # the victim, on the same worker, between every attack
            good = await plane.infer(Query(1, architecture="good-model", tenant="victim"), x)
            assert good.decision.worker == "w1"
            clock.t += 1
        return outcomes

    async def main():
        server = await asyncio.start_unix_server(lambda r, w: frames.serve(r, w, answer, 1 << 20, KEY), sock=sock)
        first = await attack(FAULTY_AFTER + 3)
        clock.t += SUSPEND_S  # the suspension is over: the variant is tried again, and fails as often again
        second = await attack(FAULTY_AFTER + 1)
        server.close()
        return first, second

    first, second = asyncio.run(main())
    assert first[:FAULTY_AFTER] == ["VariantFault"] * FAULTY_AFTER  # 502 for the broken model's owner ...
    # ... then 503 while suspended, with the time left in Retry-After
    assert first[FAULTY_AFTER:] == [("Unavailable", SUSPEND_S - 1 - k) for k in range(3)], first  # (1 s a round)
    assert second[:FAULTY_AFTER] == ["VariantFault"] * FAULTY_AFTER
    assert second[FAULTY_AFTER:] == [("Unavailable", 2 * SUSPEND_S - 1)]  # twice as long this time
    broken = store.get_variant(BROKEN.id)  # suspended, not failed; its owner reads why
    assert broken.status == "ready" and "suspended from selection for 120 s" in broken.message \
        and "ValueError" in broken.message



def test_a_suspended_variant_that_answers_again_loses_its_note(plane):
    plane, store, sock, clock = plane
    x = {"input": np.ones((1, 64), np.float32)}
    plane._variant_failed(GOOD.id, errors.VariantFault("ran past its deadline"))
    for _ in range(FAULTY_AFTER - 1):
        plane._variant_failed(GOOD.id, errors.VariantFault("ran past its deadline"))
    assert store.get_variant(GOOD.id).message.startswith("suspended from selection for 60 s")

    async def main():
        server = await asyncio.start_unix_server(lambda r, w: frames.serve(r, w, answer, 1 << 20, KEY), sock=sock)
        with pytest.raises(errors.Unavailable):  # suspended
            await plane.infer(Query(1, variant=GOOD.id, tenant="victim"), x)
        clock.t += SUSPEND_S
        answered = await plane.infer(Query(1, variant=GOOD.id, tenant="victim"), x)
        await asyncio.sleep(0.2)  # the note is cleared in a thread
        server.close()
        return answered

    assert asyncio.run(main()).decision.variant == GOOD.id
    deadline = time.time() + 5
    while store.get_variant(GOOD.id).message and time.time() < deadline:
        time.sleep(0.05)
    assert store.get_variant(GOOD.id).message == "" and store.get_variant(GOOD.id).status == "ready"
    assert store.get_variant(GOOD.id).status == "ready"
