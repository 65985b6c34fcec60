"""Profile a variant as a Lambda function runs it: under the CPU share of a memory size.

Lambda gives a function CPU time in proportion to its memory (``core.tier.cpu_share``: one vCPU at
1,769 MB). A function of 512 MB gets 0.29 of a vCPU: its code runs for 2.9 ms of every 10 ms and
is held for the rest, which is how a CFS quota (``cpu.max``) behaves. ``measure_function`` runs a
variant in a child process limited that way, and measures

* its **warm latency** per batch size (p50, p99 of back-to-back runs: the quota is spent as under
  sustained load, the conservative case for short runs), and
* its **cold start**, apart: the child is a fresh interpreter that imports onnxruntime, loads the
  model from a folder (as the function does from ``/tmp``) and runs it once, all under the same
  limit; the time from starting it to that first answer, plus the S3 download of the model at an
  assumed throughput (``core.tier.download_ms``, kept as its own term).

How the CPU is limited (``limiter``: which one ran):

* ``cgroup-v2``: a child cgroup with ``cpu.max`` = "<share * period> <period>", where this process
  may create one with the cpu controller (as root, or with a delegated subtree);
* ``cgroup-v1``: the same quota through ``cpu.cfs_quota_us``/``cpu.cfs_period_us`` on a v1 cpu
  hierarchy;
* ``duty-cycle``: otherwise (a worker running as an unprivileged user) the parent throttles the
  child itself: SIGCONT, ``share / threads`` of a 10 ms period, SIGSTOP, the rest of the period,
  on an absolute schedule (sleep overshoot does not accumulate). With every thread busy that is
  the quota's share; a run shorter than the window is held only when it crosses the window's end.

The child's onnxruntime session runs ``intra_op_num_threads = ceil(share)`` (1 up to 1,769 MB, 2 up
to 3,538 MB, ...): what the function sets. A host with fewer cores than that measures slower than
Lambda would run. A memory size smaller than the child's peak resident memory is left out (the
function would run out of memory).

``profile_function`` does this at several memory sizes (``DEFAULT_MEMORY_MB``) and chooses one
(``core.tier.choose_memory``). The build job of a ``lambda`` variant (``app/build.py``) records the
chosen size's figures in the variant's ``Profile`` (``latency_ms``, ``load_ms`` = cold start,
``memory_mb``).

Run as ``python -m infaas.runtime.function_profile`` it is the child: one JSON request on stdin,
a ``ready`` line when loaded, a result line when measured.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from infaas.core import tier
from infaas.core.domain import TensorSpec
from infaas.core.errors import NotApplicable, ProfilingFailed
from infaas.core.tier import FunctionProfile

DEFAULT_MEMORY_MB = (512, 1024, 1769, 3008)
PERIOD_S = 0.010  # the quota's period: CPU time is granted per 10 ms
BATCH_SIZES = (1, 2, 4, 8, 16, 32)  # as runtime.profile
SLOWDOWN_BOUND = 2.0  # without an objective, the cheapest size within this many times the fastest p99 at batch 1
LIMITERS = ("auto", "cgroup", "duty-cycle")


@dataclass(frozen=True)
class FunctionLimits:
    budget_s: float = 0.6  # warm runs per memory size, over its batch sizes together (wall time)
    min_runs: int = 15  # at least this many timed runs per batch size
    timeout_s: float = 120.0  # one child, start to result
    limiter: str = "auto"  # "auto": a cgroup where one can be made, else the duty cycle


@dataclass(frozen=True)
class Measurement:
    """One child's figures at one CPU share."""

    share: float
    threads: int
    limiter: str
    latency_ms: dict[int, tuple[float, float]]
    start_ms: float  # process start to the first answer, measured by the parent
    import_ms: float  # the child's own phases: imports, model load, first run
    load_ms: float
    first_run_ms: float
    maxrss_bytes: int


@dataclass(frozen=True)
class FunctionProfiling:
    profiles: tuple[FunctionProfile, ...]  # the sizes that fit, smallest first
    chosen: FunctionProfile | None
    measurements: dict[int, Measurement] = field(default_factory=dict)  # memory_mb -> figures
    download_ms: float = 0.0  # the S3 download term inside every cold start
    left_out: dict[int, str] = field(default_factory=dict)  # memory_mb -> why not profiled or not eligible


