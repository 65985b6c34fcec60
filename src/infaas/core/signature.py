"""A model's signature: per input and output, which axis carries a request's rows (the batch
axis, or none: a per-request value), which dimensions are dynamic, and a representative size for
each dynamic one (what profiling runs).

``settle`` infers it from the graph's shapes and dimension names, applies the owner's override
(``signature`` at registration), and refuses, naming the input and the fix, what it cannot settle.
``joinable`` says whether two requests may run as one batch. Pure: specs in, specs out.

Inference, in order (each step is stated in the evidence it returns):

1. The *batch dimension* is a dimension name shared by every input that has named dimensions:
   the one named like a batch (``N``, ``B``, ``batch``, ``batch_size``, ...), else the one that is
   axis 0 somewhere. An input carrying it is batched on that axis (``state [2, N, 16]``: axis 1).
2. An input without it whose axis 0 is dynamic is batched on axis 0 (models whose dimensions are
   unnamed, as scikit-learn converters write them, keep the rule that axis 0 is the batch).
3. Any other input (a fixed axis 0, a scalar) is a per-request value: every request sends its own.
4. Every other dynamic dimension needs a representative size: from the override (by dimension
   name or by input and axis), else from the validation file's inputs, else the model is refused.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

from infaas.core.domain import TensorSpec
from infaas.core.errors import InvalidInput

BATCH_NAME = re.compile(r"^(n|b|bs|nb|.*batch.*)$", re.IGNORECASE)
# elements of one representative request's rows at the largest batch that profiling runs
MAX_SAMPLE_ELEMENTS = 1 << 26
MAX_SIZE = 1 << 20
JOINED_BATCH = 32  # the largest batch a joinable model is profiled at (``runtime.generate``)


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    notes: tuple[str, ...]


@dataclass(frozen=True)
class Override:
    dims: Mapping[str, int]
    inputs: Mapping[str, Mapping[str, Any]]
    outputs: Mapping[str, Mapping[str, Any]]


def joinable(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> bool:
    """Whether requests may be joined into one batch by stacking their rows on axis 0: every input
    batched on axis 0 with no other dynamic dimension, and every output batched on axis 0.
    Otherwise each request runs alone (its variants are planned at batch 1)."""
    if not inputs:
        return False
    for s in inputs:
        if s.batch != 0 or any(d <= 0 for d in s.shape[1:]):
            return False
    return all(o.batch_axis == 0 for o in outputs)


def batching(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> tuple[str, str]:
    """("joined" | "alone", why), for people."""
    if joinable(inputs, outputs):
        return "joined", "every input and output is batched on axis 0 with fixed other dimensions"
    why = []
    for s in inputs:
        if s.batch is None:
            why.append(f"input {s.name!r} is a per-request value")
        elif s.batch != 0:
            why.append(f"input {s.name!r} is batched on axis {s.batch}")
        elif any(d <= 0 for d in s.shape[1:]):
            why.append(f"input {s.name!r} has dynamic dimensions besides the batch")
    why += [f"output {o.name!r} is not batched on axis 0" for o in outputs if o.batch_axis != 0]
    return "alone", "each request runs alone (never joined with another): " + "; ".join(why)


def describe(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], notes: Sequence[str] = ()) -> dict[str, Any]:
    """The signature as the model's metadata shows it."""
    mode, why = batching(inputs, outputs)

    def one(s: TensorSpec, with_sizes: bool) -> dict[str, Any]:
        d: dict[str, Any] = {"name": s.name, "batch_axis": s.batch if s.shape else None,
                             "dynamic": [i for i, n in enumerate(s.shape) if n <= 0 and i != s.batch]}
        if s.symbols and any(s.symbols):
            d["names"] = list(s.symbols)
        if with_sizes:
            d["sizes"] = list(representative(s, 1))
        return d

    return {"batching": mode, "batching_reason": why, "inputs": [one(s, True) for s in inputs],
            "outputs": [one(o, False) for o in outputs], "evidence": list(notes)}


