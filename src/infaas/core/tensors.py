"""Binary tensor frames: how tensors travel between the API and the workers.

A frame is ``<u32 header length><JSON header><raw bytes...>``. The header is a
list of ``{"name", "dtype", "shape"}``; the raw bytes of each tensor follow in
order, C-contiguous, little-endian. Decoding is zero-copy (``np.frombuffer``).
No JSON lists of floats on the hot path.

String tensors (ONNX ``tensor(string)``, numpy ``object`` arrays of ``str``, the
protocol's ``BYTES``) travel as the binary extension has them: each element a
4-byte little-endian length and its UTF-8 bytes, in C order; their header entry
adds ``nbytes``, the size of that run.

The Open Inference Protocol's binary extension (``Inference-Header-Content-Length``)
is parsed in ``infaas.core.oip``; both end in the same numpy arrays.
"""

from __future__ import annotations

import json
import struct
from typing import Mapping

import numpy as np

from infaas.core.errors import InvalidInput

CONTENT_TYPE = "application/x-infaas-tensors"
_LEN = struct.Struct("<I")

# Open Inference Protocol datatype names <-> numpy dtypes.
OIP_TO_NUMPY = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": "object",  # strings: numpy object arrays of str (what onnxruntime takes and gives)
}
NUMPY_TO_OIP = {v: k for k, v in OIP_TO_NUMPY.items()}
STRING = "object"  # the dtype name of a string tensor (``TensorSpec.dtype``, frame headers)
# numpy's ``dtype.name`` is computed in Python on every access: the hot path looks names up here
_NAMES = {np.dtype(n): n for n in OIP_TO_NUMPY.values()}
_DTYPES = {n: np.dtype(n) for n in OIP_TO_NUMPY.values()}
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def dtype_name(dtype: np.dtype) -> str:
    """``dtype.name``, from a table for the dtypes tensors travel as; every string dtype
    (``object``, numpy's fixed-width ``str`` and ``bytes``) is ``STRING``."""
    name = _NAMES.get(dtype)
    if name is not None:
        return name
    return STRING if dtype.kind in "OUS" else dtype.name


def is_string(dtype: np.dtype) -> bool:
    return dtype.kind in "OUS"


def serialize_strings(arr: np.ndarray, what: str = "tensor") -> bytes:
    """The elements of a string tensor, C order, each as a 4-byte little-endian length and
    its bytes (``str`` as UTF-8): the binary extension's ``BYTES`` form."""
    parts = []
    pack = _LEN.pack
    for x in np.asarray(arr).ravel(order="C").tolist():
        if isinstance(x, str):
            b = x.encode("utf-8", "surrogatepass")
        elif isinstance(x, (bytes, bytearray)):
            b = bytes(x)
        else:
            raise InvalidInput(f"{what} holds a {type(x).__name__} where a string tensor holds text", field="datatype")
        parts.append(pack(len(b)))
        parts.append(b)
    return b"".join(parts)


def deserialize_strings(buf, count: int, offset: int, end: int, what: str = "tensor",
                        field: str = "body") -> np.ndarray:
    """``count`` elements in the ``serialize_strings`` form from ``buf[offset:end]``, which they
    must fill exactly, as a numpy object array of ``str``; each must be UTF-8 text (onnxruntime's
    string tensors hold text)."""
    if count * 4 > end - offset:  # every element has its 4-byte length: no allocation past the body
        raise InvalidInput(f"{what}: {count} string elements need at least {count * 4} bytes, "
                           f"{end - offset} given", field=field)
    out = np.empty(count, dtype=object)
    mv = memoryview(buf)
    for i in range(count):
        if offset + 4 > end:
            raise InvalidInput(f"{what}: element {i} has no 4-byte length", field=field)
        (n,) = _LEN.unpack_from(mv, offset)
        offset += 4
        if offset + n > end:
            raise InvalidInput(f"{what}: element {i} declares {n} bytes, {end - offset} left", field=field)
        try:
            out[i] = str(mv[offset : offset + n], "utf-8")
        except UnicodeDecodeError:
            raise InvalidInput(f"{what}: element {i} is not UTF-8 text", field=field) from None
        offset += n
    if offset != end:
        raise InvalidInput(f"{what}: {end - offset} bytes after its {count} string elements", field=field)
    return out


def compact_json(doc) -> bytes:
    return _COMPACT.encode(doc).encode()


def encode(tensors: Mapping[str, np.ndarray]) -> bytes:
    return b"".join(encode_parts(tensors))


