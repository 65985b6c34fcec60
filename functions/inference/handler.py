"""Lambda: the serverless CPU tier's inference function (hardware type ``lambda``, ``core/tier.py``).

Invoked synchronously (``RequestResponse``) with one query's rows for one variant:

``{"variant_id": "...", "model_key": "variants/...onnx", "inputs": [OIP JSON tensors] | "<base64 .npz>",
"outputs": ["name", ...] (optional: all by default), "id": "..." (optional)}``

It runs the variant's file with onnxruntime (from a layer) on the CPU share of its memory size
(``intra_op_num_threads`` = that share rounded up), and answers

``{"variant_id", "model_key", "id", "outputs": [OIP JSON tensors] | "<base64 .npz>", "rows", "cold",
"environment_cold", "init_ms", "module_init_ms", "download_ms", "load_ms", "run_ms", "memory_mb"}``

The outputs come back in the form the inputs came in. ``cold`` says this invocation loaded the
model (downloaded it from the model bucket into ``/tmp`` and opened a session): what the tier's
cold probability predicts. ``environment_cold`` says it was the first invocation of this execution
environment; ``init_ms`` is everything this invocation spent that a warm one does not: the
environment's init (imports) when it was the first, the download and the session load.

Models are kept across invocations: the downloaded files in ``INFAAS_MODEL_CACHE_DIR`` (default
``/tmp/infaas-models``) and their sessions in memory, least recently used first out, within
``INFAAS_FUNCTION_CACHE_BYTES`` of ``/tmp`` (default 400 MiB of its 512 MiB) and
``INFAAS_FUNCTION_MAX_MODELS`` sessions (default 4). ``INFAAS_BUCKET`` names the model bucket, as for
every other function.

A payload over Lambda's 6 MB synchronous limit (``core/tier.MAX_PAYLOAD_BYTES``) is refused with a
clear error before any work, and so is an answer that would pass it: an error is an answer
``{"error": {"error", "code", "message", ...}, "status": <HTTP status>}`` (``core/errors``), never an
exception, so the caller maps it as it maps a worker's.
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import base64  # noqa: E402  (after T0: the init time counts the imports)
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import zipfile  # noqa: E402
from collections import OrderedDict  # noqa: E402

import boto3  # noqa: E402
import botocore.exceptions  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

from infaas.core import tier  # noqa: E402
from infaas.core.errors import InfaasError, InvalidInput, NotFound, PayloadTooLarge  # noqa: E402
from infaas.core.oip import tensors_from_json, tensors_to_json  # noqa: E402

BUCKET = os.environ.get("INFAAS_BUCKET", "")
CACHE_DIR = os.environ.get("INFAAS_MODEL_CACHE_DIR") or "/tmp/infaas-models"
CACHE_BYTES = int(os.environ.get("INFAAS_FUNCTION_CACHE_BYTES") or 400 << 20)
MAX_MODELS = int(os.environ.get("INFAAS_FUNCTION_MAX_MODELS") or 4)
MEMORY_MB = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE") or tier.FULL_VCPU_MB)
THREADS = tier.threads_for(min(max(MEMORY_MB, tier.MIN_MEMORY_MB), tier.MAX_MEMORY_MB))
MAX_NPZ_BYTES = 64 << 20  # an .npz input unpacks to at most this many bytes

s3_client = boto3.client("s3")  # its role: s3:GetObject on the variants/ prefix of the model bucket
MODULE_INIT_MS = (time.perf_counter() - T0) * 1000


class _Model:
    def __init__(self, key: str, path: str, size: int, session: ort.InferenceSession) -> None:
        self.key, self.path, self.size, self.session = key, path, size, session
        self.inputs = {i.name: i for i in session.get_inputs()}
        self.outputs = [o.name for o in session.get_outputs()]


MODELS: "OrderedDict[str, _Model]" = OrderedDict()  # model key -> loaded model, least recently used first
_state = {"invocations": 0}


def _file_name(key: str) -> str:
    return key.replace("/", "_").replace(":", "_")


def _evict_for(size: int) -> None:
    """Drop least recently used models (file and session) until ``size`` more bytes fit the budget
    and the free space of /tmp, and a session more fits the count."""
    if size > CACHE_BYTES:
        raise PayloadTooLarge(f"the model is {size:,} bytes, over this function's /tmp budget of {CACHE_BYTES:,} "
                              "(INFAAS_FUNCTION_CACHE_BYTES)", field="model_key")
    os.makedirs(CACHE_DIR, exist_ok=True)
    while MODELS and (sum(m.size for m in MODELS.values()) + size > CACHE_BYTES or len(MODELS) >= MAX_MODELS
                      or shutil.disk_usage(CACHE_DIR).free < size + (16 << 20)):
        _, old = MODELS.popitem(last=False)
        try:
            os.remove(old.path)
        except OSError:
            pass


def _load(key: str) -> tuple[_Model, float, float]:
    """The model of ``key``, downloaded and opened: (model, download ms, load ms)."""
    t0 = time.perf_counter()
    try:
        head = s3_client.head_object(Bucket=BUCKET, Key=key)
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("404", "NoSuchKey", "NotFound"):
            raise NotFound(f"no model file {key!r} in the model bucket", field="model_key") from None
        raise
    size = int(head["ContentLength"])
    _evict_for(size)
    path = os.path.join(CACHE_DIR, _file_name(key))
    part = f"{path}.part"
    body = s3_client.get_object(Bucket=BUCKET, Key=key)["Body"]
    with open(part, "wb") as f:
        for chunk in iter(lambda: body.read(1 << 20), b""):
            f.write(chunk)
    os.replace(part, path)
    t1 = time.perf_counter()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    model = _Model(key, path, size, session)
    MODELS[key] = model
    return model, (t1 - t0) * 1000, (time.perf_counter() - t1) * 1000


_ORT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
              "tensor(bool)": np.bool_, "tensor(string)": object}


def _inputs(raw, model: _Model) -> tuple[dict[str, np.ndarray], bool]:
    """The event's inputs as arrays the session takes, and whether they came as an .npz."""
    if isinstance(raw, str):
        try:
            data = base64.b64decode(raw, validate=True)
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                unpacked = sum(i.file_size for i in z.infolist())
            if unpacked > MAX_NPZ_BYTES:
                raise InvalidInput(f"the .npz unpacks to {unpacked:,} bytes, over {MAX_NPZ_BYTES:,}", field="inputs")
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                arrays = {name: z[name] for name in z.files}
        except InvalidInput:
            raise
        except Exception as exc:
            raise InvalidInput(f"inputs is neither OIP JSON tensors nor a base64 .npz: {str(exc)[:200]}",
                               field="inputs") from None
        npz = True
    else:
        arrays, npz = tensors_from_json(raw), False
    missing = [n for n in model.inputs if n not in arrays]
    extra = [n for n in arrays if n not in model.inputs]
    if missing or extra:
        raise InvalidInput(f"the model takes inputs {sorted(model.inputs)}; missing {missing}, unknown {extra}",
                           field="inputs")
    feed = {}
    for name, arr in arrays.items():
        want = _ORT_TYPES.get(model.inputs[name].type)
        feed[name] = np.ascontiguousarray(arr if want is None or arr.dtype == want else arr.astype(want))
    return feed, npz


