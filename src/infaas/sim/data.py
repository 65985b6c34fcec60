"""Inputs of the simulator: hardware, variant profiles, request traces, tenants.

Everything here is read in place (the Proteus data set's licence allows use
for comparison only; it is never copied into this repository). The data folder
is ``--data``, else ``INFAAS_PROTEUS_DIR``, else the cache ``infaas sim data
fetch`` downloads into (``~/.cache/infaas/proteus``), else
``../shared/data/proteus`` beside the repository (``data_dir``).

Hardware mapping (docs/evaluation.md states it next to every result)
--------------------------------------------------------------------
The Proteus profiles were measured on three accelerators. Each becomes one
hardware type of the product, priced as the closest current EC2 instance
(on-demand, us-east-1, ``reference/ecosystem.md``):

=========================  ============  ==============  =========  ==========
Proteus ``Accel``          hardware type  instance        $/hour     memory
=========================  ============  ==============  =========  ==========
``onnxruntime_cpu``        ``cpu``        c6i.large       0.085      4 GiB RAM
``onnxruntime_gpu_pascal`` ``gpu-pascal`` g4dn.xlarge     0.526      16 GiB (T4)
``onnxruntime_gpu_ampere`` ``gpu-ampere`` g5.xlarge       1.006      24 GiB (A10G)
=========================  ============  ==============  =========  ==========

No Pascal GPU is sold any more; g4dn (T4) is the cheapest current GPU and the
closest generation. g5 carries the Ampere A10G. The fixed-cluster mode adds
``vpu``: the Proteus artifact's "VPU" devices run the CPU profile, and so do
ours (priced as ``cpu``; in that mode the fleet is fixed, so its cost is the
same for every policy).

Profiles
--------
One :class:`~infaas.core.domain.Variant` per (model, accelerator): architecture =
model name (``/`` becomes ``-``), format ``fp32``, runtime ``onnxruntime``,
task ``proteus/<family>``, accuracy = the normalised accuracy / 100 (relative
to the most accurate model of the family, as the Proteus evaluation counts
it), shared with every tenant. The profile's (p50, p99) pair is (``50th_pct``,
``90th_pct``): the data set has no 99th percentile; where ``90th_pct`` is
missing the accelerator's median p90/p50 ratio is used. Each variant's max
batch is the largest profiled batch the production batching rule allows for
the objective (``batching.batch_limits``: ``2 * p99(b) <= objective``, at
least 1), so the selector's latency prediction and the worker's batching
agree.

The data set has no load times or memory sizes. Both come from the models'
published parameter counts (``PARAMS_M``), at 4 bytes a parameter:
``load_ms = base + bytes / 250 MB/s`` (base 300 ms on CPU, 1000 ms on GPU for
the CUDA context and session) and ``peak_memory = 1.25 * bytes + 100 MiB``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from infaas.core import tier
from infaas.core.batching import batch_limits
from infaas.core.domain import READY, HardwareType, Profile, Variant

# Where the Proteus data folder is when no path is given: see ``default_data_dir``.
DEFAULT_DATA_DIR: Path | None = None  # set (by tests or an embedding program) to skip the search
DATA_DIR_ENV = "INFAAS_PROTEUS_DIR"
# The copy some checkouts have beside the repository (before ``infaas sim data fetch`` existed).
LEGACY_DATA_DIR = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "proteus"

ACCEL_TO_HW = {
    "onnxruntime_cpu": "cpu",
    "onnxruntime_gpu_pascal": "gpu-pascal",
    "onnxruntime_gpu_ampere": "gpu-ampere",
}
INSTANCE = {"cpu": "c6i.large", "gpu-pascal": "g4dn.xlarge", "gpu-ampere": "g5.xlarge", "vpu": "c6i.large (CPU profile)"}
GIB = 1 << 30
MIB = 1 << 20
HARDWARE = {
    "cpu": HardwareType("cpu", 0.085, 4 * GIB),
    "gpu-pascal": HardwareType("gpu-pascal", 0.526, 16 * GIB),
    "gpu-ampere": HardwareType("gpu-ampere", 1.006, 24 * GIB),
    "vpu": HardwareType("vpu", 0.085, 4 * GIB),
}
# Hardware types that run another type's profile: the fixed cluster's "VPU" devices run the CPU one.
SAME_PROFILE = {"vpu": "cpu"}
# Launch of a machine until its worker takes work (boot of a prepared image, runtime start).
START_S = {"cpu": 30.0, "vpu": 30.0, "gpu-pascal": 60.0, "gpu-ampere": 60.0}
# What a worker may use for models: RAM less the OS and worker on CPU, device memory on GPU.
MEMORY_BUDGET = {"cpu": int(3.5 * GIB), "vpu": int(3.5 * GIB), "gpu-pascal": 15 * GIB, "gpu-ampere": 22 * GIB}
LOAD_BASE_MS = {"cpu": 300.0, "vpu": 300.0, "gpu-pascal": 1000.0, "gpu-ampere": 1000.0}
LOAD_BYTES_PER_MS = 250e6 / 1000

# Published parameter counts, millions (model cards of torchvision, timm, GluonCV, ultralytics, Hugging Face).
PARAMS_M = {
    "resnet18_v1": 11.7, "resnet34_v1": 21.8, "resnet50_v1": 25.6, "resnet101_v1": 44.5, "resnet152_v1": 60.2,
    "densenet121": 8.0, "densenet161": 28.7, "densenet169": 14.1, "densenet201": 20.0,
    "efficientnet-b0": 5.3, "efficientnet-b1": 7.8, "efficientnet-b3": 12.2, "efficientnet-b5": 30.4, "efficientnet-b7": 66.3,
    "mobilenet0.25": 0.47, "mobilenet0.5": 1.3, "mobilenet0.75": 2.6, "mobilenet1.0": 4.2,
    "resnest14": 10.6, "resnest26": 17.1, "resnest50": 27.5, "resnest269": 110.9,
    "yolov5n": 1.9, "yolov5s": 7.2, "yolov5m": 21.2, "yolov5l": 46.5, "yolov5x": 86.7,
    "prajjwal1/bert-tiny": 4.4, "prajjwal1/bert-mini": 11.3, "prajjwal1/bert-small": 28.8, "prajjwal1/bert-medium": 41.4,
    "bert-base-uncased": 110.0, "bert-large-uncased": 340.0, "roberta-base": 125.0, "roberta-large": 355.0,
    "albert-base-v2": 12.0, "albert-large-v2": 18.0, "albert-xlarge-v2": 60.0, "albert-xxlarge-v2": 235.0,
    "gpt2": 124.0, "gpt2-medium": 355.0, "gpt2-large": 774.0, "gpt2-xl": 1558.0,
    "t5-small": 60.5, "t5-base": 223.0, "t5-large": 738.0,
}
TENANT = "proteus"


def default_data_dir() -> Path:
    """The Proteus data folder when none is named: ``INFAAS_PROTEUS_DIR``, else the cache that
    ``infaas sim data fetch`` fills (``fetch.cache_dir()``) if it holds the data, else
    ``../shared/data/proteus`` beside the repository if present."""
    if DEFAULT_DATA_DIR is not None:
        return Path(DEFAULT_DATA_DIR)
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    from infaas.sim import fetch

    cache = fetch.cache_dir()
    if fetch.has_data(cache):
        return cache
    if LEGACY_DATA_DIR.is_dir():
        return LEGACY_DATA_DIR
    raise FileNotFoundError(f"no Proteus data set: run `infaas sim data fetch` (it fills {cache}), or name a copy "
                            f"with --data DIR or {DATA_DIR_ENV}")


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """``path`` if given (``--data``), else ``default_data_dir()``."""
    p = Path(path) if path else default_data_dir()
    return p.resolve()


def task_id(family: str) -> str:
    return f"proteus/{family}"


def arch_name(model: str) -> str:
    return model.replace("/", "-")


# -- profiles ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProfileRow:
    model: str
    accel: str
    batch: int
    p50: float
    p90: float | None


def read_profile_rows(path: Path) -> list[ProfileRow]:
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            p90 = r["90th_pct"].strip()
            rows.append(ProfileRow(r["Model"], r["Accel"], int(r["batchsize"]), float(r["50th_pct"]), float(p90) if p90 else None))
    return rows


def read_families(variants_dir: Path) -> dict[str, dict[str, float]]:
    """family -> {model: normalised accuracy 0..100}"""
    out: dict[str, dict[str, float]] = {}
    for f in sorted(variants_dir.iterdir()):
        if f.is_file() and not f.name.startswith("."):
            models = {}
            for line in f.read_text().splitlines():
                if line.strip():
                    name, acc = line.rsplit(",", 1)
                    models[name.strip()] = float(acc)
            out[f.name] = models
    return out


def weight_bytes(model: str) -> int:
    return int(PARAMS_M.get(model, 100.0) * 1e6 * 4)


def load_ms(model: str, hw: str) -> float:
    return round(LOAD_BASE_MS.get(hw, 1000.0) + weight_bytes(model) / LOAD_BYTES_PER_MS, 1)


def peak_memory(model: str) -> int:
    return int(1.25 * weight_bytes(model) + 100 * MIB)


def proteus_variants(
    path: str | os.PathLike | None = None,
    *,
    objective_ms: float = 300.0,
    max_batch: int = 16,
    fixed_cluster: bool = False,
) -> list[Variant]:
    """Variants from ``aggregate_profiled.csv`` and ``model_variants/`` (see the module docstring).

    ``fixed_cluster``: the Proteus evaluation setup -- batches up to 8, the CPU
    profile duplicated as hardware type ``vpu``, and every variant taking a
    whole device (its peak memory is the device's budget), so that a device
    holds one variant at a time.
    """
    root = data_dir(path)
    families = read_families(root / "model_variants")
    family_of = {m: fam for fam, models in families.items() for m in models}
    rows = read_profile_rows(root / "aggregate_profiled.csv")
    ratios: dict[str, list[float]] = {}
    for r in rows:
        if r.p90 is not None and r.p50 > 0:
            ratios.setdefault(r.accel, []).append(r.p90 / r.p50)
    median_ratio = {a: statistics.median(v) for a, v in ratios.items()}
    grouped: dict[tuple[str, str], dict[int, tuple[float, float]]] = {}
    for r in rows:
        if r.model not in family_of or r.accel not in ACCEL_TO_HW or r.batch > max_batch:
            continue
        p90 = r.p90 if r.p90 is not None else r.p50 * median_ratio.get(r.accel, 1.02)
        grouped.setdefault((r.model, r.accel), {})[r.batch] = (r.p50, max(p90, r.p50))
    out = []
    for (model, accel), lat in sorted(grouped.items()):
        hws = [ACCEL_TO_HW[accel]]
        if fixed_cluster:
            hws += sorted(h for h, of in SAME_PROFILE.items() if of == hws[0])
        for hw in hws:
            mem = MEMORY_BUDGET[hw] if fixed_cluster else peak_memory(model)
            profile = Profile(hardware=hw, latency_ms=dict(sorted(lat.items())), load_ms=load_ms(model, hw), peak_memory_bytes=mem)
            limit = batch_limits(profile, max(lat), objective_ms).max_batch
            out.append(Variant(
                architecture=arch_name(model), format="fp32", runtime="onnxruntime", hardware=hw, max_batch=limit,
                task=task_id(family_of[model]), tenant=TENANT, visibility="shared", status=READY,
                accuracy=round(families[family_of[model]][model] / 100.0, 6), accuracy_measured=False, profile=profile,
            ))
    return out


# The serverless tier (``core.tier``): a function's runtime start and imports (Python, numpy,
# onnxruntime), as the inference function measured it in the Lambda fidelity harness (about 300 ms).
FUNCTION_START_MS = 300.0
FUNCTION_RUNTIME_MB = 256  # the function's own memory beside the model
WEIGHTS_BY_ARCH = {arch_name(m): weight_bytes(m) for m in PARAMS_M}


def tier_variants(variants: Iterable[Variant]) -> list[Variant]:
    """A ``lambda`` variant for every ``cpu`` variant: the same architecture and profile, run as a
    function at ``tier.FULL_VCPU_MB`` (one vCPU, as the profile was measured on one) or more where
    the model needs the memory; its cold start (``load_ms``) is the function's start, the model's
    download from S3 (``tier.download_ms``) and its load; at most 8 rows per invocation."""
    out = []
    for v in variants:
        if v.hardware != "cpu" or v.profile is None:
            continue
        mb = max(tier.FULL_VCPU_MB, math.ceil(v.profile.peak_memory_bytes / MIB) + FUNCTION_RUNTIME_MB)
        weights = WEIGHTS_BY_ARCH.get(v.architecture, v.profile.peak_memory_bytes)
        cold = FUNCTION_START_MS + tier.download_ms(weights) + v.profile.load_ms
        profile = dataclasses.replace(v.profile, hardware=tier.HARDWARE, load_ms=cold, memory_mb=min(mb, tier.MAX_MEMORY_MB))
        out.append(dataclasses.replace(v, hardware=tier.HARDWARE, max_batch=min(v.max_batch, 8), profile=profile))
    return out


def variant_from_record(d: Mapping, architecture: Mapping | None = None) -> Variant:
    """A variant from its record: ``Variant.to_dict``, or a variant of ``GET /v1/models/<name>``
    (``architecture``, that answer, gives the name, task, tenant and visibility the variant's
    record there leaves out; what the API adds, such as ``accuracy_source``, is not read)."""
    from dataclasses import fields

    known = {f.name for f in fields(Variant)}
    rec = {k: v for k, v in d.items() if k in known}
    if architecture is not None:
        rec.setdefault("architecture", architecture["name"])
        for k in ("task", "tenant", "visibility"):
            if k in architecture:
                rec.setdefault(k, architecture[k])
    return Variant.from_dict(rec)


def variants_from_json(path: str | os.PathLike, *, objective_ms: float | None = None) -> list[Variant]:
    """Variants as the product records them (``Variant.to_dict``; a JSON list, or
    ``{"variants": [...]}`` such as ``GET /v1/models/<name>`` returns). With
    ``objective_ms`` each max batch is cut to what the batching rule allows."""
    doc = json.loads(Path(path).read_text())
    items = doc["variants"] if isinstance(doc, dict) else doc
    out = []
    for d in items:
        v = variant_from_record(d, doc if isinstance(doc, dict) and "name" in doc else None)
        if v.profile is None or v.status != READY:
            continue
        if objective_ms is not None:
            from dataclasses import replace

            v = replace(v, max_batch=batch_limits(v.profile, v.max_batch, objective_ms).max_batch)
        out.append(v)
    return out


# -- tenants -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tenant:
    name: str
    min_accuracy: float | None
    share: float


# Every task is queried by three tenants: no floor, 0.90 and 0.95 of the family's best accuracy.
DEFAULT_TENANTS = (Tenant("free", None, 0.4), Tenant("standard", 0.90, 0.3), Tenant("premium", 0.95, 0.3))
NO_FLOOR = (Tenant("any", None, 1.0),)


# -- workloads ---------------------------------------------------------------------------------------
@dataclass
class Workload:
    """Requests sorted by arrival; one row each (the Proteus traces are single-row queries)."""

    name: str
    tasks: list[str]
    tenants: list[Tenant]
    arrival_ms: np.ndarray  # float64, sorted
    task: np.ndarray  # int32 index into tasks
    tenant: np.ndarray  # int32 index into tenants
    latency_ms: np.ndarray  # float64 objective per request
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.arrival_ms)

    @property
    def duration_s(self) -> float:
        """Seconds of counted trace."""
        return (float(self.arrival_ms[-1]) - self.t0_ms) / 1000.0 if len(self) else 0.0

    def min_accuracy(self, i: int) -> float | None:
        return self.tenants[int(self.tenant[i])].min_accuracy

    @property
    def warmup(self) -> int:
        """Requests at the start that only warm the cluster up (not counted)."""
        return int(self.meta.get("warmup_requests", 0))

    @property
    def t0_ms(self) -> float:
        return float(self.meta.get("warmup_ms", 0.0))

    def with_warmup(self, seconds: float, *, seed: int = 0) -> "Workload":
        """``seconds`` of synthetic traffic before the trace, uncounted, so that every policy starts
        measuring with a cluster built for the trace's load rather than from nothing (autoscalers
        start warm). The prefix is *not* drawn from the scored trace: each task arrives as a
        Poisson process at its mean rate over the whole trace (a burst workload's re-timed into
        bursts of the same coefficient of variation), with the trace's objective for that task and
        tenants drawn with their shares (seeded, independent of the trace's own draws).
        A policy therefore knows the load's level, as a deployment that has been running would,
        but has not seen the start of its test."""
        if seconds <= 0 or not len(self):
            return self
        dur = max(self.duration_s, 1e-3)
        arrs, tasks, lats = [], [], []
        for k in range(len(self.tasks)):
            mine = self.task == k
            n = int(mine.sum())
            if not n:
                continue
            a = poisson_arrivals(n / dur, seconds, seed + 7919 * (k + 1))
            arrs.append(a)
            tasks.append(np.full(len(a), k, dtype=np.int32))
            lats.append(np.full(len(a), float(np.median(self.latency_ms[mine]))))
        if self.meta.get("burst_cv"):  # bursts of the same kind as the trace's (``burst_workload``)
            arrs = [retime_within_seconds(a, float(self.meta["burst_cv"]), seed + 15485863 + k) for k, a in enumerate(arrs)]
        arr = np.concatenate(arrs) if arrs else np.zeros(0)
        order = np.argsort(arr, kind="stable")
        arr, task, lat = arr[order], np.concatenate(tasks)[order], np.concatenate(lats)[order]
        tenant = assign_tenants(len(arr), self.tenants, seed + 104729)
        k = len(arr)
        shift = seconds * 1000.0
        cat = lambda a, b: np.concatenate([a, b])
        meta = dict(self.meta, warmup_requests=k, warmup_ms=shift, warmup="poisson at each task's mean rate")
        return Workload(self.name, self.tasks, self.tenants, cat(arr, self.arrival_ms + shift), cat(task, self.task),
                        cat(tenant, self.tenant), cat(lat, self.latency_ms), meta)

    def head(self, seconds: float) -> "Workload":
        n = int(np.searchsorted(self.arrival_ms, seconds * 1000.0, side="right"))
        return Workload(self.name, self.tasks, self.tenants, self.arrival_ms[:n], self.task[:n], self.tenant[:n],
                        self.latency_ms[:n], dict(self.meta, limited_to_s=seconds))


def assign_tenants(n: int, tenants: Sequence[Tenant], seed: int) -> np.ndarray:
    """Each request's tenant, drawn with the tenants' shares (deterministic for a seed)."""
    shares = np.array([t.share for t in tenants], dtype=float)
    rng = np.random.default_rng(seed)
    return rng.choice(len(tenants), size=n, p=shares / shares.sum()).astype(np.int32)


def _assemble(name: str, parts: Mapping[str, tuple[np.ndarray, np.ndarray]], tenants: Sequence[Tenant], seed: int,
              meta: dict | None = None) -> Workload:
    tasks = sorted(parts)
    arr = np.concatenate([parts[t][0] for t in tasks]) if tasks else np.zeros(0)
    lat = np.concatenate([parts[t][1] for t in tasks]) if tasks else np.zeros(0)
    idx = np.concatenate([np.full(len(parts[t][0]), k, dtype=np.int32) for k, t in enumerate(tasks)]) if tasks else np.zeros(0, np.int32)
    order = np.argsort(arr, kind="stable")
    return Workload(name, tasks, list(tenants), arr[order].astype(np.float64), idx[order], assign_tenants(len(arr), tenants, seed),
                    lat[order].astype(np.float64), meta or {})


def proteus_workload(name: str, path: str | os.PathLike | None = None, *, tenants: Sequence[Tenant] = DEFAULT_TENANTS,
                     seed: int = 0, objective_ms: float | None = None) -> Workload:
    """``traces/<name>/<family>.txt``: ``<arrival ms>,<qos level>,<deadline ms>`` per request."""
    folder = data_dir(path) / "traces" / name
    if not folder.is_dir():
        raise ValueError(f"no workload {name!r} under {folder.parent} (have: {', '.join(list_workloads(path))})")
    parts = {}
    for f in sorted(folder.glob("*.txt")):
        a = np.loadtxt(f, delimiter=",", dtype=np.float64, ndmin=2)
        lat = np.full(len(a), objective_ms, dtype=np.float64) if objective_ms else a[:, 2]
        parts[task_id(f.stem)] = (a[:, 0], lat)
    return _assemble(name, parts, tenants, seed, {"source": str(folder)})


def list_workloads(path: str | os.PathLike | None = None) -> list[str]:
    d = data_dir(path) / "traces"
    return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.is_dir() else []


def csv_workload(path: str | os.PathLike, *, tenants: Sequence[Tenant] = DEFAULT_TENANTS, seed: int = 0) -> Workload:
    """A trace of the product's own: ``<arrival ms>,<task>[,<latency ms>]`` per line."""
    parts: dict[str, tuple[list[float], list[float]]] = {}
    for line in Path(path).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        cols = [c.strip() for c in line.split(",")]
        t = parts.setdefault(cols[1], ([], []))
        t[0].append(float(cols[0]))
        t[1].append(float(cols[2]) if len(cols) > 2 and cols[2] else 300.0)
    arrays = {k: (np.array(a), np.array(b)) for k, (a, b) in parts.items()}
    return _assemble(Path(path).stem, arrays, tenants, seed, {"source": str(path)})


def poisson_arrivals(rate_rps: float, duration_s: float, seed: int) -> np.ndarray:
    """Arrival times (ms) of a Poisson process."""
    rng = np.random.default_rng(seed)
    n = int(rate_rps * duration_s * 1.5) + 10
    t = np.cumsum(rng.exponential(1000.0 / rate_rps, size=n))
    return t[t < duration_s * 1000.0]


def gamma_arrivals(rate_rps: float, duration_s: float, seed: int, cv: float = 3.0) -> np.ndarray:
    """Bursty arrivals (ms): gamma-distributed gaps with mean ``1/rate`` and coefficient of variation ``cv``."""
    rng = np.random.default_rng(seed)
    shape = 1.0 / (cv * cv)
    n = int(rate_rps * duration_s * 1.5) + 10
    t = np.cumsum(rng.gamma(shape, (1000.0 / rate_rps) / shape, size=n))
    return t[t < duration_s * 1000.0]


def retime_within_seconds(arrival_ms: np.ndarray, cv: float, seed: int) -> np.ndarray:
    """The same arrivals per whole second, re-timed inside each second with gamma-distributed gaps
    of coefficient of variation ``cv``: each second's ``n`` arrivals sit at the normalised partial
    sums of ``n + 1`` gamma gaps, so the second's total is kept exactly and the arrivals bunch
    into sub-second bursts (at ``cv`` 12, typically one to three clumps a second)."""
    if not len(arrival_ms):
        return arrival_ms
    rng = np.random.default_rng(seed)
    shape = 1.0 / (cv * cv)
    sec = np.floor(arrival_ms / 1000.0).astype(np.int64)
    out = np.empty(len(arrival_ms), dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, sec[1:] != sec[:-1]])
    ends = np.r_[starts[1:], len(sec)]
    for a, b in zip(starts, ends):
        g = rng.gamma(shape, 1.0, size=b - a + 1)
        c = np.cumsum(g)
        total = c[-1] if c[-1] > 0 else 1.0
        out[a:b] = sec[a] * 1000.0 + np.minimum(c[:-1] / total, 0.999999) * 1000.0
    return np.sort(out)


