"""A build job for a hardware type that no worker really has waits, with a
clear reason, and never runs elsewhere.

A local stack that builds for cpu and gpu (INFAAS_BUILD_HARDWARE=cpu,gpu)
gets one cpu worker; a second worker process is started declared as gpu on
this machine, which has no CUDA. It reports only the CPU provider in its
heartbeat, logs that it lacks CUDA and TensorRT, and leaves the build-gpu job
in its lane: the cpu variants become ready, the gpu variants stay pending,
and ``waiting_reason`` over the live worker records says why.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from stack_support import READY_TIMEOUT_S

from infaas.adapters.local.processes import free_port
from infaas.app.build import build_lane
from infaas.cli import digits
from infaas.client import Client
from infaas.core.settings import Settings
from infaas.local.launcher import StackProcess
from infaas.runtime.hardware import waiting_reason
from infaas.wiring import make_adapters

pytestmark = pytest.mark.e2e

ARCH = "mlp-32"
GPU_WORKER = "gpu-declared-1"
LACKS = "workers of type gpu lack CUDAExecutionProvider, TensorrtExecutionProvider: " + GPU_WORKER


def wait_for(predicate, timeout_s: float, what: str, log=lambda: ""):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}\n{log()}")


def test_gpu_build_job_waits_for_a_worker_with_cuda(tmp_path):
    data_dir = str(tmp_path / "data")
    stack = StackProcess(workers=1, data_dir=data_dir, log_path=str(tmp_path / "stack.log"),
                         env={"INFAAS_BUILD_HARDWARE": "cpu,gpu", "INFAAS_AUTOSCALE": "off"})
    stack.start(timeout_s=60.0)
    gpu_log = open(tmp_path / "gpu-worker.log", "wb")
    gpu_worker = None
    client = Client(stack.url, timeout_s=30.0, api_key=stack.api_key)
    try:
        adapters = make_adapters(Settings(data_dir=data_dir))
        store, queue = adapters.store, adapters.queue
        data = digits.split()
        trained = digits.train(str(tmp_path / "models"), names=[ARCH], data=data)[0]
        validation = tmp_path / "validation.npz"
        validation.write_bytes(digits.validation_npz(data))
        client.register(trained.path, name=ARCH, task=digits.TASK, accuracy=round(trained.val_accuracy, 4),
                        validation=str(validation))

        gpu_variants = [v for v in store.variants_of(ARCH) if v.hardware == "gpu"]
        assert len(gpu_variants) == 5 and queue.depth(build_lane("gpu")) == 1
        assert {waiting_reason(v, store.workers()) for v in gpu_variants} == {"no worker of hardware type gpu is up"}

        # a worker declared gpu, on a machine without CUDA
        env = dict(os.environ, INFAAS_DATA_DIR=data_dir, INFAAS_HOST="127.0.0.1", INFAAS_BUILD_HARDWARE="cpu,gpu")
        gpu_worker = subprocess.Popen(
            [sys.executable, "-m", "infaas.worker", "--hardware", "gpu", "--port", str(free_port()),
             "--worker-id", GPU_WORKER],
            env=env, stdout=gpu_log, stderr=subprocess.STDOUT,
        )
        logs = lambda: stack.log_tail(60) + "\n--- gpu worker ---\n" + (tmp_path / "gpu-worker.log").read_text(errors="replace")
        record = wait_for(lambda: next((w for w in store.workers() if w.id == GPU_WORKER), None), 30.0,
                          "the gpu worker's heartbeat", logs)
        assert record.hardware == "gpu" and record.runtimes == ("CPUExecutionProvider",)

        # the cpu variants are built and profiled meanwhile
        wait_for(lambda: all(v.status in ("ready", "skipped", "failed") for v in store.variants_of(ARCH)
                             if v.hardware == "cpu"), READY_TIMEOUT_S, "the cpu variants", logs)
        time.sleep(1.0)  # several job-loop periods of the gpu worker (0.25 s each)

        variants = {v.id: v for v in store.variants_of(ARCH)}
        cpu = [v for v in variants.values() if v.hardware == "cpu"]
        assert cpu and all(v.status == "ready" and v.profile is not None for v in cpu), [(v.id, v.status, v.message) for v in cpu]
        gpu = [v for v in variants.values() if v.hardware == "gpu"]
        assert [v.status for v in gpu] == ["pending"] * 5, [(v.id, v.status, v.message) for v in gpu]
        assert queue.depth(build_lane("gpu")) == 1  # still in its lane, never taken
        workers = store.workers()
        assert {waiting_reason(v, workers) for v in gpu} == {LACKS}

        status = client.model(ARCH)
        assert status["status"] == "building"
        assert {v["status"] for v in status["variants"] if v["hardware"] == "gpu"} == {"pending"}
        assert gpu_worker.poll() is None
        text = (tmp_path / "gpu-worker.log").read_text(errors="replace")
        assert f"worker {GPU_WORKER} is declared gpu but lacks CUDAExecutionProvider, TensorrtExecutionProvider" in text
        assert "not taking build-gpu jobs" in text
    finally:
        client.close()
        if gpu_worker is not None and gpu_worker.poll() is None:
            gpu_worker.send_signal(signal.SIGTERM)
            try:
                gpu_worker.wait(15)
            except subprocess.TimeoutExpired:
                gpu_worker.kill()
                gpu_worker.wait()
        gpu_log.close()
        stack.stop()
