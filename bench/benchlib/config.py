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

# The systems, in the order of the tables. A result's key is a system's, measured with the raw-socket
# client, or ``SYSTEM@CLIENT`` (e.g. ``infaas@aiohttp``) with another client (CLIENT_LABELS).
LABELS = {
    "infaas": "INFaaS OIP binary",
    "fastapi": "FastAPI raw bytes",
    "infaas-json": "INFaaS OIP JSON",
    "fastapi-json": "FastAPI JSON",
    "ray": "Ray Serve",
    "ray-batch": "Ray Serve + @serve.batch",
    "bento": "BentoML",
}
RAW_CLIENT = "raw"
CLIENT_LABELS = {RAW_CLIENT: "raw-socket client", "aiohttp": "aiohttp"}


def with_client(system: str, client: str) -> str:
    """The result key of ``system`` measured with ``client``."""
    return system if client == RAW_CLIENT else f"{system}@{client}"


def split_key(key: str) -> tuple[str, str]:
    """A result key's (system, client)."""
    system, _, client = key.partition("@")
    return system, client or RAW_CLIENT


def label(key: str) -> str:
    """A result key's label, the client named: "FastAPI JSON (aiohttp)"."""
    system, client = split_key(key)
    return f"{LABELS[system]} ({CLIENT_LABELS[client]})"


def is_infaas(key: str) -> bool:
    return split_key(key)[0].startswith("infaas")


def counterpart(key: str) -> str:
    """The INFaaS result a system's row is compared with: the same format (JSON or binary), the same client."""
    system, client = split_key(key)
    return with_client("infaas-json" if system.endswith("-json") else "infaas", client)
