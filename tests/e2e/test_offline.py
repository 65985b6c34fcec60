"""Offline jobs on the local stack: nothing lost when a worker dies, online
queries keep their latency, bad jobs fail at submit time."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import statistics
import time

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from stack_support import READY_TIMEOUT_S, child_pids

from infaas.cli import digits
from infaas.client import ApiError, Client
from infaas.local.launcher import StackProcess

pytestmark = pytest.mark.e2e

N_FILES = 5000  # input files, 2 rows each: 10,000 rows
ONLINE_OBJECTIVE_MS = 25.0


@pytest.fixture(scope="module")
def offline_stack(tmp_path_factory):
    base = tmp_path_factory.mktemp("offline")
    data = digits.split()
    [trained] = digits.train(str(base / "models"), ["mlp-32"], data)
    env = {"INFAAS_OFFLINE_VISIBILITY_S": "3", "INFAAS_AUTOSCALE": "off"}
    with StackProcess(workers=2, data_dir=str(base / "data"), env=env) as stack:
        client = Client(stack.url, api_key=stack.api_key, timeout_s=60)
        val = base / "val.npz"
        val.write_bytes(digits.validation_npz(data))
        client.register(trained.path, name="mlp-32", task=digits.TASK, accuracy=0.95, validation=str(val))
        client.wait_ready(["mlp-32"], timeout_s=READY_TIMEOUT_S)
        yield stack, client, data, os.path.join(stack.data_dir, "offline", "local")  # the local tenant's area


def _online_probe(stack: StackProcess, x: np.ndarray, seconds: float) -> list[float]:
    """Two closed loops of single-row queries with a latency objective; latencies in ms."""
    raw = x[:1].astype(np.float32).tobytes()
    head = json.dumps({"inputs": [{"name": "X", "shape": [1, 64], "datatype": "FP32", "parameters": {"binary_data_size": 256}}],
                       "parameters": {"latency_ms": ONLINE_OBJECTIVE_MS, "binary_data_output": True}}).encode()
    headers = {"inference-header-content-length": str(len(head)), "authorization": f"Bearer {stack.api_key}"}
    out: list[float] = []

    async def loop(http):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.perf_counter()
            r = await http.post("/v2/models/mlp-32/infer", content=head + raw, headers=headers)
            assert r.status_code == 200, r.text
            out.append((time.perf_counter() - t0) * 1000)

    async def main():
        async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
            await asyncio.gather(loop(http), loop(http))

    asyncio.run(main())
    return out


def test_an_item_that_outlives_the_visibility_timeout_runs_once_on_one_worker(offline_stack, tmp_path):
    """The stack's visibility timeout is 3 s and it has two workers. One item of twelve batches,
    each about a second of the slow model's loop, runs for several timeouts while the other
    worker is idle: the running worker's lease holds the message, so the item runs once and
    nothing is dead-lettered (before the lease, the idle worker took it again every 3 s)."""
    from fakes import slow_model

    stack, client, data, root = offline_stack
    path = tmp_path / "slow.onnx"
    slow_model(path)
    client.register(str(path), name="slow-loop", task="offline/slow", accuracy=0.5)
    assert client.wait_ready(["slow-loop"], timeout_s=READY_TIMEOUT_S)["slow-loop"]["status"] == "ready"
    src = os.path.join(root, "slow-in")
    os.makedirs(src)
    x = np.full((12 * 64, 1), 7e5, np.float32)  # 700,000 trips of the loop per batch
    np.save(os.path.join(src, "long.npy"), x)

    job = client.submit_job(input="slow-in", output="slow-out", architecture="slow-loop")
    final = client.wait_job(job["id"], timeout_s=240)
    assert final["state"] == "done" and final["done"] == 1 and final["failed"] == 0, final
    with np.load(os.path.join(root, "slow-out", "long.out.npz")) as got:
        np.testing.assert_array_equal(got["y"], x + 7e5)
    with open(stack.log_path, encoding="utf-8", errors="replace") as f:
        runs = [line for line in f if f"offline item {job['id']}/0: " in line]
    assert len(runs) == 1, runs  # one run, by one worker
    extended = int(re.search(r"extended (\d+) times", runs[0]).group(1))
    assert "done after" in runs[0] and extended >= 3, runs  # held past one 3 s timeout (extended every 1 s)
    from infaas.core.settings import Settings
    from infaas.wiring.local import LocalAdapters

    queue = LocalAdapters(Settings(data_dir=stack.data_dir)).queue
    assert queue.depth("offline") == 0 and queue.depth("offline-dlq") == 0


def test_job_survives_a_killed_worker_with_every_output_exactly_once(offline_stack):
    stack, client, data, root = offline_stack
    rng = np.random.default_rng(0)
    src, dst = os.path.join(root, "in"), os.path.join(root, "out")
    os.makedirs(src)
    rows = data.x_test[rng.integers(0, len(data.x_test), size=(N_FILES, 2))]
    for i in range(N_FILES):
        np.save(os.path.join(src, f"x{i:05d}.npy"), rows[i])

    before = _online_probe(stack, data.x_test, 3.0)
    t0 = time.time()
    job = client.submit_job(input="in", output="out", task=digits.TASK, objective={"min_accuracy": 0.9})
    submit_s = time.time() - t0
    assert job["items"] == N_FILES and job["rows"] == 2 * N_FILES and job["state"] == "running"

    during = _online_probe(stack, data.x_test, 3.0)  # online traffic while the job runs
    status = client.job(job["id"])
    assert 0 < status["done"] < N_FILES, status  # killed in the middle of the job
    victim = child_pids(stack.proc.pid)[0]
    os.kill(victim, signal.SIGKILL)

    final = client.wait_job(job["id"], timeout_s=240)
    run_s = time.time() - t0
    assert final["state"] == "done" and final["done"] == N_FILES and final["failed"] == 0, final

    # Every output exactly once, under its deterministic name, and nothing else visible.
    names = sorted(n for n in os.listdir(dst) if not n.startswith("."))
    assert names == [f"x{i:05d}.out.npz" for i in range(N_FILES)]
    # Each equals a direct onnxruntime run of the chosen variant on the same input.
    from infaas.core.settings import Settings
    from infaas.wiring.local import LocalAdapters

    variant = LocalAdapters(Settings(data_dir=stack.data_dir)).store.get_variant(final["variant"])
    sess = ort.InferenceSession(os.path.join(stack.data_dir, "models", variant.model_key), providers=["CPUExecutionProvider"])
    feed = sess.get_inputs()[0].name
    for i in range(N_FILES):  # file by file: an int8 variant quantises activations per batch
        want = sess.run(None, {feed: rows[i].astype(np.float32)})
        with np.load(os.path.join(dst, names[i])) as got:
            np.testing.assert_array_equal(got["label"], want[0])
            np.testing.assert_allclose(got["probabilities"], want[1], rtol=1e-5, atol=1e-6)

    def violations(lat):
        return sum(x > ONLINE_OBJECTIVE_MS for x in lat) / len(lat)

    print(f"\noffline job: {N_FILES} files / {2 * N_FILES} rows, submit {submit_s:.1f} s, done in {run_s:.1f} s, "
          f"worker pid {victim} killed mid-job")
    print(f"online without job: {len(before)} queries, p50 {statistics.median(before):.2f} ms, "
          f"p99 {np.percentile(before, 99):.2f} ms, {violations(before):.2%} over {ONLINE_OBJECTIVE_MS:g} ms")
    print(f"online with job:    {len(during)} queries, p50 {statistics.median(during):.2f} ms, "
          f"p99 {np.percentile(during, 99):.2f} ms, {violations(during):.2%} over {ONLINE_OBJECTIVE_MS:g} ms")
    # How much the job slows online queries is a measurement, not a pass/fail check here: on a busy
    # machine it moves with the machine. Online queries during the job must all be answered.
    assert during and before


def npz_bytes(rows) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, rows=rows)
    return buf.getvalue()


@pytest.mark.parametrize("job,field", [
    ({"input": "does-not-exist", "output": "o", "task": digits.TASK}, "input"),
    ({"output": "o", "task": digits.TASK}, "location"),
    ({"input": "../../etc", "output": "o", "task": digits.TASK}, "location"),
    ({"input": "unreadable", "output": "o", "task": digits.TASK}, "input"),
    ({"input": "mixed", "output": "o", "task": digits.TASK}, "input"),
    ({"input": "wrong-shape", "output": "o", "task": digits.TASK}, "input"),
    ({"input": "good", "output": "o", "task": "classification/unknown"}, "target"),
    ({"input": "good", "output": "o", "task": digits.TASK, "objective": {"min_accuracy": 0.9999}}, "objective"),
    ({"input": "good", "output": "o", "task": digits.TASK, "deadline_s": -1}, "deadline_s"),
    ({"input": "empty", "output": "o", "task": digits.TASK}, "input"),
    ({"input": "collide", "output": "o", "task": digits.TASK}, "input"),  # a.npy and a.npz: one a.out.npz
    ({"input": "strings", "output": "o", "task": digits.TASK}, "input"),
    ({"input": "deep", "output": "o", "task": digits.TASK}, "input"),  # JSON nested past the parser's depth
])
def test_bad_jobs_fail_at_submit_time(offline_stack, job, field):
    stack, client, data, root = offline_stack
    for name, files in {
        "good": {"a.npy": data.x_test[:3]},
        "unreadable": {"a.npy": b"not a numpy file"},
        "mixed": {"a.npy": data.x_test[:3], "b.npy": data.x_test[:3, :32].copy()},
        "wrong-shape": {"a.npy": data.x_test[:3, :32].copy()},
        "empty": {},
        "collide": {"a.npy": data.x_test[:3], "a.npz": npz_bytes(data.x_test[:5])},
        "strings": {"a.npy": data.x_test[:3].astype(str)},
        "deep": {"a.jsonl": b"[" * 100_000 + b"]" * 100_000 + b"\n"},
    }.items():
        folder = os.path.join(root, name)
        os.makedirs(folder, exist_ok=True)
        for fname, content in files.items():
            path = os.path.join(folder, fname)
            if isinstance(content, bytes):
                open(path, "wb").write(content)
            else:
                np.save(path, content)
    with pytest.raises(ApiError) as err:
        client.submit_job(**job)
    assert 400 <= err.value.status < 500 and err.value.status != 500
    assert err.value.body.get("field") == field, err.value.body
    assert client.models()  # the server answers normally afterwards


def test_a_deadline_that_is_not_finite_is_refused(offline_stack):
    stack, client, data, root = offline_stack
    os.makedirs(os.path.join(root, "good"), exist_ok=True)
    np.save(os.path.join(root, "good", "a.npy"), data.x_test[:3])
    for value in (b"Infinity", b"1e400", b"NaN"):  # JSON as Python writes it; no JSON library sends these
        body = b'{"input": "good", "output": "o", "task": "%s", "deadline_s": %s}' % (digits.TASK.encode(), value)
        resp = client.http.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
        assert resp.status_code == 400 and resp.json()["field"] == "deadline_s", (value, resp.text)
    assert client.models()  # the same connection answers normally afterwards


def test_cancel_drops_items_not_started(offline_stack):
    stack, client, data, root = offline_stack
    src = os.path.join(root, "to-cancel")
    os.makedirs(src)
    for i in range(300):
        np.save(os.path.join(src, f"x{i:03d}.npy"), data.x_test[i % 50 : i % 50 + 1])
    job = client.submit_job(input="to-cancel", output="cancelled-out", architecture="mlp-32")
    cancelled = client.cancel_job(job["id"])
    assert cancelled["state"] == "cancelled"
    deadline = time.time() + 60
    while client.job(job["id"])["left"] and time.time() < deadline:
        time.sleep(0.2)
    written = os.listdir(os.path.join(root, "cancelled-out")) if os.path.isdir(os.path.join(root, "cancelled-out")) else []
    assert len(written) < 300  # items not yet started were dropped
    final = client.job(job["id"])
    assert final["left"] == 0 and final["cancelled_items"] > 0  # every item was taken, and dropped or finished
    assert final["done"] + final["failed"] + final["cancelled_items"] == 300
    assert len(written) == final["done"]  # an output per finished item, none for a dropped one