# --------------------------------------------------------------------------- limiting the CPU
def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


class CpuGroup:
    """A cgroup of its own for one child, holding it to ``share`` CPUs; removed by ``close``."""

    def __init__(self, path: str, version: int) -> None:
        self.path, self.version = path, version
        self.procs = os.path.join(path, "cgroup.procs")

    @property
    def limiter(self) -> str:
        return f"cgroup-v{self.version}"

    def enter(self) -> None:  # runs in the child between fork and exec
        _write(self.procs, str(os.getpid()))

    def close(self) -> None:
        for _ in range(50):  # the group empties once the child is reaped
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.02)

    @staticmethod
    def create(share: float, period_s: float = PERIOD_S) -> "CpuGroup | None":
        """A cgroup limited to ``share`` CPUs, or None where this process may not make one."""
        period_us = int(period_s * 1e6)
        quota_us = max(1000, int(round(share * period_us)))
        name = f"infaas-function-{os.getpid()}-{threading.get_ident() % 100000}-{time.monotonic_ns() % 10**9}"
        for version, base in _cpu_hierarchies():
            path = os.path.join(base, name)
            try:
                os.mkdir(path)
            except OSError:
                continue
            group = CpuGroup(path, version)
            try:
                if version == 2:
                    if "cpu" not in _read(os.path.join(path, "cgroup.controllers")).split():
                        _write(os.path.join(base, "cgroup.subtree_control"), "+cpu")
                    _write(os.path.join(path, "cpu.max"), f"{quota_us} {period_us}")
                else:
                    _write(os.path.join(path, "cpu.cfs_period_us"), str(period_us))
                    _write(os.path.join(path, "cpu.cfs_quota_us"), str(quota_us))
                if not os.access(group.procs, os.W_OK):
                    raise PermissionError(group.procs)
                return group
            except OSError:
                group.close()
        return None


def _cpu_hierarchies() -> list[tuple[int, str]]:
    """Where this process's cgroup is, on a hierarchy with the cpu controller: v2 first."""
    try:
        own = [line.split(":", 2) for line in _read("/proc/self/cgroup").splitlines() if line.count(":") >= 2]
        mounts = [line.split() for line in _read("/proc/self/mounts").splitlines()]
    except OSError:
        return []
    out = []
    v2 = next((p for i, c, p in own if i == "0" and c == ""), None)
    for m in mounts:
        if len(m) >= 4 and m[2] == "cgroup2" and v2 is not None:
            out.append((2, os.path.join(m[1], v2.lstrip("/"))))
    v1 = next((p for i, c, p in own if "cpu" in c.split(",")), None)
    for m in mounts:
        if len(m) >= 4 and m[2] == "cgroup" and "cpu" in m[3].split(",") and v1 is not None:
            out.append((1, os.path.join(m[1], v1.lstrip("/"))))
    return out


