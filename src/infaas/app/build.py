"""The build job: generate and profile every variant of one architecture on
one hardware type. A worker of that hardware type runs it from the job queue
(lane ``build-<hardware>``), so each variant is measured where it will run.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import traceback
from typing import Callable

from infaas.app.store import MetadataStore
from infaas.core.domain import (
    BUILDING,
    FAILED,
    PROFILING,
    READY,
    SKIPPED,
    Profile,
    Variant,
)
from infaas.core.errors import InfaasError, NotApplicable
from infaas.core.ports import ModelStore
from infaas.runtime.generate import (
    build_variant,
    generation_plan,
    torchscript_key,
    variant_suffix,
)
from infaas.runtime.profile import ProfileLimits, profile_in_subprocess

log = logging.getLogger("infaas.build")


def build_lane(hardware: str) -> str:
    return f"build-{hardware}"


LOG_LIMIT = 256 << 10  # bytes of build log kept per variant (the end is kept: that is where failures are)


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
) -> list[Variant]:
    """Build and profile the variants named by ``body`` ({architecture, hardware}).
    ``cache_dir`` keeps what runtimes build on first load (TensorRT engines)."""
    arch = store.get_architecture(body["architecture"])
    original = models.local_path(arch.model_key)
    validation = models.local_path(arch.validation_key) if arch.validation_key else None
    ts_key = torchscript_key(arch)
    owner_torchscript = models.local_path(ts_key) if models.exists(ts_key) else None
    done = []
    for planned in generation_plan(arch, body["hardware"]):
        current = {v.id: v for v in store.variants_of(arch.name)}.get(planned.id, planned)
        if current.status == READY:
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
            result = profile_in_subprocess(models.local_path(key), v.to_dict(), arch.inputs, validation, limits,
                                           cache_dir=cache_dir, reference=original)
            profile = Profile(
                hardware=v.hardware,
                latency_ms={int(b): (p50, p99) for b, (p50, p99) in result["latency_ms"].items()},
                load_ms=result["load_ms"],
                peak_memory_bytes=result["peak_memory_bytes"],
                measured_at=clock(),
            )
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
                )
            )
            log.info("variant %s ready: p99 at b1 %.3f ms", v.id, profile.latency_at(1))
            blog.add("latency p50 / p99 ms by batch: " + ", ".join(
                f"{b}: {p50:.3f} / {p99:.3f}" for b, (p50, p99) in sorted(profile.latency_ms.items())))
            blog.add(f"load {profile.load_ms:.1f} ms, peak memory {profile.peak_memory_bytes:,} bytes; accuracy "
                     + (f"{measured:.4f} measured" if measured is not None else
                        f"{v.accuracy:.4f} estimated: declared {arch.accuracy:.4f} less the disagreement "
                        f"({result.get('agreement_measure')}: {agree:.4f})" if agree is not None else
                        f"{arch.accuracy:.4f} declared, not measured"))
            blog.add("ready")
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
    return done
