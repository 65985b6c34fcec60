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

import io
import json
import math
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Protocol

import numpy as np

from .domain import DEFAULT_TENANT, Objective, Query, TensorSpec, Variant
from .errors import Forbidden, InvalidInput, NoFeasibleVariant, NotFound
from .ports import JobQueue
from .selection import Catalogue, candidates, cost_per_query
from .settings import Settings
from .store import MetadataStore

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


class FolderLocation:
    """A folder under the offline root; names are file names in it (no sub-paths)."""

    def __init__(self, root: str, path: str) -> None:
        root = os.path.realpath(root)
        full = os.path.realpath(path if os.path.isabs(path) else os.path.join(root, path))
        if os.path.commonpath([root, full]) != root:
            raise InvalidInput(f"location {path!r} is outside the offline root {root!r}", field="location")
        self.root, self.path, self.uri = root, full, full

    def list(self) -> list[str]:
        if not os.path.isdir(self.path):
            raise InvalidInput(f"input location {self.uri!r} is not a folder", field="input")
        return sorted(n for n in os.listdir(self.path) if n.endswith(INPUT_SUFFIXES) and not n.endswith(OUTPUT_SUFFIX))

    def _file(self, name: str) -> str:
        if "/" in name or name.startswith(".") or not name:
            raise InvalidInput(f"bad file name {name!r}", field="input")
        return os.path.join(self.path, name)

    def read(self, name: str) -> bytes:
        with open(self._file(name), "rb") as f:
            return f.read()

    def exists(self, name: str) -> bool:
        return os.path.isfile(self._file(name))

    def write_atomic(self, name: str, data: bytes) -> None:
        os.makedirs(self.path, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._file(name))
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


class S3Location:
    """``s3://bucket/prefix``; one PutObject is atomic in S3."""

    def __init__(self, uri: str, client=None) -> None:
        rest = uri[len("s3://"):]
        self.bucket, _, prefix = rest.partition("/")
        if not self.bucket:
            raise InvalidInput(f"location {uri!r} names no bucket", field="location")
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.uri = uri
        if client is None:
            import boto3

            client = boto3.client("s3")
        self.client = client

    def list(self) -> list[str]:
        from botocore.exceptions import ClientError

        names, token = [], None
        try:
            while True:
                kw = {"Bucket": self.bucket, "Prefix": self.prefix, **({"ContinuationToken": token} if token else {})}
                page = self.client.list_objects_v2(**kw)
                for obj in page.get("Contents", []):
                    name = obj["Key"][len(self.prefix):]
                    if "/" not in name and name.endswith(INPUT_SUFFIXES) and not name.endswith(OUTPUT_SUFFIX):
                        names.append(name)
                if not page.get("IsTruncated"):
                    return sorted(names)
                token = page["NextContinuationToken"]
        except ClientError as exc:
            raise InvalidInput(f"cannot list {self.uri!r}: {exc.response['Error'].get('Code')}", field="input") from None

    def read(self, name: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)["Body"].read()

    def exists(self, name: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.prefix + name)
            return True
        except ClientError:
            return False

    def write_atomic(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.prefix + name, Body=data)


def open_location(uri: str, settings: Settings, s3_client=None) -> Location:
    if not isinstance(uri, str) or not uri:
        raise InvalidInput("a location is required (a folder under the offline root, or s3://bucket/prefix)", field="location")
    if uri.startswith("s3://"):
        return S3Location(uri, s3_client)
    return FolderLocation(settings.offline_root_dir, uri)


# -- reading inputs ------------------------------------------------------------------------
def read_rows(name: str, data: bytes) -> np.ndarray:
    """The rows of one input file: ``.npy`` (an array), ``.npz`` (its first array),
    ``.jsonl`` (one row per line: a list of numbers)."""
    try:
        if name.endswith(".npy"):
            return np.load(io.BytesIO(data), allow_pickle=False)
        if name.endswith(".npz"):
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                if not z.files:
                    raise ValueError("empty .npz")
                return z[z.files[0]]
        rows = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
        return np.asarray(rows, dtype=np.float32)
    except (ValueError, OSError, EOFError, UnicodeDecodeError, TypeError) as exc:
        raise InvalidInput(f"input file {name!r} is not readable as {name.rsplit('.', 1)[-1]}: {str(exc)[:200]}",
                           field="input") from None


