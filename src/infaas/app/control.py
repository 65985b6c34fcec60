"""The control plane: register architectures, plan and build their variants, describe the catalogue.

Transports (the FastAPI app, the Lambda handlers, the CLI) only decode, call one method here, and encode.
"""

from __future__ import annotations

import io
import math
import time
import zipfile
import zlib
from typing import Any, Callable

import numpy as np

from infaas.app.store import MetadataStore
from infaas.core.domain import (
    DEFAULT_TENANT,
    READY,
    Architecture,
    TensorSpec,
    Variant,
    check_name,
)
from infaas.core.domain import Task as TaskName
from infaas.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from infaas.core.ports import JobQueue, ModelStore
from infaas.core.settings import Settings
from infaas.core.signature import Signature, describe, settle


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
        signature: Any = None,
    ) -> tuple[Architecture, bool]:
        """Register a model; returns (architecture, created). Building and
        profiling its variants happens later, on workers, through the job queue.
        ``signature`` overrides what is inferred of the model's signature (``core.signature``,
        JSON text or a dict); one that cannot be settled is refused here, naming the input."""
        check_name(name, "name")
        task_id = TaskName.parse(task).id
        if not isinstance(accuracy, (int, float)) or not math.isfinite(accuracy) or not 0.0 <= accuracy <= 1.0:
            raise InvalidInput(f"accuracy must be a number between 0 and 1, got {accuracy!r}", field="accuracy")
        if visibility not in ("private", "shared"):
            raise InvalidInput(f"visibility must be 'private' or 'shared', got {visibility!r}", field="visibility")
        from infaas.runtime.validate import (  # onnx: only where a model is registered
            ModelLimits,
            check_model,
        )

        checked = check_model(data, ModelLimits(max_bytes=self.settings.max_upload_bytes))
        hint = self._check_validation(validation, checked.inputs, checked.outputs) if validation is not None else None
        sig = settle(checked.inputs, checked.outputs, signature, hint, checked.unranked)

        existing = self.store.find_architecture(name)
        if existing is not None:
            return self._same_or_conflict(existing, checked.sha256, tenant, task_id, float(accuracy), visibility,
                                          sig), False
        quota = self.settings.max_models_per_tenant
        if quota and sum(1 for a in self.store.architectures() if a.tenant == tenant) >= quota:
            # every model costs builds on the shared workers and space in every listing
            raise Forbidden(f"tenant {tenant!r} holds {quota} architectures, the limit (INFAAS_MAX_MODELS_PER_TENANT); "
                            "delete one to register another", field="name")
        self._check_task_inputs(task_id, sig.inputs, tenant)
        val_key = None
        if validation is not None:
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
            inputs=sig.inputs,
            outputs=sig.outputs,
            visibility=visibility,
            validation_key=val_key,
            created_at=self.clock(),
            size_bytes=checked.size_bytes,
            signature_notes=sig.notes,
        )
        stored = self.store.create_architecture(arch)
        if stored is not arch:  # lost a race with another registration of the same name
            return self._same_or_conflict(stored, checked.sha256, tenant, task_id, float(accuracy), visibility,
                                          sig), False
        from infaas.app.build import build_lane
        from infaas.runtime.generate import generation_plan

        for hardware in self.build_hardware():
            for v in generation_plan(arch, hardware):
                self.store.put_variant(v)
            self.queue.send(build_lane(hardware), {"architecture": name, "hardware": hardware})
        return arch, True

    def build_hardware(self) -> list[str]:
        """Hardware types this deployment builds for (``INFAAS_BUILD_HARDWARE``) that have a plan."""
        from infaas.runtime.generate import PLANS

        return [h for h in self.settings.build_hardware_types if h in PLANS]

    @staticmethod
    def _same_or_conflict(existing: Architecture, sha256: str, tenant: str, task: str, accuracy: float,
                          visibility: str, sig: Signature | None = None) -> Architecture:
        """A registration repeated as it was is answered with the stored architecture (200); one
        that differs in anything is a 409 naming what differs, never a silent keep."""
        if existing.sha256 != sha256 or existing.tenant != tenant:
            raise Conflict(
                f"an architecture named {existing.name!r} already exists with different content; "
                "register the new file under a new name",
                field="name",
            )
        for fld, old, new in (("task", existing.task, task), ("accuracy", existing.accuracy, accuracy),
                              ("visibility", existing.visibility, visibility)):
            if old != new:
                raise Conflict(
                    f"{existing.name!r} is registered with {fld} {old!r}, not {new!r}; delete it first "
                    f"(infaas models delete {existing.name}) or register under a new name",
                    field=fld,
                )
        if sig is not None and (existing.inputs, existing.outputs) != (sig.inputs, sig.outputs):
            raise Conflict(
                f"{existing.name!r} is registered with another signature ({describe(existing.inputs, existing.outputs)}); "
                f"delete it first (infaas models delete {existing.name}) or register under a new name",
                field="signature",
            )
        return existing

    def _check_task_inputs(self, task: str, inputs: tuple[TensorSpec, ...], tenant: str) -> None:
        """Architectures of one task answer the same queries, so they take the same inputs. Only the
        ones the registrant may see are compared: another tenant's private task reveals nothing."""
        for other in self.store.architectures(task):
            if not (other.tenant == tenant or other.visibility == "shared"):
                continue
            if _shape_key(other.inputs) != _shape_key(inputs):
                raise InvalidInput(
                    f"task {task!r} takes inputs {[t.to_dict() for t in other.inputs]}, "
                    f"this model takes {[t.to_dict() for t in inputs]}",
                    field="file",
                )
            return

    @staticmethod
    def _check_validation(blob: bytes, inputs: tuple[TensorSpec, ...],
                          outputs: tuple[TensorSpec, ...] = ()) -> tuple[int, ...]:
        """Check a validation .npz; returns the shape of its inputs (sizes for the signature)."""
        _check_unpacked_size(blob, VALIDATION_MAX_BYTES)
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
        _check_labels(y, outputs)
        return tuple(int(n) for n in x.shape)

    def model_status(self, name: str, tenant: str = DEFAULT_TENANT) -> dict[str, Any]:
        from infaas.runtime.hardware import waiting_reason

        arch = self.visible_architecture(name, tenant)
        variants = self.store.variants_of(name)
        described = [describe_variant(v) for v in variants]
        if any(v.status == "pending" for v in variants):
            workers = self.store.workers()
            for d, v in zip(described, variants):
                reason = waiting_reason(v, workers)
                if reason:
                    d["message"] = f"waiting: {reason}"
        return {**describe_architecture(arch, variants), "status": overall_status(variants), "variants": described}

    def visible_architecture(self, name: str, tenant: str) -> Architecture:
        arch = self.store.find_architecture(name)
        if arch is None or not (arch.tenant == tenant or arch.visibility == "shared"):
            raise NotFound(f"no architecture named {name!r}", field="name")
        return arch

    def models_list(self, tenant: str = DEFAULT_TENANT, task: str | None = None) -> list[dict[str, Any]]:
        out = []
        for arch in self.store.architectures(task):
            if arch.tenant == tenant or arch.visibility == "shared":
                variants = self.store.variants_of(arch.name)
                out.append({**describe_architecture(arch, variants), "status": overall_status(variants)})
        return out

    def tasks(self, tenant: str = DEFAULT_TENANT) -> list[dict[str, Any]]:
        """The tasks a query by task would reach, with the architectures it would use (the rule of
        ``selection._target``): the tenant's own where it has one in the task, else those the
        task's owner shared. A task the caller could not query is not listed, so the list says
        nothing of other tenants' tasks."""
        owners = self.store.task_owners()
        mine: dict[str, list[Architecture]] = {}
        shared: dict[str, list[Architecture]] = {}
        for arch in self.store.architectures():
            if arch.tenant == tenant:
                mine.setdefault(arch.task, []).append(arch)
            elif arch.visibility == "shared" and owners.get(arch.task) == arch.tenant:
                shared.setdefault(arch.task, []).append(arch)
        by_task = {**shared, **mine}
        return [
            {"task": t, "architectures": [a.name for a in archs], "inputs": [s.to_dict() for s in archs[0].inputs]}
            for t, archs in sorted(by_task.items())
        ]

    def build_logs(self, name: str, tenant: str = DEFAULT_TENANT) -> dict[str, Any]:
        """Each variant's full build log (``app.build.BuildLog``), by variant id; a variant not
        built yet has none."""
        from infaas.app.build import log_key

        self.visible_architecture(name, tenant)
        out = {}
        for v in self.store.variants_of(name):
            key = log_key(v)
            out[v.id] = {"status": v.status, "message": v.message,
                         "log": self.models.get(key).decode(errors="replace") if self.models.exists(key) else None}
        return {"name": name, "variants": out}

    def delete(self, name: str, tenant: str = DEFAULT_TENANT) -> None:
        arch = self.visible_architecture(name, tenant)
        if arch.tenant != tenant:
            raise Forbidden(f"architecture {name!r} is shared by another tenant; only its owner may delete it", field="name")
        from infaas.app.build import log_key

        for v in self.store.delete_architecture(name):
            if v.model_key:
                self.models.delete(v.model_key)
            if self.models.exists(log_key(v)):
                self.models.delete(log_key(v))
        self.models.delete(arch.model_key)
        if arch.validation_key and self.models.exists(arch.validation_key):  # every artefact of the model goes
            self.models.delete(arch.validation_key)


