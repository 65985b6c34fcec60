"""Raw onnxruntime, in-process, no HTTP: the floor every server is compared against.

    python bench/peers/ort_raw.py MODEL.onnx --procs 2 --batch 1 --seconds 3

Run with the product's interpreter (the same onnxruntime INFaaS's workers use).
Starts ``--procs`` processes (spawned; one per core for "one process per core"),
each with its own session (1 intra-op thread, 1 inter-op thread, all graph
optimisations), its own random input of ``--batch`` rows and a short warm-up;
they start together (a barrier) and call ``session.run`` in a loop for
``--seconds``. Prints one JSON line: calls, inferences (calls x batch),
inferences per second summed over processes, p50/p99 of one call in ms, and
the CPU seconds the processes used.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time


def _worker(path: str, batch: int, seconds: float, seed: int, barrier, out) -> None:
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    shape = [batch] + [int(d) if isinstance(d, int) and d > 0 else 1 for d in inp.shape[1:]]
    x = np.random.default_rng(seed).random(shape, dtype=np.float32)
    feed = {inp.name: x}
    t_warm = time.perf_counter()
    n_warm = 0
    while n_warm < 3 or time.perf_counter() - t_warm < 0.3:
        session.run(None, feed)
        n_warm += 1
    barrier.wait()
    lat = []
    clock = time.perf_counter
    cpu0, t0 = time.process_time(), clock()
    deadline = t0 + seconds
    while True:
        a = clock()
        session.run(None, feed)
        b = clock()
        lat.append(b - a)
        if b >= deadline:
            break
    out.put({"calls": len(lat), "wall_s": clock() - t0, "cpu_s": time.process_time() - cpu0, "lat": lat})


def run(path: str, procs: int, batch: int, seconds: float) -> dict:
    import numpy as np

    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(procs), ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(path, batch, seconds, i, barrier, out), daemon=True)
               for i in range(procs)]
    for w in workers:
        w.start()
    try:
        parts = [out.get(timeout=seconds + 120) for _ in workers]
    finally:
        for w in workers:
            w.join(5)
            if w.is_alive():
                w.kill()
    lat = np.array([x for p in parts for x in p["lat"]]) * 1000.0
    wall = max(p["wall_s"] for p in parts)
    calls = sum(p["calls"] for p in parts)
    return {"procs": procs, "batch": batch, "calls": calls, "inferences": calls * batch, "wall_s": wall,
            "per_s": calls * batch / wall, "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)), "cpu_s": sum(p["cpu_s"] for p in parts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--procs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    print(json.dumps(run(args.model, args.procs, args.batch, args.seconds)), flush=True)


if __name__ == "__main__":
    main()
