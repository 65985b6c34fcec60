"""The vocabulary of the service, as frozen dataclasses.

Words (see docs/architecture.md): a *task* is what a query wants done on a
*dataset*; an *architecture* is one trained model as registered; a *variant*
is an architecture built for one format, runtime, hardware type and maximum
batch; a *profile* is what was measured for a variant on its hardware; a
*worker* runs *replicas* (loaded variants); an *objective* is what a query
asks for; a *decision* is what the selector answered.

Records convert to and from plain dicts (``to_dict`` / ``from_dict``) so that
every store keeps them the same way (SQLite rows, DynamoDB items, JSON).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

# Names become store keys and file paths: letters, digits, '.', '_', '-' only,
# starting with a letter or digit. Nothing that could climb out of a folder.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DEFAULT_TENANT = "local"

# Variant and architecture states.
PENDING, BUILDING, PROFILING, READY, FAILED, SKIPPED = "pending", "building", "profiling", "ready", "failed", "skipped"
# Worker states.
WORKER_UP, WORKER_DRAINING = "up", "draining"

DTYPES = {"float32", "float64", "float16", "int64", "int32", "int8", "uint8", "bool"}


def check_name(value: str, field_name: str) -> str:
    """Return ``value`` if it is a safe name, else raise InvalidInput naming the field."""
    from infaas.core.errors import InvalidInput

    if not isinstance(value, str) or not NAME_RE.match(value) or ".." in value:
        raise InvalidInput(
            f"{field_name} must be 1-64 characters of letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit, and without '..'; got {value!r}",
            field=field_name,
        )
    return value


@dataclass(frozen=True)
class Task:
    """What a query wants done, with the dataset that defines labels and inputs."""

    kind: str  # e.g. "classification"
    dataset: str  # e.g. "digits"

    @property
    def id(self) -> str:
        return f"{self.kind}/{self.dataset}"

    @staticmethod
    def parse(text: str) -> "Task":
        from infaas.core.errors import InvalidInput

        parts = text.split("/")
        if len(parts) != 2:
            raise InvalidInput(f"task must look like 'kind/dataset', got {text!r}", field="task")
        return Task(check_name(parts[0], "task"), check_name(parts[1], "dataset"))


@dataclass(frozen=True)
class TensorSpec:
    """Name, element type and shape of one model input or output; -1 is a free dimension.

    The rest is the tensor's part of the model's *signature* (``core/signature.py``):
    ``batch_axis`` is the axis that carries a request's rows (None: the tensor is one value per
    request, not per row); ``sizes`` a representative size per axis (what profiling runs, the
    batch axis at 1; empty in records older than signatures: free dimensions at 1);
    ``symbols`` the graph's name of each axis ("" where it has none).
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    batch_axis: int | None = 0
    sizes: tuple[int, ...] = ()
    symbols: tuple[str, ...] = ()

    @property
    def batch(self) -> int | None:
        """The batch axis, where the tensor has one (a scalar has none)."""
        ax = self.batch_axis
        return ax if ax is not None and 0 <= ax < len(self.shape) else None

    def to_dict(self) -> dict[str, Any]:
        """The public spec: name, dtype, shape (the signature is shown on its own)."""
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    def to_record(self) -> dict[str, Any]:
        """Everything, as stored."""
        return {**self.to_dict(), "batch_axis": self.batch_axis, "sizes": list(self.sizes),
                "symbols": list(self.symbols)}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> "TensorSpec":
        shape = tuple(int(x) for x in d["shape"])
        axis = d["batch_axis"] if "batch_axis" in d else (0 if shape else None)
        return TensorSpec(d["name"], d["dtype"], shape, None if axis is None else int(axis),
                          tuple(int(x) for x in d.get("sizes") or ()), tuple(str(x) for x in d.get("symbols") or ()))


@dataclass(frozen=True)
class Architecture:
    """One trained model as its owner registered it."""

    name: str
    tenant: str
    task: str  # Task.id
    accuracy: float  # declared by the owner, 0..1
    sha256: str
    model_key: str  # where the original file is in the model store
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    visibility: str = "private"  # "private" | "shared"
    validation_key: str | None = None  # npz with "inputs" and "labels"
    created_at: float = 0.0
    size_bytes: int = 0
    # how the signature was settled (``core/signature.py``): one line per inference or override
    signature_notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["inputs"] = [t.to_record() for t in self.inputs]
        d["outputs"] = [t.to_record() for t in self.outputs]
        d["signature_notes"] = list(self.signature_notes)
        return d

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> "Architecture":
        d = dict(d)
        d["inputs"] = tuple(TensorSpec.from_dict(t) for t in d["inputs"])
        d["outputs"] = tuple(TensorSpec.from_dict(t) for t in d["outputs"])
        d["signature_notes"] = tuple(d.get("signature_notes") or ())
        return Architecture(**d)


