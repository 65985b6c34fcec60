"""The build job: generate and profile every variant of one architecture on
one hardware type. A worker of that hardware type runs it from the job queue
(lane ``build-<hardware>``), so each variant is measured where it will run.
"""

from __future__ import annotations

import dataclasses
import logging
import time
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


def variant_key(variant: Variant) -> str:
    return f"variants/{variant.architecture}/{variant.id.replace(':', '_')}{variant_suffix(variant)}"


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
        try:
            key = variant_key(v)
            models.put(key, build_variant(v, original, torchscript_path=owner_torchscript))
            v = store.put_variant(dataclasses.replace(v, status=PROFILING, model_key=key))
            result = profile_in_subprocess(models.local_path(key), v.to_dict(), arch.inputs, validation, limits,
                                           cache_dir=cache_dir)
            profile = Profile(
                hardware=v.hardware,
                latency_ms={int(b): (p50, p99) for b, (p50, p99) in result["latency_ms"].items()},
                load_ms=result["load_ms"],
                peak_memory_bytes=result["peak_memory_bytes"],
                measured_at=clock(),
            )
            measured = result["accuracy"]
            v = store.put_variant(
                dataclasses.replace(
                    v,
                    status=READY,
                    profile=profile,
                    accuracy=measured if measured is not None else arch.accuracy,
                    accuracy_measured=measured is not None,
                )
            )
            log.info("variant %s ready: p99 at b1 %.3f ms", v.id, profile.latency_at(1))
        except NotApplicable as exc:
            v = store.put_variant(dataclasses.replace(v, status=SKIPPED, message=exc.message))
            log.info("variant %s skipped: %s", v.id, exc.message)
        except InfaasError as exc:
            v = store.put_variant(dataclasses.replace(v, status=FAILED, message=exc.message))
            log.warning("variant %s failed: %s", v.id, exc.message)
        done.append(v)
    return done
