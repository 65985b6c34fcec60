"""Selection microbenchmark: one decision over a large catalogue and cluster.

    .venv/bin/python bench/selection_bench.py [--variants 10000] [--replicas 1000] [--decisions 20000]

Builds a synthetic catalogue (100 tasks, variants spread over them, profiles
with realistic spreads), a cluster of workers holding ``--replicas`` loaded
replicas with random queues, and times ``selection.select`` for task queries
with accuracy and latency objectives, architecture queries and variant
queries. Prints p50/p99 per decision in microseconds. A microbenchmark, not
a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__file__), "..", "src"))

from infaas.core.domain import (  # noqa: E402
    HardwareType,
    Objective,
    Profile,
    Query,
    ReplicaLoad,
    Variant,
    Worker,
)
from infaas.core.selection import Catalogue, Cluster, select  # noqa: E402

HW = {"cpu": HardwareType("cpu", 0.085), "gpu": HardwareType("gpu", 0.526), "inferentia": HardwareType("inferentia", 0.7582)}


def build(n_variants: int, n_replicas: int, n_tasks: int = 100, seed: int = 0):
    rng = random.Random(seed)
    variants = []
    per_task = n_variants // n_tasks
    for t in range(n_tasks):
        for i in range(per_task):
            arch = f"arch-{t}-{i // 5}"
            hw = ("cpu", "gpu", "inferentia")[i % 3]
            base = rng.uniform(0.05, 20.0) / (4 if hw != "cpu" else 1)
            prof = Profile(hw, {b: (base * (1 + 0.1 * b), base * (1.3 + 0.12 * b)) for b in (1, 2, 4, 8, 16, 32)},
                           load_ms=rng.uniform(20, 2000), peak_memory_bytes=rng.randint(1 << 20, 1 << 30))
            variants.append(Variant(arch, f"f{i % 5}", "onnxruntime", hw, 32, f"task{t}/d", "local", "shared", "ready",
                                    "k", round(rng.uniform(0.6, 0.99), 3), True, prof))
    n_workers = max(1, n_replicas // 10)  # ten replicas per worker, of the worker's hardware type
    by_hw = {h: [v for v in variants if v.hardware == h] for h in HW}
    workers = []
    for w in range(n_workers):
        hw = ("cpu", "gpu", "inferentia")[w % 3]
        mine = rng.sample(by_hw[hw], 10)
        reps = tuple(ReplicaLoad(v.id, queued_rows=rng.randint(0, 64)) for v in mine)
        workers.append(Worker(f"w{w}", hw, f"http://w{w}", replicas=reps))
    return variants, workers


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", type=int, default=10_000)
    ap.add_argument("--replicas", type=int, default=1_000)
    ap.add_argument("--decisions", type=int, default=20_000)
    args = ap.parse_args()
    variants, workers = build(args.variants, args.replicas)
    t0 = time.perf_counter()
    catalogue = Catalogue.build(variants, HW)
    cluster = Cluster.build(workers, HW, catalogue=catalogue)
    build_ms = (time.perf_counter() - t0) * 1000
    rng = random.Random(1)
    queries = []
    for i in range(args.decisions):
        t = rng.randrange(100)
        kind = i % 4
        if kind in (0, 1):
            q = Query(1, Objective(min_accuracy=rng.choice([None, 0.7, 0.9]), latency_ms=rng.choice([None, 5.0, 50.0])),
                      task=f"task{t}/d")
        elif kind == 2:
            q = Query(rng.choice([1, 8]), Objective(latency_ms=100.0), architecture=f"arch-{t}-{rng.randrange(20)}")
        else:
            q = Query(1, variant=rng.choice(variants).id)
        queries.append(q)
    print(f"catalogue {len(variants)} variants, {sum(len(w.replicas) for w in workers)} replicas on {len(workers)} workers "
          f"(snapshot build {build_ms:.0f} ms, once per refresh)")
    # First pass: every query shape is new to this snapshot (its candidates get ranked once).
    # Second pass: the steady state of a server, whose snapshot lives for many queries.
    for label in ("first sight of each query shape", "steady state"):
        times, outcomes = [], {"ok": 0, "error": 0}
        for q in queries:
            t = time.perf_counter_ns()
            try:
                select(q, catalogue, cluster)
                outcomes["ok"] += 1
            except Exception:
                outcomes["error"] += 1
            times.append((time.perf_counter_ns() - t) / 1000)
        times.sort()
        p = lambda x: times[min(len(times) - 1, int(x * len(times)))]
        print(f"{label}: {len(times)} decisions ({outcomes['ok']} chosen, {outcomes['error']} refused): "
              f"p50 {p(0.5):.1f} us, p99 {p(0.99):.1f} us, mean {statistics.mean(times):.1f} us")


if __name__ == "__main__":
    main()
