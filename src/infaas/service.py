"""The service: registration and catalogue (control plane), query answering
(data plane). Transports (the FastAPI app, the Lambda handlers, the CLI) only
decode, call one method here, and encode.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import io
import math
import time
import zipfile
import zlib
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

import numpy as np

from . import tensors
from .batching import efficient_batch
from .domain import (
    DEFAULT_TENANT,
    READY,
    Architecture,
    Decision,
    Query,
    TensorSpec,
    Variant,
    check_name,
)
from .domain import Task as TaskName
from .errors import Conflict, Forbidden, InvalidInput, NotFound, PayloadTooLarge, WorkerFault
from .ports import JobQueue, ModelStore
from .selection import Catalogue, Cluster, candidates, select
from .settings import Settings
from .store import MetadataStore
from .variants.generate import PLANS, generation_plan
from .variants.jobs import build_lane
from .variants.validate import ModelLimits, check_model

log = logging.getLogger("infaas.service")


# ---------------------------------------------------------------- control plane
class ControlPlane:
    def __init__(self, store: MetadataStore, models: ModelStore, queue: JobQueue, settings: Settings,
                 clock: Callable[[], float] = time.time) -> None:
        self.store, self.models, self.queue, self.settings, self.clock = store, models, queue, settings, clock

    def register(
        self,
        *,
        name: str,
        task: str,
        accuracy: float,
        data: bytes,
        tenant: str = DEFAULT_TENANT,
        visibility: str = "private",
        validation: bytes | None = None,
    ) -> tuple[Architecture, bool]:
        """Register a model; returns (architecture, created). Building and
        profiling its variants happens later, on workers, through the job queue."""
        check_name(name, "name")
        task_id = TaskName.parse(task).id
        if not isinstance(accuracy, (int, float)) or not math.isfinite(accuracy) or not 0.0 <= accuracy <= 1.0:
            raise InvalidInput(f"accuracy must be a number between 0 and 1, got {accuracy!r}", field="accuracy")
        if visibility not in ("private", "shared"):
            raise InvalidInput(f"visibility must be 'private' or 'shared', got {visibility!r}", field="visibility")
        checked = check_model(data, ModelLimits(max_bytes=self.settings.max_upload_bytes))

        existing = self.store.find_architecture(name)
        if existing is not None:
            return self._same_or_conflict(existing, checked.sha256, tenant), False
        self._check_task_inputs(task_id, checked.inputs)
        val_key = None
        if validation is not None:
            self._check_validation(validation, checked.inputs)
            val_key = f"architectures/{name}/{checked.sha256[:16]}.validation.npz"
            self.models.put(val_key, validation)
        model_key = f"architectures/{name}/{checked.sha256[:16]}.onnx"
        self.models.put(model_key, data)
        arch = Architecture(
            name=name,
            tenant=tenant,
            task=task_id,
            accuracy=float(accuracy),
            sha256=checked.sha256,
            model_key=model_key,
            inputs=checked.inputs,
            outputs=checked.outputs,
            visibility=visibility,
            validation_key=val_key,
            created_at=self.clock(),
            size_bytes=checked.size_bytes,
        )
        stored = self.store.create_architecture(arch)
        if stored is not arch:  # lost a race with another registration of the same name
            return self._same_or_conflict(stored, checked.sha256, tenant), False
        for hardware in self.build_hardware():
            for v in generation_plan(arch, hardware):
                self.store.put_variant(v)
            self.queue.send(build_lane(hardware), {"architecture": name, "hardware": hardware})
        return arch, True

    def build_hardware(self) -> list[str]:
        """Hardware types this deployment builds for (``INFAAS_BUILD_HARDWARE``) that have a plan."""
        return [h for h in self.settings.build_hardware_types if h in PLANS]

    @staticmethod
    def _same_or_conflict(existing: Architecture, sha256: str, tenant: str) -> Architecture:
        if existing.sha256 == sha256 and existing.tenant == tenant:
            return existing
        raise Conflict(
            f"an architecture named {existing.name!r} already exists with different content; "
            "register the new file under a new name",
            field="name",
        )

    def _check_task_inputs(self, task: str, inputs: tuple[TensorSpec, ...]) -> None:
        """Architectures of one task answer the same queries, so they take the same inputs."""
        for other in self.store.architectures(task):
            if _shape_key(other.inputs) != _shape_key(inputs):
                raise InvalidInput(
                    f"task {task!r} takes inputs {[t.to_dict() for t in other.inputs]}, "
                    f"this model takes {[t.to_dict() for t in inputs]}",
                    field="file",
                )
            return

    @staticmethod
    def _check_validation(blob: bytes, inputs: tuple[TensorSpec, ...]) -> None:
        try:
            loaded = np.load(io.BytesIO(blob), allow_pickle=False)
            if isinstance(loaded, np.ndarray):  # a .npy file: one array, not an archive
                raise ValueError("got a single .npy array, not an .npz archive")
            with loaded as z:
                x, y = z["inputs"], z["labels"]
            if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)):  # npz members that are not .npy
                raise ValueError("'inputs' and 'labels' must be .npy arrays inside the archive")
        except (ValueError, KeyError, OSError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
            raise InvalidInput(
                f"validation must be an .npz with arrays 'inputs' and 'labels': {exc}", field="validation"
            ) from None
        spec = inputs[0]
        if x.ndim != len(spec.shape) or any(d > 0 and d != s for d, s in zip(spec.shape[1:], x.shape[1:])):
            raise InvalidInput(f"validation inputs have shape {list(x.shape)}, the model takes {list(spec.shape)}", field="validation")
        if x.ndim == 0 or y.ndim != 1:
            raise InvalidInput(f"validation labels must be a 1-D array, one per input row; got shape {list(y.shape)}",
                               field="validation")
        if len(x) != len(y) or len(x) == 0:
            raise InvalidInput(f"validation has {len(x)} inputs and {len(y)} labels; need the same, non-zero", field="validation")
        if x.dtype.kind in "fc" and not np.isfinite(x).all():
            raise InvalidInput("validation inputs contain NaN or infinity", field="validation")

    def model_status(self, name: str, tenant: str = DEFAULT_TENANT) -> dict[str, Any]:
        from .variants.hardware import waiting_reason

        arch = self.visible_architecture(name, tenant)
        variants = self.store.variants_of(name)
        described = [describe_variant(v) for v in variants]
        if any(v.status == "pending" for v in variants):
            workers = self.store.workers()
            for d, v in zip(described, variants):
                reason = waiting_reason(v, workers)
                if reason:
                    d["message"] = f"waiting: {reason}"
        return {**describe_architecture(arch), "status": overall_status(variants), "variants": described}

    def visible_architecture(self, name: str, tenant: str) -> Architecture:
        arch = self.store.find_architecture(name)
        if arch is None or not (arch.tenant == tenant or arch.visibility == "shared"):
            raise NotFound(f"no architecture named {name!r}", field="name")
        return arch

    def models_list(self, tenant: str = DEFAULT_TENANT, task: str | None = None) -> list[dict[str, Any]]:
        out = []
        for arch in self.store.architectures(task):
            if arch.tenant == tenant or arch.visibility == "shared":
                out.append({**describe_architecture(arch), "status": overall_status(self.store.variants_of(arch.name))})
        return out

    def tasks(self, tenant: str = DEFAULT_TENANT) -> list[dict[str, Any]]:
        by_task: dict[str, list[Architecture]] = {}
        for arch in self.store.architectures():
            if arch.tenant == tenant or arch.visibility == "shared":
                by_task.setdefault(arch.task, []).append(arch)
        return [
            {"task": t, "architectures": [a.name for a in archs], "inputs": [s.to_dict() for s in archs[0].inputs]}
            for t, archs in sorted(by_task.items())
        ]

    def delete(self, name: str, tenant: str = DEFAULT_TENANT) -> None:
        arch = self.visible_architecture(name, tenant)
        if arch.tenant != tenant:
            raise Forbidden(f"architecture {name!r} is shared by another tenant; only its owner may delete it", field="name")
        for v in self.store.delete_architecture(name):
            if v.model_key:
                self.models.delete(v.model_key)
        self.models.delete(arch.model_key)


def _shape_key(specs: tuple[TensorSpec, ...]) -> list[tuple]:
    return [(s.dtype, tuple(d if d > 0 else -1 for d in s.shape[1:])) for s in specs]


def overall_status(variants: list[Variant]) -> str:
    states = {v.status for v in variants}
    if READY in states and states <= {READY, "skipped", "failed"}:
        return "ready"
    if states and states <= {"skipped", "failed"}:
        return "failed"
    return "building" if states else "registered"


def describe_architecture(a: Architecture) -> dict[str, Any]:
    return {
        "name": a.name,
        "task": a.task,
        "tenant": a.tenant,
        "visibility": a.visibility,
        "declared_accuracy": a.accuracy,
        "sha256": a.sha256,
        "inputs": [t.to_dict() for t in a.inputs],
        "outputs": [t.to_dict() for t in a.outputs],
        "size_bytes": a.size_bytes,
    }


def describe_variant(v: Variant) -> dict[str, Any]:
    d = {
        "id": v.id,
        "format": v.format,
        "runtime": v.runtime,
        "hardware": v.hardware,
        "max_batch": v.max_batch,
        "status": v.status,
        "accuracy": v.accuracy,
        "accuracy_measured": v.accuracy_measured,
        "message": v.message,
    }
    if v.profile:
        d["profile"] = v.profile.to_dict()
    return d


# ---------------------------------------------------------------- data plane
def _finite(a: np.ndarray) -> bool:
    """No NaN and no infinity: NaN propagates through min and max, an infinity is one
    of them; two reductions without the temporary array of ``np.isfinite(a).all()``."""
    if a.dtype.kind == "c":
        return bool(np.isfinite(a).all())
    return bool(np.isfinite(a.min()) and np.isfinite(a.max()))


def validate_inputs(arrays: Mapping[str, np.ndarray], specs: tuple[TensorSpec, ...], max_rows: int) -> tuple[dict[str, np.ndarray], int]:
    """Check names, dtypes, shapes and values against the model's input spec.

    A single unnamed or differently named tensor is accepted for a single-input
    model. Returns the feed and its row count.
    """
    if len(arrays) != len(specs):
        raise InvalidInput(f"expected {len(specs)} input tensor(s) {[s.name for s in specs]}, got {len(arrays)}", field="inputs")
    if len(specs) == 1 and specs[0].name not in arrays:
        arrays = {specs[0].name: next(iter(arrays.values()))}
    feed, rows = {}, None
    for spec in specs:
        if spec.name not in arrays:
            raise InvalidInput(f"missing input tensor {spec.name!r}", field="inputs")
        a = arrays[spec.name]
        if tensors.dtype_name(a.dtype) != spec.dtype:
            raise InvalidInput(f"input {spec.name!r} has dtype {a.dtype.name}, the model takes {spec.dtype}", field="datatype")
        if a.ndim != len(spec.shape) or any(d > 0 and d != s for d, s in zip(spec.shape[1:], a.shape[1:])):
            raise InvalidInput(
                f"input {spec.name!r} has shape {list(a.shape)}, the model takes {list(spec.shape)} (-1 = any)", field="shape"
            )
        if spec.shape and spec.shape[0] > 0 and a.shape[0] != spec.shape[0]:
            raise InvalidInput(f"input {spec.name!r} must have exactly {spec.shape[0]} rows", field="shape")
        if a.dtype.kind in "fc" and a.size and not _finite(a):
            raise InvalidInput(f"input {spec.name!r} contains NaN or infinity", field="inputs")
        n = a.shape[0] if a.ndim else 1
        if rows is not None and n != rows:
            raise InvalidInput("all inputs must have the same number of rows", field="shape")
        rows = n
        feed[spec.name] = a
    if not rows:
        raise InvalidInput("inputs have no rows", field="shape")
    if rows > max_rows:
        raise PayloadTooLarge(f"{rows} rows in one request; the limit is {max_rows}", field="inputs")
    return feed, rows


class WorkerClient:
    """Sends a frame to a worker; implementations raise ``WorkerFault`` on a
    connection failure, reset or timeout, and pass domain errors through."""

    takes_parts = False  # True: ``frame`` may be a list of buffers (``tensors.encode_parts``), not one bytes

    async def infer(self, url: str, variant_id: str, frame: bytes, objective_ms: float | None) -> bytes:  # pragma: no cover
        raise NotImplementedError

    async def close(self) -> None:
        return None


class Coalescer:
    """Joins concurrent queries for one variant on one worker into one worker call.

    At most ``max_inflight`` calls per (worker, variant) are on the wire; the
    queries that arrive meanwhile wait and leave together in the next call, up
    to ``max_rows`` rows (the variant's max batch). Each caller gets its own
    rows back, or its own error. Under load this turns N worker round trips
    into one; a lone query goes out at once.
    """

    def __init__(self, client: WorkerClient, url: str, variant_id: str, max_rows: int, max_inflight: int = 2,
                 max_bytes: int = 8 << 20) -> None:
        self.client, self.url, self.variant_id = client, url, variant_id
        self.max_rows, self.max_inflight, self.max_bytes = max(1, max_rows), max_inflight, max_bytes
        self.waiting: collections.deque = collections.deque()  # (feed, rows, objective_ms, future, nbytes)
        self.inflight = 0

    async def infer(self, feed: dict[str, np.ndarray], rows: int, objective_ms: float | None) -> dict[str, np.ndarray]:
        if not self.waiting and self.inflight < self.max_inflight:
            # Nobody to wait for and a call free: this caller makes the call itself (no task, no future).
            self.inflight += 1
            try:
                return await self._call([(feed, rows, objective_ms, None, 0)])
            finally:
                self.inflight -= 1
                if self.waiting and self.inflight < self.max_inflight:  # they queued behind this call
                    self.inflight += 1
                    asyncio.get_running_loop().create_task(self._drain())
        fut = asyncio.get_running_loop().create_future()
        nbytes = 0
        for a in feed.values():
            nbytes += a.nbytes
        self.waiting.append((feed, rows, objective_ms, fut, nbytes))
        if self.inflight < self.max_inflight:
            self.inflight += 1
            asyncio.get_running_loop().create_task(self._drain())
        return await fut

    def _take(self) -> list:
        """The oldest waiting queries, up to ``max_rows`` rows and ``max_bytes`` of tensors
        (the worker refuses a larger body), in arrival order."""
        waiting = self.waiting
        batch = [waiting.popleft()]
        rows, nbytes = batch[0][1], batch[0][4]
        while waiting and rows + waiting[0][1] <= self.max_rows and nbytes + waiting[0][4] <= self.max_bytes:
            batch.append(waiting.popleft())
            rows += batch[-1][1]
            nbytes += batch[-1][4]
        return batch

    async def _call(self, batch: list) -> dict[str, np.ndarray]:
        objectives = [b[2] for b in batch if b[2] is not None]
        if len(batch) == 1:
            feed = batch[0][0]
            frame = tensors.encode_parts(feed) if self.client.takes_parts else tensors.encode(feed)
        else:
            feeds = [b[0] for b in batch]
            frame = tensors.encode_batch_parts(feeds) if self.client.takes_parts else None
            if frame is None:  # not joinable without a copy (or the client wants bytes): concatenate
                frame = tensors.encode({k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]})
        raw = await self.client.infer(self.url, self.variant_id, frame, min(objectives) if objectives else None)
        return tensors.decode(raw)

    async def _drain(self) -> None:
        try:
            while self.waiting:
                batch = self._take()
                try:
                    outputs = await self._call(batch)
                except WorkerFault as exc:  # every caller sees it, and may retry on another worker
                    for b in batch:
                        if not b[3].done():
                            b[3].set_exception(exc)
                    continue
                except Exception as exc:
                    if len(batch) == 1:
                        batch[0][3].done() or batch[0][3].set_exception(exc)
                        continue
                    # one caller's rows may be what the worker refused: the joint call's
                    # callers go again one by one, each to its own answer or error
                    for b in batch:
                        try:
                            result = await self._call([b])
                        except Exception as err:
                            b[3].done() or b[3].set_exception(err)
                        else:
                            b[3].done() or b[3].set_result(result)
                    continue
                total, start = sum(b[1] for b in batch), 0
                for _, n, _, fut, _ in batch:
                    if not fut.done():
                        fut.set_result({k: (v[start : start + n] if v.ndim and v.shape[0] == total else v)
                                        for k, v in outputs.items()})
                    start += n
        finally:
            self.inflight -= 1


@dataclass
class Answer:
    outputs: dict[str, np.ndarray]
    decision: Decision
    latency_ms: float
    retried: bool


class DataPlane:
    """Answers queries: validate, select, dispatch, retry once elsewhere on a fault.

    Holds a cached snapshot of the catalogue and the cluster, refreshed at most
    every ``settings.snapshot_s`` (and the catalogue only when its version moved).
    """

    def __init__(self, store: MetadataStore, client: WorkerClient, settings: Settings,
                 clock: Callable[[], float] = time.time) -> None:
        self.store, self.client, self.settings, self.clock = store, client, settings, clock
        self._catalogue = Catalogue.build([])
        self._catalogue_version = -1
        self._specs: dict[str, tuple[TensorSpec, ...]] = {}
        self._cluster = Cluster.build([], settings.hardware)
        self._refreshed_at = -math.inf
        self._suspect_until: dict[str, float] = {}  # worker id -> time it may be selected again
        self._coalescers: dict[tuple[str, str], Coalescer] = {}
        self._refreshing = False
        self._pending: dict[tuple[str, str], int] = {}  # (worker, variant) -> rows sent, not yet answered
        self._efficient: dict[str, tuple[Variant, int]] = {}  # variant id -> (record, rows per coalesced call)

    def snapshot(self, *, force: bool = False) -> tuple[Catalogue, Cluster]:
        """The cached snapshot. A stale one is refreshed in a thread while queries
        go on with the current one, so a query never waits for the store; a
        forced refresh (or the first one) happens at once."""
        now = self.clock()
        if force or self._refreshed_at == -math.inf:
            self._refresh(now)
        elif now - self._refreshed_at >= self.settings.snapshot_s and not self._refreshing:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # called outside the event loop (a thread, a Lambda handler)
                self._refresh(now)
            else:
                self._refreshing = True
                loop.run_in_executor(None, self._refresh, now).add_done_callback(self._refreshed)
        return self._catalogue, self._cluster

    def _refreshed(self, fut) -> None:
        self._refreshing = False
        if fut.exception() is not None:  # the store was busy: the next query tries again
            log.warning("snapshot refresh failed: %s", fut.exception())

    def _refresh(self, now: float) -> None:
        version = self.store.catalogue_version()
        if version != self._catalogue_version:
            catalogue = Catalogue.build(self.store.all_variants())
            self._specs = {a.name: a.inputs for a in self.store.architectures()}
            self._catalogue, self._catalogue_version = catalogue, version
        healthy = [w for w in self.store.workers() if self._suspect_until.get(w.id, 0.0) <= now]
        self._cluster = self._build_cluster(healthy)
        self._refreshed_at = now

    def _build_cluster(self, workers) -> Cluster:
        return Cluster.build(workers, self.settings.hardware, self._pending, refuse_late=self.settings.refuse_late == "on")

    def input_specs(self, query: Query) -> tuple[TensorSpec, ...]:
        """The input spec of what the query names, if the tenant may use it.

        Goes through ``selection.candidates`` so that a name that does not
        exist and another tenant's private model fail with the same 404.
        """
        catalogue, _ = self.snapshot()
        try:
            arch = candidates(query, catalogue)[0].architecture
        except NotFound:
            catalogue, _ = self.snapshot(force=True)  # registered a moment ago?
            arch = candidates(query, catalogue)[0].architecture
        specs = self._specs.get(arch)
        if specs is None:
            self.snapshot(force=True)
            specs = self._specs[arch]
        return specs

    def suspect(self, worker_id: str) -> None:
        """Keep a worker that just failed out of selection for ``suspect_s``
        (it may be dead; its record expires within ``heartbeat_ttl_s``)."""
        now = self.clock()
        self._suspect_until[worker_id] = now + self.settings.suspect_s
        # drop it from the snapshot at once, without a store read
        self._cluster = self._build_cluster([w for w in self._cluster.workers.values() if w.id != worker_id])

    async def infer(self, query: Query, arrays: Mapping[str, np.ndarray]) -> Answer:
        t0 = time.perf_counter()
        specs = self.input_specs(query)
        feed, rows = validate_inputs(arrays, specs, self.settings.max_rows)
        query = Query(rows, query.objective, query.variant, query.architecture, query.task, query.tenant)
        catalogue, cluster = self.snapshot()
        decision = select(query, catalogue, cluster)
        targets = [(decision.worker, decision.worker_url), *decision.fallback_workers][:2]
        retried = False
        max_rows = self._batch_rows(catalogue.variants[decision.variant])
        for i, (worker_id, url) in enumerate(targets):
            key = (worker_id, decision.variant)
            self._pending[key] = self._pending.get(key, 0) + rows
            try:
                outputs = await self._coalescer(url, decision.variant, max_rows).infer(feed, rows, query.objective.latency_ms)
                break
            except WorkerFault:
                self.suspect(worker_id)
                if i + 1 >= len(targets):
                    raise
                retried = True
            finally:
                left = self._pending[key] - rows
                if left:
                    self._pending[key] = left
                else:
                    del self._pending[key]
        if retried:
            decision = _moved(decision, targets[1])
        return Answer(outputs, decision, (time.perf_counter() - t0) * 1000, retried)

    def _batch_rows(self, variant: Variant) -> int:
        hit = self._efficient.get(variant.id)
        if hit is None or hit[0] is not variant:  # a new catalogue may carry a new profile
            if len(self._efficient) > 4096:
                self._efficient.clear()
            hit = self._efficient[variant.id] = (variant, efficient_batch(variant))
        return hit[1]

    def _coalescer(self, url: str, variant_id: str, max_rows: int) -> Coalescer:
        key = (url, variant_id)
        c = self._coalescers.get(key)
        if c is None:
            if len(self._coalescers) > 4096:  # workers come and go: forget idle ones
                self._coalescers = {k: v for k, v in self._coalescers.items() if v.inflight or v.waiting}
            c = self._coalescers[key] = Coalescer(self.client, url, variant_id, max_rows,
                                                  max_bytes=self.settings.max_body_bytes)
        return c


def _moved(d: Decision, target: tuple[str, str]) -> Decision:
    return replace(d, worker=target[0], worker_url=target[1], reason=d.reason + f"; retried on {target[0]} after a worker fault")