class DutyCycle:
    """Hold a process to ``duty`` of every ``period_s``: SIGCONT, run, SIGSTOP, wait; from a thread of
    this process, on an absolute schedule. ``stop`` leaves the process running."""

    def __init__(self, pid: int, duty: float, period_s: float = PERIOD_S) -> None:
        self.pid, self.duty, self.period_s = pid, duty, period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"duty-cycle-{pid}", daemon=True)

    def start(self) -> "DutyCycle":
        self._thread.start()
        return self

    def _run(self) -> None:
        on, off = self.duty * self.period_s, (1.0 - self.duty) * self.period_s
        t = time.perf_counter()
        try:
            while not self._stop.is_set():
                os.kill(self.pid, signal.SIGCONT)
                t += on
                _sleep_until(t)
                if self._stop.is_set():
                    break
                os.kill(self.pid, signal.SIGSTOP)
                t += off
                _sleep_until(t)
                now = time.perf_counter()
                if now - t > self.period_s:  # this thread was held itself: start a fresh period
                    t = now
        except ProcessLookupError:
            return
        finally:
            try:
                os.kill(self.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _sleep_until(t: float) -> None:
    left = t - time.perf_counter()
    if left > 0:
        time.sleep(left)


# --------------------------------------------------------------------------- one child
def measure_function(path: str, specs: Sequence[TensorSpec], max_batch: int, *, share: float,
                     threads: int | None = None, limits: FunctionLimits = FunctionLimits()) -> Measurement:
    """Run the model at ``path`` in a fresh child held to ``share`` CPUs (a share of 1.0 or more with
    as many threads is not limited) and measure its start and its warm latency per batch size."""
    if limits.limiter not in LIMITERS:
        raise ValueError(f"limiter must be one of {LIMITERS}, not {limits.limiter!r}")
    threads = threads or max(1, math.ceil(share - 1e-9))
    duty = min(1.0, share / threads)
    group = None
    if duty < 1.0 and limits.limiter in ("auto", "cgroup"):
        group = CpuGroup.create(share)
        if group is None and limits.limiter == "cgroup":
            raise ProfilingFailed("no cgroup with the cpu controller can be made here")
    limiter = "none" if duty >= 1.0 else group.limiter if group else "duty-cycle"
    sizes = [b for b in BATCH_SIZES if b <= max(1, max_batch)]
    request = json.dumps({"path": path, "specs": [s.to_record() for s in specs], "sizes": sizes, "threads": threads,
                          "budget_s": limits.budget_s, "min_runs": limits.min_runs})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MKL_"))}
    env.update(OMP_NUM_THREADS=str(threads), PYTHONDONTWRITEBYTECODE="1")
    throttle = None
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "infaas.runtime.function_profile"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=group.enter if group else None)
    if limiter == "duty-cycle":
        throttle = DutyCycle(proc.pid, duty).start()
    timer = threading.Timer(limits.timeout_s, proc.kill)
    timer.start()
    stderr = ""
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(request + "\n")
        proc.stdin.flush()
        ready_line = proc.stdout.readline()
        start_ms = (time.perf_counter() - started) * 1000
        result_line = proc.stdout.readline() if ready_line else ""
    finally:
        timer.cancel()
        if throttle is not None:
            throttle.stop()
        try:
            _, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
        if group is not None:
            group.close()
    if not ready_line or not result_line or proc.returncode != 0:
        tail = (stderr or "").strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        why = f"stopped after {limits.timeout_s:g} s" if proc.returncode == -signal.SIGKILL else tail[0][:300]
        err = ProfilingFailed(f"function profile at {share:.3f} CPU failed: {why}")
        err.log = stderr or ""
        raise err
    ready, result = json.loads(ready_line), json.loads(result_line)
    return Measurement(share=share, threads=threads, limiter=limiter,
                       latency_ms={int(b): (float(p[0]), float(p[1])) for b, p in result["latency_ms"].items()},
                       start_ms=start_ms, import_ms=ready["import_ms"], load_ms=ready["load_ms"],
                       first_run_ms=ready["first_run_ms"], maxrss_bytes=int(result["maxrss_bytes"]))