def _rows(feed: dict[str, np.ndarray]) -> int:
    return max((a.shape[0] for a in feed.values() if a.ndim), default=1)


def _answer_outputs(outputs: dict[str, np.ndarray], npz: bool):
    if npz:
        buf = io.BytesIO()
        np.savez(buf, **outputs)
        return base64.b64encode(buf.getvalue()).decode("ascii")
    return tensors_to_json(outputs, limit=tier.MAX_PAYLOAD_BYTES)


def infer(event: dict) -> dict:
    """One invocation's work, errors raised as ``InfaasError``."""
    first = _state["invocations"] == 0
    _state["invocations"] += 1
    if not isinstance(event, dict):
        raise InvalidInput("the event must be a JSON object", field="event")
    size = len(json.dumps(event, separators=(",", ":")).encode())
    if size > tier.MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(f"the request is {size:,} bytes, over Lambda's synchronous invocation limit of "
                              f"{tier.MAX_PAYLOAD_BYTES:,} (6 MB): send fewer rows, or send them to a machine",
                              field="inputs")
    key, vid = event.get("model_key"), event.get("variant_id")
    if not isinstance(key, str) or not key or not isinstance(vid, str) or not vid:
        raise InvalidInput("the event needs variant_id and model_key", field="model_key")
    if "inputs" not in event:
        raise InvalidInput("the event has no inputs", field="inputs")
    model = MODELS.get(key)
    download_ms = load_ms = 0.0
    cold = model is None
    if model is None:
        model, download_ms, load_ms = _load(key)
    MODELS.move_to_end(key)
    feed, npz = _inputs(event["inputs"], model)
    wanted = event.get("outputs") or model.outputs
    unknown = [n for n in wanted if n not in model.outputs]
    if unknown:
        raise InvalidInput(f"unknown outputs {unknown}; the model has {model.outputs}", field="outputs")
    t = time.perf_counter()
    try:
        values = model.session.run(list(wanted), feed)
    except Exception as exc:  # a shape or type the model refuses
        raise InvalidInput(f"the model refused the inputs: {str(exc).splitlines()[0][:300]}", field="inputs") from None
    run_ms = (time.perf_counter() - t) * 1000
    init_ms = (MODULE_INIT_MS if first else 0.0) + download_ms + load_ms
    answer = {"variant_id": vid, "model_key": key, "id": event.get("id"), "rows": _rows(feed),
              "outputs": _answer_outputs(dict(zip(wanted, values)), npz), "cold": cold, "environment_cold": first,
              "init_ms": round(init_ms, 3), "module_init_ms": round(MODULE_INIT_MS, 3) if first else 0.0,
              "download_ms": round(download_ms, 3), "load_ms": round(load_ms, 3), "run_ms": round(run_ms, 3),
              "memory_mb": MEMORY_MB, "threads": THREADS}
    out = len(json.dumps(answer, separators=(",", ":")).encode())
    if out > tier.MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(f"the answer would be {out:,} bytes, over Lambda's response limit of "
                              f"{tier.MAX_PAYLOAD_BYTES:,} (6 MB): ask for fewer outputs or rows", field="outputs")
    return answer


def handler(event, context=None):
    try:
        return infer(event)
    except InfaasError as exc:
        return {"error": exc.to_dict(), "status": exc.status}
    except Exception as exc:  # noqa: BLE001 - the model bucket or onnxruntime failed: an answer, not a crash
        return {"error": {"error": f"{type(exc).__name__}: {str(exc)[:500]}", "code": "variant_fault",
                          "message": f"{type(exc).__name__}: {str(exc)[:500]}"}, "status": 502}
