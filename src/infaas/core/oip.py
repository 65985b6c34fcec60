"""Request and response bodies: the plain JSON form and the Open Inference
Protocol v2 (JSON, and its binary extension).

Everything here turns bytes into (target, objective, arrays) and arrays back
into bytes; nothing here decides or runs anything.
"""

from __future__ import annotations

import json
import math
import zlib
from itertools import chain
from typing import Any, Mapping

import numpy as np

from infaas.core.domain import Objective
from infaas.core.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from infaas.core.tensors import (
    NUMPY_TO_OIP,
    OIP_TO_NUMPY,
    STRING,
    compact_json,
    deserialize_strings,
    dtype_name,
    is_string,
    serialize_strings,
)

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
    late = doc.get("if_late")
    if late is not None and late not in ("serve", "refuse"):
        raise InvalidInput(f"{field}.if_late must be 'serve' or 'refuse', got {late!r}", field=f"{field}.if_late")
    return Objective(**values, if_late=late)


# What JSON may hold for each datatype (``bool`` is an ``int`` in Python: checked by exact type)
_NUMBERS = frozenset({int, float})
_KINDS = {"BOOL": frozenset({bool}), "BYTES": frozenset({str}), "FP16": _NUMBERS, "FP32": _NUMBERS, "FP64": _NUMBERS}
_SAYS = {frozenset({bool}): "true or false", frozenset({str}): "strings", _NUMBERS: "numbers",
         frozenset({int}): "integers"}
_JSON_NAMES = {bool: "true/false", str: "strings", int: "integers", float: "numbers with a fraction",
               list: "nested lists of uneven depth", dict: "objects", type(None): "null"}


def _allowed(datatype: str) -> frozenset:
    return _KINDS.get(datatype, frozenset({int}))


def _flatten(data: Any, where: str) -> list:
    """A (possibly nested) JSON list as one flat list, row-major."""
    if not isinstance(data, list):
        return [data]
    flat = data
    while flat and type(flat[0]) is list:
        if any(type(x) is not list for x in flat):
            raise InvalidInput(f"{where} mixes lists and values at one depth", field=where)
        flat = list(chain.from_iterable(flat))
    return flat


def check_values(flat: list, datatype: str, where: str) -> None:
    """Every element of ``flat`` is of a JSON kind that ``datatype`` takes: numbers for FP*,
    integers for INT*/UINT*, true/false for BOOL, strings for BYTES. Nothing is coerced (a
    ``true`` is not 1.0, ``"1.5"`` is not a number)."""
    allowed = _allowed(datatype)
    bad = set(map(type, flat)) - allowed
    if bad:
        got = ", ".join(sorted(_JSON_NAMES.get(t, t.__name__) for t in bad))
        raise InvalidInput(f"{where} holds {got}; datatype {datatype} takes {_SAYS[allowed]}", field=where)


def values_to_array(data: Any, datatype: str, where: str) -> np.ndarray:
    """JSON ``data`` of an OIP tensor (flat or nested) as a flat numpy array of ``datatype``."""
    flat = _flatten(data, where)
    check_values(flat, datatype, where)
    if datatype == "BYTES":
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
        return arr
    try:
        return np.asarray(flat, dtype=OIP_TO_NUMPY[datatype])
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput(f"{where} does not fit datatype {datatype}: {exc}", field=where) from None


def _name_shape_datatype(t: Any, where: str) -> tuple[str, list[int], str]:
    if not isinstance(t, (dict, Mapping)):
        raise InvalidInput(f"{where} must be an object with name, shape, datatype, data", field=where)
    name, shape, datatype = t.get("name"), t.get("shape"), t.get("datatype")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"{where}.name must be a non-empty string", field=f"{where}.name")
    if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise InvalidInput(f"{where}.shape must be a list of non-negative integers", field=f"{where}.shape")
    if datatype not in OIP_TO_NUMPY:
        raise InvalidInput(f"{where}.datatype must be one of {sorted(OIP_TO_NUMPY)}, got {datatype!r}", field=f"{where}.datatype")
    return name, shape, datatype


def tensor_from_json(t: Any, index: int) -> tuple[str, np.ndarray]:
    where = f"inputs[{index}]"
    name, shape, datatype = _name_shape_datatype(t, where)
    if "data" not in t:
        raise InvalidInput(f"{where}.data is missing (or send it in binary: parameters.binary_data_size)",
                           field=f"{where}.data")
    arr = values_to_array(t.get("data"), datatype, f"{where}.data")
    if arr.size != math.prod(shape):
        raise InvalidInput(f"{where}.data has {arr.size} elements, shape {shape} needs {math.prod(shape)}", field=f"{where}.shape")
    return name, arr.reshape(shape)


def _add(arrays: dict[str, np.ndarray], name: str, arr: np.ndarray, index: int) -> None:
    if name in arrays:
        raise InvalidInput(f"inputs[{index}].name {name!r} is given twice", field=f"inputs[{index}].name")
    arrays[name] = arr


