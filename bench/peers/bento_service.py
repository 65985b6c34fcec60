"""BentoML peer of the benchmark: the same ONNX files behind BentoML, in its own request formats.

Runs in the peers' virtualenv (bench/.work/peers-venv), never in the product's:

    BENCH_MODEL=TINY.onnx BENCH_MODEL_IMAGE=SQUEEZENET.onnx peers-venv/bin/bentoml serve \\
        bento_service:Model --working-dir bench/peers --host 127.0.0.1 --port 8300

One service worker, one onnxruntime session per model (1 intra-op thread), access log off:

* ``POST /predict``, the tiny model: a batchable API (BentoML's adaptive batching, up to
  32 requests; ``max_latency_ms`` 1000, since at its default-like 10 ms BentoML sheds most
  requests at concurrency 32 with 503 "process is overloaded"). BentoML's JSON body
  ``{"x": [[64 floats], ...]}``; the answer is the JSON list of each row's class
  probabilities (the model's float output).
* ``POST /image``, the compute-bound model (when ``BENCH_MODEL_IMAGE`` is set): the raw
  float32 bytes of the images as a multipart file upload (a 3x224x224 image as JSON would
  cost far more than the model); not batched (BentoML batches tensor inputs only, and
  SqueezeNet gains nothing from batching on a CPU); the answer is the JSON list of the
  probabilities.
"""

from __future__ import annotations

import os
from pathlib import Path

import bentoml
import numpy as np


def _session(path: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    floats = [o.name for o in session.get_outputs() if o.type == "tensor(float)"]
    inp = session.get_inputs()[0]
    return session, inp.name, tuple(int(d) for d in inp.shape[1:]), floats[-1] if floats else session.get_outputs()[-1].name


@bentoml.service(workers=1, traffic={"timeout": 30}, logging={"access": {"enabled": False}})
class Model:
    def __init__(self) -> None:
        self._tiny = _session(os.environ["BENCH_MODEL"])
        image = os.environ.get("BENCH_MODEL_IMAGE")
        self._image = _session(image) if image else None

    @bentoml.api(batchable=True, max_batch_size=32, max_latency_ms=1000)
    def predict(self, x: np.ndarray) -> np.ndarray:
        session, name, _, output = self._tiny
        return session.run([output], {name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    @bentoml.api
    def image(self, data: Path) -> np.ndarray:
        session, name, row_shape, output = self._image
        x = np.frombuffer(data.read_bytes(), dtype=np.float32).reshape((-1, *row_shape))
        return session.run([output], {name: x})[0].reshape(len(x), -1)
