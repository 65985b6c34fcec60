"""Replica processes (runtime/sandbox.py): a replica's runtime in a child process under a hard
memory limit; a query that would grow past it fails alone, a child that dies fails only its
batch, and a variant that keeps dying is refused for a while."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

import numpy as np
import pytest
from fakes import memory_growing_model, slow_model, tiling_model

from infaas.core.domain import Variant
from infaas.core.errors import InvalidInput, VariantFault
from infaas.runtime import sandbox
from infaas.runtime.executor import load_executor


def rss_kib(pid: int = 0) -> int:
    with open(f"/proc/{pid or 'self'}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/status") as f:  # a zombie is not alive
            return not any(line.startswith("State:") and "Z" in line for line in f)
    except (FileNotFoundError, ProcessLookupError):  # reaped meanwhile (open or read)
        return False


@pytest.fixture(scope="module")
def grower(tmp_path_factory) -> tuple[Variant, str]:
    path = tmp_path_factory.mktemp("sandbox") / "grow.onnx"
    memory_growing_model(path)
    v = Variant(architecture="grow", format="fp32", runtime="onnxruntime", hardware="cpu", max_batch=8,
                task="t", tenant="a", status="ready")
    return v, str(path)


def x(value: float) -> dict[str, np.ndarray]:
    return {"x": np.array([[value]], np.float32)}


def test_a_replica_process_answers_as_the_runtime_in_this_process_does(grower):
    v, path = grower
    ex = sandbox.IsolatedExecutor(v, path, allowance_bytes=256 << 20)
    try:
        assert ex.pid != os.getpid() and alive(ex.pid)
        assert ex.input_names == ("x",) and ex.output_names == ("y",)
        here = load_executor(v, path)
        for value in (0.0, 3.0, 100.0):
            np.testing.assert_array_equal(ex.run(x(value))["y"], here.run(x(value))["y"])
    finally:
        ex.close()


def test_a_query_that_grows_past_the_limit_fails_alone_and_the_replica_keeps_serving(grower):
    v, path = grower
    ex = sandbox.IsolatedExecutor(v, path, allowance_bytes=256 << 20)
    try:
        pid, mine = ex.pid, rss_kib()
        with pytest.raises(InvalidInput) as err:
            ex.run(x(1.5e9))  # 6 GB for one run: far past 256 MiB
        assert err.value.field == "inputs"
        assert ex.pid == pid and alive(pid)  # the same process, still serving
        assert ex.run(x(3.0))["y"].tolist() == [[6.0]]
        assert rss_kib() - mine < 200 * 1024  # this process never held the query's memory
        assert rss_kib(pid) < 600 * 1024  # nor did the replica's after the failed run
    finally:
        ex.close()


def test_a_replica_process_that_dies_fails_only_its_batch_and_the_next_one_starts_afresh(grower):
    v, path = grower
    ex = sandbox.IsolatedExecutor(v, path, allowance_bytes=256 << 20)
    try:
        first = ex.pid
        os.kill(first, signal.SIGKILL)  # while idle, as the kernel's OOM killer would
        while alive(first):
            time.sleep(0.01)
        assert ex.run(x(1.0))["y"].tolist() == [[2.0]]  # a new process answers
        assert ex.pid not in (None, first)
        # dying in the middle of a batch fails that batch only
        os.kill(ex.pid, signal.SIGSTOP)
        threading.Timer(0.2, os.kill, (ex.pid, signal.SIGKILL)).start()
        with pytest.raises(VariantFault) as err:
            ex.run(x(1.0))
        assert "SIGKILL" in err.value.message and "while running this batch" in err.value.message
        assert ex.run(x(5.0))["y"].tolist() == [[10.0]]
    finally:
        ex.close()


def test_a_variant_that_keeps_dying_is_refused_until_the_window_passes(grower):
    v, path = grower
    now = [1000.0]
    ex = sandbox.IsolatedExecutor(v, path, allowance_bytes=256 << 20, clock=lambda: now[0])
    try:
        for _ in range(sandbox.MAX_DEATHS):
            ex.run(x(1.0))  # (re)started
            with contextlib.suppress(ProcessLookupError):  # gone already (reaped on a busy machine): dead all the same
                os.kill(ex.pid, signal.SIGKILL)
            while alive(ex.pid):
                time.sleep(0.01)
        with pytest.raises(VariantFault) as err:
            ex.run(x(1.0))
        assert "not restarted" in err.value.message and ex.pid is None
        now[0] += sandbox.DEATH_WINDOW_S + 1
        assert ex.run(x(1.0))["y"].tolist() == [[2.0]]
    finally:
        ex.close()


def test_close_ends_the_process(grower):
    v, path = grower
    ex = sandbox.IsolatedExecutor(v, path, allowance_bytes=256 << 20)
    pid = ex.pid
    ex.close()
    assert not alive(pid)
    ex.close()  # twice is fine


def test_a_file_that_does_not_load_is_an_error_not_a_hang(tmp_path, grower):
    v, _ = grower
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(Exception) as err:
        sandbox.IsolatedExecutor(v, str(bad), allowance_bytes=256 << 20)
    assert "load" in str(err.value).lower() or "protobuf" in str(err.value).lower(), err.value



def test_a_batch_that_runs_past_its_deadline_stops_its_process_and_the_next_one_starts_afresh(tmp_path):
    path = tmp_path / "slow.onnx"
    slow_model(path)
    v = Variant(architecture="slow", format="fp32", runtime="onnxruntime", hardware="cpu", max_batch=8,
                task="t", tenant="a", status="ready")
    ex = sandbox.IsolatedExecutor(v, str(path), allowance_bytes=256 << 20, deadline_s=1.0)
    try:
        assert ex.run(x(3.0))["y"].tolist() == [[6.0]]
        first = ex.pid
        started = time.monotonic()
        with pytest.raises(VariantFault) as err:
            ex.run(x(1e12))  # a trillion loop trips: hours
        assert "deadline of 1 s" in err.value.message
        assert time.monotonic() - started < 30  # stopped, not run out
        while alive(first):
            time.sleep(0.01)
        assert ex.run(x(2.0))["y"].tolist() == [[4.0]] and ex.pid != first
    finally:
        ex.close()


def test_an_answer_over_the_limit_is_refused_in_the_replica_process(tmp_path):
    path = tmp_path / "tile.onnx"
    tiling_model(path)
    v = Variant(architecture="tile", format="fp32", runtime="onnxruntime", hardware="cpu", max_batch=8,
                task="t", tenant="a", status="ready")
    ex = sandbox.IsolatedExecutor(v, str(path), allowance_bytes=256 << 20, max_answer_bytes=1 << 20)
    try:
        assert ex.run(x(3.0))["y"].tolist() == [[3.0, 3.0, 3.0]]
        pid = ex.pid
        with pytest.raises(InvalidInput) as err:
            ex.run(x(1e6))  # 4 MB of output
        assert "over the limit of 1048576" in err.value.message and err.value.field == "inputs"
        assert ex.pid == pid  # the replica stays
    finally:
        ex.close()
