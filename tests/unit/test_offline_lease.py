"""An offline item that runs, or waits for online work, longer than the queue's visibility timeout
(``app.offline.Lease``), and one that runs past ``offline_item_limit_s``.

A job is submitted through ``JobService`` onto the SQLite queue and folder locations of a local
stack, all on a fake clock; ``run_item`` runs its item as a worker does. The model is a stand-in
whose every batch of 64 rows takes 10 s of the fake clock and, meanwhile, lets a second worker
try to take the same item from the queue.
"""

from __future__ import annotations

import io
import os

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
)
from infaas.app.store import MetadataStore
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


def make_job(tmp_path, limit_s: float = 3600.0, files: dict[str, int] | None = None):
    clock = FakeClock()
    db = SqliteDatabase(str(tmp_path / "db.sqlite3"), clock=clock)
    store, queue = MetadataStore(SqliteItemTable(db), clock=clock), SqliteJobQueue(db)
    settings = Settings(data_dir=str(tmp_path / "data"), offline_visibility_s=VISIBILITY_S, offline_item_limit_s=limit_s)
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


def take(queue, clock, store, settings, locations, *, lease: bool, poll: bool = True, **kw):
    """One worker's turn: receive the next item and run it (with or without its lease)."""
    receipt, msg = queue.receive(LANE, visibility_s=VISIBILITY_S)
    model = SlowModel(clock, queue, poll)
    keep = Lease(queue, LANE, receipt, VISIBILITY_S, clock=clock) if lease else (lambda: None)
    status = run_item(msg, store, settings, lambda _v: model, locations, clock=clock, keep_alive=keep, **kw)
    queue.ack(LANE, receipt)
    return status, msg, model


def outputs(locations, name):
    return np.load(io.BytesIO(locations("out", TENANT).read(output_name(name))))["total"]


def test_a_leased_item_that_runs_four_visibility_timeouts_is_never_taken_by_a_second_worker(tmp_path):
    clock, store, queue, settings, service, job, rows, locations = make_job(tmp_path)
    status, msg, model = take(queue, clock, store, settings, locations, lease=True)
    assert status == "done" and model.stolen == []
    np.testing.assert_allclose(outputs(locations, "a.npy")[:, 0], rows["a.npy"].sum(axis=1), rtol=1e-5)
    assert queue.depth(LANE) == 0 and queue.depth(f"{LANE}-dlq") == 0  # nothing left over, nothing dead-lettered
    assert service.status(job["id"], TENANT)["state"] == "done"


def test_without_the_lease_the_same_item_is_handed_out_again_while_it_runs(tmp_path):
    # what the lease prevents: after 30 s a second worker takes the item that is still running,
    # and the third delivery leaves it for the dead-letter lane
    clock, store, queue, settings, service, job, rows, locations = make_job(tmp_path)
    status, msg, model = take(queue, clock, store, settings, locations, lease=False)
    assert status == "done"
    assert len(model.stolen) >= 2 and all(body == msg for _, body in model.stolen)


def test_waiting_for_online_work_keeps_the_lease_and_does_not_count_towards_the_limit(tmp_path):
    clock, store, queue, settings, service, job, rows, locations = make_job(tmp_path, limit_s=50.0,
                                                                            files={"a.npy": 2 * BATCH_ROWS})
    busy = iter([False] * 40)  # online work queued at the first 40 checks: 40 waits of 10 s, 400 s

    def wait(_s):
        clock.advance(10.0)
        assert queue.receive(LANE, visibility_s=VISIBILITY_S) is None  # the lease holds while it waits

    status, _, model = take(queue, clock, store, settings, locations, lease=True,
                            may_run=lambda: next(busy, True), wait=wait)
    assert status == "done" and model.stolen == []  # 400 s waited, 20 s run: under the 50 s limit


def test_an_item_that_runs_past_the_limit_fails_saying_so_and_the_job_goes_on(tmp_path):
    clock, store, queue, settings, service, job, rows, locations = make_job(
        tmp_path, limit_s=45.0, files={"a.npy": ROWS, "b.npy": BATCH_ROWS})
    first = take(queue, clock, store, settings, locations, lease=True, poll=False)
    second = take(queue, clock, store, settings, locations, lease=True, poll=False)
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
