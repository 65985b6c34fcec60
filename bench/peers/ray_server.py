"""Ray Serve peer of the benchmark: the same ONNX files behind Ray Serve, raw bytes in and out.

Runs in the peers' virtualenv (bench/.work/peers-venv), never in the product's:

    peers-venv/bin/python bench/peers/ray_server.py --port 8200 --temp-dir DIR NAME=MODEL.onnx ...

Starts a one-node Ray cluster on loopback (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``,
``_node_ip_address="127.0.0.1"``, no dashboard, no usage stats), Serve's HTTP proxy
on 127.0.0.1:PORT, and per model two applications, each one replica with
``max_ongoing_requests=64`` (Serve's default collapses under 32 concurrent clients)
and onnxruntime with 1 intra-op thread, access log off:

* ``/NAME``: each request runs alone (``session.run`` on its rows);
* ``/NAME-batch``: requests go through ``@serve.batch`` (up to 32 requests, 2 ms wait)
  and run as one ``session.run``; each caller gets its own rows back.

The request body is the raw float32 bytes of the rows, the answer the raw bytes of
every output in the model's order (the format of bench/baseline_server.py). When all
applications answer it prints ``READY <port>`` and waits for "stop" or the end of its
stdin (or SIGTERM/SIGINT), then shuts Serve and Ray down. The bench also kills, by PID,
whatever of Ray's processes (all in this script's session) outlives that.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import numpy as np  # noqa: E402
import ray  # noqa: E402
from ray import serve  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import Response  # noqa: E402

MAX_ONGOING = 64
BATCH = 32
BATCH_WAIT_S = 0.002


def _session(path: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    row_shape = tuple(int(d) for d in inp.shape[1:])
    return session, inp.name, row_shape


def _encode(outs) -> bytes:
    return b"".join(np.ascontiguousarray(o).tobytes() for o in outs)


@serve.deployment(max_ongoing_requests=MAX_ONGOING, ray_actor_options={"num_cpus": 0})
class Plain:
    def __init__(self, path: str) -> None:
        self.session, self.name, self.row_shape = _session(path)

    async def __call__(self, request: Request) -> Response:
        x = np.frombuffer(await request.body(), dtype=np.float32).reshape((-1, *self.row_shape))
        return Response(_encode(self.session.run(None, {self.name: x})), media_type="application/octet-stream")


@serve.deployment(max_ongoing_requests=MAX_ONGOING, ray_actor_options={"num_cpus": 0})
class Batched:
    def __init__(self, path: str) -> None:
        self.session, self.name, self.row_shape = _session(path)

    @serve.batch(max_batch_size=BATCH, batch_wait_timeout_s=BATCH_WAIT_S)
    async def run(self, xs: list[np.ndarray]) -> list[bytes]:
        outs = self.session.run(None, {self.name: np.concatenate(xs)})
        answers, start = [], 0
        for x in xs:
            stop = start + len(x)
            answers.append(_encode(o[start:stop] for o in outs))
            start = stop
        return answers

    async def __call__(self, request: Request) -> Response:
        x = np.frombuffer(await request.body(), dtype=np.float32).reshape((-1, *self.row_shape))
        return Response(await self.run(x), media_type="application/octet-stream")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="NAME=PATH")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--temp-dir", required=True, help="Ray's session directory (short path: it holds sockets)")
    args = parser.parse_args()
    models = dict(m.split("=", 1) for m in args.models)

    stop = threading.Event()

    def watch_stdin() -> None:  # the bench closes our stdin (or writes "stop") to stop us
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    t0 = time.time()
    ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=os.cpu_count() or 1,
             _temp_dir=os.path.abspath(args.temp_dir), log_to_driver=False, configure_logging=False)
    try:
        logging_config = {"enable_access_log": False, "log_level": "WARNING"}
        serve.start(http_options={"host": "127.0.0.1", "port": args.port}, logging_config=logging_config)
        for name, path in models.items():
            serve.run(Plain.options(name=f"{name}-plain").bind(path), name=name, route_prefix=f"/{name}",
                      logging_config=logging_config)
            serve.run(Batched.options(name=f"{name}-batch").bind(path), name=f"{name}-batch",
                      route_prefix=f"/{name}-batch", logging_config=logging_config)
        for sig in (signal.SIGTERM, signal.SIGINT):  # after ray.init, which installs its own handlers
            signal.signal(sig, lambda *_: stop.set())
        print(f"READY {args.port} after {time.time() - t0:.1f} s", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
    sys.exit(0)


if __name__ == "__main__":
    main()