def interpolate_latency(latency_ms: Mapping[int, tuple[float, float]], sizes: Sequence[int], batch: int,
                        percentile: str = "p99") -> float:
    """Latency of one run at ``batch`` rows from measured (p50, p99) per batch size (``sizes``,
    ascending): measured, linearly interpolated between measured sizes, the smallest size's below
    it, infinite beyond the largest (no run that large was measured)."""
    if not sizes:
        return math.inf
    idx = 1 if percentile == "p99" else 0
    if batch <= sizes[0]:
        return latency_ms[sizes[0]][idx]
    for lo, hi in zip(sizes, sizes[1:]):
        if lo <= batch <= hi:
            a, b = latency_ms[lo][idx], latency_ms[hi][idx]
            return a + (b - a) * (batch - lo) / (hi - lo)
    return math.inf


@dataclass(frozen=True)
class Profile:
    """What was measured for one variant on its hardware type.

    ``latency_ms[b]`` is (p50, p99) of one run at batch ``b``. Batches between
    two measured ones are interpolated linearly; beyond the largest one the
    variant cannot run (it is the variant's maximum batch).

    How noisy the measurement was (``core/calibration.py``): ``spread_ms[b]`` is the
    min and max p50 of the rounds the figures come from, ``noise`` the calibration
    kernel's median slowdown in those rounds (1.0: as quiet as ever seen on the host),
    ``busy`` whether no round was quiet (figures taken anyway, after deferring).
    """

    hardware: str
    latency_ms: Mapping[int, tuple[float, float]]
    load_ms: float
    peak_memory_bytes: int
    measured_at: float = 0.0
    spread_ms: Mapping[int, tuple[float, float]] = dataclasses.field(default_factory=dict)
    noise: float | None = None
    rounds: int = 0
    busy: bool = False
    memory_mb: int = 0  # a ``lambda`` variant: the function memory size it runs at (core/tier.py); 0 for machines

    def batch_sizes(self) -> tuple[int, ...]:
        return self._sizes

    @functools.cached_property
    def _sizes(self) -> tuple[int, ...]:
        return tuple(sorted(self.latency_ms))

    @functools.cached_property
    def _memo(self) -> dict[tuple[int, str], float]:
        return {}  # (batch, percentile) -> latency: selection asks the same few again and again

    def latency_at(self, batch: int, percentile: str = "p99") -> float:
        """Predicted latency of one run at ``batch`` rows (interpolated)."""
        memo = self._memo
        hit = memo.get((batch, percentile))
        if hit is None:
            hit = memo[(batch, percentile)] = self._interpolate(batch, percentile)
        return hit

    def _interpolate(self, batch: int, percentile: str) -> float:
        return interpolate_latency(self.latency_ms, self._sizes, batch, percentile)

    def throughput_rps(self, batch: int) -> float:
        """Rows per second one replica sustains when it runs batches of ``batch``."""
        lat = self.latency_at(batch, "p50")
        return batch * 1000.0 / lat if lat > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {
            "hardware": self.hardware,
            "latency_ms": {str(b): list(v) for b, v in sorted(self.latency_ms.items())},
            "load_ms": self.load_ms,
            "peak_memory_bytes": self.peak_memory_bytes,
            "measured_at": self.measured_at,
            "spread_ms": {str(b): list(v) for b, v in sorted(self.spread_ms.items())},
            "noise": self.noise,
            "rounds": self.rounds,
            "busy": self.busy,
            "memory_mb": self.memory_mb,
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> "Profile":
        return Profile(
            hardware=d["hardware"],
            latency_ms={int(b): (float(v[0]), float(v[1])) for b, v in d["latency_ms"].items()},
            load_ms=float(d["load_ms"]),
            peak_memory_bytes=int(d["peak_memory_bytes"]),
            measured_at=float(d.get("measured_at", 0.0)),
            spread_ms={int(b): (float(v[0]), float(v[1])) for b, v in (d.get("spread_ms") or {}).items()},
            noise=None if d.get("noise") is None else float(d["noise"]),
            rounds=int(d.get("rounds", 0)),
            busy=bool(d.get("busy", False)),
            memory_mb=int(d.get("memory_mb", 0)),
        )


@dataclass(frozen=True)
class Variant:
    """An architecture built for one format, runtime, hardware type and max batch."""

    architecture: str
    format: str  # "fp32" | "int8" | "fp16" | ...
    runtime: str  # "onnxruntime" | "tensorrt" | "neuron"
    hardware: str  # HardwareType.name
    max_batch: int
    task: str
    tenant: str
    visibility: str = "private"
    status: str = PENDING
    model_key: str | None = None
    accuracy: float | None = None  # measured where validation data exists, else declared
    accuracy_measured: bool = False
    profile: Profile | None = None
    message: str = ""  # why it failed or was skipped
    # without validation data: how often it answers as the registered model does on sample inputs
    # (``runtime.profile.agreement``); its accuracy is then the declared one less its disagreement
    agreement: float | None = None

    @functools.cached_property
    def id(self) -> str:  # computed once per record: selection reads it on every candidate
        return variant_id(self.architecture, self.runtime, self.format, self.hardware, self.max_batch)

    @functools.cached_property
    def batch_cap(self) -> int:
        """The largest batch a replica of this variant runs: ``batching.efficient_batch``, the one
        rule the worker's batcher, the selector's predictions and the simulator share."""
        from infaas.core.batching import efficient_batch

        return efficient_batch(self)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["profile"] = self.profile.to_dict() if self.profile else None
        d["id"] = self.id
        return d

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> "Variant":
        d = dict(d)
        d.pop("id", None)
        d["profile"] = Profile.from_dict(d["profile"]) if d.get("profile") else None
        return Variant(**d)


def variant_id(architecture: str, runtime: str, fmt: str, hardware: str, max_batch: int) -> str:
    """``mlp-512-256:onnx-int8:cpu:b32`` style identifier."""
    short = "onnx" if runtime == "onnxruntime" else runtime
    return f"{architecture}:{short}-{fmt}:{hardware}:b{max_batch}"


@dataclass(frozen=True)
class HardwareType:
    """A kind of worker, with the hourly price used to compare cost per query."""

    name: str
    price_per_hour: float
    memory_bytes: int = 4 << 30


@dataclass(frozen=True)
class ReplicaLoad:
    """One loaded variant on one worker, as the worker last reported it."""

    variant_id: str
    queued_rows: int = 0  # rows waiting or running right now
    rate_rps: float = 0.0  # rows per second over the last heartbeat period
    # rows that arrived in the busiest ``core.burst.WINDOW_S`` window of the last ``core.burst.SPAN_S``
    # seconds: the sub-second clumps a period's mean rate hides
    peak_rows: int = 0
    memory_bytes: int = 0
    last_used: float = 0.0
    # per batch size (str): [observed run time ms, the profile's prediction ms, batches], moving
    # estimates of served batches (``core.calibration.observe``)
    served_ms: Mapping[str, Sequence[float]] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class Worker:
    """One machine or local process that loads variants and runs them."""

    id: str
    hardware: str
    url: str
    state: str = WORKER_UP
    memory_budget_bytes: int = 2 << 30
    memory_used_bytes: int = 0
    replicas: tuple[ReplicaLoad, ...] = ()
    heartbeat_at: float = 0.0
    started_at: float = 0.0
    # Runtimes that work on this worker (onnxruntime providers, "neuron"); empty
    # from workers older than this field, which are taken at their word.
    runtimes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["replicas"] = [dataclasses.asdict(r) for r in self.replicas]
        d["runtimes"] = list(self.runtimes)
        return d

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> "Worker":
        d = dict(d)
        known = {f.name for f in dataclasses.fields(ReplicaLoad)}  # a record from another version may carry more
        d["replicas"] = tuple(ReplicaLoad(**{k: v for k, v in r.items() if k in known}) for r in d.get("replicas", ()))
        d["runtimes"] = tuple(d.get("runtimes", ()))
        return Worker(**d)


@dataclass(frozen=True)
class Objective:
    """What a query asks for. ``None`` means no constraint on that axis."""

    min_accuracy: float | None = None
    latency_ms: float | None = None
    max_cost: float | None = None  # dollars per query
    # when every replica would answer past latency_ms (overload): "serve" late (flagged
    # objective_met false) or "refuse" at once (503, Retry-After, the best to be had); None: the
    # deployment's INFAAS_REFUSE_LATE
    if_late: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def met_by(self, latency_ms: float) -> bool | None:
        """Whether an answer measured at ``latency_ms`` met the latency objective; None without one."""
        return None if self.latency_ms is None else latency_ms <= self.latency_ms


@dataclass(frozen=True)
class Query:
    """What the selector needs to know about one request.

    Exactly one of ``variant``, ``architecture``, ``task`` names the target.
    """

    rows: int
    objective: Objective = field(default_factory=Objective)
    variant: str | None = None
    architecture: str | None = None
    task: str | None = None
    tenant: str = DEFAULT_TENANT


@dataclass(frozen=True)
class Decision:
    """The selector's answer, returned to the user with every response."""

    variant: str
    worker: str
    worker_url: str
    batch: int
    predicted_latency_ms: float
    cost_per_query: float
    accuracy: float
    loaded: bool
    reason: str
    fallback_workers: tuple[tuple[str, str], ...] = ()  # (id, url) to retry on a fault
    # the part of ``predicted_latency_ms`` outside the worker's queue and compute: the API's own
    # work and the hop to the worker, as measured on recent answers (``Cluster.overhead_ms``)
    overhead_ms: float = 0.0
    # an answer by the serverless tier because no machine replica would answer in time: the
    # machine variant that would have (late, or after a cold start) -- demand no heartbeat shows,
    # counted as a refusal is (``burst.Unserved``)
    displaced: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("fallback_workers")
        d.pop("displaced")
        d.pop("worker_url")
        return d