# --------------------------------------------------------------------------- several memory sizes
def profile_function(path: str, specs: Sequence[TensorSpec], max_batch: int, *,
                     memory_sizes: Sequence[int] = DEFAULT_MEMORY_MB, objective_ms: float | None = None,
                     limits: FunctionLimits = FunctionLimits(), log: Callable[[str], None] | None = None,
                     size_bytes: int | None = None) -> FunctionProfiling:
    """Measure the variant at ``path`` as a function of each memory size and choose one: the cheapest
    per request whose p99 at batch 1 meets ``objective_ms`` (default: ``SLOWDOWN_BOUND`` times the
    fastest size's). The model is run from a folder of its own, as the function runs it from /tmp;
    every cold start includes the S3 download of ``size_bytes`` (default: the file's size)."""
    say = log or (lambda _text: None)
    size = os.path.getsize(path) if size_bytes is None else size_bytes
    if size > tier.TMP_BYTES:
        raise NotApplicable(f"the model ({size:,} bytes) does not fit a function's /tmp ({tier.TMP_BYTES:,} bytes)")
    fetch_ms = tier.download_ms(size)
    folder = tempfile.mkdtemp(prefix="infaas-function-")
    profiles, measured, left_out = [], {}, {}
    try:
        local = os.path.join(folder, "model" + os.path.splitext(path)[1])
        shutil.copyfile(path, local)
        for memory_mb in sorted(memory_sizes):
            share = tier.cpu_share(memory_mb)
            say(f"function profile at {memory_mb} MB ({share:.3f} vCPU, {tier.threads_for(memory_mb)} thread(s))")
            m = measure_function(local, specs, max_batch, share=share, threads=tier.threads_for(memory_mb), limits=limits)
            measured[memory_mb] = m
            cold = m.start_ms + fetch_ms
            say(f"  {m.limiter}: warm p50 / p99 ms by batch: " + ", ".join(
                f"{b}: {p50:.3f} / {p99:.3f}" for b, (p50, p99) in sorted(m.latency_ms.items()))
                + f"; cold start {cold:.1f} ms (start {m.start_ms:.1f}: imports {m.import_ms:.1f}, load {m.load_ms:.1f}, "
                  f"first run {m.first_run_ms:.1f}; S3 download {fetch_ms:.1f}); peak memory {m.maxrss_bytes / 2**20:.0f} MiB")
            if m.maxrss_bytes > memory_mb * 2**20:
                left_out[memory_mb] = f"peak memory {m.maxrss_bytes / 2**20:.0f} MiB is above {memory_mb} MB"
                say(f"  left out: {left_out[memory_mb]}")
                continue
            profiles.append(FunctionProfile(memory_mb, m.latency_ms, cold))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if objective_ms is None and profiles:
        objective_ms = SLOWDOWN_BOUND * min(p.latency_at(1) for p in profiles)
    chosen = tier.choose_memory(profiles, objective_ms, 1) if profiles else None
    if chosen is not None:
        say(f"chosen: {chosen.memory_mb} MB (cheapest whose p99 at batch 1 is within {objective_ms:.3f} ms: "
            f"{chosen.cost_per_request(1) * 1e6:.4f} USD per million warm invocations at batch 1)")
    return FunctionProfiling(tuple(profiles), chosen, measured, fetch_ms, left_out)


# --------------------------------------------------------------------------- the child
def _child() -> None:
    """A fresh interpreter: imports, load, one run (the cold start), then warm runs per batch size."""
    t0 = time.perf_counter()
    req = json.loads(sys.stdin.readline())
    import numpy as np
    import onnxruntime as ort

    from infaas.runtime.profile import sample_inputs

    t1 = time.perf_counter()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(req["threads"])
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(req["path"], sess_options=opts, providers=["CPUExecutionProvider"])
    t2 = time.perf_counter()
    specs = [TensorSpec.from_dict(s) for s in req["specs"]]
    session.run(None, sample_inputs(specs, 1, seed=1))
    t3 = time.perf_counter()
    print(json.dumps({"import_ms": (t1 - t0) * 1000, "load_ms": (t2 - t1) * 1000, "first_run_ms": (t3 - t2) * 1000}),
          flush=True)
    sizes = req["sizes"]
    slice_s = float(req["budget_s"]) / len(sizes)
    latency = {}
    for b in sizes:
        feed = sample_inputs(specs, b, seed=b)
        for _ in range(2):
            session.run(None, feed)
        times: list[float] = []
        deadline = time.perf_counter() + slice_s
        while len(times) < int(req["min_runs"]) or (time.perf_counter() < deadline and len(times) < 2000):
            t = time.perf_counter()
            session.run(None, feed)
            times.append((time.perf_counter() - t) * 1000)
        latency[str(b)] = [float(np.percentile(times, 50)), float(np.percentile(times, 99))]
    print(json.dumps({"latency_ms": latency, "maxrss_bytes": _peak_rss()}), flush=True)


def _peak_rss() -> int:
    """This process's peak resident memory since its exec (``VmHWM``; ``ru_maxrss`` would carry the
    peak of the parent it was forked from)."""
    try:
        for line in _read("/proc/self/status").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


if __name__ == "__main__":
    _child()