def representative(spec: TensorSpec, batch: int) -> tuple[int, ...]:
    """The shape profiling runs ``spec`` at for ``batch`` rows (a per-request value ignores it)."""
    out = []
    for i, d in enumerate(spec.shape):
        if i == spec.batch:
            out.append(batch)
        elif d > 0:
            out.append(d)
        else:
            out.append(spec.sizes[i] if i < len(spec.sizes) and spec.sizes[i] > 0 else 1)
    return tuple(out)


# ----------------------------------------------------------------------------- the override
def parse_override(raw: Any, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> Override:
    """``{"dims": {NAME: SIZE}, "inputs": {INPUT: {"batch_axis": AXIS | null, "sizes": {AXIS: SIZE}}},
    "outputs": {OUTPUT: {"batch_axis": AXIS | null}}}`` (JSON text or a dict); every part optional."""
    if raw is None or raw == "":
        return Override({}, {}, {})
    if isinstance(raw, (str, bytes)):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise InvalidInput(f"signature is not valid JSON: {exc}", field="signature") from None
    if not isinstance(raw, dict):
        raise InvalidInput("signature must be a JSON object with 'dims', 'inputs' and/or 'outputs'", field="signature")
    unknown = sorted(set(raw) - {"dims", "inputs", "outputs"})
    if unknown:
        raise InvalidInput(f"signature has unknown key(s) {unknown}; it takes 'dims', 'inputs' and 'outputs'",
                           field="signature")
    symbols = {x for s in inputs for x in s.symbols if x}
    dims = _object(raw.get("dims", {}), "signature.dims")
    for k, v in dims.items():
        if k not in symbols:
            raise InvalidInput(f"signature.dims names {k!r}, which is not a dimension name of this model's inputs "
                               f"(they are {sorted(symbols)})", field="signature.dims")
        dims[k] = _size(v, f"signature.dims.{k}")
    parts = {}
    for kind, specs in (("inputs", inputs), ("outputs", outputs)):
        by_name = {s.name: s for s in specs}
        given = _object(raw.get(kind, {}), f"signature.{kind}")
        part = {}
        for name, entry in given.items():
            where = f"signature.{kind}.{name}"
            if name not in by_name:
                raise InvalidInput(f"{where}: {name!r} is not an {kind[:-1]} of this model; its {kind} are "
                                   f"{sorted(by_name)}", field=where)
            entry = _object(entry, where)
            allowed = {"batch_axis", "sizes"} if kind == "inputs" else {"batch_axis"}
            odd = sorted(set(entry) - allowed)
            if odd:
                raise InvalidInput(f"{where} has unknown key(s) {odd}; it takes {sorted(allowed)}", field=where)
            spec, out = by_name[name], {}
            if "batch_axis" in entry:
                ax = entry["batch_axis"]
                if ax is not None and (isinstance(ax, bool) or not isinstance(ax, int) or not 0 <= ax < len(spec.shape)):
                    raise InvalidInput(f"{where}.batch_axis must be null or an axis 0..{len(spec.shape) - 1} of "
                                       f"{name!r} (shape {list(spec.shape)}), got {ax!r}", field=f"{where}.batch_axis")
                if ax is not None and spec.shape[ax] > 0 and kind == "inputs":
                    raise InvalidInput(f"{where}.batch_axis: axis {ax} of {name!r} is fixed at {spec.shape[ax]} in the "
                                       "graph, so it cannot carry a request's rows; name a dynamic axis or null",
                                       field=f"{where}.batch_axis")
                out["batch_axis"] = ax
            if "sizes" in entry:
                sizes = {}
                for k, v in _object(entry["sizes"], f"{where}.sizes").items():
                    if not (k.isdigit() and int(k) < len(spec.shape)) or spec.shape[int(k)] > 0:
                        raise InvalidInput(f"{where}.sizes: {k!r} is not a dynamic axis of {name!r} "
                                           f"(shape {list(spec.shape)})", field=f"{where}.sizes")
                    sizes[int(k)] = _size(v, f"{where}.sizes.{k}")
                out["sizes"] = sizes
            part[name] = out
        parts[kind] = part
    return Override(dims, parts["inputs"], parts["outputs"])


def _object(v: Any, where: str) -> dict:
    if not isinstance(v, dict):
        raise InvalidInput(f"{where} must be a JSON object, got {type(v).__name__}", field=where)
    return dict(v)


def _size(v: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_SIZE:
        raise InvalidInput(f"{where} must be a whole number 1..{MAX_SIZE}, got {v!r}", field=where)
    return v


# ----------------------------------------------------------------------------- inference
def _batch_name(inputs: Sequence[TensorSpec]) -> tuple[str | None, str]:
    named = [s for s in inputs if any(s.symbols)]
    if not named:
        return None, "no input dimension is named in the graph"
    common = set.intersection(*({x for x in s.symbols if x} for s in named))
    where = ", ".join(repr(s.name) for s in named)
    batchy = sorted(c for c in common if BATCH_NAME.match(c))
    if len(batchy) == 1:
        return batchy[0], f"dimension {batchy[0]!r} is named as a batch and is shared by every input with named dimensions ({where})"
    pool = batchy or sorted(common)
    at0 = [c for c in pool if any(s.symbols and s.symbols[0] == c for s in named)]
    if len(at0) == 1:
        return at0[0], f"dim 0 is symbolic {at0[0]!r}, shared by every input with named dimensions ({where})"
    if not common:
        return None, f"no dimension name is shared by every input with named dimensions ({where})"
    return None, f"no dimension name among {sorted(common)} is named as a batch or is an axis 0"


def _input_axis(spec: TensorSpec, name: str | None) -> tuple[int | None, str]:
    if not spec.shape:
        return None, f"input {spec.name!r} is a scalar: a per-request value"
    if name and name in spec.symbols:
        at = [i for i, s in enumerate(spec.symbols) if s == name]
        if len(at) > 1:
            raise InvalidInput(f"input {spec.name!r} has the batch dimension {name!r} on axes {at}, so its batch axis "
                               f"is ambiguous; give it at registration: signature "
                               f'{{"inputs": {{"{spec.name}": {{"batch_axis": {at[0]}}}}}}}',
                               field="signature", input=spec.name)
        return at[0], f"input {spec.name!r} is batched on axis {at[0]} ({name!r})"
    if spec.shape[0] <= 0:
        sym = spec.symbols[0] if spec.symbols else ""
        return 0, (f"input {spec.name!r} is batched on axis 0: it is dynamic"
                   + (f" ({sym!r})" if sym else " and unnamed"))
    return None, (f"input {spec.name!r} is a per-request value: axis 0 is fixed at {spec.shape[0]}"
                  + (f" and it has no {name!r}" if name else ""))


def _output_axis(spec: TensorSpec, name: str | None, unranked: bool) -> tuple[int | None, str]:
    if unranked:
        return 0, f"output {spec.name!r} has no shape in the graph: taken as batched on axis 0"
    if not spec.shape:
        return None, f"output {spec.name!r} is a scalar: one per request"
    if name and name in spec.symbols:
        return spec.symbols.index(name), f"output {spec.name!r} is batched on axis {spec.symbols.index(name)} ({name!r})"
    if spec.shape[0] <= 0 and not (spec.symbols and spec.symbols[0]) or (spec.shape[0] <= 0 and name is None):
        return 0, f"output {spec.name!r} is batched on axis 0: it is dynamic"
    return None, f"output {spec.name!r} is not batched: one per request"


def settle(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], override: Any = None,
           hint: Sequence[int] | None = None, unranked: frozenset[str] = frozenset()) -> Signature:
    """The signature of a model whose graph has ``inputs`` and ``outputs`` (shapes with -1 for a
    dynamic dimension, ``symbols`` the graph's dimension names), with the owner's ``override`` and
    ``hint``, the shape of the validation file's inputs (the first input's); refuses what it cannot
    settle with a 400 naming the input and the fix."""
    ov = parse_override(override, inputs, outputs)
    name, why = _batch_name(inputs)
    notes = [why]
    hinted: dict[str, int] = {}
    first = inputs[0] if inputs else None
    if hint is not None and first is not None and len(hint) == len(first.shape):
        for i, sym in enumerate(first.symbols):
            if sym and first.shape[i] <= 0 and sym != name:
                hinted[sym] = int(hint[i])
    settled_in = []
    for spec in inputs:
        given = ov.inputs.get(spec.name, {})
        if "batch_axis" in given:
            axis, how = given["batch_axis"], f"input {spec.name!r}: batch axis {given['batch_axis']} given at registration"
        else:
            axis, how = _input_axis(spec, name)
        notes.append(how)
        sizes = []
        for i, d in enumerate(spec.shape):
            sym = spec.symbols[i] if i < len(spec.symbols) else ""
            if i == axis:
                sizes.append(1)
            elif d > 0:
                sizes.append(d)
            elif i in given.get("sizes", {}):
                sizes.append(given["sizes"][i])
                notes.append(f"input {spec.name!r}: axis {i} profiled at {given['sizes'][i]} (given at registration)")
            elif sym and sym in ov.dims:
                sizes.append(ov.dims[sym])
                notes.append(f"input {spec.name!r}: axis {i} ({sym!r}) profiled at {ov.dims[sym]} (given at registration)")
            elif spec is first and hint is not None and len(hint) == len(spec.shape) and hint[i] > 0:
                sizes.append(int(hint[i]))
                notes.append(f"input {spec.name!r}: axis {i} profiled at {hint[i]}, as in the validation file")
            elif sym and sym in hinted:
                sizes.append(hinted[sym])
                notes.append(f"input {spec.name!r}: axis {i} ({sym!r}) profiled at {hinted[sym]}, as in the validation file")
            else:
                label = f"{sym!r}" if sym else "unnamed"
                fix = (f'signature {{"dims": {{"{sym}": SIZE}}}} (infaas register --dim {sym}=SIZE)' if sym else
                       f'signature {{"inputs": {{"{spec.name}": {{"sizes": {{"{i}": SIZE}}}}}}}}')
                raise InvalidInput(
                    f"input {spec.name!r}: axis {i} ({label}) is dynamic and is not the batch axis, so the service "
                    f"cannot tell what size to profile it at; give a representative size at registration: {fix}, "
                    "or a validation file whose inputs have that size"
                    + ("" if axis is not None else
                       f'; or, if it carries the rows, say so: signature {{"inputs": {{"{spec.name}": {{"batch_axis": {i}}}}}}}'),
                    field="signature", input=spec.name, axis=i)
        per_row = math.prod(s for i, s in enumerate(sizes) if i != axis)
        settled_in.append(replace(spec, batch_axis=axis, sizes=tuple(sizes)))
        if per_row * JOINED_BATCH > MAX_SAMPLE_ELEMENTS:
            raise InvalidInput(f"input {spec.name!r}: representative sizes {sizes} make {per_row:,} elements a row; "
                               f"profiling needs at most {MAX_SAMPLE_ELEMENTS // JOINED_BATCH:,}; give smaller sizes",
                               field="signature", input=spec.name)
    if not any(s.batch is not None for s in settled_in):
        notes.append("no input has a batch axis: every request is one row")
    settled_out = []
    for spec in outputs:
        given = ov.outputs.get(spec.name, {})
        if "batch_axis" in given:
            axis, how = given["batch_axis"], f"output {spec.name!r}: batch axis {given['batch_axis']} given at registration"
        else:
            axis, how = _output_axis(spec, name, spec.name in unranked)
        notes.append(how)
        settled_out.append(replace(spec, batch_axis=axis))
    mode, reason = batching(settled_in, settled_out)
    notes.append(f"batching: {reason}")
    return Signature(tuple(settled_in), tuple(settled_out), tuple(notes))
