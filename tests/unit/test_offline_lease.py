"""An offline item that runs longer than the queue's visibility timeout (``app.offline.Lease``),
one that waits too long behind online work, and one that runs past ``offline_item_limit_s``.

A job is submitted through ``JobService`` onto the SQLite queue and folder locations of a local
stack; ``run_received`` runs its item as a worker does. The model is a stand-in whose every batch
of 64 rows takes ``BATCH_S`` and, meanwhile, lets a second worker try to take the same item from
the queue. The lease's own thread keeps real time, so the test of it does too (seconds, with
margins of seconds); the rest runs on a fake clock.
"""

from __future__ import annotations

import io
import os
import threading
import time

import numpy as np
from fakes import FakeClock, make_architecture, make_variant

from infaas.adapters.local.sqlite import SqliteDatabase, SqliteItemTable, SqliteJobQueue
from infaas.app.offline import (
    BATCH_ROWS,
    LANE,
    JobService,
    Lease,
    output_name,
    run_item,
    run_received,
)
from infaas.app.store import MetadataStore
from infaas.core.errors import Unavailable
from infaas.core.keys import tenant_folder
from infaas.core.selection import Catalogue
from infaas.core.settings import Settings
from infaas.wiring import open_location

TENANT = "local"
VISIBILITY_S = 30.0
BATCH_S = 10.0  # each batch's run time on the fake clock
ROWS = 12 * BATCH_ROWS  # twelve batches: 120 s, four visibility timeouts


class SlowModel:
    """Sums each row; every call takes ``BATCH_S`` of the fake clock, during which a second worker
    polls the offline lane (what it receives is kept)."""

    input_names = ("input",)

    def __init__(self, clock: FakeClock, queue: SqliteJobQueue, poll: bool = True) -> None:
        self.clock, self.queue, self.poll, self.stolen = clock, queue, poll, []

    def run(self, feeds):
        for _ in range(2):
            self.clock.advance(BATCH_S / 2)
            got = self.queue.receive(LANE, visibility_s=VISIBILITY_S) if self.poll else None
            if got is not None:
                self.stolen.append(got)
        return {"total": feeds["input"].sum(axis=1, keepdims=True)}


def make_job(tmp_path, limit_s: float = 3600.0, files: dict[str, int] | None = None, clock=None,
             visibility_s: float = VISIBILITY_S):
    clock = clock or FakeClock()
    db = SqliteDatabase(str(tmp_path / "db.sqlite3"), clock=clock)
    store, queue = MetadataStore(SqliteItemTable(db), clock=clock), SqliteJobQueue(db)
    settings = Settings(data_dir=str(tmp_path / "data"), offline_visibility_s=visibility_s, offline_item_limit_s=limit_s)
    store.create_architecture(make_architecture("mlp"))
    store.put_variant(make_variant("mlp"))
    folder = os.path.join(settings.offline_root_dir, tenant_folder(TENANT), "in")
    os.makedirs(folder)
    rows = {}
    for name, n in (files or {"a.npy": ROWS}).items():
        rows[name] = np.random.default_rng(len(name) + n).random((n, 64), dtype=np.float32)
        np.save(os.path.join(folder, name), rows[name])

    def locations(uri, tenant):
        return open_location(uri, settings, tenant)

    service = JobService(store, queue, settings, catalogue=lambda: Catalogue.build(store.all_variants(), settings.hardware),
                         locations=locations, clock=clock)
    job = service.submit({"input": "in", "output": "out", "architecture": "mlp"}, TENANT)
    return clock, store, queue, settings, service, job, rows, locations


def take(queue, clock, store, settings, locations, *, lease: bool = True, poll: bool = True, **kw):
    """One worker's turn: receive the next item and run it, as the worker does (``run_received``,
    under its lease) or, with ``lease=False``, by ``run_item`` alone, acknowledged after."""
    receipt, msg = queue.receive(LANE, visibility_s=settings.offline_visibility_s)
    model = SlowModel(clock, queue, poll)
    if lease:
        status = run_received(receipt, msg, store, settings, lambda _v: model, locations, queue, clock=clock, **kw)
    else:
        status = run_item(msg, store, settings, lambda _v: model, locations, clock=clock, **kw)
        queue.ack(LANE, receipt)
    return status, msg, model


