"""The serverless tier on a local stack: ``INFAAS_FUNCTION_TIER=on``, a digits model built for
``cpu,lambda``; the tier's functions are processes of this machine running the inference function's
handler on the stack's model folder (``adapters/local/functions.py``).

The stack has no worker of its own (``workers=0``, autoscaling off): the test starts one to build the
model and stops it, leaving the fleet at zero. Then a query the tier answers in time goes to it: cold
first (a process starts, imports onnxruntime, copies the variant's file and opens it), then warm. A
worker started again takes the next query (a machine that can load the variant in time comes before
the tier), loads its replica, and the queries after it stay on the machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from infaas.adapters.local.processes import free_port
from infaas.adapters.local.secret import worker_secret
from infaas.cli import digits
from infaas.client import Client
from infaas.core.settings import Settings
from infaas.local.launcher import StackProcess
from infaas.wiring import make_adapters

pytestmark = pytest.mark.e2e

ARCH = "mlp-32"
OBJECTIVE_MS = 5000.0  # above the profiled cold start of the function: the tier is chosen although cold


def wait_for(predicate, timeout_s: float, what: str, log=lambda: ""):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}\n{log()}")


ENV = {"INFAAS_BUILD_HARDWARE": "cpu,lambda", "INFAAS_FUNCTION_TIER": "on", "INFAAS_AUTOSCALE": "off"}


def start_worker(data_dir: str, worker_id: str, log_path) -> subprocess.Popen:
    env = dict(os.environ, INFAAS_DATA_DIR=data_dir, INFAAS_HOST="127.0.0.1", OMP_NUM_THREADS="1", **ENV)
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "infaas.worker", "--hardware", "cpu", "--port", str(free_port()),
                                 "--worker-id", worker_id, "--local-socket"], env=env, stdout=log,
                                stderr=subprocess.STDOUT)


def stop_worker(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # drains, deregisters, exits
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_tier_answers_until_a_machine_holds_the_model(tmp_path):
    data_dir = str(tmp_path / "data")
    os.makedirs(data_dir)
    worker_secret(data_dir)  # the stack's worker key, made before either side starts
    stack = StackProcess(workers=0, data_dir=data_dir, log_path=str(tmp_path / "stack.log"), env=ENV)
    worker_log = tmp_path / "worker.log"
    logs = lambda: stack.log_tail(40) + "\n--- worker ---\n" + (  # noqa: E731
        worker_log.read_text(errors="replace")[-4000:] if worker_log.exists() else "")
    # the builder is up first: the stack is ready (its health probe) once a worker is
    builder = start_worker(data_dir, "cpu-builder", worker_log)
    machine = client = None
    try:
        stack.start(timeout_s=90.0)
        client = Client(stack.url, timeout_s=60.0, api_key=stack.api_key)
        store = make_adapters(Settings(data_dir=data_dir)).store
        data = digits.split()
        trained = digits.train(str(tmp_path / "models"), names=[ARCH], data=data)[0]
        validation = tmp_path / "validation.npz"
        validation.write_bytes(digits.validation_npz(data))
        client.register(trained.path, name=ARCH, task=digits.TASK, accuracy=round(trained.val_accuracy, 4),
                        validation=str(validation))
        done = ("ready", "failed", "skipped")
        variants = wait_for(lambda: (lambda vs: vs if vs and all(v.status in done for v in vs) else None)(
            store.variants_of(ARCH)), 300.0, "the build", logs)
        functions = [v for v in variants if v.hardware == "lambda" and v.status == "ready"]
        machines = [v for v in variants if v.hardware == "cpu" and v.status == "ready"]
        assert functions and machines, [(v.id, v.status, v.message) for v in variants]
        assert all(v.profile.memory_mb and v.profile.load_ms > 0 for v in functions)
        stop_worker(builder)
        wait_for(lambda: not store.workers(), 30.0, "the fleet at zero", logs)
        # no worker is up, and the service is still ready: the tier answers (a health check would
        # otherwise take a fleet whose minimum is zero out of service)
        health = wait_for(lambda: (lambda r: r if r.json()["workers"] == 0 else None)(client.http.get("/v2/health/ready")),
                          30.0, "the API's view of the fleet at zero", logs)
        assert health.status_code == 200 and health.json() == {"ready": True, "workers": 0, "function_variants": len(functions)}, \
            health.text

        x = data.x_test[:3].astype(np.float32)
        want = np.asarray(trained.model.predict(x)).astype(np.int64).tolist()
        decisions = []
        for _ in range(3):
            out, d = client.infer(x, architecture=ARCH, latency_ms=OBJECTIVE_MS)
            assert np.asarray(out["label"]).tolist() == want
            decisions.append(d)
        cold, *warm = decisions
        assert cold["worker"] == "lambda" and cold["variant"].endswith(":lambda:b8"), cold
        assert cold["loaded"] is False and "cold start" in cold["reason"], cold
        for d in warm:
            assert d["worker"] == "lambda" and d["variant"] == cold["variant"] and d["loaded"] is True, d

        # a worker comes up: it can load the CPU variant in time, so it takes the next query and loads it
        machine = start_worker(data_dir, "cpu-1", worker_log)
        wait_for(lambda: store.workers(), 60.0, "the worker's heartbeat", logs)

        def on_machine():
            out, d = client.infer(x, architecture=ARCH, latency_ms=OBJECTIVE_MS)
            assert np.asarray(out["label"]).tolist() == want
            return d if d["worker"] == "cpu-1" else None

        first_on_machine = wait_for(on_machine, 30.0, "a query answered by the machine", logs)
        assert first_on_machine["variant"] in {v.id for v in machines}, first_on_machine
        wait_for(lambda: any(r.variant_id == first_on_machine["variant"] for w in store.workers() for r in w.replicas),
                 30.0, "the replica in the worker's heartbeat", logs)

        def loaded_on_machine():  # once the API's view has the replica (its snapshot is refreshed within a second)
            d = on_machine()
            return d if d is not None and d["loaded"] else None

        d = wait_for(loaded_on_machine, 30.0, "a query answered by the loaded replica", logs)
        assert d["variant"] == first_on_machine["variant"], d

        metrics = client.http.get("/metrics")
        assert metrics.status_code == 200, metrics.text
        series = {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1]) for ln in metrics.text.splitlines()
                  if ln.startswith("infaas_function")}
        vid = cold["variant"]
        # three before the worker came, and any the API sent before its view had the worker
        assert series[f'infaas_function_invocations_total{{outcome="ok",variant="{vid}"}}'] >= 3, series
        assert series[f'infaas_function_cold_starts_total{{variant="{vid}"}}'] == 1, series
        assert series[f'infaas_function_invocations_total{{outcome="error",variant="{vid}"}}'] == 0, series
        print(f"\nlocal tier: cold {cold['latency_ms']:.1f} ms (predicted {cold['predicted_latency_ms']:.0f}), "
              f"warm {', '.join('%.2f' % w['latency_ms'] for w in warm)} ms; machine {d['latency_ms']:.2f} ms")
    finally:
        for proc in (builder, machine):
            if proc is not None:
                stop_worker(proc)
        if client is not None:
            client.close()
        stack.stop()
