"""Profiling: measure a variant on the hardware it will run on.

``profile_in_subprocess`` runs this module as a child process with a time and
a memory limit, so a hostile or broken model cannot take the worker down, and
so that peak memory is the child's own (its peak resident size after the runs
minus before loading: ``_peak_rss_kib``). The child prints one JSON object:

``{"latency_ms": {"1": [p50, p99], ...}, "spread_ms": {"1": [min, max], ...}, "noise": ..., "busy": ...,
"load_ms": ..., "peak_memory_bytes": ..., "accuracy": ...}``

Latency is measured in rounds (``core/calibration.py``): each round times every
batch size (at least ``min_runs / quiet_rounds`` runs, more while within
``budget_s / quiet_rounds``), after a fixed calibration kernel (``Calibration``)
whose slowdown against its quiet time says how busy the machine was. The
figures are the median over the quiet rounds of each round's p50 and p99;
``spread_ms`` is the min and max of those rounds' p50, ``noise`` their median
calibration slowdown. With no quiet round the result says ``busy`` and why;
``profile_in_subprocess(..., defer_busy=True)`` then raises ``ProfileDeferred``.
The kernel's quiet time is the fastest ever seen on this host, kept in a small
JSON file (``calibration_file``: ``<cache_dir>/calibration.json`` for workers).
Accuracy is measured on the owner's validation data when given: the share of
rows whose predicted class (an integer output, or the argmax of a score
output) equals the label.

Without validation data, a variant's quality is measured as its **agreement**
with the registered model (the original file, run by onnxruntime on the CPU)
on ``AGREEMENT_ROWS`` sample inputs (``agreement``): for a classifier the
share of rows whose predicted class is the same, for any other model the
share of rows whose every output is within 1 % (relative) of the original's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from infaas.core.calibration import NoisePolicy, Round, more_rounds, summarise
from infaas.core.domain import TensorSpec
from infaas.core.errors import ProfilingFailed
from infaas.core.signature import representative

BATCH_SIZES = (1, 2, 4, 8, 16, 32)
AGREEMENT_ROWS = 256
AGREEMENT_RUNS = 64


def _is_classifier(outputs: Mapping[str, np.ndarray]) -> bool:
    return any((v.ndim == 1 and np.issubdtype(v.dtype, np.integer)) or v.ndim == 2 for v in outputs.values())


def agreement(reference: Mapping[str, np.ndarray], variant: Mapping[str, np.ndarray]) -> tuple[float, str]:
    """How often a variant answers as the registered model does, on the same rows, and how that was counted."""
    if _is_classifier(reference):
        same = predicted_labels(reference) == predicted_labels(variant)
        return float(np.mean(same)), "top-1 agreement with the registered model"
    rows = None
    for (name, ref), got in zip(reference.items(), variant.values()):
        if ref.dtype.kind in "OUS":  # strings: the same text
            same = np.asarray(ref).reshape(len(ref), -1) == np.asarray(got).reshape(len(got), -1)
            rows = same.all(axis=1) if rows is None else rows & same.all(axis=1)
            continue
        a = np.asarray(ref, np.float64).reshape(len(ref), -1)
        b = np.asarray(got, np.float64).reshape(len(got), -1)
        close = np.all(np.abs(a - b) <= 0.01 * np.abs(a) + 1e-6, axis=1)
        rows = close if rows is None else rows & close
    return float(np.mean(rows)) if rows is not None else 0.0, "rows within 1 % of the registered model's outputs"


def measure_agreement(reference_path: str, ex, specs: Sequence[TensorSpec], max_batch: int) -> dict:
    """Agreement on ``AGREEMENT_ROWS`` sample rows, run ``max_batch`` rows at a time (at most
    ``AGREEMENT_RUNS`` runs: a model whose requests run alone is compared on fewer rows)."""
    import onnxruntime as ort

    session = ort.InferenceSession(reference_path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    total = min(AGREEMENT_ROWS, AGREEMENT_RUNS * max(1, max_batch))
    if all(s.batch is None for s in specs):  # every run would take the same per-request values
        total = 1
    feed = sample_inputs(specs, total, seed=7)
    ref: dict[str, list] = {}
    got: dict[str, list] = {}
    for start in range(0, total, max_batch):
        chunk = rows_of(feed, specs, start, start + max_batch)
        for k, v in zip(names, session.run(None, chunk)):
            ref.setdefault(k, []).append(v)
        for k, v in ex.run(chunk).items():
            got.setdefault(k, []).append(v)
    ref_rows, got_rows = _rows_of_runs(ref), _rows_of_runs(got)
    value, how = agreement(ref_rows, got_rows)
    return {"agreement": value, "agreement_measure": f"{how} on {total} sample inputs"}


def _rows_of_runs(runs: Mapping[str, list]) -> dict[str, np.ndarray]:
    """The outputs of several runs as rows: joined on axis 0 where every output carries its rows
    there; else (an output batched on another axis, a per-request output) one row per run (compared
    as a whole, within 1 %: never as class scores)."""
    joined = {k: np.concatenate(v) if v[0].ndim else np.stack(v) for k, v in runs.items()}
    if len({len(v) for v in joined.values()}) == 1:
        return joined
    return {k: np.stack([a.reshape(1, -1) for a in v]) for k, v in runs.items()}


@dataclass(frozen=True)
class ProfileLimits:
    timeout_s: float = 300.0
    memory_bytes: int = 4 << 30
    budget_s: float = 0.25  # time spent measuring each batch size (over the quiet rounds together)
    min_runs: int = 20
    noise: NoisePolicy = NoisePolicy()


class ProfileDeferred(ProfilingFailed):
    """The machine was too busy to profile (no quiet round): try again later. ``result`` holds
    the figures of the quietest rounds, ``reason`` says how busy it was."""

    def __init__(self, message: str, *, reason: str = "", result: dict | None = None, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.reason, self.result = reason or message, result or {}


KERNEL = "sin-16384x64/v1"  # names the calibration work: a changed kernel starts a new quiet time


class Calibration:
    """A fixed single-threaded workload (about 4 ms on one core of a 2020s server) timed
    between measurements. Its slowdown is the larger of wall time over the fastest time
    seen on this host (``quiet_ms``, kept in ``path``) and wall time over its own CPU time
    (time spent preempted: this needs no quiet time, so a first profile on a busy host
    still sees it)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.x = np.linspace(0.0, 1.0, 1 << 14)
        self.y = np.empty_like(self.x)
        self.stored = self._read()
        self.seen = float("inf")

    def _read(self) -> float:
        try:
            with open(self.path) as f:  # type: ignore[arg-type]
                d = json.load(f)
            return float(d["quiet_ms"]) if d.get("kernel") == KERNEL and float(d["quiet_ms"]) > 0 else float("inf")
        except (OSError, TypeError, ValueError, KeyError):
            return float("inf")

    @property
    def quiet_ms(self) -> float:
        return min(self.stored, self.seen)

    def measure(self) -> float:
        """Run the kernel once; its slowdown (1.0: as fast as ever seen here, not preempted)."""
        c, t = time.thread_time(), time.perf_counter()
        for _ in range(64):
            np.sin(self.x, out=self.y)
        wall = (time.perf_counter() - t) * 1000
        cpu = (time.thread_time() - c) * 1000
        self.seen = min(self.seen, wall)
        return max(1.0, wall / self.quiet_ms, wall / cpu if cpu > 0 else 1.0)

    def keep(self) -> None:
        """Keep the fastest time seen on this host for the next profiles."""
        if not self.path or self.seen >= self._read():
            return
        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            tmp = f"{self.path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump({"kernel": KERNEL, "quiet_ms": self.seen}, f)
            os.replace(tmp, self.path)
        except OSError:
            pass  # a read-only cache: the next profile measures its own


