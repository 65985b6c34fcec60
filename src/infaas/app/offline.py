"""Offline (batch) jobs: submit, split into items, run on spare capacity,
write each output exactly once.

A job names where its inputs are (a folder under the offline root, or an
``s3://bucket/prefix``), where outputs go, and what it needs (task +
min accuracy, or an architecture; optionally a deadline and a cost cap).

* **Submit** (``JobService.submit``) checks everything it can at once: the
  location exists and holds ``.npy`` / ``.npz`` / ``.jsonl`` files, every file
  reads and all share one row shape and dtype matching the model's input, a
  variant meets the accuracy (and the deadline), and answers with the job id.
  Each input file becomes one work item on the ``offline`` lane.
* **Run** (``run_item``, called by a worker only while it has no online work
  queued): the item's file is run through the chosen variant in small batches
  and the outputs are written to ``<output>/<input name>.out.npz`` (one array
  per model output, rows in input order) by an atomic write under that
  deterministic name. An item that runs twice after a fault writes the same
  file again: never a missing, partial or duplicate output.
* **Status**: items done, failed (with their error) and left, and an estimate
  of the time to finish from the rate so far. **Cancel** marks the job; items
  not yet started are dropped when a worker takes them.

Job and item records live in the metadata store (pk ``JOB#<id>``); items
travel through the job queue (SQLite locally, SQS on AWS, each with a
dead-letter lane after repeated failures).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Protocol

import numpy as np

from infaas.app.store import MetadataStore
from infaas.core.domain import DEFAULT_TENANT, Query, TensorSpec
from infaas.core.errors import (
    ConditionFailed,
    Forbidden,
    InfaasError,
    InvalidInput,
    NotFound,
)
from infaas.core.ports import JobQueue
from infaas.core.selection import Catalogue, candidates, offline_variant
from infaas.core.settings import Settings

log = logging.getLogger("infaas.app.offline")

LANE = "offline"
INPUT_SUFFIXES = (".npy", ".npz", ".jsonl")
OUTPUT_SUFFIX = ".out.npz"
BATCH_ROWS = 64  # rows per executor call: small, so online work never waits long behind offline work


# -- where inputs and outputs live -----------------------------------------------------
class Location(Protocol):
    uri: str

    def list(self) -> list[str]: ...

    def read(self, name: str) -> bytes: ...

    def write_atomic(self, name: str, data: bytes) -> None: ...

    def exists(self, name: str) -> bool: ...


# A resolver from a job's ``input``/``output`` and its tenant to the ``Location``: ``infaas.wiring.open_location``
# (a folder in the tenant's offline area, or ``s3://bucket/prefix`` inside it).
Locations = Callable[[str, str], Location]


def input_files(names: Iterable[str]) -> list[str]:
    """The names in a location that are inputs (not outputs written by an earlier run)."""
    return sorted(n for n in names if n.endswith(INPUT_SUFFIXES) and not n.endswith(OUTPUT_SUFFIX))


# -- reading inputs ------------------------------------------------------------------------
ITEM_MAX_BYTES = 256 << 20  # one input file's arrays, unpacked


def _unpacked_size(data: bytes) -> int:
    """What an .npz (a zip) unpacks to, from its directory; 0 when it is not a zip (np.load says so)."""
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return sum(i.file_size for i in z.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return 0
def read_rows(name: str, data: bytes) -> np.ndarray:
    """The rows of one input file: ``.npy`` (an array), ``.npz`` (its first array),
    ``.jsonl`` (one row per line: a list of numbers)."""
    try:
        if name.endswith(".npy"):
            return np.load(io.BytesIO(data), allow_pickle=False)
        if name.endswith(".npz"):
            unpacked = _unpacked_size(data)
            if unpacked > ITEM_MAX_BYTES:  # read from the zip's directory: nothing is unpacked to know it
                raise InvalidInput(f"input file {name!r} unpacks to {unpacked:,} bytes; the limit per file is "
                                   f"{ITEM_MAX_BYTES:,}", field="input")
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                if not z.files:
                    raise ValueError("empty .npz")
                return z[z.files[0]]
        rows = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
        return np.asarray(rows, dtype=np.float32)
    except (ValueError, OSError, EOFError, UnicodeDecodeError, TypeError, RecursionError) as exc:  # (nested too deep)
        raise InvalidInput(f"input file {name!r} is not readable as {name.rsplit('.', 1)[-1]}: {str(exc)[:200]}",
                           field="input") from None


def numeric(name: str, rows: np.ndarray) -> np.ndarray:
    """``rows`` if they are numbers (booleans, integers, floats), else 400 naming the file."""
    if rows.dtype.kind not in "biuf":
        raise InvalidInput(f"input file {name!r} holds {rows.dtype} values; the model takes numbers", field="input")
    return rows


def output_name(input_name: str) -> str:
    return input_name.rsplit(".", 1)[0] + OUTPUT_SUFFIX


# -- the service ----------------------------------------------------------------------------
QUEUED, EXPANDING, RUNNING, FAILED = "queued", "expanding", "running", "failed"  # a job record's phase
_UPDATE_TRIES = 20  # conditional read-modify-write rounds on a job record before giving up (409)


def request_digest(src: str, dst: str, target: Mapping[str, Any], objective: Mapping[str, Any],
                   deadline_s: float | None) -> str:
    """What a submission asked for, normalised (resolved locations, parsed objective): an idempotency key
    used again with a different request is refused rather than answered with the first job."""
    doc = {"input": src, "output": dst, "target": dict(target), "objective": dict(objective),
           "deadline_s": None if deadline_s is None else float(deadline_s)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


@dataclass
class JobService:
    store: MetadataStore
    queue: JobQueue
    settings: Settings
    catalogue: Callable[[], Catalogue]
    locations: Locations
    clock: Callable[[], float] = time.time

    def submit(self, doc: Mapping[str, Any], tenant: str = DEFAULT_TENANT,
               idempotency_key: str | None = None) -> dict[str, Any]:
        """Record the job and answer at once; its items are made by ``expand`` (module docstring).

        With an idempotency key (the ``Idempotency-Key`` header or the ``idempotency_key`` field), the
        job's id is derived from the tenant and the key, and the record is written only if absent: a
        retried submission of the same request answers the job the first one made, whatever state it is
        in (and, while that job is still ``queued``, sends its expand message again: the first send may
        have failed); the same key with a different request is refused (409, ``idempotency_key``)."""
        if not isinstance(doc, Mapping):
            raise InvalidInput("a job is a JSON object", field="body")
        src = self._location(doc, "input", tenant)
        dst = self._location(doc, "output", tenant)
        named = {k: doc[k] for k in ("task", "architecture", "variant") if doc.get(k)}
        if len(named) != 1:
            raise InvalidInput("name exactly one of 'task', 'architecture' or 'variant'", field="target")
        obj_doc = doc.get("objective") or {}
        from infaas.core.oip import parse_objective

        objective = parse_objective(obj_doc)
        deadline_s = doc.get("deadline_s")
        if deadline_s is not None and (not isinstance(deadline_s, (int, float)) or isinstance(deadline_s, bool)
                                       or not math.isfinite(deadline_s) or deadline_s <= 0):
            raise InvalidInput("deadline_s must be a positive, finite number of seconds", field="deadline_s")
        key = idempotency_key if idempotency_key is not None else doc.get("idempotency_key")
        if key is not None and (not isinstance(key, str) or not 1 <= len(key) <= 128 or not key.isprintable()):
            raise InvalidInput("an idempotency key is 1 to 128 printable characters", field="idempotency_key")
        job_id = hashlib.sha256(f"{tenant}\0{key}".encode()).hexdigest()[:16] if key else uuid.uuid4().hex[:16]
        now = self.clock()
        digest = request_digest(src.uri, dst.uri, named, objective.to_dict(), deadline_s)
        job = {"id": job_id, "tenant": tenant, "input": src.uri, "output": dst.uri, "variant": None,
               "target": named, "objective": objective.to_dict(), "deadline_s": deadline_s, "items": 0, "rows": 0,
               "created_at": now, "cancelled": False, "dtype": None, "phase": QUEUED, "request_digest": digest}
        if self.defer:
            candidates(Query(rows=1, tenant=tenant, **named), self.catalogue())  # the model exists, the tenant may use it
            if not self._create(job, tenant):
                return self._again(job_id, tenant, key, digest)
            self.queue.send(LANE, {"expand": job_id})
            return self.status(job_id, tenant)
        # inline (local): everything is checked before the job exists (the inputs, then the model: ``_plan``),
        # so a bad job is refused and leaves nothing
        if key and self.store.table.get(f"JOB#{job_id}", "J") is not None:
            return self._again(job_id, tenant, key, digest)
        plan = self._plan(job)
        if not self._create({**job, **plan, "phase": EXPANDING}, tenant):
            return self._again(job_id, tenant, key, digest)
        self._fan_out(job_id, src)
        return self.status(job_id, tenant)

    @property
    def defer(self) -> bool:
        """On AWS the items are made off the API call (its 29 s), by the worker taking the expand message."""
        return self.settings.backend == "aws"

    def _location(self, doc: Mapping[str, Any], field: str, tenant: str) -> Location:
        try:
            return self.locations(doc.get(field), tenant)
        except (InvalidInput, Forbidden) as exc:
            exc.message = f"{field}: {exc.message}"  # (its field stays "location", as clients read it)
            exc.args = (exc.message,)
            raise

    def _create(self, job: dict[str, Any], tenant: str) -> bool:
        """Write the job's record if absent; False when a submission with the same key made it already."""
        try:
            self.store.table.put({"pk": f"JOB#{job['id']}", "sk": "J", "gsi1pk": f"JOBS#{tenant}",
                                  "gsi1sk": f"{job['created_at']:017.6f}#{job['id']}", "body": job}, expect_version=0)
            return True
        except ConditionFailed:
            return False

    def _again(self, job_id: str, tenant: str, key: str | None, digest: str) -> dict[str, Any]:
        """A submission whose key made a job already: the same request answers that job (sending its expand
        message again while it is queued: expanding is idempotent); a different one is refused."""
        job = self._job(job_id, tenant)
        if job.get("request_digest") not in (None, digest):
            raise ConditionFailed(f"idempotency key {key!r} was first used for a different job ({job_id}: input "
                                  f"{job['input']!r}, output {job['output']!r}, {job['target']}); use a new key for "
                                  "a new job", field="idempotency_key", job=job_id)
        if self.defer and job.get("phase") == QUEUED and not job.get("cancelled"):
            self.queue.send(LANE, {"expand": job_id})
        return self.status(job_id, tenant)

    def _record(self, job: Mapping[str, Any]) -> dict[str, Any]:
        return {"pk": f"JOB#{job['id']}", "sk": "J", "gsi1pk": f"JOBS#{job['tenant']}",
                "gsi1sk": f"{job['created_at']:017.6f}#{job['id']}", "body": dict(job)}

    def _update(self, job_id: str, change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> dict[str, Any] | None:
        """Change the job's record from its current state, by a conditional write on its version (a
        concurrent writer, e.g. a cancel during expansion, makes this read again and re-apply ``change``:
        nothing is written back from a stale copy). ``change`` returns the new record, or None to leave it
        as it is. Returns the record as it now is (None when there is no job)."""
        for _ in range(_UPDATE_TRIES):
            item = self.store.table.get(f"JOB#{job_id}", "J")
            if item is None:
                return None
            new = change(item["body"])
            if new is None:
                return item["body"]
            try:
                self.store.table.put(self._record(new), expect_version=int(item["version"]))
                return new
            except ConditionFailed:
                continue
        raise ConditionFailed(f"job {job_id!r} kept changing under this write; try again", field="job")

    def _expired(self, job: Mapping[str, Any], now: float) -> bool:
        """Still not made into items ``offline_expand_timeout_s`` after its submission."""
        return (job.get("phase") in (QUEUED, EXPANDING) and not job.get("cancelled")
                and now - float(job["created_at"]) > self.settings.offline_expand_timeout_s)

    def _timed_out(self, job: dict[str, Any], now: float) -> dict[str, Any] | None:
        """The job ended ``failed`` when it has ``_expired``, else None (an ``_update`` change)."""
        if not self._expired(job, now):
            return None
        return {**job, "phase": FAILED, "error": (
            f"the job was not made into work items within {self.settings.offline_expand_timeout_s:g} s of its "
            "submission (INFAAS_OFFLINE_EXPAND_TIMEOUT_S): its expand message was lost or its inputs took too long "
            "to read; submit it again (a new idempotency key), or split its inputs into smaller jobs")}

    def _plan(self, job: Mapping[str, Any]) -> dict[str, Any]:
        """Read every input (shapes, dtypes, rows) and choose the variant: what the items need."""
        src = self.locations(job["input"], job["tenant"])
        names = input_files(src.list())
        if not names:
            raise InvalidInput(f"no {', '.join(INPUT_SUFFIXES)} files in {src.uri!r}", field="input")
        if len(names) > self.settings.offline_max_files:
            raise InvalidInput(f"{len(names)} input files; the limit is {self.settings.offline_max_files}", field="input")
        pool = candidates(Query(rows=1, tenant=job["tenant"], **job["target"]), self.catalogue())
        specs = self._specs(pool[0].architecture)
        if len(specs) != 1:
            raise InvalidInput(f"an offline job runs a model with one input; {pool[0].architecture!r} takes "
                               f"{[s.name for s in specs]}", field="target")
        writes: dict[str, str] = {}
        for name in names:  # one output file per input file: two inputs must not write the same one
            other = writes.setdefault(output_name(name), name)
            if other != name:
                raise InvalidInput(f"input files {other!r} and {name!r} would both write {output_name(name)!r}; "
                                   "rename one of them", field="input")
        shapes, total = set(), 0
        for name in names:
            rows = numeric(name, read_rows(name, src.read(name)))
            if rows.ndim != len(specs[0].shape) or any(d > 0 and d != s for d, s in zip(specs[0].shape[1:], rows.shape[1:])):
                raise InvalidInput(f"{name!r} has rows of shape {list(rows.shape[1:])}; the model takes "
                                   f"{list(specs[0].shape[1:])}", field="input")
            if rows.dtype.kind in "fc" and not np.isfinite(rows).all():
                raise InvalidInput(f"{name!r} contains NaN or infinity", field="input")
            shapes.add((rows.shape[1:], rows.dtype.name))
            total += len(rows)
        if len(shapes) > 1:
            raise InvalidInput(f"input files mix shapes or dtypes: {sorted(map(str, shapes))}", field="input")
        from infaas.core.oip import parse_objective

        variant = offline_variant(pool, total, parse_objective(job["objective"]), self.settings.hardware,
                                  job["deadline_s"])
        return {"variant": variant.id, "items": len(names), "rows": total, "dtype": specs[0].dtype}

    def expand(self, job_id: str) -> str:
        """Make the items of a recorded job (the expand message's work); returns the job's phase.

        The worker takes the job by a conditional write (``queued`` -> ``expanding``): of expand messages
        delivered again (SQS is at least once, or the expansion outlived the lane's visibility), only one
        reads the inputs; the others find it taken and do nothing. One that finds the plan made but the
        job not yet ``running`` (a crash cut the fan-out short) finishes it: every write there is
        idempotent. Any failure ends the job ``failed`` with its reason, never half-made and ``running``;
        and a job still not made into items ``offline_expand_timeout_s`` after its submission (its expand
        message dead-lettered, its taker killed) ends ``failed`` when its status is read or an expand
        message for it arrives. A cancel meanwhile is kept: every write re-reads the record."""
        taken: list[bool] = []

        def take(job: dict[str, Any]) -> dict[str, Any] | None:
            taken.clear()
            if (ended := self._timed_out(job, self.clock())) is not None:
                return ended
            if job.get("cancelled") or job.get("phase") != QUEUED:
                return None
            taken.append(True)
            return {**job, "phase": EXPANDING, "expand_started_at": self.clock()}

        job = self._update(job_id, take)
        if (stop := _stopped(job)) is not None:
            return stop
        if not taken and job.get("variant") is None:
            return EXPANDING  # another worker is reading its inputs (bounded by offline_expand_timeout_s)
        try:
            if taken:
                plan = self._plan(job)

                def planned(cur: dict[str, Any]) -> dict[str, Any] | None:
                    if (ended := self._timed_out(cur, self.clock())) is not None:
                        return ended
                    if cur.get("cancelled") or cur.get("phase") != EXPANDING:
                        return None
                    return {**cur, **plan}

                job = self._update(job_id, planned)
                if (stop := _stopped(job)) is not None:
                    return stop
            self._fan_out(job_id, self.locations(job["input"], job["tenant"]))
        except Exception as exc:  # noqa: BLE001 -- whatever stopped it, the job must not stay queued
            message = exc.message if isinstance(exc, InfaasError) else f"{type(exc).__name__}: {str(exc)[:300]}"
            self._update(job_id, lambda cur: {**cur, "phase": FAILED, "error": message}
                         if cur.get("phase") in (QUEUED, EXPANDING) else None)
            return FAILED
        return RUNNING

    def _fan_out(self, job_id: str, src: Location) -> None:
        """The job's work items (one per input file, in name order: the same items every time it runs):
        records 25 to a batch write, messages 10 to a batch send; then the job is running."""
        job = self.store.table.get(f"JOB#{job_id}", "J")["body"]
        names = input_files(src.list())
        if len(names) != job["items"]:
            raise InvalidInput(f"the input files changed while the job was being made ({job['items']} were read, "
                               f"{len(names)} are there now)", field="input")
        records = [{"pk": f"JOB#{job_id}", "sk": f"I#{i:07d}", "body": {"name": n, "status": "queued"}}
                   for i, n in enumerate(names)]
        put_many = getattr(self.store.table, "put_many", None)
        if put_many is not None:
            put_many(records)
        else:
            for r in records:
                self.store.table.put(r)
        messages = [{"job": job_id, "item": i, "name": n} for i, n in enumerate(names)]
        send_many = getattr(self.queue, "send_many", None)
        if send_many is not None:
            send_many(LANE, messages)
        else:
            for m in messages:
                self.queue.send(LANE, m)
        self._update(job_id, lambda cur: {**cur, "phase": RUNNING} if cur.get("phase") == EXPANDING else None)

    def _specs(self, architecture: str) -> tuple[TensorSpec, ...]:
        return self.store.get_architecture(architecture).inputs

    def _job(self, job_id: str, tenant: str) -> dict[str, Any]:
        item = self.store.table.get(f"JOB#{job_id}", "J")
        if item is None or item["body"]["tenant"] != tenant:
            raise NotFound(f"no job {job_id!r}", field="job")
        return item["body"]

    def status(self, job_id: str, tenant: str = DEFAULT_TENANT) -> dict[str, Any]:
        job = self._job(job_id, tenant)
        if self._expired(job, self.clock()):  # its expand message was lost: it ends failed, with the reason
            job = self._update(job_id, lambda cur: self._timed_out(cur, self.clock())) or job
        items = [i["body"] for i in self.store.table.query(f"JOB#{job_id}", "I#")]
        done = [i for i in items if i["status"] == "done"]
        failed = [i for i in items if i["status"] == "failed"]
        dropped = sum(1 for i in items if i["status"] == "cancelled")  # taken by a worker after the cancel
        left = len(items) - len(done) - len(failed) - dropped
        eta = None
        if done and left:
            first = job["created_at"]
            last = max(i.get("at", first) for i in done)
            eta = round((last - first) / len(done) * left, 1)
        phase = job.get("phase", RUNNING)  # (records from before phases were running)
        if job["cancelled"]:
            state = "cancelled"
        elif phase == FAILED:
            state = "failed"
        elif phase in (QUEUED, EXPANDING):
            state = "queued"
        else:
            state = "running" if left else ("failed" if failed and not done else "done")
        return {**job, "state": state, "done": len(done), "failed": len(failed), "left": left, "cancelled_items": dropped,
                "eta_s": eta,
                "failures": [{"name": i["name"], "error": i.get("error", "")} for i in failed]}

    def cancel(self, job_id: str, tenant: str = DEFAULT_TENANT) -> dict[str, Any]:
        self._job(job_id, tenant)
        self._update(job_id, lambda cur: None if cur.get("cancelled") else {**cur, "cancelled": True})
        return self.status(job_id, tenant)

    def jobs(self, tenant: str = DEFAULT_TENANT) -> list[dict[str, Any]]:
        return [i["body"] for i in self.store.table.query_index(f"JOBS#{tenant}")]


def _stopped(job: Mapping[str, Any] | None) -> str | None:
    """Why an expansion stops after a write of its job record (gone, cancelled, past expanding), or None."""
    if job is None:
        return "dropped"
    if job.get("cancelled"):
        return "cancelled"
    if job.get("phase") != EXPANDING:
        return job.get("phase", RUNNING)
    return None


class Lease:
    """Holds a received message while its worker is at it: from the receive on, a thread extends
    the message's visibility by ``visibility_s`` every third of it (``beat``) until the ``with``
    block ends, whatever the item is doing (loading its model, reading, running, writing). So an
    item that takes longer than the visibility timeout is neither handed to a second worker nor
    dead-lettered after ``max_receives`` deliveries while it runs; a worker that dies stops
    extending, and its item reappears within ``visibility_s`` as before. The extensions stop
    after ``max_hold_s`` from the receive (the item limit and a visibility timeout: an item stuck
    in a call that never returns is redelivered, then dead-lettered, as before), or once the
    queue says the receipt no longer holds the message (redelivered, or past SQS's 12 hours in
    flight); a queue briefly unavailable is tried again at the next beat."""

    def __init__(self, queue: JobQueue, lane: str, receipt: str, visibility_s: float, max_hold_s: float = math.inf,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.queue, self.lane, self.receipt, self.visibility_s = queue, lane, receipt, visibility_s
        self.max_hold_s, self.clock, self.since = max_hold_s, clock, clock()
        self.held = True
        self.beats = 0  # extensions made
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="offline-lease", daemon=True)

    def beat(self) -> None:
        """One extension of the message's visibility, from now (none once held ``max_hold_s``)."""
        if self.clock() - self.since > self.max_hold_s:
            self.held = False
            log.warning("offline message %s in lane %s held %.0f s, longer than an item may take: it is left to be "
                        "redelivered", self.receipt, self.lane, self.clock() - self.since)
            return
        try:
            self.held = self.queue.extend(self.lane, self.receipt, self.visibility_s)
        except InfaasError as exc:
            log.warning("could not extend offline message %s in lane %s: %s", self.receipt, self.lane, exc)
            return
        self.beats += 1
        if not self.held:  # redelivered or past the limit: the other run writes the same output, so this one goes on
            log.warning("offline message %s in lane %s is no longer held by this worker", self.receipt, self.lane)

    def _run(self) -> None:
        while self.held and not self._stop.wait(self.visibility_s / 3):
            self.beat()

    def __enter__(self) -> "Lease":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


class ItemTooLong(Exception):
    """An item ran past ``Settings.offline_item_limit_s``."""


class ItemReleased(Exception):
    """An item waited behind online work, before its first batch, longer than the visibility
    timeout: it goes back to the lane."""


def run_received(receipt: str, msg: Mapping[str, Any], store: MetadataStore, settings: Settings,
                 executor_for: Callable[[str], Any], locations: Locations, queue: JobQueue, *,
                 may_run: Callable[[], bool] = lambda: True, clock: Callable[[], float] = time.time,
                 wait: Callable[[float], None] = time.sleep) -> str:
    """What a worker does with a message it received from the offline lane: runs it (``run_item``)
    under a ``Lease``, then acknowledges it; returns the item's status. An item that waited behind
    online work before its first batch longer than the visibility timeout is ``released``: a fresh
    copy goes back to the lane for an idle worker (a copy, so that the release is not one of its
    deliveries); once a batch has run, it waits instead, its work kept. Whatever
    ``run_item`` raises leaves the message unacknowledged: it is retried after the visibility
    timeout, then dead-lettered."""
    hold_s = settings.offline_item_limit_s + settings.offline_visibility_s
    began = time.monotonic()
    with Lease(queue, LANE, receipt, settings.offline_visibility_s, max_hold_s=hold_s) as lease:
        try:
            status = run_item(msg, store, settings, executor_for, locations, may_run=may_run, clock=clock,
                              wait=wait, queue=queue)
        except ItemReleased:
            queue.send(LANE, dict(msg))
            status = "released"
    queue.ack(LANE, receipt)
    what = f"expansion of job {msg['expand']}" if "expand" in msg else f"item {msg.get('job')}/{msg.get('item')}"
    log.info("offline %s: %s after %.1f s, its message extended %d times", what, status, time.monotonic() - began,
             lease.beats)
    return status


def run_item(msg: Mapping[str, Any], store: MetadataStore, settings: Settings, executor_for: Callable[[str], Any],
             locations: Locations, may_run: Callable[[], bool] = lambda: True, clock: Callable[[], float] = time.time,
             wait: Callable[[float], None] = time.sleep, queue: JobQueue | None = None) -> str:
    """Run one work item; returns its final status. ``may_run`` is asked before
    every batch: while it says no (online work is queued), the item waits; before its first batch,
    after ``settings.offline_visibility_s`` of waiting it raises ``ItemReleased``. An item
    that has run (waits not counted) longer than ``settings.offline_item_limit_s`` when its
    next batch is due fails with that reason, writing nothing.

    An expand message (``{"expand": job id}``, sent by ``JobService.submit`` on AWS) makes the job's
    items instead (``JobService.expand``), sending them to ``queue`` (the worker passes its own)."""
    if "expand" in msg:
        if queue is None:
            raise ValueError("an expand message needs the job queue to send the job's items to")
        service = JobService(store, queue, settings,
                             catalogue=lambda: Catalogue.build(store.all_variants(), settings.hardware),
                             locations=locations, clock=clock)
        return service.expand(str(msg["expand"]))
    job_item = store.table.get(f"JOB#{msg['job']}", "J")
    if job_item is None:
        return "dropped"
    job = job_item["body"]
    key = (f"JOB#{msg['job']}", f"I#{msg['item']:07d}")
    record = store.table.get(*key)["body"]
    if job["cancelled"]:
        store.table.put({"pk": key[0], "sk": key[1], "body": {**record, "status": "cancelled"}})
        return "cancelled"
    if record["status"] == "done":
        return "done"  # delivered again after it finished: the output is already there
    try:
        src = locations(job["input"], job["tenant"])  # checked again: the area is the job's tenant's
        dst = locations(job["output"], job["tenant"])
        # (numbers checked again: the file may have changed since the job was planned)
        rows = numeric(msg["name"], read_rows(msg["name"], src.read(msg["name"]))).astype(job["dtype"], copy=False)
        executor = executor_for(job["variant"])
        name = executor.input_names[0]
        parts: dict[str, list[np.ndarray]] = {}
        limit_s, ran_s = settings.offline_item_limit_s, 0.0
        for start in range(0, len(rows), BATCH_ROWS):
            if not may_run():
                waiting_since = clock()
                while not may_run():
                    if start == 0 and clock() - waiting_since > settings.offline_visibility_s:
                        raise ItemReleased  # nothing done yet: an idle worker may take it
                    wait(0.005)
            if ran_s > limit_s:
                raise ItemTooLong(f"the item ran {ran_s:.0f} s, over the limit of {limit_s:g} s "
                                  f"(INFAAS_OFFLINE_ITEM_LIMIT_S) with {start} of its {len(rows)} rows done: "
                                  "split its input into smaller files")
            began = clock()
            out = executor.run({name: np.ascontiguousarray(rows[start : start + BATCH_ROWS])})
            ran_s += clock() - began
            for k, v in out.items():
                parts.setdefault(k, []).append(v)
        buf = io.BytesIO()
        np.savez(buf, **{k: np.concatenate(v) for k, v in parts.items()})
        dst.write_atomic(output_name(msg["name"]), buf.getvalue())
    except (InvalidInput, Forbidden, NotFound) as exc:
        store.table.put({"pk": key[0], "sk": key[1], "body": {**record, "status": "failed", "error": exc.message, "at": clock()}})
        return "failed"
    except ItemTooLong as exc:
        store.table.put({"pk": key[0], "sk": key[1], "body": {**record, "status": "failed", "error": str(exc), "at": clock()}})
        return "failed"
    except (InfaasError, ItemReleased):
        raise  # the store, the queue or a location busy: retried after the visibility timeout (released: run_received)
    except Exception as exc:  # noqa: BLE001 - what no retry mends (the item's data, a model's answer): the
        # item fails with the error and the job goes on; retried, it would be dead-lettered and the job
        # would wait for it for ever
        log.exception("offline item %s/%s failed", msg["job"], msg["item"])
        error = f"{type(exc).__name__}: {str(exc)[:300]}"
        store.table.put({"pk": key[0], "sk": key[1], "body": {**record, "status": "failed", "error": error, "at": clock()}})
        return "failed"
    store.table.put({"pk": key[0], "sk": key[1], "body": {**record, "status": "done", "at": clock()}})
    return "done"