def burst_workload(w: Workload, cv: float, *, seed: int = 0) -> Workload:
    """``w``'s per-second totals per task, re-timed with gamma gaps of ``cv`` inside each second
    (``retime_within_seconds``): what a trace with sub-second bursts looks like when a per-second
    log shows the same load. Named ``<name>-cv<cv>``; tenants and objectives as in ``w``."""
    parts = {}
    for k, task in enumerate(w.tasks):
        mine = w.task == k
        parts[task] = (retime_within_seconds(w.arrival_ms[mine], cv, seed + 31 * (k + 1)), w.latency_ms[mine])
    name = f"{w.name}-cv{cv:g}"
    return _assemble(name, parts, w.tenants, seed, dict(w.meta, burst_cv=cv, base=w.name))


def burstiness(w: Workload, window_ms: float = 100.0) -> dict:
    """Gap coefficient of variation (all tasks merged) and the busiest ``window_ms`` against the mean."""
    a = w.arrival_ms[w.warmup:] if len(w) else w.arrival_ms
    if len(a) < 3:
        return {"gap_cv": 0.0, "peak": 0, "mean": 0.0}
    gaps = np.diff(a)
    counts = np.bincount(((a - a[0]) // window_ms).astype(np.int64))
    return {"gap_cv": float(gaps.std() / gaps.mean()) if gaps.mean() > 0 else 0.0, "peak": int(counts.max()),
            "mean": float(len(a) / max(len(counts), 1))}


def synthetic_workload(rates: Mapping[str, float], duration_s: float, *, kind: str = "poisson", cv: float = 3.0,
                       latency_ms: float = 300.0, tenants: Sequence[Tenant] = NO_FLOOR, seed: int = 0) -> Workload:
    """Per task ``rates`` (rows/s), Poisson or gamma (bursty) arrivals."""
    parts = {}
    for k, (task, rate) in enumerate(sorted(rates.items())):
        arr = poisson_arrivals(rate, duration_s, seed + k) if kind == "poisson" else gamma_arrivals(rate, duration_s, seed + k, cv)
        parts[task] = (arr, np.full(len(arr), latency_ms))
    return _assemble(f"{kind}-{sum(rates.values()):g}rps", parts, tenants, seed)


def explicit_workload(requests: Iterable[tuple[float, str]], *, latency_ms: float = 300.0,
                      tenants: Sequence[Tenant] = NO_FLOOR) -> Workload:
    """Hand-written arrivals ``(ms, task)`` for tests."""
    parts: dict[str, tuple[list[float], list[float]]] = {}
    for t, task in requests:
        parts.setdefault(task, ([], []))[0].append(float(t))
        parts[task][1].append(latency_ms)
    arrays = {k: (np.array(a, dtype=float), np.array(b, dtype=float)) for k, (a, b) in parts.items()}
    return _assemble("explicit", arrays, tenants, 0)


def hardware_table(types: Iterable[str]) -> list[tuple[str, str, float]]:
    return [(hw, INSTANCE.get(hw, "?"), HARDWARE[hw].price_per_hour) for hw in types if hw in HARDWARE]


def is_finite(x: float) -> bool:
    return x is not None and math.isfinite(x)