def sample_inputs(specs: Sequence[TensorSpec], batch: int, validation: np.ndarray | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """A batch of inputs for profiling at the signature's representative shapes (``batch`` rows on
    each input's batch axis; a per-request input at its own shape): validation rows when there are
    some (the first input, batched on axis 0), else random floats, short words, and integers and
    booleans of 0 and 1 (a valid token id, index, mask or flag for any model that takes them)."""
    rng = np.random.default_rng(seed)
    out = {}
    for i, spec in enumerate(specs):
        shape = list(representative(spec, batch))
        if i == 0 and validation is not None and spec.batch == 0:
            reps = -(-batch // len(validation))
            out[spec.name] = np.ascontiguousarray(np.concatenate([validation] * reps)[:batch].astype(spec.dtype))
        elif np.issubdtype(np.dtype(spec.dtype), np.floating):
            out[spec.name] = rng.random(shape, dtype=np.float32).astype(spec.dtype)
        elif spec.dtype == "object":  # a string tensor: short words
            out[spec.name] = rng.integers(0, 100, shape).astype(str).astype(object)
        else:
            out[spec.name] = rng.integers(0, 2, shape).astype(spec.dtype)
    return out


def rows_of(feed: Mapping[str, np.ndarray], specs: Sequence[TensorSpec], start: int, stop: int) -> dict[str, np.ndarray]:
    """Rows ``start:stop`` of a sample feed, on each input's batch axis (a per-request input whole)."""
    out = {}
    for spec in specs:
        a = feed[spec.name]
        if spec.batch is not None:
            index = [slice(None)] * a.ndim
            index[spec.batch] = slice(start, stop)
            a = a[tuple(index)]
        out[spec.name] = np.ascontiguousarray(a)
    return out


def predicted_labels(outputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """The class per row: the first integer output of shape (N,), else argmax of the first (N, C) output."""
    values = list(outputs.values())
    for v in values:
        if v.ndim == 1 and np.issubdtype(v.dtype, np.integer):
            return v
    for v in values:
        if v.ndim == 2:
            return v.argmax(axis=1)
    return values[0].reshape(len(values[0]), -1)[:, 0]


def measure_latency(ex, max_batch: int, specs: Sequence[TensorSpec], val_x: np.ndarray | None, limits: ProfileLimits,
                    calibration_file: str | None, on_cpu: bool = True):
    """Rounds of timed runs with the calibration kernel between them, until enough quiet rounds
    or the most rounds (``core.calibration``); returns the ``NoiseSummary``. A round's noise is
    the median slowdown of its kernels and, on the CPU (where the runs execute on this thread),
    at least its wall time over its CPU time: a round spent partly preempted is not quiet, even
    where each short kernel happened to run through."""
    policy = limits.noise
    calibration = Calibration(calibration_file)
    sizes = [b for b in BATCH_SIZES if b <= max_batch]
    feeds = {b: sample_inputs(specs, b, val_x, seed=b) for b in sizes}
    for b in sizes:
        for _ in range(3):
            ex.run(feeds[b])
    share = max(1, policy.quiet_rounds)
    slice_s = limits.budget_s / share
    runs_min = max(5, -(-limits.min_runs // share))
    rounds: list[Round] = []
    while True:
        noises, latency = [], {}
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        for b in sizes:
            noises.append(calibration.measure())
            ex.run(feeds[b])  # the kernel evicted the model's data from the caches
            times = []
            deadline = time.perf_counter() + slice_s
            while len(times) < runs_min or (time.perf_counter() < deadline and len(times) < 2000):
                t = time.perf_counter()
                ex.run(feeds[b])
                times.append((time.perf_counter() - t) * 1000)
            latency[b] = (float(np.percentile(times, 50)), float(np.percentile(times, 99)))
        noises.append(calibration.measure())
        cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
        preempted = wall / cpu if on_cpu and cpu > 0 else 1.0
        rounds.append(Round(max(float(np.median(noises)), preempted), latency))
        if not more_rounds(rounds, policy):
            break
    calibration.keep()
    return summarise(rounds, policy)


def _peak_rss_kib(reset: bool = False) -> int:
    """This process's peak resident memory in KiB: ``VmHWM`` of its own address space (with ``reset``,
    first brought down to what it holds now), where Linux has it. Not ``ru_maxrss``: that keeps the
    peak of the process it was forked from (a worker holding its replicas: hundreds of MB), so a
    model's own growth under it was measured as nothing."""
    if reset:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset the peak to the current size
        except OSError:
            pass
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):  # not Linux: the rusage figure
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(path: str, variant: dict, specs: Sequence[TensorSpec], validation: str | None, limits: ProfileLimits,
            cache_dir: str | None = None, reference: str | None = None, calibration_file: str | None = None) -> dict:
    """Runs in the child process. Accuracy is measured for every variant, so
    reduced-precision ones (int8, fp16) get their own figure, not the original's."""
    from infaas.core.domain import Variant
    from infaas.runtime.executor import load_executor

    v = Variant.from_dict(variant)
    val_x = val_y = None
    if validation:
        with np.load(validation) as z:
            val_x, val_y = z["inputs"], z["labels"]
    base_rss = _peak_rss_kib(reset=True)
    t0 = time.perf_counter()
    ex = load_executor(v, path, cache_dir=cache_dir)
    ex.run(sample_inputs(specs, 1, val_x))
    load_ms = (time.perf_counter() - t0) * 1000
    summary = measure_latency(ex, v.max_batch, specs, val_x, limits, calibration_file, on_cpu=v.hardware == "cpu")
    latency = {str(b): list(pair) for b, pair in summary.latency_ms.items()}
    accuracy = None
    if val_x is not None:
        preds = []
        for i in range(0, len(val_x), v.max_batch):
            chunk = val_x[i : i + v.max_batch].astype(specs[0].dtype)
            preds.append(predicted_labels(ex.run({specs[0].name: chunk})))
        accuracy = float((np.concatenate(preds) == val_y).mean())
    peak = max(0, _peak_rss_kib() - base_rss) * 1024  # the replica's: before the reference model is loaded
    quality = {}
    if val_x is None and reference:
        quality = measure_agreement(reference, ex, specs, v.max_batch)
    return {"latency_ms": latency, "spread_ms": {str(b): list(p) for b, p in summary.spread_ms.items()},
            "noise": round(summary.noise, 3), "rounds": summary.rounds, "busy": summary.busy,
            "busy_reason": summary.reason, "load_ms": load_ms, "peak_memory_bytes": peak, "accuracy": accuracy,
            **quality}


def profile_in_subprocess(
    path: str, variant: dict, specs: Sequence[TensorSpec], validation: str | None = None, limits: ProfileLimits = ProfileLimits(),
    *, cache_dir: str | None = None, reference: str | None = None, calibration_file: str | None = None,
    defer_busy: bool = False,
) -> dict:
    """Profile in a child process under a time and address-space limit (the
    address-space limit for CPU variants only: CUDA and the Neuron runtime
    reserve far more address space than they use). ``defer_busy``: raise
    ``ProfileDeferred`` when the machine was too busy (else the result says ``busy``).
    ``calibration_file``: where this host's quiet calibration time is kept
    (default ``<cache_dir>/calibration.json``, else one in the temporary directory)."""
    if calibration_file is None:
        calibration_file = (os.path.join(cache_dir, "calibration.json") if cache_dir else
                            os.path.join(tempfile.gettempdir(), f"infaas-calibration-{os.getuid()}.json"))
    request = json.dumps(
        {
            "path": path,
            "variant": variant,
            "specs": [s.to_record() for s in specs],
            "validation": validation,
            "budget_s": limits.budget_s,
            "min_runs": limits.min_runs,
            "cache_dir": cache_dir,
            "reference": reference,
            "calibration_file": calibration_file,
            "noise": dataclasses.asdict(limits.noise),
        }
    )
    cpu_only = variant.get("hardware", "cpu") == "cpu"

    def set_limits() -> None:  # runs in the child before exec
        if cpu_only:
            resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))

    env = dict(os.environ, OMP_NUM_THREADS="1")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "infaas.runtime.profile"],
            input=request,
            capture_output=True,
            text=True,
            timeout=limits.timeout_s,
            preexec_fn=set_limits,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise ProfilingFailed(f"profiling took longer than {limits.timeout_s:g} s and was stopped") from None
    if proc.returncode != 0:
        tail = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        if proc.returncode < 0 or "MemoryError" in proc.stderr or "bad_alloc" in proc.stderr:
            err = ProfilingFailed(f"profiling process died (memory limit {limits.memory_bytes} bytes?): {tail[0][:300]}")
        else:
            err = ProfilingFailed(f"profiling failed: {tail[0][:300]}")
        err.log = proc.stderr or ""  # the whole stderr, for the variant's build log
        raise err
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if defer_busy and result.get("busy"):
        reason = result.get("busy_reason") or "machine busy"
        raise ProfileDeferred(f"deferred: {reason}", reason=reason, result=result)
    return result


def _main() -> None:
    req = json.loads(sys.stdin.read())
    specs = [TensorSpec.from_dict(s) for s in req["specs"]]
    limits = ProfileLimits(budget_s=req["budget_s"], min_runs=req["min_runs"], noise=NoisePolicy(**req["noise"]))
    result = measure(req["path"], req["variant"], specs, req["validation"], limits, req.get("cache_dir"),
                     req.get("reference"), req.get("calibration_file"))
    print(json.dumps(result))


if __name__ == "__main__":
    _main()
