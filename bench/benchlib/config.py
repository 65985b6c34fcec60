"""Constants shared by several modules of the benchmark: where things are, the host, the models'
names, the systems' labels. What a reader tunes (rounds, durations, which systems) is in ``bench/run.py``."""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "src"))  # run from a checkout without an install too

WORKERS = 2  # the default of `infaas up`
HOST = "127.0.0.1"
TINY, SQUEEZE = "mlp-512-256", "squeezenet-light"
SQUEEZE_TASK = "classification/imagenet-light"
CORES = os.cpu_count() or 1

DOC = os.path.join(ROOT, "docs", "performance.md")
PLOT = os.path.join(ROOT, "docs", "img", "performance.png")

WORK = os.path.join(ROOT, "bench", ".work")
PEERS_VENV = os.path.join(WORK, "peers-venv")
PEERS_PY = os.path.join(PEERS_VENV, "bin", "python")

# The systems, in the order of the tables.
LABELS = {
    "infaas": "INFaaS",
    "fastapi": "FastAPI raw bytes",
    "ray": "Ray Serve",
    "ray-batch": "Ray Serve + @serve.batch",
    "bento": "BentoML",
}
