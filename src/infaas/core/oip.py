"""Request and response bodies: the plain JSON form and the Open Inference
Protocol v2 (JSON, and its binary extension).

Everything here turns bytes into (target, objective, arrays) and arrays back
into bytes; nothing here decides or runs anything.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

import numpy as np

from infaas.core.domain import Objective
from infaas.core.errors import InvalidInput
from infaas.core.tensors import NUMPY_TO_OIP, OIP_TO_NUMPY, compact_json, dtype_name

BINARY_HEADER = "inference-header-content-length"


def parse_json(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: nested too deep
        raise InvalidInput(f"body is not valid JSON: {exc}", field="body") from None
    if not isinstance(doc, dict):
        raise InvalidInput("body must be a JSON object", field="body")
    return doc


def parse_objective(doc: Mapping[str, Any] | None, field: str = "objective") -> Objective:
    if doc is None:
        doc = {}
    if not isinstance(doc, (dict, Mapping)):
        raise InvalidInput(f"{field} must be an object", field=field)
    values: dict[str, float | None] = {}
    for key, lo, hi in (("min_accuracy", 0.0, 1.0), ("latency_ms", 0.0, 3.6e6), ("max_cost", 0.0, 1e6)):
        v = doc.get(key)
        if v is None:
            values[key] = None
            continue
        try:
            ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and lo <= v <= hi
        except OverflowError:  # an integer too large for a float
            ok = False
        if not ok:
            raise InvalidInput(f"{field}.{key} must be a number in [{lo:g}, {hi:g}], got {v!r}", field=f"{field}.{key}")
        if key == "latency_ms" and v == 0:
            raise InvalidInput(f"{field}.latency_ms must be greater than 0", field=f"{field}.latency_ms")
        values[key] = float(v)
    return Objective(**values)


def tensor_from_json(t: Any, index: int) -> tuple[str, np.ndarray]:
    where = f"inputs[{index}]"
    if not isinstance(t, (dict, Mapping)):
        raise InvalidInput(f"{where} must be an object with name, shape, datatype, data", field=where)
    name, shape, datatype = t.get("name"), t.get("shape"), t.get("datatype")
    if not isinstance(name, str):
        raise InvalidInput(f"{where}.name must be a string", field=f"{where}.name")
    if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise InvalidInput(f"{where}.shape must be a list of non-negative integers", field=f"{where}.shape")
    if datatype not in OIP_TO_NUMPY:
        raise InvalidInput(f"{where}.datatype must be one of {sorted(OIP_TO_NUMPY)}, got {datatype!r}", field=f"{where}.datatype")
    try:
        arr = np.asarray(t.get("data"), dtype=OIP_TO_NUMPY[datatype])
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput(f"{where}.data does not fit datatype {datatype}: {exc}", field=f"{where}.data") from None
    if arr.size != math.prod(shape):
        raise InvalidInput(f"{where}.data has {arr.size} elements, shape {shape} needs {math.prod(shape)}", field=f"{where}.shape")
    return name, arr.reshape(shape)


def rows_to_array(rows: Any, dtype: str) -> np.ndarray:
    """The plain form: ``inputs`` as a list of rows for a single-input model."""
    if not isinstance(rows, list) or not rows:
        raise InvalidInput("inputs must be a non-empty list of rows, or a list of tensors", field="inputs")
    try:
        arr = np.asarray(rows, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput(f"inputs are not a rectangular array of {dtype}: {str(exc)[:200]}", field="inputs") from None
    return arr


def tensors_to_json(outputs: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    return [
        {"name": k, "shape": list(v.shape), "datatype": NUMPY_TO_OIP.get(dtype_name(v.dtype), "BYTES"), "data": v.ravel().tolist()}
        for k, v in outputs.items()
    ]


def parse_binary(body: bytes, header_len: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """OIP binary extension: a JSON header of ``header_len`` bytes, then the
    raw bytes of each input that has ``parameters.binary_data_size``."""
    if header_len < 0:
        raise InvalidInput("Inference-Header-Content-Length must not be negative", field="headers")
    if header_len > len(body):
        raise InvalidInput(f"Inference-Header-Content-Length {header_len} exceeds the body ({len(body)} bytes)", field="headers")
    doc = parse_json(body[:header_len])
    offset = header_len
    arrays: dict[str, np.ndarray] = {}
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("inputs must be a non-empty list", field="inputs")
    for i, t in enumerate(inputs):
        tparams = (t.get("parameters") or {}) if isinstance(t, dict) else {}  # parsed JSON: dicts
        if not isinstance(tparams, dict):
            raise InvalidInput(f"inputs[{i}].parameters must be an object", field=f"inputs[{i}].parameters")
        size = tparams.get("binary_data_size")
        if size is None:
            name, arr = tensor_from_json(t, i)
            arrays[name] = arr
            continue
        where = f"inputs[{i}]"
        shape, datatype = t.get("shape"), t.get("datatype")
        if datatype not in OIP_TO_NUMPY:
            raise InvalidInput(f"{where}.datatype must be one of {sorted(OIP_TO_NUMPY)}", field=f"{where}.datatype")
        if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
            raise InvalidInput(f"{where}.shape must be a list of non-negative integers", field=f"{where}.shape")
        dtype = np.dtype(OIP_TO_NUMPY[datatype])
        if not isinstance(size, int) or size != math.prod(shape) * dtype.itemsize or offset + size > len(body):
            raise InvalidInput(f"{where}.parameters.binary_data_size does not match shape, datatype and body", field=f"{where}.parameters")
        arrays[str(t.get("name"))] = np.frombuffer(body, dtype=dtype, count=size // dtype.itemsize, offset=offset).reshape(shape)
        offset += size
    if offset != len(body):
        raise InvalidInput(f"{len(body) - offset} bytes after the last binary input", field="body")
    return doc, arrays


def binary_response(header: dict[str, Any], outputs: Mapping[str, np.ndarray]) -> tuple[bytes, int]:
    """Encode outputs with the binary extension; returns (body, header length)."""
    chunks = []
    header["outputs"] = []
    for k, v in outputs.items():
        raw = np.ascontiguousarray(v).tobytes()
        header["outputs"].append(
            {"name": k, "shape": list(v.shape), "datatype": NUMPY_TO_OIP.get(dtype_name(v.dtype), "BYTES"), "parameters": {"binary_data_size": len(raw)}}
        )
        chunks.append(raw)
    head = compact_json(header)
    return head + b"".join(chunks), len(head)