def encode_parts(tensors: Mapping[str, np.ndarray]) -> list:
    """The frame as a list of buffers: its header, then each tensor's memory as
    it is (no copy when the array is already C-contiguous little-endian), for a
    vectored write of a large frame."""
    header = []
    chunks: list = []
    for name, arr in tensors.items():
        arr = np.asarray(arr, order="C")  # not ascontiguousarray: it turns 0-d into 1-d
        if arr.dtype.kind in "OUS":
            raw = serialize_strings(arr, f"tensor {name!r}")
            header.append({"name": name, "dtype": STRING, "shape": list(arr.shape), "nbytes": len(raw)})
            chunks.append(raw)
            continue
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        header.append({"name": name, "dtype": dtype_name(arr.dtype), "shape": list(arr.shape)})
        chunks.append(memoryview(arr.reshape(-1).view(np.uint8)))
    head = compact_json(header)
    return [_LEN.pack(len(head)) + head, *chunks]


def encode_batch_parts(feeds: list[Mapping[str, np.ndarray]]) -> list | None:
    """The frame of the row-wise concatenation of ``feeds`` (same tensor names), as
    a list of buffers that point at each feed's memory: a batch leaves without a
    copy. None when a copy is needed after all (a tensor not C-contiguous, not
    little-endian, or shapes and dtypes that differ past the first dimension)."""
    first = feeds[0]
    header = []
    chunks: list = []
    for name, arr in first.items():
        rows, rest, dtype = 0, arr.shape[1:], arr.dtype
        if not arr.ndim or dtype.byteorder == ">":
            return None
        strings = dtype.kind in "OUS"
        nbytes = 0
        for f in feeds:
            a = f.get(name)
            if a is None or a.shape[1:] != rest or a.dtype != dtype or not a.flags.c_contiguous:
                return None
            rows += a.shape[0]
            if strings:  # length-prefixed elements: the runs of the feeds joined are the run of the batch
                raw = serialize_strings(a, f"tensor {name!r}")
                nbytes += len(raw)
                chunks.append(raw)
            else:
                chunks.append(memoryview(a.reshape(-1).view(np.uint8)))
        entry = {"name": name, "dtype": dtype_name(dtype), "shape": [rows, *rest]}
        if strings:
            entry["nbytes"] = nbytes
        header.append(entry)
    if any(len(f) != len(first) for f in feeds):
        return None
    head = compact_json(header)
    return [_LEN.pack(len(head)) + head, *chunks]


def decode(frame: bytes | memoryview) -> dict[str, np.ndarray]:
    buf = memoryview(frame)
    if len(buf) < 4:
        raise InvalidInput("tensor frame is shorter than its 4-byte header length", field="body")
    (n,) = _LEN.unpack_from(buf, 0)
    if n > len(buf) - 4:
        raise InvalidInput("tensor frame header length exceeds the body", field="body")
    try:
        header = json.loads(bytes(buf[4 : 4 + n]))
    except ValueError as exc:
        raise InvalidInput(f"tensor frame header is not JSON: {exc}", field="body") from None
    if not isinstance(header, list):
        raise InvalidInput("tensor frame header must be a JSON list of tensor descriptions", field="body")
    offset = 4 + n
    out: dict[str, np.ndarray] = {}
    for spec in header:
        try:
            name, dtype_name, dims = spec["name"], spec["dtype"], spec["shape"]
            if not isinstance(name, str) or not isinstance(dims, list) or dtype_name not in NUMPY_TO_OIP:
                raise ValueError(f"need a string name, a list shape and one of {sorted(NUMPY_TO_OIP)} as dtype")
            dtype = _DTYPES[dtype_name]
            shape = tuple(int(s) for s in dims)
            size = spec.get("nbytes") if dtype_name == STRING else None
            if dtype_name == STRING and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
                raise ValueError("a string tensor needs its nbytes")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidInput(f"bad tensor description in frame header: {exc}", field="body") from None
        if any(s < 0 for s in shape):
            raise InvalidInput("tensor shapes must be non-negative", field="shape")
        count = 1
        for s in shape:  # Python ints: a huge shape cannot wrap around
            count *= s
        if size is not None:
            if offset + size > len(buf):
                raise InvalidInput(f"tensor {name!r} needs {size} bytes, frame has {len(buf) - offset} left", field="body")
            out[name] = deserialize_strings(buf, count, offset, offset + size, f"tensor {name!r}").reshape(shape)
            offset += size
            continue
        nbytes = count * dtype.itemsize
        if offset + nbytes > len(buf):
            raise InvalidInput(
                f"tensor {name!r} needs {nbytes} bytes, frame has {len(buf) - offset} left",
                field="body",
            )
        out[name] = np.frombuffer(buf, dtype=dtype, count=count, offset=offset).reshape(shape)
        offset += nbytes
    if offset != len(buf):
        raise InvalidInput(f"tensor frame has {len(buf) - offset} trailing bytes", field="body")
    return out