VALIDATION_MAX_BYTES = 256 << 20  # a validation .npz's arrays, unpacked


def _check_unpacked_size(blob: bytes, limit: int) -> None:
    """An .npz is a zip: its members' unpacked sizes are read from the archive's directory before
    anything is unpacked, so a small file that would unpack to gigabytes is refused at once."""
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as z:
            unpacked = sum(i.file_size for i in z.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # not a zip: np.load says what it is
    if unpacked > limit:
        raise InvalidInput(f"validation unpacks to {unpacked:,} bytes; the limit is {limit:,}", field="validation")


_INTEGER_DTYPES = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool"}


def _check_labels(labels: np.ndarray, outputs: tuple[TensorSpec, ...]) -> None:
    """Accuracy compares each label with the class the model predicts (``runtime.profile.predicted_labels``:
    an integer output of shape [N], else the argmax of an [N, C] output), so labels must be class
    indices and the model must have such an output; otherwise every variant would read 0.0."""
    kind = labels.dtype.kind
    integral = kind in "iub" or (kind == "f" and bool(np.all(np.isfinite(labels))) and bool(np.all(labels == np.round(labels))))
    if not integral:
        what = "strings" if kind in "USO" else f"{labels.dtype} values that are not whole numbers"
        raise InvalidInput(
            f"validation labels are {what}; accuracy compares them with the predicted class index, so give "
            "integer class indices (0..C-1, in the order of the model's score columns or its integer label output)",
            field="validation",
        )
    if outputs and not any((o.dtype in _INTEGER_DTYPES and len(o.shape) == 1) or len(o.shape) == 2 for o in outputs):
        raise InvalidInput(
            "validation labels cannot be compared with this model's outputs "
            f"({[o.to_dict() for o in outputs]}): accuracy needs an integer label output of shape [N] or "
            "a score output of shape [N, C]",
            field="validation",
        )


def _shape_key(specs: tuple[TensorSpec, ...]) -> list[tuple]:
    return [(s.dtype, tuple(d if d > 0 else -1 for d in s.shape[1:])) for s in specs]


def overall_status(variants: list[Variant]) -> str:
    states = {v.status for v in variants}
    if READY in states and states <= {READY, "skipped", "failed"}:
        return "ready"
    if states and states <= {"skipped", "failed"}:
        return "failed"
    return "building" if states else "registered"


# Declared and measured accuracy further apart than this (absolute, 0..1) earn a warning.
ACCURACY_MARGIN = 0.01


def measured_accuracy(variants: list[Variant]) -> float | None:
    """The accuracy measured on the owner's validation data for the full-precision variants
    (fp32: the registered graph itself), or None when nothing was measured."""
    figures = [v.accuracy for v in variants if v.accuracy_measured and v.accuracy is not None and v.format == "fp32"]
    return max(figures) if figures else None


def describe_architecture(a: Architecture, variants: list[Variant] | None = None) -> dict[str, Any]:
    measured = measured_accuracy(variants or [])
    note = ""
    if measured is None:
        note = ("not measured: no validation data, so every variant carries the declared figure" if a.validation_key is None
                else "not measured yet")
    elif abs(measured - a.accuracy) > ACCURACY_MARGIN:
        note = (f"warning: measured {measured:.4f} differs from the declared {a.accuracy:.4f} by more than "
                f"{ACCURACY_MARGIN:g}; queries are routed on the measured figure")
    return {
        "name": a.name,
        "task": a.task,
        "tenant": a.tenant,
        "visibility": a.visibility,
        "declared_accuracy": a.accuracy,
        "measured_accuracy": measured,
        "accuracy_note": note,
        "sha256": a.sha256,
        "inputs": [t.to_dict() for t in a.inputs],
        "outputs": [t.to_dict() for t in a.outputs],
        "signature": describe(a.inputs, a.outputs, a.signature_notes),
        "size_bytes": a.size_bytes,
    }


def describe_variant(v: Variant) -> dict[str, Any]:
    """A variant for people and scripts: ``accuracy_measured`` false means ``accuracy`` is the owner's
    declared figure, carried over unmeasured (``accuracy_source`` says which)."""
    d = {
        "id": v.id,
        "format": v.format,
        "runtime": v.runtime,
        "hardware": v.hardware,
        "max_batch": v.max_batch,
        "status": v.status,
        "accuracy": v.accuracy,
        "accuracy_measured": v.accuracy_measured,
        "accuracy_source": ("measured" if v.accuracy_measured else
                            "declared (not measured)" if v.agreement is None or v.agreement >= 1.0 else
                            f"estimated: declared less its disagreement with the registered model (agreement "
                            f"{v.agreement:.4f})"),
        "agreement": v.agreement,
        "message": v.message,
    }
    if v.profile:
        d["profile"] = v.profile.to_dict()
    return d
