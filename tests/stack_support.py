"""Shared by the e2e and the in-process API tiers: a stack serving two digits classifiers, and a few checks.

The e2e tier runs it as processes (``infaas up``, tests/e2e/conftest.py); the API tier runs the
API app and one worker agent in this process (tests/api/conftest.py). Tests see the same ``Stack``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from infaas.cli import digits
from infaas.client import Client
from infaas.local.launcher import StackProcess

ARCHITECTURES = ("logistic-regression", "mlp-32")
# How long a test waits for registered variants to be ready: on a busy machine each build job is
# deferred up to app.build.MAX_DEFERRALS times (15 + 30 + 60 s, app.build.defer_s) before it takes
# the quietest figures, so a bound under a few minutes fails the suite exactly when CI is loaded
# (and under the 300 s that pytest-timeout gives a whole test, fixtures included).
READY_TIMEOUT_S = 240.0


@dataclass
class Stack:
    url: str
    data_dir: str
    workdir: str  # outside the data dir: model files, validation npz, stack log
    client: Client  # infaas.client.Client (binary OIP path)
    http: httpx.Client  # raw HTTP for JSON and malformed requests
    data: digits.Split
    models: dict[str, Any]  # architecture -> fitted scikit-learn estimator
    paths: dict[str, str]  # architecture -> .onnx path
    validation_path: str
    status: dict[str, dict]  # architecture -> status after wait_ready
    log_path: str  # where the stack's processes (or this process, in-process) log
    process: StackProcess | None = None  # the e2e tier's `infaas up`; None in-process

    def expected(self, architecture: str, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.models[architecture].predict(x)).astype(np.int64)

    def log_tail(self, lines: int = 80) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def assert_no_internal_errors(self) -> None:
        """The stack logs every 500 as 'unexpected error' with a traceback."""
        try:
            with open(self.log_path, "rb") as f:
                log = f.read().decode(errors="replace")
        except OSError:
            return
        assert "unexpected error" not in log and "Exception in ASGI application" not in log, log[-8000:]

    def assert_serving(self) -> None:
        """A cheap health check: one normal query answers with sklearn's labels."""
        x = self.data.x_test[:3]
        resp = self.http.post("/v1/infer", json={"architecture": ARCHITECTURES[0], "inputs": x.tolist()})
        assert resp.status_code == 200, (resp.status_code, resp.text, self.log_tail())
        label = output_data(resp.json()["outputs"], "label")
        assert label == self.expected(ARCHITECTURES[0], x).tolist()


def output_data(outputs: list[dict], name: str) -> list:
    for o in outputs:
        if o["name"] == name:
            return o["data"]
    raise AssertionError(f"no output {name!r} in {[o['name'] for o in outputs]}")


def child_pids(pid: int) -> list[int]:
    """Direct children of a process (the stack's worker processes), from /proc."""
    import os

    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(p) for p in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):  # a thread that ended meanwhile
            continue
    return out
