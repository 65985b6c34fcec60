"""The baseline of the benchmark: a minimal hand-written inference endpoint.

One process, FastAPI + uvicorn (same server stack and defaults as the INFaaS
API), one onnxruntime session on the CPU, two formats per model:

- raw bytes, ``POST /infer``: the body is the raw float32 bytes of the input
  rows; the answer is the raw bytes of every output, in the model's output
  order, concatenated;
- JSON, ``POST /infer_json``: the body is ``{"x": [[...floats...], ...]}``; the
  answer is ``{"outputs": [...]}``, every output as nested lists, in the
  model's output order.

No validation, no selection, no hop to a worker: this is the floor a
model-serving stack is compared against.

Run: ``python bench/baseline_server.py MODEL.onnx [NAME=MODEL2.onnx ...] --port 8123 [--threads 1]``.
The first model answers ``POST /infer`` and ``POST /infer_json``; each model given
as ``NAME=PATH`` also answers ``POST /NAME/infer`` and ``POST /NAME/infer_json``
(one process, one session per model).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response


def _endpoints(model_path: str, threads: int):
    """The raw-bytes and the JSON endpoint of one model, on one session."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model_path, sess_options=opts, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    row_shape = tuple(int(d) for d in inp.shape[1:])  # one row of the input

    async def infer(request: Request):
        x = np.frombuffer(await request.body(), dtype=np.float32).reshape((-1, *row_shape))
        outs = session.run(None, {inp.name: x})
        return Response(b"".join(np.ascontiguousarray(o).tobytes() for o in outs),
                        media_type="application/octet-stream")

    async def infer_json(request: Request):
        x = np.asarray(json.loads(await request.body())["x"], dtype=np.float32).reshape((-1, *row_shape))
        outs = session.run(None, {inp.name: x})
        return Response(json.dumps({"outputs": [o.tolist() for o in outs]}, separators=(",", ":")).encode(),
                        media_type="application/json")

    return infer, infer_json


def create_app(model_path: str, threads: int = 1, named: dict[str, str] | None = None) -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    def health():
        return {"ok": True}

    endpoints: dict[str, tuple] = {}  # one session per file
    for name, path in {"": model_path, **(named or {})}.items():
        if path not in endpoints:
            endpoints[path] = _endpoints(path, threads)
        raw, as_json = endpoints[path]
        prefix = f"/{name}" if name else ""
        app.add_api_route(f"{prefix}/infer", raw, methods=["POST"])
        app.add_api_route(f"{prefix}/infer_json", as_json, methods=["POST"])
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", metavar="[NAME=]MODEL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (INFaaS workers use 1)")
    args = parser.parse_args()
    named = dict(m.split("=", 1) for m in args.models if "=" in m)
    first = args.models[0].split("=", 1)[-1]
    uvicorn.run(create_app(first, args.threads, named), host=args.host, port=args.port, log_level="warning",
                access_log=False)


if __name__ == "__main__":
    main()