def output_name(input_name: str) -> str:
    return input_name.rsplit(".", 1)[0] + OUTPUT_SUFFIX


# -- choosing the variant --------------------------------------------------------------------
def offline_variant(pool: Iterable[Variant], total_rows: int, objective: Objective, hardware: Mapping,
                    deadline_s: float | None) -> Variant:
    """The cheapest variant per row that meets the accuracy, the cost cap and,
    when given, finishes ``total_rows`` on one replica within ``deadline_s``."""
    best, best_cost = None, math.inf
    pool = list(pool)
    for v in pool:
        if objective.min_accuracy is not None and (v.accuracy or 0.0) < objective.min_accuracy:
            continue
        if v.hardware not in hardware or v.profile is None:
            continue
        cost = cost_per_query(v, v.max_batch, hardware[v.hardware].price_per_hour) / v.max_batch
        if objective.max_cost is not None and cost > objective.max_cost:
            continue
        if deadline_s is not None and total_rows / v.profile.throughput_rps(v.max_batch) > deadline_s:
            continue
        if cost < best_cost:
            best, best_cost = v, cost
    if best is None:
        raise NoFeasibleVariant(
            "no variant meets the job's accuracy, cost cap and deadline",
            field="objective",
            best_accuracy=max((v.accuracy or 0.0) for v in pool),
        )
    return best


# -- the service ----------------------------------------------------------------------------
@dataclass
class JobService:
    store: MetadataStore
    queue: JobQueue
    settings: Settings
    catalogue: Callable[[], Catalogue]
    s3_client: Any = None
    clock: Callable[[], float] = time.time

    def submit(self, doc: Mapping[str, Any], tenant: str = DEFAULT_TENANT) -> dict[str, Any]:
        if not isinstance(doc, Mapping):
            raise InvalidInput("a job is a JSON object", field="body")
        src = open_location(doc.get("input"), self.settings, self.s3_client)
        dst = open_location(doc.get("output"), self.settings, self.s3_client)
        named = {k: doc[k] for k in ("task", "architecture", "variant") if doc.get(k)}
        if len(named) != 1:
            raise InvalidInput("name exactly one of 'task', 'architecture' or 'variant'", field="target")
        obj_doc = doc.get("objective") or {}
        from .api.oip import parse_objective

        objective = parse_objective(obj_doc)
        deadline_s = doc.get("deadline_s")
        if deadline_s is not None and (not isinstance(deadline_s, (int, float)) or isinstance(deadline_s, bool) or deadline_s <= 0):
            raise InvalidInput("deadline_s must be a positive number of seconds", field="deadline_s")
        names = src.list()
        if not names:
            raise InvalidInput(f"no {', '.join(INPUT_SUFFIXES)} files in {src.uri!r}", field="input")
        if len(names) > self.settings.offline_max_files:
            raise InvalidInput(f"{len(names)} input files; the limit is {self.settings.offline_max_files}", field="input")
        pool = candidates(Query(rows=1, tenant=tenant, **named), self.catalogue())
        specs = self._specs(pool[0].architecture)
        shapes, total = set(), 0
        for name in names:
            rows = read_rows(name, src.read(name))
            if rows.ndim != len(specs[0].shape) or any(d > 0 and d != s for d, s in zip(specs[0].shape[1:], rows.shape[1:])):
                raise InvalidInput(f"{name!r} has rows of shape {list(rows.shape[1:])}; the model takes "
                                   f"{list(specs[0].shape[1:])}", field="input")
            if rows.dtype.kind in "fc" and not np.isfinite(rows).all():
                raise InvalidInput(f"{name!r} contains NaN or infinity", field="input")
            shapes.add((rows.shape[1:], rows.dtype.name))
            total += len(rows)
        if len(shapes) > 1:
            raise InvalidInput(f"input files mix shapes or dtypes: {sorted(map(str, shapes))}", field="input")
        variant = offline_variant(pool, total, objective, self.settings.hardware, deadline_s)
        job_id = uuid.uuid4().hex[:16]
        now = self.clock()
        job = {"id": job_id, "tenant": tenant, "input": src.uri, "output": dst.uri, "variant": variant.id,
               "objective": objective.to_dict(), "deadline_s": deadline_s, "items": len(names), "rows": total,
               "created_at": now, "cancelled": False, "dtype": specs[0].dtype}
        self.store.table.put({"pk": f"JOB#{job_id}", "sk": "J", "gsi1pk": f"JOBS#{tenant}", "gsi1sk": f"{now:017.6f}#{job_id}",
                              "body": job})
        for i, name in enumerate(names):
            self.store.table.put({"pk": f"JOB#{job_id}", "sk": f"I#{i:07d}", "body": {"name": name, "status": "queued"}})
            self.queue.send(LANE, {"job": job_id, "item": i, "name": name})
        return self.status(job_id, tenant)

    def _specs(self, architecture: str) -> tuple[TensorSpec, ...]:
        return self.store.get_architecture(architecture).inputs

    def _job(self, job_id: str, tenant: str) -> dict[str, Any]:
        item = self.store.table.get(f"JOB#{job_id}", "J")
        if item is None or item["body"]["tenant"] != tenant:
            raise NotFound(f"no job {job_id!r}", field="job")
        return item["body"]

    def status(self, job_id: str, tenant: str = DEFAULT_TENANT) -> dict[str, Any]:
        job = self._job(job_id, tenant)
        items = [i["body"] for i in self.store.table.query(f"JOB#{job_id}", "I#")]
        done = [i for i in items if i["status"] == "done"]
        failed = [i for i in items if i["status"] == "failed"]
        left = len(items) - len(done) - len(failed)
        eta = None
        if done and left:
            first = job["created_at"]
            last = max(i.get("at", first) for i in done)
            eta = round((last - first) / len(done) * left, 1)
        state = "cancelled" if job["cancelled"] else ("running" if left else ("failed" if failed and not done else "done"))
        return {**job, "state": state, "done": len(done), "failed": len(failed), "left": left, "eta_s": eta,
                "failures": [{"name": i["name"], "error": i.get("error", "")} for i in failed]}

    def cancel(self, job_id: str, tenant: str = DEFAULT_TENANT) -> dict[str, Any]:
        job = self._job(job_id, tenant)
        self.store.table.put({"pk": f"JOB#{job_id}", "sk": "J", "gsi1pk": f"JOBS#{tenant}",
                              "gsi1sk": f"{job['created_at']:017.6f}#{job_id}", "body": {**job, "cancelled": True}})
        return self.status(job_id, tenant)

    def jobs(self, tenant: str = DEFAULT_TENANT) -> list[dict[str, Any]]:
        return [i["body"] for i in self.store.table.query_index(f"JOBS#{tenant}")]


