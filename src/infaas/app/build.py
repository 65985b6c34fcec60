"""The build job: generate and profile every variant of one architecture on
one hardware type. A worker of that hardware type runs it from the job queue
(lane ``build-<hardware>``), so each variant is measured where it will run.

A busy machine (``core/calibration.py``: no quiet profiling round) *defers* the
profile: the variant goes back to ``pending`` with the message ``deferred: machine
busy (calibration x.x times its quiet time); retried in N s``, the job's other
unprofiled variants wait with it, and the job is sent again to its lane to run no
sooner than ``defer_s(n)`` later. After ``MAX_DEFERRALS`` deferrals the figures of
the quietest rounds are taken, flagged (``Profile.busy``, the message), and left for
served latencies to correct: a variant whose served run time drifts from its profile
is re-profiled by a job with ``reprofile`` (``queue_reprofile``), which keeps it
ready on its old figures meanwhile.

A ``lambda`` variant (the serverless tier, ``core/tier.py``) is built from its CPU file on a cpu
worker (``build_lane("lambda")`` is ``build-cpu``). It is profiled twice: as that CPU file (accuracy or
agreement, peak memory and the busy verdict, as any CPU variant), then as a function under the CPU
share of several memory sizes (``runtime/function_profile.py``); its profile holds the chosen
size's warm latency, that size (``Profile.memory_mb``) and its cold start (``load_ms``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import traceback
from typing import Callable

from infaas.app.store import MetadataStore
from infaas.core import tier
from infaas.core.domain import (
    BUILDING,
    FAILED,
    PENDING,
    PROFILING,
    READY,
    SKIPPED,
    Profile,
    Variant,
)
from infaas.core.errors import InfaasError, NotApplicable
from infaas.core.ports import JobQueue, ModelStore
from infaas.runtime.function_profile import FunctionLimits, profile_function
from infaas.runtime.generate import (
    build_variant,
    generation_plan,
    torchscript_key,
    variant_suffix,
)
from infaas.runtime.hardware import build_host
from infaas.runtime.profile import ProfileDeferred, ProfileLimits, profile_in_subprocess

log = logging.getLogger("infaas.build")


def build_lane(hardware: str) -> str:
    """The lane of ``hardware``'s build jobs: its own, or its build host's for a function tier
    (``lambda`` jobs go to ``build-cpu``: a cpu worker builds and profiles them)."""
    return f"build-{build_host(hardware)}"


LOG_LIMIT = 256 << 10  # bytes of build log kept per variant (the end is kept: that is where failures are)
MAX_DEFERRALS = 3  # a busy machine defers a job this many times; then the quietest figures are taken, flagged
MAX_WAIT_S = 300.0  # a job never waits longer than this for its not_before


def defer_s(deferrals: int) -> float:
    """How long a job deferred for the ``deferrals``-th time (0, 1, ...) waits: 15, 30, 60 s."""
    return 15.0 * 2 ** deferrals


def profile_of(hardware: str, result: dict, measured_at: float) -> Profile:
    return Profile(
        hardware=hardware,
        latency_ms={int(b): (p50, p99) for b, (p50, p99) in result["latency_ms"].items()},
        load_ms=result["load_ms"],
        peak_memory_bytes=result["peak_memory_bytes"],
        measured_at=measured_at,
        spread_ms={int(b): (lo, hi) for b, (lo, hi) in (result.get("spread_ms") or {}).items()},
        noise=result.get("noise"),
        rounds=int(result.get("rounds", 0)),
        busy=bool(result.get("busy", False)),
        memory_mb=int(result.get("memory_mb", 0)),
    )


def measure_variant(v: Variant, path: str, arch, validation: str | None, original: str, limits: ProfileLimits,
                    cache_dir: str | None, defer_busy: bool, say: Callable[[str], None] = lambda _t: None) -> dict:
    """The profiling figures of the built file ``path`` of ``v`` (``runtime.profile``'s result). For a
    ``lambda`` variant: measured as its CPU file here, then its latency and load time replaced by the
    function profile of the chosen memory size (``memory_mb`` added, ``spread_ms`` dropped: the
    rounds' spread is the unlimited run's)."""
    if v.hardware != tier.HARDWARE:
        return profile_in_subprocess(path, v.to_dict(), arch.inputs, validation, limits,
                                     cache_dir=cache_dir, reference=original, defer_busy=defer_busy)
    as_cpu = dataclasses.replace(v, hardware=build_host(v.hardware))
    result = profile_in_subprocess(path, as_cpu.to_dict(), arch.inputs, validation, limits,
                                   cache_dir=cache_dir, reference=original, defer_busy=defer_busy)
    found = profile_function(path, arch.inputs, v.max_batch, log=say,
                             limits=FunctionLimits(budget_s=2 * limits.budget_s, min_runs=limits.min_runs,
                                                   timeout_s=limits.timeout_s))
    if found.chosen is None:
        raise NotApplicable("no function memory size fits it: " + "; ".join(
            f"{mb} MB: {why}" for mb, why in sorted(found.left_out.items())))
    chosen = found.chosen
    return {**result, "latency_ms": {str(b): list(p) for b, p in chosen.latency_ms.items()}, "spread_ms": {},
            "load_ms": chosen.cold_start_ms, "memory_mb": chosen.memory_mb}


def describe_noise(profile: Profile) -> str:
    spread = ", ".join(f"{b}: {lo:.3f}-{hi:.3f}" for b, (lo, hi) in sorted(profile.spread_ms.items()))
    return (f"{profile.rounds} rounds, calibration noise {profile.noise if profile.noise is not None else 1.0:.2f}x"
            f"{' (busy: no quiet round)' if profile.busy else ''}; p50 spread between rounds ms: {spread}")


def queue_reprofile(store: MetadataStore, queue: JobQueue, variant_id: str, measured_at: float, reason: str) -> bool:
    """Ask for a re-profile of a ready variant whose profile was measured at ``measured_at``
    (one build job on its hardware's lane). False, and nothing sent, when the variant is no
    longer ready or has another profile by now (someone re-profiled it already)."""
    current = store.get_variant(variant_id)
    if current.status != READY or current.profile is None or current.profile.measured_at != measured_at:
        return False
    queue.send(build_lane(current.hardware), {"architecture": current.architecture, "hardware": current.hardware,
                                              "reprofile": {variant_id: measured_at}, "reason": reason})
    store.put_variant(dataclasses.replace(current, message=f"re-profile queued: {reason}"))
    log.info("re-profile of %s queued: %s", variant_id, reason)
    return True


def estimated_accuracy(declared: float, agreement: float | None) -> float:
    """Without labels: a variant that answers as the registered model does on a share ``agreement`` of
    the rows is right at least as often as the model, less the rows where they differ."""
    if agreement is None:
        return declared
    return round(max(0.0, declared - (1.0 - agreement)), 6)


def log_key(variant: Variant) -> str:
    """Where a variant's full build log is kept in the model store (``ControlPlane.build_logs``)."""
    return f"logs/{variant.architecture}/{variant.id.replace(':', '_')}.log"


class BuildLog:
    """The full story of one variant's build and profile, kept beside the models: the short
    ``Variant.message`` says what happened, this says everything (whole error texts, the
    profiling process's stderr, the figures measured)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock, self.lines = clock, []

    def add(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock()))
        self.lines.extend(f"{stamp} {line}" for line in str(text).rstrip().splitlines() or [""])

    def error(self, exc: BaseException) -> None:
        self.add(f"{type(exc).__name__}: {exc}")
        cause = exc.__cause__ or exc.__context__  # the library's own error behind ours, in full
        if cause is not None:
            self.add("caused by:\n" + "".join(traceback.format_exception(cause)))
        extra = getattr(exc, "log", None)
        if extra:
            self.add("output of the failed step:\n" + extra)

    def text(self) -> bytes:
        data = ("\n".join(self.lines) + "\n").encode()
        return data if len(data) <= LOG_LIMIT else b"[... cut: the start of the log]\n" + data[-LOG_LIMIT:]


def variant_key(variant: Variant, sha256: str) -> str:
    """Where a built variant's file goes: named by the registered file's hash too, so a name
    registered again with other content gets other keys, and a worker still holding the old
    replica sees that it holds another model (``ReplicaCache.get``)."""
    return f"variants/{variant.architecture}/{sha256[:16]}/{variant.id.replace(':', '_')}{variant_suffix(variant)}"


def run_build_job(
    body: dict,
    store: MetadataStore,
    models: ModelStore,
    *,
    limits: ProfileLimits = ProfileLimits(),
    clock: Callable[[], float] = time.time,
    cache_dir: str | None = None,
    queue: JobQueue | None = None,
    sleep: Callable[[float], None] = time.sleep,
    memory_budget_bytes: int | None = None,
) -> list[Variant]:
    """Build and profile the variants named by ``body`` ({architecture, hardware}; a deferred
    job also carries ``deferrals`` and ``not_before``, a re-profile ``reprofile``: {variant id:
    the measured_at of the profile to replace} and ``reason``). ``cache_dir`` keeps what
    runtimes build on first load (TensorRT engines). With ``queue``, a busy machine defers
    the job (sent again to its lane); without one, busy figures are taken at once, flagged.
    ``memory_budget_bytes``: the building worker's replica memory (its hardware type's workers are
    alike): a machine variant whose profiled peak memory is above it is skipped, saying so -- no
    worker could load it, and every query would otherwise be refused as if the objective were
    out of reach."""
    wait = float(body.get("not_before", 0.0)) - clock()
    if wait > 0:
        sleep(min(wait, MAX_WAIT_S))
    deferrals = int(body.get("deferrals", 0))
    defer_busy = queue is not None and deferrals < MAX_DEFERRALS
    reprofile = {k: float(t) for k, t in (body.get("reprofile") or {}).items()}
    deferred = ""  # why this job was deferred, once one variant was
    delay = defer_s(deferrals)
    arch = store.get_architecture(body["architecture"])
    original = models.local_path(arch.model_key)
    validation = models.local_path(arch.validation_key) if arch.validation_key else None
    ts_key = torchscript_key(arch)
    owner_torchscript = models.local_path(ts_key) if models.exists(ts_key) else None
    done = []
    for planned in generation_plan(arch, body["hardware"]):
        current = {v.id: v for v in store.variants_of(arch.name)}.get(planned.id, planned)
        if current.status == READY:
            if (current.id in reprofile and not deferred and current.profile is not None
                    and current.profile.measured_at == reprofile[current.id] and current.model_key):
                current, deferred = _reprofile(current, body.get("reason", ""), store, models, arch, validation, original,
                                               limits, clock, cache_dir, defer_busy, delay)
            done.append(current)
            continue
        if reprofile or deferred:  # a re-profile job builds nothing else; a deferred job waits whole
            if deferred and current.status in (PENDING, BUILDING, PROFILING):
                current = store.put_variant(dataclasses.replace(
                    current, status=PENDING, message=f"deferred: {deferred}; retried in {delay:g} s"))
            done.append(current)
            continue
        v = store.put_variant(dataclasses.replace(current, status=BUILDING, message=""))
        blog = BuildLog(clock)
        blog.add(f"building {v.id}: format {v.format}, runtime {v.runtime}, hardware {v.hardware}, "
                 f"batches up to {v.max_batch}")
        try:
            key = variant_key(v, arch.sha256)
            built = build_variant(v, original, torchscript_path=owner_torchscript)
            models.put(key, built)
            blog.add(f"built {len(built):,} bytes; profiling (validation data: {'yes' if validation else 'no'})")
            v = store.put_variant(dataclasses.replace(v, status=PROFILING, model_key=key))
            result = measure_variant(v, models.local_path(key), arch, validation, original, limits, cache_dir,
                                     defer_busy, blog.add)
            profile = profile_of(v.hardware, result, clock())
            if memory_budget_bytes and not profile.memory_mb and profile.peak_memory_bytes > memory_budget_bytes:
                raise NotApplicable(f"it needs {profile.peak_memory_bytes:,} bytes of memory at batch {v.max_batch}, "
                                    f"over a {v.hardware} worker's replica memory of {memory_budget_bytes:,} "
                                    "(INFAAS_WORKER_MEMORY_BYTES): no worker could load it")
            measured = result["accuracy"]
            agree = result.get("agreement")
            v = store.put_variant(
                dataclasses.replace(
                    v,
                    status=READY,
                    profile=profile,
                    accuracy=measured if measured is not None else estimated_accuracy(arch.accuracy, agree),
                    accuracy_measured=measured is not None,
                    agreement=agree,
                    message=(f"profiled on a busy machine after {deferrals} deferrals ({result.get('busy_reason')}): "
                             "figures may be high; served latencies re-profile it") if profile.busy else "",
                )
            )
            log.info("variant %s ready: p99 at b1 %.3f ms", v.id, profile.latency_at(1))
            blog.add("latency p50 / p99 ms by batch: " + ", ".join(
                f"{b}: {p50:.3f} / {p99:.3f}" for b, (p50, p99) in sorted(profile.latency_ms.items())))
            blog.add(describe_noise(profile))
            if profile.memory_mb:
                blog.add(f"function memory {profile.memory_mb} MB ({tier.cpu_share(profile.memory_mb):.3f} vCPU); "
                         "latency figures are the function's, warm; load is its cold start")
            blog.add(f"load {profile.load_ms:.1f} ms, peak memory {profile.peak_memory_bytes:,} bytes; accuracy "
                     + (f"{measured:.4f} measured" if measured is not None else
                        f"{v.accuracy:.4f} estimated: declared {arch.accuracy:.4f} less the disagreement "
                        f"({result.get('agreement_measure')}: {agree:.4f})" if agree is not None else
                        f"{arch.accuracy:.4f} declared, not measured"))
            blog.add("ready")
        except ProfileDeferred as exc:
            deferred = exc.reason
            v = store.put_variant(dataclasses.replace(v, status=PENDING,
                                                      message=f"deferred: {deferred}; retried in {delay:g} s"))
            log.info("variant %s deferred: %s", v.id, deferred)
            blog.add(f"deferred: {deferred}; the job runs again in {delay:g} s (deferral {deferrals + 1} of "
                     f"{MAX_DEFERRALS})")
        except NotApplicable as exc:
            v = store.put_variant(dataclasses.replace(v, status=SKIPPED, message=exc.message))
            log.info("variant %s skipped: %s", v.id, exc.message)
            blog.error(exc)
            blog.add("skipped")
        except InfaasError as exc:
            v = store.put_variant(dataclasses.replace(v, status=FAILED, message=exc.message))
            log.warning("variant %s failed: %s", v.id, exc.message)
            blog.error(exc)
            blog.add("failed")
        try:
            models.put(log_key(v), blog.text())
        except Exception as exc:  # the log is for people; a store hiccup must not fail the build
            log.warning("could not keep the build log of %s: %s", v.id, exc)
        done.append(v)
    if deferred and queue is not None:
        queue.send(build_lane(body["hardware"]), {**body, "deferrals": deferrals + 1, "not_before": clock() + delay})
    return done


def _reprofile(v: Variant, reason: str, store: MetadataStore, models: ModelStore, arch, validation, original,
               limits: ProfileLimits, clock, cache_dir, defer_busy: bool, delay: float) -> tuple[Variant, str]:
    """Profile a ready variant again from its built file; it stays ready on its old figures until
    the new ones are in (only the latency figures change). Returns (variant, deferral reason)."""
    try:
        result = measure_variant(v, models.local_path(v.model_key), arch, validation, original, limits, cache_dir,
                                 defer_busy)
    except ProfileDeferred as exc:
        log.info("re-profile of %s deferred: %s", v.id, exc.reason)
        return store.put_variant(dataclasses.replace(
            v, message=f"re-profile deferred: {exc.reason}; retried in {delay:g} s")), exc.reason
    except InfaasError as exc:  # it was serving: keep the old figures, say why
        log.warning("re-profile of %s failed: %s", v.id, exc.message)
        return store.put_variant(dataclasses.replace(v, message=f"re-profile failed: {exc.message}")), ""
    old, new = v.profile, profile_of(v.hardware, result, clock())
    fresh = store.get_variant(v.id)  # what the store holds now (a concurrent change wins over ours)
    if fresh.status != READY or fresh.model_key != v.model_key:
        return fresh, ""
    v = store.put_variant(dataclasses.replace(fresh, profile=new, message=f"re-profiled ({reason})" if reason else
                                              "re-profiled"))
    log.info("variant %s re-profiled: p50 at b1 %.3f -> %.3f ms (%s)", v.id,
             old.latency_at(1, "p50") if old else float("nan"), new.latency_at(1, "p50"), describe_noise(new))
    return v, ""