def outputs(locations, name):
    return np.load(io.BytesIO(locations("out", TENANT).read(output_name(name))))["total"]


def test_a_leased_item_that_loads_and_runs_longer_than_the_visibility_timeout_is_never_taken_twice(tmp_path):
    # real time: visibility 3 s, so the lease extends every second; the item spends 2.5 s loading its
    # model and 2 x 1 s running, 4.5 s in all, while a second worker polls the lane every 50 ms
    clock = time.time
    _, store, queue, settings, service, job, rows, locations = make_job(
        tmp_path, files={"a.npy": 2 * BATCH_ROWS}, clock=clock, visibility_s=3.0)
    stolen, done = [], threading.Event()

    def second_worker():
        while not done.is_set():
            if (got := queue.receive(LANE, visibility_s=3.0)) is not None:
                stolen.append(got)
            time.sleep(0.05)

    class Model:
        input_names = ("input",)

        def run(self, feeds):
            time.sleep(1.0)
            return {"total": feeds["input"].sum(axis=1, keepdims=True)}

    def load(_variant):
        time.sleep(2.5)  # a cold model load: before any batch
        return Model()

    receipt, msg = queue.receive(LANE, visibility_s=3.0)
    poller = threading.Thread(target=second_worker)
    poller.start()
    try:
        status = run_received(receipt, msg, store, settings, load, locations, queue)
    finally:
        done.set()
        poller.join()
    assert status == "done" and stolen == []
    np.testing.assert_allclose(outputs(locations, "a.npy")[:, 0], rows["a.npy"].sum(axis=1), rtol=1e-5)
    assert queue.depth(LANE) == 0 and queue.depth(f"{LANE}-dlq") == 0  # acknowledged, nothing dead-lettered
    assert service.status(job["id"], TENANT)["state"] == "done"


def test_the_lease_stops_once_the_queue_no_longer_holds_the_message_and_rides_out_a_queue_fault(tmp_path):
    clock, store, queue, settings, *_ = make_job(tmp_path)
    receipt, _ = queue.receive(LANE, visibility_s=VISIBILITY_S)

    class Faulty:  # the queue unavailable for one call, as a throttled SQS is
        def __init__(self):
            self.fail = True

        def extend(self, lane, receipt, visibility_s):
            if self.fail:
                self.fail = False
                raise Unavailable("throttled")
            return queue.extend(lane, receipt, visibility_s)

    lease = Lease(Faulty(), LANE, receipt, VISIBILITY_S)
    lease.beat()
    assert lease.held and lease.beats == 0  # a fault: still held, tried again at the next beat
    clock.advance(25)
    lease.beat()
    assert lease.held and lease.beats == 1
    clock.advance(25)  # 50 s after the receive, 25 s after the extension: still invisible
    assert queue.receive(LANE, visibility_s=VISIBILITY_S) is None
    queue.ack(LANE, receipt)
    lease.beat()
    assert not lease.held  # acknowledged: the queue says so, and the lease's thread would end


def test_without_the_lease_the_same_item_is_handed_out_again_while_it_runs(tmp_path):
    # what the lease prevents: after 30 s a second worker takes the item that is still running,
    # and the third delivery leaves it for the dead-letter lane
    clock, store, queue, settings, service, job, rows, locations = make_job(tmp_path)
    status, msg, model = take(queue, clock, store, settings, locations, lease=False)
    assert status == "done"
    assert len(model.stolen) >= 2 and all(body == msg for _, body in model.stolen)


def test_waits_for_online_work_do_not_count_towards_the_limit(tmp_path):
    clock, store, queue, settings, service, job, rows, locations = make_job(tmp_path, limit_s=15.0,
                                                                            files={"a.npy": 2 * BATCH_ROWS})
    busy = iter([False] * 3)  # online work queued at the first checks: 20 s of waiting, then none

    def wait(_s):
        clock.advance(10.0)

    status, _, model = take(queue, clock, store, settings, locations, poll=False,
                            may_run=lambda: next(busy, True), wait=wait)
    assert status == "done"  # 20 s waited and 20 s run; counted together, it would stop before batch 2


