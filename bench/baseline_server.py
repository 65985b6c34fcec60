"""The baseline of the benchmark: a minimal hand-written inference endpoint.

One process, FastAPI + uvicorn (same server stack and defaults as the INFaaS
API), one onnxruntime session on the CPU. The request body is the raw float32
bytes of the input rows; the answer is the raw bytes of every output, in the
model's output order, concatenated. No validation, no selection, no hop to a
worker: this is the floor a model-serving stack is compared against.

Run: ``python bench/baseline_server.py MODEL.onnx --port 8123 [--threads 1]``.
"""

from __future__ import annotations

import argparse

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response


def create_app(model_path: str, threads: int = 1) -> FastAPI:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model_path, sess_options=opts, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    width = int(np.prod([d for d in inp.shape[1:]]))  # features per row

    app = FastAPI()

    @app.get("/health")
    def health():
        return {"ok": True}

    @app.post("/infer")
    async def infer(request: Request):
        x = np.frombuffer(await request.body(), dtype=np.float32).reshape(-1, width)
        outs = session.run(None, {inp.name: x})
        return Response(b"".join(np.ascontiguousarray(o).tobytes() for o in outs),
                        media_type="application/octet-stream")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (INFaaS workers use 1)")
    args = parser.parse_args()
    uvicorn.run(create_app(args.model, args.threads), host=args.host, port=args.port, log_level="warning",
                access_log=False)


if __name__ == "__main__":
    main()