def run_item(msg: Mapping[str, Any], store: MetadataStore, settings: Settings, executor_for: Callable[[str], Any],
             may_run: Callable[[], bool] = lambda: True, s3_client=None, clock: Callable[[], float] = time.time,
             wait: Callable[[float], None] = time.sleep) -> str:
    """Run one work item; returns its final status. ``may_run`` is asked before
    every batch: while it says no (online work is queued), the item waits."""
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
        src = open_location(job["input"], settings, s3_client)
        dst = open_location(job["output"], settings, s3_client)
        rows = read_rows(msg["name"], src.read(msg["name"])).astype(job["dtype"], copy=False)
        executor = executor_for(job["variant"])
        name = executor.input_names[0]
        parts: dict[str, list[np.ndarray]] = {}
        for start in range(0, len(rows), BATCH_ROWS):
            while not may_run():
                wait(0.005)
            out = executor.run({name: np.ascontiguousarray(rows[start : start + BATCH_ROWS])})
            for k, v in out.items():
                parts.setdefault(k, []).append(v)
        buf = io.BytesIO()
        np.savez(buf, **{k: np.concatenate(v) for k, v in parts.items()})
        dst.write_atomic(output_name(msg["name"]), buf.getvalue())
    except (InvalidInput, Forbidden, NotFound) as exc:
        store.table.put({"pk": key[0], "sk": key[1], "body": {**record, "status": "failed", "error": exc.message, "at": clock()}})
        return "failed"
    store.table.put({"pk": key[0], "sk": key[1], "body": {**record, "status": "done", "at": clock()}})
    return "done"