def test_the_lease_stops_extending_once_held_longer_than_an_item_may_take(tmp_path):
    # an item stuck in a call that never returns is left to be redelivered (then dead-lettered)
    clock, store, queue, settings, *_ = make_job(tmp_path)
    receipt, _ = queue.receive(LANE, visibility_s=VISIBILITY_S)
    lease = Lease(queue, LANE, receipt, VISIBILITY_S, max_hold_s=100.0, clock=clock)
    for _ in range(10):  # 0 to 100 s after the receive: extended every 10 s
        clock.advance(10)
        lease.beat()
        assert lease.held
    assert lease.beats == 10
    clock.advance(10)  # 110 s: held longer than max_hold_s
    lease.beat()
    assert not lease.held and lease.beats == 10
    clock.advance(19)
    assert queue.receive(LANE, visibility_s=VISIBILITY_S) is None  # the last extension (at 100 s) still holds
    clock.advance(2)
    assert queue.receive(LANE, visibility_s=VISIBILITY_S) is not None  # 131 s: redelivered


def test_an_item_kept_waiting_by_online_work_goes_back_to_the_lane_for_an_idle_worker(tmp_path):
    clock, store, queue, settings, service, job, rows, locations = make_job(tmp_path, files={"a.npy": 2 * BATCH_ROWS})

    def wait(_s):
        clock.advance(10.0)

    began = clock()
    status, msg, model = take(queue, clock, store, settings, locations, poll=False, may_run=lambda: False, wait=wait)
    assert status == "released" and clock() - began == 40.0  # at the first check past the 30 s visibility
    assert queue.depth(LANE) == 1 and queue.depth(f"{LANE}-dlq") == 0
    assert service.status(job["id"], TENANT)["left"] == 1  # not failed, not done: waiting for a worker
    status, again, _ = take(queue, clock, store, settings, locations, poll=False)  # an idle worker
    assert again == msg and status == "done" and service.status(job["id"], TENANT)["state"] == "done"
    np.testing.assert_allclose(outputs(locations, "a.npy")[:, 0], rows["a.npy"].sum(axis=1), rtol=1e-5)


def test_once_a_batch_has_run_an_item_waits_for_online_work_however_long_its_work_kept(tmp_path):
    clock, store, queue, settings, service, job, rows, locations = make_job(tmp_path, files={"a.npy": 2 * BATCH_ROWS})
    checks = iter([True] + [False] * 20)  # the first batch runs; then 200 s of online work before the second

    def wait(_s):
        clock.advance(10.0)

    status, _, _ = take(queue, clock, store, settings, locations, poll=False, may_run=lambda: next(checks, True),
                        wait=wait)
    assert status == "done" and queue.depth(LANE) == 0
    np.testing.assert_allclose(outputs(locations, "a.npy")[:, 0], rows["a.npy"].sum(axis=1), rtol=1e-5)


def test_an_item_that_runs_past_the_limit_fails_saying_so_and_the_job_goes_on(tmp_path):
    clock, store, queue, settings, service, job, rows, locations = make_job(
        tmp_path, limit_s=45.0, files={"a.npy": ROWS, "b.npy": BATCH_ROWS})
    first = take(queue, clock, store, settings, locations, poll=False)
    second = take(queue, clock, store, settings, locations, poll=False)
    statuses = {first[1]["name"]: first[0], second[1]["name"]: second[0]}
    assert statuses == {"a.npy": "failed", "b.npy": "done"}
    status = service.status(job["id"], TENANT)
    assert status["done"] == 1 and status["failed"] == 1 and status["left"] == 0
    [failure] = status["failures"]
    assert failure["name"] == "a.npy"
    # five batches (50 s) ran before the check that stops it: the error says how long, the limit and what to do
    assert failure["error"].startswith("the item ran 50 s, over the limit of 45 s (INFAAS_OFFLINE_ITEM_LIMIT_S) "
                                       "with 320 of its 768 rows done"), failure
    assert failure["error"].endswith("split its input into smaller files")
    assert not locations("out", TENANT).exists(output_name("a.npy"))  # no partial output
    np.testing.assert_allclose(outputs(locations, "b.npy")[:, 0], rows["b.npy"].sum(axis=1), rtol=1e-5)