def tensors_from_json(inputs: Any) -> dict[str, np.ndarray]:
    """An OIP ``inputs`` list (JSON data) as named arrays; each name once."""
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("inputs must be a non-empty list of tensors", field="inputs")
    arrays: dict[str, np.ndarray] = {}
    for i, t in enumerate(inputs):
        name, arr = tensor_from_json(t, i)
        _add(arrays, name, arr, i)
    return arrays


def rows_to_array(rows: Any, dtype: str) -> np.ndarray:
    """The plain form: ``inputs`` as a list of rows for a single-input model."""
    if not isinstance(rows, list) or not rows:
        raise InvalidInput("inputs must be a non-empty list of rows, or a list of tensors", field="inputs")
    datatype = NUMPY_TO_OIP.get(dtype)
    if datatype is not None:
        check_values(_flatten(rows, "inputs"), datatype, "inputs")
    try:
        if dtype == STRING:
            arr = np.array(rows, dtype=object)
            if arr.size and not all(isinstance(x, str) for x in arr.flat):
                raise ValueError("rows of strings of one length each")
        else:
            arr = np.asarray(rows, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput(f"inputs are not a rectangular array of {dtype}: {str(exc)[:200]}", field="inputs") from None
    return arr


def oip_datatype(dtype: np.dtype | str) -> str:
    """The OIP datatype of a numpy dtype (or dtype name)."""
    name = dtype if isinstance(dtype, str) else dtype_name(dtype)
    try:
        return NUMPY_TO_OIP[name]
    except KeyError:
        raise InvalidInput(f"dtype {name} has no Open Inference Protocol datatype", field="datatype") from None


# The most an answer's tensors may take as JSON text. Numbers and escaped strings take several
# times their binary size (a float32 up to 24 characters, a control character 6), so a model that
# answers within the worker's INFAAS_MAX_ANSWER_BYTES can still make the API build a JSON answer
# several times that; past this, the answer is refused before any text is built.
MAX_JSON_ANSWER_BYTES = 64 << 20
_CHARS = {"b": 6, "i": 21, "u": 21, "f": 24, "c": 48}


def json_size_bound(outputs: Mapping[str, np.ndarray]) -> int:
    """An upper bound on the JSON text of ``outputs``' data, from their sizes alone."""
    total = 0
    for v in outputs.values():
        if is_string(v.dtype):
            total += sum(6 * len(x) + 4 for x in v.ravel())
        else:
            total += v.size * _CHARS.get(v.dtype.kind, 24)
    return total


def tensors_to_json(outputs: Mapping[str, np.ndarray], limit: int = MAX_JSON_ANSWER_BYTES) -> list[dict[str, Any]]:
    """Tensors with their data as JSON lists (BYTES as strings). An answer whose JSON could pass
    ``limit`` bytes is refused (400 naming ``outputs``) before any of it is built."""
    bound = json_size_bound(outputs)
    if bound > limit:
        raise InvalidInput(f"the answer could take {bound:,} bytes as JSON, over the limit of {limit:,}: ask for "
                           "binary outputs (the binary extension's binary_data_output) or send fewer rows",
                           field="outputs")
    return [_json_tensor(k, v) for k, v in outputs.items()]


def _json_tensor(name: str, v: np.ndarray) -> dict[str, Any]:
    data = v.ravel().tolist()
    if is_string(v.dtype):
        data = [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in data]
    return {"name": name, "shape": list(v.shape), "datatype": oip_datatype(v.dtype), "data": data}


def parse_binary(body: bytes, header_len: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """OIP binary extension: a JSON header of ``header_len`` bytes, then the
    raw bytes of each input that has ``parameters.binary_data_size`` (BYTES: each
    element a 4-byte little-endian length and its bytes)."""
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
            _add(arrays, name, arr, i)
            continue
        where = f"inputs[{i}]"
        name, shape, datatype = _name_shape_datatype(t, where)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(body):
            raise InvalidInput(f"{where}.parameters.binary_data_size must be the size of its bytes in the body "
                               f"({len(body) - offset} left), got {size!r}", field=f"{where}.parameters")
        count = math.prod(shape)
        if datatype == "BYTES":
            arr = deserialize_strings(body, count, offset, offset + size, f"{where} ({name!r})",
                                      field=f"{where}.parameters").reshape(shape)
        else:
            dtype = np.dtype(OIP_TO_NUMPY[datatype])
            if size != count * dtype.itemsize:
                raise InvalidInput(f"{where}.parameters.binary_data_size is {size}, shape {shape} of {datatype} "
                                   f"needs {count * dtype.itemsize} bytes", field=f"{where}.parameters")
            arr = np.frombuffer(body, dtype=dtype, count=count, offset=offset).reshape(shape)
        _add(arrays, name, arr, i)
        offset += size
    if offset != len(body):
        raise InvalidInput(f"{len(body) - offset} bytes after the last binary input", field="body")
    return doc, arrays


def request_id(doc: Mapping[str, Any]) -> str | None:
    """The request's ``id``: a string, or absent (then the answer has none)."""
    rid = doc.get("id")
    if rid is not None and not isinstance(rid, str):
        raise InvalidInput(f"id must be a string, got {type(rid).__name__}", field="id")
    return rid


def requested_outputs(doc: Mapping[str, Any], params: Mapping[str, Any]) -> tuple[list[str] | None, dict[str, bool], bool]:
    """What the request asks back: the names of the requested outputs (None: all), whether
    each is wanted in binary (``outputs[i].parameters.binary_data``), and the default for the
    others (``parameters.binary_data_output``)."""
    default = params.get("binary_data_output", False)
    if not isinstance(default, bool):
        raise InvalidInput("parameters.binary_data_output must be true or false", field="parameters.binary_data_output")
    outputs = doc.get("outputs")
    if outputs is None or outputs == []:  # none named: every output
        return None, {}, default
    if not isinstance(outputs, list):
        raise InvalidInput("outputs must be a list of objects with a name and an optional 'parameters' object",
                           field="outputs")
    names: list[str] = []
    binary: dict[str, bool] = {}
    for i, o in enumerate(outputs):
        where = f"outputs[{i}]"
        if not isinstance(o, dict) or not isinstance(o.get("parameters") or {}, dict):
            raise InvalidInput("outputs must be a list of objects with a name and an optional 'parameters' object",
                               field="outputs")
        name = o.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"{where}.name must be a non-empty string", field=f"{where}.name")
        if name in binary:
            raise InvalidInput(f"{where}.name {name!r} is requested twice", field=f"{where}.name")
        oparams = o.get("parameters") or {}
        b = oparams.get("binary_data", default)
        if not isinstance(b, bool):
            raise InvalidInput(f"{where}.parameters.binary_data must be true or false", field=f"{where}.parameters.binary_data")
        for unsupported in ("classification", "shared_memory_region"):
            if oparams.get(unsupported) not in (None, 0):
                raise InvalidInput(f"{where}.parameters.{unsupported} is not supported by this service",
                                   field=f"{where}.parameters.{unsupported}")
        names.append(name)
        binary[name] = b
    return names, binary, default


def select_outputs(outputs: Mapping[str, np.ndarray], names: list[str] | None) -> dict[str, np.ndarray]:
    """The requested outputs, in the order requested (all, in the model's order, when None)."""
    if names is None:
        return dict(outputs)
    missing = [n for n in names if n not in outputs]
    if missing:
        raise InvalidInput(f"output {missing[0]!r} is not an output of this model; it has {sorted(outputs)}",
                           field=f"outputs[{names.index(missing[0])}].name")
    return {n: outputs[n] for n in names}


def encode_response(header: dict[str, Any], outputs: Mapping[str, np.ndarray], binary: Mapping[str, bool],
                    default_binary: bool) -> tuple[bytes, int | None]:
    """The answer: ``header`` with its ``outputs``; each output in binary (after the JSON header,
    its size in ``parameters.binary_data_size``) or as JSON data, as the request asked.
    Returns (body, header length), the header length None when no output is binary (plain JSON)."""
    chunks = []
    header["outputs"] = entries = []
    for k, v in outputs.items():
        if binary.get(k, default_binary):
            if is_string(v.dtype):
                raw = serialize_strings(v, f"output {k!r}")
            else:
                raw = np.ascontiguousarray(v).tobytes()
            entries.append({"name": k, "shape": list(v.shape), "datatype": oip_datatype(v.dtype),
                            "parameters": {"binary_data_size": len(raw)}})
            chunks.append(raw)
        else:
            entries.append(_json_tensor(k, v))
    head = compact_json(header)
    if not chunks:
        return head, None
    return head + b"".join(chunks), len(head)


def binary_response(header: dict[str, Any], outputs: Mapping[str, np.ndarray]) -> tuple[bytes, int]:
    """Encode every output with the binary extension; returns (body, header length)."""
    body, n = encode_response(header, outputs, {}, True)
    return body, len(body) if n is None else n


# -- request compression (``Content-Encoding``), as tritonclient's request_compression_algorithm sends it
def inflate(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body as sent before ``Content-Encoding`` (``gzip``, ``deflate`` in its zlib wrapping or
    raw, ``identity``); never inflated past ``limit`` bytes (413 beyond it, so a small bomb costs
    at most ``limit`` bytes of memory)."""
    if encoding is None:
        return body
    enc = encoding.strip().lower()
    if enc in ("", "identity"):
        return body
    if enc in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif enc == "deflate":  # RFC 9110: the zlib format; some clients send raw deflate
        zlib_header = len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0
        wbits = zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS
    else:
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported; send gzip, deflate or identity",
                                   field="content-encoding")
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"body is not valid {enc} data: {exc}", field="body") from None
    if len(out) > limit:
        raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes once decompressed ({enc})",
                              field="body")
    if not d.eof:
        raise InvalidInput(f"{enc} body is truncated", field="body")
    if d.unused_data:
        raise InvalidInput(f"{len(d.unused_data)} bytes after the end of the {enc} data", field="body")
    return out
