"""Benchmark: the local INFaaS stack side by side with a hand-written endpoint,
raw onnxruntime, Ray Serve and BentoML, in one run, with one client.

    .venv/bin/python bench/run.py        (or: make bench)

1. installs the peers (Ray Serve, BentoML, matplotlib, ...) into their own
   virtualenv, ``bench/.work/peers-venv`` (pinned versions; re-used on later runs;
   never the product's ``.venv``);
2. starts ``infaas up`` on a free loopback port (``StackProcess``), registers two
   models through the HTTP API and waits until their variants are built and
   profiled: the digits classifier "mlp-512-256" (tiny: 64 inputs, an MLP
   512-256) and "squeezenet-light", onnx's light SqueezeNet 1.0 (shipped in the
   ``onnx`` wheel's backend test data) with its batch dimension made dynamic and
   its weights materialised (compute-bound: 3x224x224 inputs);
3. asks the stack once per model, by architecture, which variant it chooses and
   copies that variant's file out of the stack's model store: every system then
   serves that very file;
4. starts the peers, each on 127.0.0.1 and a free port, in its own session:
   ``bench/baseline_server.py`` (FastAPI + uvicorn, raw float32 bytes, one
   process), ``bench/peers/ray_server.py`` (Ray Serve on loopback, per model
   one app without and one with ``@serve.batch``, ``max_ongoing_requests=64``)
   and ``bench/peers/bento_service.py`` (BentoML: adaptive batching on the tiny
   model, a raw-bytes file upload on the compute-bound one);
   checks that each answers the same outputs as onnxruntime in-process;
5. measures raw onnxruntime in-process (``bench/peers/ort_raw.py``: no HTTP;
   batch 1 and 32 on one process, and one process per core), then drives every
   HTTP system with the same closed-loop asyncio HTTP/1.1 client (raw streams,
   keep-alive, one connection per loop, request bytes encoded once) at
   concurrency 1 and 32, in rounds that alternate the systems;
6. measures each stack's memory at rest (RSS and PSS summed over all its
   processes, after the load, idle), stops everything it started by PID (the
   process's session; also on error), runs ``bench/selection_bench.py``, draws
   the plot (``docs/img/performance.png``, with the peers' matplotlib) and writes
   its section of docs/performance.md between marker comments (the rest of that
   file is kept).

Traffic goes to 127.0.0.1 only; every measurement is bounded in time and count.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field

import httpx
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))  # run from a checkout without an install too

from infaas.cli import digits  # noqa: E402
from infaas.client import Client  # noqa: E402
from infaas.local.launcher import StackProcess, log_tail  # noqa: E402

WORKERS = 2  # the default of `infaas up`
HOST = "127.0.0.1"
TINY, SQUEEZE = "mlp-512-256", "squeezenet-light"
SQUEEZE_TASK = "classification/imagenet-light"
# per model: (concurrency, warm-up seconds, at most seconds, at most requests), over all rounds.
# The compute-bound model at c=32 needs a replica on each worker: every system gets a 4 s warm-up
# there, time for INFaaS's autoscaler (2 s period) to see the load again after the other systems'
# rounds and load the second replica (a quiet variant is scaled back to one replica in between).
RUNS = {
    TINY: ((1, 0.5, 3.0, 20_000), (32, 0.5, 4.0, 200_000)),
    SQUEEZE: ((1, 0.5, 3.0, 2_000), (32, 4.0, 5.0, 20_000)),
}
# Each measurement is split into this many rounds, alternating the order of the
# systems, so that a burst of noise on the machine does not fall on one system only.
ROUNDS = 2
RAW_SECONDS = {TINY: 2.0, SQUEEZE: 2.5}
CORES = os.cpu_count() or 1

# Background work in other sessions (a long simulation, say, even at a high nice value) gets a fair
# share of the cores under Linux's autogroup scheduling, whatever its nice value says. The client and
# every server measured run in autogroups of this nice value instead (the same for all systems), so
# such work takes what they leave. INFAAS_BENCH_NICE="" leaves the scheduler alone.
BENCH_NICE = os.environ.get("INFAAS_BENCH_NICE", "-10")

DOC = os.path.join(ROOT, "docs", "performance.md")
PLOT = os.path.join(ROOT, "docs", "img", "performance.png")
BEGIN = "<!-- bench/run.py: local-vs-baseline BEGIN (generated; edit bench/run.py instead) -->"
END = "<!-- bench/run.py: local-vs-baseline END -->"

WORK = os.path.join(ROOT, "bench", ".work")
PEERS_VENV = os.path.join(WORK, "peers-venv")
PEERS_PY = os.path.join(PEERS_VENV, "bin", "python")
PEER_PINS = ("ray[serve]==2.60.0", "bentoml==1.4.40", "onnxruntime==1.32.0", "numpy==2.4.6", "fastapi==0.165.0",
             "uvicorn==0.54.0", "matplotlib==3.11.2")

# The systems, in the order of the tables.
LABELS = {
    "infaas": "INFaaS",
    "fastapi": "FastAPI raw bytes",
    "ray": "Ray Serve",
    "ray-batch": "Ray Serve + @serve.batch",
    "bento": "BentoML",
}
SYSTEMS = {TINY: ("infaas", "fastapi", "ray", "ray-batch", "bento"),
           SQUEEZE: ("infaas", "fastapi", "ray", "ray-batch", "bento")}


# ----------------------------------------------------------------- the client
@dataclass
class Result:
    system: str
    concurrency: int
    latencies_ms: list[float] = field(default_factory=list)  # 200 answers only
    non200: dict[int, int] = field(default_factory=dict)
    samples: dict[int, bytes] = field(default_factory=dict)  # one body per non-200 status
    errors: dict[str, int] = field(default_factory=dict)  # transport errors
    wall_s: float = 0.0
    cpu_s: float = 0.0
    machine_busy_s: float = 0.0  # CPU seconds used by everything on the machine meanwhile
    server_cpu_s: float = 0.0  # CPU seconds used by the server's processes meanwhile
    leader_cpu_s: float = 0.0  # of which the session's leader (INFaaS: the API process)

    def merge(self, other: "Result") -> "Result":
        self.latencies_ms += other.latencies_ms
        for mine, theirs in ((self.non200, other.non200), (self.errors, other.errors)):
            for k, n in theirs.items():
                mine[k] = mine.get(k, 0) + n
        for k, body in other.samples.items():
            self.samples.setdefault(k, body)
        self.wall_s += other.wall_s
        self.cpu_s += other.cpu_s
        self.machine_busy_s += other.machine_busy_s
        self.server_cpu_s += other.server_cpu_s
        self.leader_cpu_s += other.leader_cpu_s
        return self

    @property
    def ok(self) -> int:
        return len(self.latencies_ms)

    @property
    def bad(self) -> int:
        return sum(self.non200.values()) + sum(self.errors.values())

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    @property
    def rps(self) -> float:
        return self.ok / self.wall_s if self.wall_s else float("nan")

    @property
    def cpu_share(self) -> float:
        return self.cpu_s / self.wall_s if self.wall_s else float("nan")

    @property
    def server_share(self) -> float:
        return self.server_cpu_s / self.wall_s if self.wall_s else float("nan")

    @property
    def machine_share(self) -> float:
        """Busy share of all cores (1.0 = every core busy)."""
        return self.machine_busy_s / (self.wall_s * CORES) if self.wall_s else float("nan")

    @property
    def other_share(self) -> float:
        """Cores busy with neither the client nor the server (other work, the kernel's loopback share)."""
        return (self.machine_busy_s - self.cpu_s - self.server_cpu_s) / self.wall_s if self.wall_s else float("nan")


# ------------------------------------------------------- processes, by session
def _proc_table() -> dict[int, list[str]]:
    """pid -> the fields of /proc/<pid>/stat after the name (state ppid pgrp session ... utime(11)
    stime(12) ... starttime(19) ... rss(21))."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                out[int(pid)] = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
    return out


def _procs_of(root: int, table: dict[int, list[str]] | None = None) -> dict[int, list[str]]:
    """The processes of a server started with ``start_new_session``: those of its session
    (Ray's and BentoML's children set their own process groups; Ray's outlive a
    parent) and every descendant of its leader (BentoML's worker starts its own session)."""
    table = table if table is not None else _proc_table()
    mine = {pid for pid, f in table.items() if int(f[3]) == root}
    if root in table:
        mine.add(root)
    children: dict[int, list[int]] = {}
    for pid, f in table.items():
        children.setdefault(int(f[1]), []).append(pid)
    todo = list(mine)
    while todo:
        for c in children.get(todo.pop(), ()):
            if c not in mine:
                mine.add(c)
                todo.append(c)
    return {pid: table[pid] for pid in mine}


def tree_cpu_s(root: int) -> tuple[float, float]:
    """CPU seconds (user + system) of the live processes of ``root``'s server: all, and the leader alone."""
    tick = os.sysconf("SC_CLK_TCK")
    procs = _procs_of(root)
    total = sum(int(f[11]) + int(f[12]) for f in procs.values())
    leader = sum(int(f[11]) + int(f[12]) for pid, f in procs.items() if pid == root)
    return total / tick, leader / tick


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _pss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


@dataclass
class Memory:
    processes: list[tuple[int, int, int | None, str]]  # pid, RSS bytes, PSS bytes (None if unreadable), command line

    @property
    def rss(self) -> int:
        return sum(p[1] for p in self.processes)

    @property
    def pss(self) -> float:
        vals = [p[2] for p in self.processes]
        return float("nan") if any(v is None for v in vals) else float(sum(vals))

    def without(self, drop) -> "Memory":
        return Memory([p for p in self.processes if not drop(p[3])])


def memory_of(root: int) -> Memory:
    page = os.sysconf("SC_PAGE_SIZE")
    procs = _procs_of(root)
    return Memory([(pid, int(f[21]) * page, _pss_bytes(pid), _cmdline(pid)) for pid, f in sorted(procs.items())
                   if f[0] != "Z"])


def machine_busy_s() -> float:
    """CPU seconds all cores spent not idle since boot (/proc/stat), or NaN."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Conn:
    """One keep-alive HTTP/1.1 connection that sends a fixed request."""

    def __init__(self, port: int, request: bytes) -> None:
        self.port, self.request = port, request
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    async def call(self) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                parts.append(await self.reader.readexactly(size + 2))
                if size == 0:
                    break
            body = b"".join(p[:-2] for p in parts)
        else:
            raise RuntimeError(f"answer without a length: {head!r}")
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, body


async def _loop(conn: Conn, res: Result | None, deadline: float, budget: list[int]) -> None:
    """Closed loop: send, wait for the answer, send again; until the deadline
    or until the shared request budget is spent."""
    clock = time.perf_counter
    while budget[0] > 0 and clock() < deadline:
        budget[0] -= 1
        t0 = clock()
        try:
            status, body = await asyncio.wait_for(conn.call(), 30.0)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, RuntimeError,
                ValueError) as exc:
            conn.close()
            if res is not None:
                res.errors[type(exc).__name__] = res.errors.get(type(exc).__name__, 0) + 1
            await asyncio.sleep(0.01)
            continue
        t1 = clock()
        if res is None:
            continue
        if status == 200:
            res.latencies_ms.append((t1 - t0) * 1000.0)
        else:
            res.non200[status] = res.non200.get(status, 0) + 1
            res.samples.setdefault(status, body[:300])


async def measure(system: str, port: int, root: int, request: bytes, concurrency: int, warmup_s: float,
                  max_s: float, max_requests: int) -> Result:
    conns = [Conn(port, request) for _ in range(concurrency)]
    try:
        await asyncio.gather(*(c.open() for c in conns))
        # warm-up: same connections, results thrown away
        await asyncio.gather(*(_loop(c, None, time.perf_counter() + warmup_s, [1 << 30]) for c in conns))
        res = Result(system, concurrency)
        budget = [max_requests]
        server0, busy0 = tree_cpu_s(root), machine_busy_s()
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(_loop(c, res, t0 + max_s, budget) for c in conns))
        res.wall_s = time.perf_counter() - t0
        res.cpu_s = time.process_time() - cpu0
        res.machine_busy_s = machine_busy_s() - busy0
        server1 = tree_cpu_s(root)
        res.server_cpu_s, res.leader_cpu_s = server1[0] - server0[0], server1[1] - server0[1]
        return res
    finally:
        for c in conns:
            c.close()


def _event_loop_name() -> str:
    try:
        import uvloop  # noqa: F401

        return "uvloop"
    except ImportError:
        return "asyncio"


def run_client(coro):
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


# --------------------------------------------------------------- the requests
def http_request(port: int, path: str, body: bytes, extra_headers: dict[str, str],
                 content_type: str = "application/octet-stream") -> bytes:
    head = [f"POST {path} HTTP/1.1", f"Host: {HOST}:{port}", f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in extra_headers.items()), "", ""]
    return "\r\n".join(head).encode("latin-1") + body


def infaas_request(port: int, variant_id: str, rows: np.ndarray, api_key: str) -> bytes:
    """OIP binary extension, as ``infaas.client.Client.infer`` builds it."""
    arr = np.ascontiguousarray(rows, dtype=np.float32)
    raw = arr.tobytes()
    header = json.dumps({
        "inputs": [{"name": "input", "shape": list(arr.shape), "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)}}],
        "parameters": {"binary_data_output": True},
    }).encode()
    path = f"/v2/models/{urllib.parse.quote(variant_id, safe=':')}/infer"
    return http_request(port, path, header + raw, {"Inference-Header-Content-Length": str(len(header)),
                                                   "Authorization": f"Bearer {api_key}"})


def raw_request(port: int, path: str, rows: np.ndarray) -> bytes:
    return http_request(port, path, np.ascontiguousarray(rows, dtype=np.float32).tobytes(), {})


def bento_request(port: int, rows: np.ndarray) -> bytes:
    body = json.dumps({"x": np.asarray(rows, dtype=np.float32).tolist()}).encode()
    return http_request(port, "/predict", body, {}, content_type="application/json")


BOUNDARY = "infaas-bench-boundary-7c1f"


def multipart(field_name: str, raw: bytes) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field_name}\"; filename=\"x.bin\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + raw + f"\r\n--{BOUNDARY}--\r\n".encode()


def bento_image_request(port: int, rows: np.ndarray) -> bytes:
    """BentoML's file upload: the raw float32 bytes as a multipart file."""
    body = multipart("data", np.ascontiguousarray(rows, dtype=np.float32).tobytes())
    return http_request(port, "/image", body, {}, content_type=f"multipart/form-data; boundary={BOUNDARY}")


# ------------------------------------------------------------------ the models
def build_squeezenet(out_path: str, seed: int = 0) -> str:
    """onnx's light SqueezeNet 1.0 (its weights are ConstantOfShape nodes filled with 0.02)
    made servable: weights materialised as initialisers (He-scaled random, fixed seed, so
    the outputs differ per input), the batch dimension of the input and output dynamic,
    IR 7 and opset 13. The final Softmax becomes Flatten(axis 1) -> Softmax -> Reshape to
    the input's shape in the opset conversion, which works at any batch size (checked)."""
    import onnx
    import onnx.version_converter
    from onnx import numpy_helper

    src = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", "light_squeezenet.onnx")
    model = onnx.load(src)
    g = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    rng = np.random.default_rng(seed)
    inits = [i for i in g.initializer if not i.name.endswith("__SHAPE")]
    nodes = []
    for n in g.node:
        if n.op_type == "ConstantOfShape" and n.input[0] in consts:
            shape = tuple(int(d) for d in consts[n.input[0]])
            if len(shape) > 1:  # a convolution's weights
                arr = (rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))).astype(np.float32)
            else:  # a bias
                arr = np.zeros(shape, np.float32)
            inits.append(numpy_helper.from_array(arr, n.output[0]))
        else:
            nodes.append(n)
    names = {i.name for i in inits}
    inputs = [i for i in g.input if i.name not in names and not i.name.endswith("__SHAPE")]
    del g.node[:]
    g.node.extend(nodes)
    del g.initializer[:]
    g.initializer.extend(inits)
    del g.input[:]
    g.input.extend(inputs)
    for vi in list(g.input) + list(g.output):
        dim = vi.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = "N"
    del g.value_info[:]
    model.ir_version = 7
    model = onnx.version_converter.convert_version(model, 13)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, out_path)
    return out_path


def ort_session(path: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


def decode_raw(body: bytes, session, rows: int) -> dict[str, np.ndarray]:
    """The raw-bytes servers answer the raw bytes of every output, in order."""
    kinds = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(double)": np.float64,
             "tensor(int32)": np.int32}
    outs, offset = {}, 0
    for o in session.get_outputs():
        dtype = np.dtype(kinds[o.type])
        tail = [int(d) for d in o.shape[1:]]
        n = rows * int(np.prod(tail))
        outs[o.name] = np.frombuffer(body, dtype=dtype, count=n, offset=offset).reshape((rows, *tail))
        offset += n * dtype.itemsize
    if offset != len(body):
        raise RuntimeError(f"answer has {len(body) - offset} unexpected bytes")
    return outs


def _close(a, b, what: str) -> None:
    a, b = np.asarray(a), np.asarray(b)
    a = a.reshape(b.shape)
    if not np.allclose(a, b, rtol=1e-4, atol=1e-5):
        raise RuntimeError(f"{what}: outputs differ from onnxruntime in-process (max diff {np.abs(a - b).max():.3g})")


# --------------------------------------------------------------- the servers
class Server:
    """A peer server started as its own session on 127.0.0.1; stopped by PID."""

    def __init__(self, key: str, argv: list[str], log_path: str, *, env: dict[str, str] | None = None,
                 cwd: str | None = None, health: str | None = None, ready_line: str | None = None,
                 stdin_stop: bool = False) -> None:
        self.key, self.argv, self.log_path, self.env, self.cwd = key, argv, log_path, env, cwd
        self.health, self.ready_line, self.stdin_stop = health, ready_line, stdin_stop
        self.proc: subprocess.Popen | None = None
        self.seen: dict[int, str] = {}  # pid -> start time, of every process of this server seen

    def start(self) -> "Server":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd,
                                     stdin=subprocess.PIPE if self.stdin_stop else subprocess.DEVNULL,
                                     start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, n: int = 15) -> str:
        return log_tail(self.log_path, n)

    def remember(self) -> None:
        for pid, f in _procs_of(self.pid).items():
            self.seen[pid] = f[19]

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with {self.proc.returncode}: {self.log_tail(6)}")
            try:
                if self.ready_line is not None:
                    with open(self.log_path, "rb") as f:
                        if self.ready_line.encode() not in f.read():
                            raise httpx.TransportError("not yet")
                if self.health is None or httpx.get(self.health, timeout=1.0).status_code == 200:
                    self.remember()
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"not up after {timeout_s:g} s: {self.log_tail(6)}")

    def stop(self, grace_s: float = 20.0) -> None:
        if self.proc is None:
            return
        try:
            self.remember()
        except OSError:
            pass
        if self.proc.poll() is None:
            try:
                if self.stdin_stop and self.proc.stdin:
                    self.proc.stdin.write(b"stop\n")
                    self.proc.stdin.close()
                else:
                    os.kill(self.proc.pid, signal.SIGTERM)
            except (OSError, ValueError):
                pass
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
        # whatever of this server is left (Ray's agents outlive its driver): by PID, checking the start time
        table = _proc_table()
        left = {pid for pid in _procs_of(self.proc.pid, table)} | {
            pid for pid, start in self.seen.items() if pid in table and table[pid][19] == start}
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.proc.poll() is None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        if getattr(self, "_log", None):
            self._log.close()
        if getattr(self, "tmp", None):
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.proc = None


def ensure_peers(log_path: str) -> tuple[str | None, str, float]:
    """The peers' virtualenv (created and filled on the first run, re-used later):
    its python, what happened (or the error), and the seconds it took."""
    t0 = time.time()
    stamp = os.path.join(PEERS_VENV, ".bench-pins")
    want = "\n".join(PEER_PINS) + "\n"
    try:
        if os.path.exists(PEERS_PY) and os.path.exists(stamp) and open(stamp).read() == want:
            return PEERS_PY, "re-used", time.time() - t0
        os.makedirs(WORK, exist_ok=True)
        with open(log_path, "ab") as log:
            if not os.path.exists(PEERS_PY):
                subprocess.run([sys.executable, "-m", "venv", PEERS_VENV], check=True, stdout=log, stderr=log, timeout=120)
            subprocess.run([PEERS_PY, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *PEER_PINS],
                           check=True, stdout=log, stderr=log, timeout=900)
        with open(stamp, "w") as f:
            f.write(want)
        return PEERS_PY, "installed", time.time() - t0
    except (OSError, subprocess.SubprocessError) as exc:
        tail = ""
        try:
            tail = open(log_path, errors="replace").read().strip().splitlines()[-1]
        except (OSError, IndexError):
            pass
        return None, f"peers' virtualenv could not be installed: {exc} {tail}".strip(), time.time() - t0


def peer_versions() -> str:
    code = ("import importlib.metadata as m; print(', '.join(f'{p} {m.version(p)}' for p in "
            "('ray', 'bentoml', 'onnxruntime', 'fastapi', 'uvicorn', 'starlette', 'matplotlib')))")
    try:
        return subprocess.run([PEERS_PY, "-c", code], capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def ort_raw(model: str, procs: int, batch: int, seconds: float) -> dict:
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "peers", "ort_raw.py"), model, "--procs", str(procs),
                        "--batch", str(batch), "--seconds", str(seconds)], capture_output=True, text=True,
                       timeout=seconds + 180)
    if r.returncode != 0:
        raise RuntimeError(f"ort_raw.py failed: {r.stderr.strip()[-300:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def merge_raw(parts: list[dict]) -> dict:
    out = dict(parts[0])
    for k in ("calls", "inferences", "wall_s", "cpu_s"):
        out[k] = sum(p[k] for p in parts)
    # within a round the processes run side by side (wall_s is the round's); rounds add up
    out["per_s"] = out["inferences"] / out["wall_s"]
    out["p50_ms"] = float(np.mean([p["p50_ms"] for p in parts]))
    out["p99_ms"] = max(p["p99_ms"] for p in parts)
    out["rounds"] = len(parts)
    return out


# ---------------------------------------------------------------- the report
def prefer(pid: int) -> str:
    """Give ``pid``'s autogroup (its session) the nice value ``BENCH_NICE``; what happened, in words."""
    if not BENCH_NICE:
        return "off"
    try:
        with open(f"/proc/{pid}/autogroup") as f:
            before = f.read().split()[-1]  # "/autogroup-<n> nice <value>"
        with open(f"/proc/{pid}/autogroup", "w") as f:
            f.write(BENCH_NICE)
        if pid == os.getpid():  # the calling shell's session gets its own value back at exit
            import atexit

            atexit.register(_restore_autogroup, pid, before)
        return f"nice {BENCH_NICE}"
    except OSError as exc:
        return f"not set ({exc.strerror or exc})"


def _restore_autogroup(pid: int, value: str) -> None:
    try:
        with open(f"/proc/{pid}/autogroup", "w") as f:
            f.write(value)
    except OSError:
        pass


def machine() -> dict[str, str]:
    import onnxruntime

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "unknown"
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f"{kb / (1 << 20):.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu": cpu,
        "cores": str(CORES),
        "memory": mem,
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "client loop": _event_loop_name(),
        "busy before": _busy_before(),
    }


def _busy_before(seconds: float = 1.0) -> str:
    """Busy share of all cores over one second before anything starts: other work on the machine."""
    b0 = machine_busy_s()
    time.sleep(seconds)
    share = (machine_busy_s() - b0) / (seconds * CORES)
    return "unknown" if share != share else f"{share * 100:.0f}%"


def _f(x: float, d: int = 2) -> str:
    return "-" if x is None or x != x else f"{x:,.{d}f}"


def _ratio(a: float, b: float) -> str:
    return "-" if a is None or b is None or not (a == a and b == b) or b == 0 else f"{a / b:.2f}×"


def _pc(x: float) -> str:
    return "-" if x != x else f"{x * 100:.0f}%"


def _bad(rs: list[Result]) -> str:
    n = sum(r.bad for r in rs)
    if not n:
        return "0"
    non200: dict = {}
    errors: dict = {}
    for r in rs:
        for s, k in r.non200.items():
            non200[s] = non200.get(s, 0) + k
        for e, k in r.errors.items():
            errors[e] = errors.get(e, 0) + k
    parts = [f"{k}×{s}" for s, k in sorted(non200.items())] + [f"{k}×{e}" for e, k in sorted(errors.items())]
    return f"{n} ({', '.join(parts)})"


def best_of(res: dict[str, dict[int, Result]], keys: tuple[str, ...]) -> str | None:
    """Of the configurations ``keys`` of one peer, the one with the most requests/s at concurrency 32."""
    have = [k for k in keys if k in res and 32 in res[k] and res[k][32].ok]
    return max(have, key=lambda k: res[k][32].rps) if have else None


def model_table(model: str, res: dict[str, dict[int, Result]], raw: dict[str, dict], missing: dict[str, str]) -> str:
    ours = res.get("infaas", {})
    o1, o32 = ours.get(1), ours.get(32)
    out = ["| system | c=1 p50 ms | c=1 p99 ms | c=32 req/s | c=32 p50 ms | c=32 p99 ms | non-200 / errors "
           "| client CPU c=1 / c=32 | server CPU c=1 / c=32 | machine CPU c=32 | INFaaS ÷ system: c=32 req/s "
           "| c=1 p50 | c=32 p99 |",
           "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for key in SYSTEMS[model]:
        label = LABELS[key]
        if key in missing:
            out.append(f"| {label} | not measured: {missing[key][:160]} |" + " |" * 11)
            continue
        r1, r32 = res[key].get(1), res[key].get(32)
        name = f"**{label}**" if key == "infaas" else label
        ratios = ("", "", "") if key == "infaas" else (
            f"**{_ratio(o32.rps, r32.rps)}**" if o32 and r32 else "-",
            _ratio(o1.pct(50), r1.pct(50)) if o1 and r1 else "-",
            _ratio(o32.pct(99), r32.pct(99)) if o32 and r32 else "-")
        out.append(f"| {name} | {_f(r1.pct(50), 3)} | {_f(r1.pct(99), 3)} | {_f(r32.rps, 0)} | {_f(r32.pct(50), 2)} "
                   f"| {_f(r32.pct(99), 2)} | {_bad([r1, r32])} | {_pc(r1.cpu_share)} / {_pc(r32.cpu_share)} "
                   f"| {_pc(r1.server_share)} / {_pc(r32.server_share)} | {_pc(r32.machine_share)} "
                   f"| {ratios[0]} | {ratios[1]} | {ratios[2]} |")
    for label, r in raw.items():
        if "error" in r:
            out.append(f"| {label} | not measured: {r['error'][:160]} |" + " |" * 11)
            continue
        ratio = f"**{_ratio(o32.rps, r['per_s'])}**" if o32 else "-"
        out.append(f"| {label} | {_f(r['p50_ms'], 3)} (one call) | {_f(r['p99_ms'], 3)} (one call) "
                   f"| {_f(r['per_s'], 0)} inferences/s | | | 0 | no client | {_pc(r['cpu_s'] / r['wall_s'])} "
                   f"| | {ratio} | | |")
    return "\n".join(out)


def memory_table(mem: dict[str, tuple[str, Memory]], missing: dict[str, str], infaas_rss: float | None) -> str:
    out = ["| stack at rest | what it serves | processes | RSS sum MiB | PSS sum MiB | INFaaS ÷ stack (RSS) |",
           "|---|---|---:|---:|---:|---:|"]
    for key, (what, m) in mem.items():
        label = key
        out.append(f"| {label} | {what} | {len(m.processes)} | {m.rss / (1 << 20):,.0f} | {_f(m.pss / (1 << 20), 0)} "
                   f"| {'' if key.startswith('INFaaS') else _ratio(infaas_rss, m.rss)} |")
    for key, err in missing.items():
        out.append(f"| {key} | not measured: {err[:160]} | | | | |")
    return "\n".join(out)


def write_doc(text: str) -> None:
    os.makedirs(os.path.dirname(DOC), exist_ok=True)
    try:
        with open(DOC, encoding="utf-8") as f:
            current = f.read()
    except FileNotFoundError:
        current = "# Performance\n\n"
    if BEGIN in current and END in current:
        head, rest = current.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        new = head + text + ("\n" + tail if tail else "")
    else:
        new = current.rstrip("\n") + "\n\n" + text
    tmp = DOC + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(new)
    os.replace(tmp, DOC)


def verdict(ok: bool | None) -> str:
    return "**met**" if ok else ("**not met**" if ok is not None else "**not measured**")


# -------------------------------------------------------------------- main
def main() -> int:
    t_start = time.time()
    info = machine()
    info["autogroup"] = prefer(os.getpid())
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['memory']}; python {info['python']}, "
          f"onnxruntime {info['onnxruntime']}; busy before the run: {info['busy before']}", flush=True)
    tmp = tempfile.mkdtemp(prefix="infaas-bench-")
    os.makedirs(WORK, exist_ok=True)
    peers_py, peers_state, peers_s = ensure_peers(os.path.join(WORK, "peers-install.log"))
    print(f"peers' virtualenv {PEERS_VENV}: {peers_state} ({peers_s:.0f} s)", flush=True)
    versions = peer_versions() if peers_py else "none"

    stack = StackProcess(workers=WORKERS, data_dir=os.path.join(tmp, "data"), log_path=os.path.join(tmp, "stack.log"))
    os.makedirs(stack.data_dir)
    servers: dict[str, Server] = {}
    missing: dict[str, str] = {}  # system key -> why it was not measured
    client: Client | None = None
    ok = False
    try:
        # ---- INFaaS, both models
        print(f"starting the local stack ({WORKERS} workers) ...", flush=True)
        stack.start()
        prefer(stack.proc.pid)
        print(f"  up at {stack.url} after {time.time() - t_start:.0f} s; training {TINY}, building {SQUEEZE} ...",
              flush=True)
        data = digits.split()
        trained = digits.train(os.path.join(tmp, "models"), names=[TINY], data=data)[0]
        val_path = os.path.join(tmp, "validation.npz")
        with open(val_path, "wb") as f:
            f.write(digits.validation_npz(data))
        sq_src = build_squeezenet(os.path.join(tmp, "squeezenet-light.onnx"))
        client = Client(stack.url, api_key=stack.api_key, timeout_s=120.0)
        client.register(trained.path, name=TINY, task=digits.TASK, accuracy=round(trained.val_accuracy, 4),
                        validation=val_path)
        client.register(sq_src, name=SQUEEZE, task=SQUEEZE_TASK, accuracy=0.5)
        print("  registered both; waiting while the workers build and profile their variants ...", flush=True)
        t_reg = time.time()
        status = client.wait_ready([TINY, SQUEEZE], timeout_s=300)
        ready_s = time.time() - t_reg
        for name, st in status.items():
            for v in st["variants"]:
                print(f"    {v['id']:44} {v['status']}" + (f" ({v['message']})" if v.get("message") else ""))
            if st["status"] != "ready":
                raise RuntimeError(f"{name} is {st['status']}, not ready")
        print(f"  ready after {ready_s:.0f} s", flush=True)

        from infaas.core.settings import Settings
        from infaas.wiring.local import LocalAdapters

        adapters = LocalAdapters(Settings(data_dir=stack.data_dir))
        rng = np.random.default_rng(1)
        inputs = {TINY: data.x_test[:8].astype(np.float32),
                  SQUEEZE: rng.random((3, 3, 224, 224), dtype=np.float32)}
        chosen: dict[str, dict] = {}
        for name in (TINY, SQUEEZE):
            _, decision = client.infer(inputs[name][:1], architecture=name)
            vid = decision["variant"]
            record = adapters.store.get_variant(vid)
            path = os.path.join(tmp, f"{name}.variant.onnx")
            shutil.copyfile(adapters.models.local_path(record.model_key), path)
            with open(path, "rb") as f:
                sha = hashlib.sha256(f.read()).hexdigest()
            variant = next(v for v in status[name]["variants"] if v["id"] == vid)
            chosen[name] = {"id": vid, "path": path, "sha": sha, "variant": variant, "size": os.path.getsize(path)}
            print(f"  {name}: INFaaS chose {vid} (sha256 {sha[:16]}…, {os.path.getsize(path) / 1e6:.1f} MB)", flush=True)
        sessions = {name: ort_session(c["path"]) for name, c in chosen.items()}

        # ---- the peers, all started side by side
        fastapi = Server("fastapi", [sys.executable, os.path.join(ROOT, "bench", "baseline_server.py"),
                                     f"tiny={chosen[TINY]['path']}", f"squeeze={chosen[SQUEEZE]['path']}",
                                     "--host", HOST, "--port", str(_free_port())],
                         os.path.join(tmp, "fastapi.log"))
        fastapi.port = int(fastapi.argv[-1])
        fastapi.health = f"http://{HOST}:{fastapi.port}/health"
        servers["fastapi"] = fastapi
        if peers_py:
            penv = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0",
                        BENTOML_DO_NOT_TRACK="True", BENTOML_HOME=os.path.join(tmp, "bentoml"),
                        PYTHONUNBUFFERED="1")
            ray_port = _free_port()
            ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray puts unix sockets there
            ray = Server("ray", [peers_py, os.path.join(ROOT, "bench", "peers", "ray_server.py"), "--port", str(ray_port),
                                 "--temp-dir", ray_tmp, f"tiny={chosen[TINY]['path']}",
                                 f"squeeze={chosen[SQUEEZE]['path']}"],
                         os.path.join(tmp, "ray.log"), env=penv, ready_line="READY", stdin_stop=True)
            ray.port, ray.tmp = ray_port, ray_tmp
            servers["ray"] = ray
            bento_port = _free_port()
            bento = Server("bento", [os.path.join(PEERS_VENV, "bin", "bentoml"), "serve", "bento_service:Model",
                                     "--working-dir", os.path.join(ROOT, "bench", "peers"), "--host", HOST,
                                     "--port", str(bento_port)],
                           os.path.join(tmp, "bento.log"), env=dict(penv, BENCH_MODEL=chosen[TINY]["path"],
                                                                     BENCH_MODEL_IMAGE=chosen[SQUEEZE]["path"]),
                           health=f"http://{HOST}:{bento_port}/readyz")
            bento.port = bento_port
            servers["bento"] = bento
        else:
            for k in ("ray", "ray-batch", "bento"):
                missing[k] = peers_state
        t_peers = time.time()
        print("starting the peers: " + ", ".join(servers) + " ...", flush=True)
        for s in servers.values():
            s.start()
            prefer(s.pid)
        for key, s in list(servers.items()):
            try:
                s.wait_ready({"fastapi": 30, "ray": 150, "bento": 90}[key])
                for pid in _procs_of(s.pid):  # Ray's and BentoML's children start sessions of their own
                    prefer(pid)
                print(f"  {key} up after {time.time() - t_peers:.0f} s", flush=True)
            except RuntimeError as exc:
                print(f"  {key} did not start: {exc}", flush=True)
                s.stop()
                del servers[key]
                for k in ((key, f"{key}-batch") if key == "ray" else (key,)):
                    missing[k] = f"did not start: {exc}"
        if "fastapi" in missing:
            raise RuntimeError(f"the FastAPI baseline did not start: {missing['fastapi']}")

        # ---- endpoints, and a check that each system answers what onnxruntime in-process answers
        roots = {"infaas": stack.proc.pid, **{k: s.pid for k, s in servers.items()}}
        roots["ray-batch"] = roots.get("ray")
        ports = {"infaas": stack.port, **{k: s.port for k, s in servers.items()}}
        ports["ray-batch"] = ports.get("ray")
        paths = {(TINY, "fastapi"): "/tiny/infer", (SQUEEZE, "fastapi"): "/squeeze/infer",
                 (TINY, "ray"): "/tiny", (TINY, "ray-batch"): "/tiny-batch",
                 (SQUEEZE, "ray"): "/squeeze", (SQUEEZE, "ray-batch"): "/squeeze-batch"}

        def request_for(model: str, key: str, rows: np.ndarray) -> bytes:
            if key == "infaas":
                return infaas_request(stack.port, chosen[model]["id"], rows, stack.api_key)
            if key == "bento":
                return bento_request(ports[key], rows) if model == TINY else bento_image_request(ports[key], rows)
            return raw_request(ports[key], paths[(model, key)], rows)

        print("checking that every system answers the same outputs ...", flush=True)
        with httpx.Client(timeout=60.0) as http:
            for model in (TINY, SQUEEZE):
                sess = sessions[model]
                in_name = sess.get_inputs()[0].name
                for key in SYSTEMS[model]:
                    if key in missing:
                        continue
                    try:
                        for i in range(len(inputs[model]) if model == TINY else 2):
                            x = inputs[model][i:i + 1]
                            want = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {in_name: x})))
                            if key == "infaas":
                                got, decision = client.infer(x, variant=chosen[model]["id"])
                                if decision["variant"] != chosen[model]["id"]:
                                    raise RuntimeError(f"asked for {chosen[model]['id']}, INFaaS ran {decision['variant']}")
                            elif key == "bento":
                                if model == TINY:
                                    r = http.post(f"http://{HOST}:{ports[key]}/predict", json={"x": x.tolist()})
                                else:
                                    r = http.post(f"http://{HOST}:{ports[key]}/image",
                                                  files={"data": ("x.bin", x.tobytes(), "application/octet-stream")})
                                r.raise_for_status()
                                floats = [o.name for o in sess.get_outputs() if o.type == "tensor(float)"]
                                got = {floats[-1]: np.asarray(r.json(), dtype=np.float32)}
                            else:
                                r = http.post(f"http://{HOST}:{ports[key]}{paths[(model, key)]}", content=x.tobytes())
                                r.raise_for_status()
                                got = decode_raw(r.content, sess, 1)
                            for k, v in got.items():
                                _close(v, want[k], f"{LABELS[key]} on {model}, output {k}")
                    except (RuntimeError, httpx.HTTPError, KeyError, ValueError) as exc:
                        if key in ("infaas", "fastapi"):
                            raise
                        print(f"  {key} on {model}: {exc}", flush=True)
                        missing[key] = f"wrong answers: {exc}"

        # ---- raw onnxruntime, in-process, no HTTP
        raw: dict[str, dict[str, dict]] = {TINY: {}, SQUEEZE: {}}
        results: dict[str, dict[str, dict[int, Result]]] = {TINY: {}, SQUEEZE: {}}

        def raw_run(model: str, label: str, procs: int, batch: int) -> dict:
            try:
                r = ort_raw(chosen[model]["path"], procs, batch, RAW_SECONDS[model])
            except (RuntimeError, subprocess.SubprocessError, ValueError) as exc:
                return {"error": str(exc)}
            print(f"  raw onnxruntime {model:17} {procs} process(es), batch {batch:>2}: {r['per_s']:,.0f} inferences/s, "
                  f"one call p50 {r['p50_ms']:.3f} ms", flush=True)
            return r

        def http_rounds(model: str) -> None:
            keys = [k for k in SYSTEMS[model] if k not in missing]
            for conc, warm, max_s, max_n in RUNS[model]:
                merged = {k: Result(k, conc) for k in keys}
                for rnd in range(ROUNDS):
                    order = keys if rnd % 2 == 0 else keys[::-1]
                    for key in order:
                        req = request_for(model, key, inputs[model][:1])
                        r = run_client(measure(key, ports[key], roots[key], req, conc, warm, max_s / ROUNDS,
                                               max_n // ROUNDS))
                        print(f"  {model:17} c={conc:<3} round {rnd + 1} {key:10} {r.ok:>7,} ok, {r.bad} bad, "
                              f"p50 {r.pct(50):.3f} ms, p99 {r.pct(99):.3f} ms, {r.rps:,.0f} req/s, "
                              f"client CPU {r.cpu_share * 100:.0f}%, server CPU {r.server_share * 100:.0f}%, "
                              f"machine CPU {r.machine_share * 100:.0f}%", flush=True)
                        merged[key].merge(r)
                for key in keys:
                    results[model].setdefault(key, {})[conc] = merged[key]

        print("measuring the tiny model ...", flush=True)
        raw[TINY]["onnxruntime in-process, batch 1 (no HTTP)"] = raw_run(TINY, "b1", 1, 1)
        raw[TINY]["onnxruntime in-process, batch 32, per sample (no HTTP)"] = raw_run(TINY, "b32", 1, 32)
        http_rounds(TINY)
        print("measuring the compute-bound model ...", flush=True)
        per_core = []
        r = raw_run(SQUEEZE, "pc", CORES, 1)
        if "error" not in r:
            per_core.append(r)
        raw[SQUEEZE]["onnxruntime in-process, batch 1, 1 process (no HTTP)"] = raw_run(SQUEEZE, "1p", 1, 1)
        http_rounds(SQUEEZE)
        r = raw_run(SQUEEZE, "pc", CORES, 1)  # a second round after the HTTP rounds, for fairness
        if "error" not in r:
            per_core.append(r)
        raw[SQUEEZE][f"onnxruntime in-process, batch 1, one process per core ({CORES}) (no HTTP)"] = (
            merge_raw(per_core) if per_core else r)

        # ---- memory at rest: after the load, idle
        time.sleep(3.0)
        mem: dict[str, tuple[str, Memory]] = {}
        mem_missing: dict[str, str] = {}
        m_infaas = memory_of(stack.proc.pid)
        mem[f"INFaaS (API + {len(m_infaas.processes) - 1} workers)"] = ("both models", m_infaas)
        mem["FastAPI raw bytes"] = ("both models", memory_of(servers["fastapi"].pid))
        best = {m: best_of(results[m], ("ray", "ray-batch")) for m in (TINY, SQUEEZE)}
        ray_mem_key = None
        if "ray" in servers:
            servers["ray"].remember()
            m_ray = memory_of(servers["ray"].pid)
            apps = {TINY: "tiny", SQUEEZE: "squeeze"}
            keep = {apps[m] + ("-batch" if best[m] == "ray-batch" else "") for m in (TINY, SQUEEZE)}

            def other_replica(cmd: str) -> bool:
                m = re.match(r"ray::ServeReplica:([^:]+):", cmd)
                return bool(m) and m.group(1) not in keep

            ray_mem_key = "Ray Serve (one replica per model)"
            mem[ray_mem_key] = (f"both models, the better configuration of each ({', '.join(sorted(keep))})",
                                m_ray.without(other_replica))
            mem["Ray Serve (all 4 apps deployed)"] = ("both models, with and without @serve.batch", m_ray)
        else:
            mem_missing["Ray Serve"] = missing.get("ray", "not started")
        if "bento" in servers:
            servers["bento"].remember()
            mem["BentoML"] = ("both models", memory_of(servers["bento"].pid))
        else:
            mem_missing["BentoML"] = missing.get("bento", "not started")
        for k, (_, m) in mem.items():
            print(f"  memory at rest {k:40} {len(m.processes):>2} processes, RSS {m.rss / (1 << 20):,.0f} MiB, "
                  f"PSS {_f(m.pss / (1 << 20), 0)} MiB", flush=True)
        stack_tail = stack.log_tail(300)
        for key in list(servers):
            servers.pop(key).stop()
        client.close()
        client = None
        stack.stop()

        # ---- selection microbenchmark, on a machine without our servers
        sel = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "selection_bench.py")], capture_output=True,
                             text=True, timeout=300, cwd=ROOT)
        sel_out = (sel.stdout.strip() or sel.stderr.strip()[-500:])
        print(sel_out, flush=True)
        sel_p99 = [float(x) for x in re.findall(r"p99 ([0-9.]+) us", sel_out)]

        # ---- targets
        rt = lambda m, k, c: results[m].get(k, {}).get(c)  # noqa: E731
        targets = []

        def tgt(text: str, ok: bool | None, numbers: str) -> None:
            targets.append(f"- {text}: {verdict(ok)} — {numbers}")

        i32, f32 = rt(TINY, "infaas", 32), rt(TINY, "fastapi", 32)
        tgt("Tiny model, c=32 throughput ≥ 1.0× the minimal raw-bytes FastAPI endpoint",
            i32.rps >= f32.rps, f"INFaaS {i32.rps:,.0f} req/s vs {f32.rps:,.0f} req/s = {i32.rps / f32.rps:.2f}×")
        i1, f1 = rt(TINY, "infaas", 1), rt(TINY, "fastapi", 1)
        tgt("Tiny model, c=1 p50 ≤ 2× FastAPI's p50", i1.pct(50) <= 2 * f1.pct(50),
            f"INFaaS {i1.pct(50):.3f} ms vs {f1.pct(50):.3f} ms = {i1.pct(50) / f1.pct(50):.2f}×")
        pc = raw[SQUEEZE][f"onnxruntime in-process, batch 1, one process per core ({CORES}) (no HTTP)"]
        s32 = rt(SQUEEZE, "infaas", 32)
        if "error" in pc:
            tgt("Compute-bound model, c=32 throughput ≥ 0.8× raw onnxruntime one process per core", None, pc["error"])
        else:
            tgt(f"Compute-bound model, c=32 throughput ≥ 0.8× raw onnxruntime one process per core ({CORES})",
                s32.rps >= 0.8 * pc["per_s"],
                f"INFaaS {s32.rps:,.1f} req/s vs {pc['per_s']:,.1f} inferences/s = {s32.rps / pc['per_s']:.2f}×")
        for model, peer, factor, what in ((TINY, "ray", 10, "Ray Serve"), (TINY, "bento", 5, "BentoML"),
                                          (SQUEEZE, "ray", 2, "Ray Serve"), (SQUEEZE, "bento", 2, "BentoML")):
            mname = "tiny" if model == TINY else "compute-bound"
            key = best[model] if peer == "ray" else ("bento" if "bento" in results[model] else None)
            ours = rt(model, "infaas", 32)
            if key is None:
                why = missing.get(peer) or "not measured"
                tgt(f"{mname.capitalize()} model, ≥ {factor}× {what}'s throughput at a lower p99", None, why)
                continue
            theirs = rt(model, key, 32)
            tgt(f"{mname.capitalize()} model, ≥ {factor}× {what}'s throughput at a lower p99 (its best: {LABELS[key]})",
                ours.rps >= factor * theirs.rps and ours.pct(99) < theirs.pct(99),
                f"c=32: INFaaS {ours.rps:,.0f} req/s vs {theirs.rps:,.0f} = {ours.rps / theirs.rps:.2f}×; "
                f"p99 {ours.pct(99):.2f} ms vs {theirs.pct(99):.2f} ms")
        tgt("Selection over 10,000 variants and 1,000 replicas, p99 ≤ 50 µs per decision",
            (max(sel_p99) <= 50.0) if sel_p99 else None,
            ("p99 " + " / ".join(f"{x:g} µs" for x in sel_p99) + " (each line of its output below)") if sel_p99
            else f"selection_bench.py printed no p99 (exit {sel.returncode})")
        if ray_mem_key:
            a, b = m_infaas.rss, mem[ray_mem_key][1].rss
            tgt("Memory of the whole local stack at rest ≤ 0.5× Ray Serve's", a <= 0.5 * b,
                f"INFaaS {a / (1 << 20):,.0f} MiB vs Ray Serve (one replica per model) {b / (1 << 20):,.0f} MiB RSS "
                f"= {a / b:.2f}× (PSS: {_f(m_infaas.pss / (1 << 20), 0)} vs "
                f"{_f(mem[ray_mem_key][1].pss / (1 << 20), 0)} MiB)")
        else:
            tgt("Memory of the whole local stack at rest ≤ 0.5× Ray Serve's", None, mem_missing.get("Ray Serve", ""))

        # ---- notes on what bounds the figures
        notes = []
        one = raw[SQUEEZE].get("onnxruntime in-process, batch 1, 1 process (no HTTP)", {})
        if CORES > 1 and "per_s" in one and "per_s" in pc and pc["per_s"] < 1.5 * one["per_s"]:
            notes.append(f"raw onnxruntime with one process per core made {pc['per_s']:,.0f} inferences/s, less than "
                         f"1.5× the {one['per_s']:,.0f}/s of one process: other work held cores meanwhile, so the "
                         f"compute-bound ratio against it flatters INFaaS; compare with 1 process × {CORES} = "
                         f"{one['per_s'] * CORES:,.0f}/s (INFaaS reached {s32.rps / (one['per_s'] * CORES):.2f}× that)")
        if info["busy before"] != "unknown" and int(info["busy before"].rstrip("%")) > 20:
            notes.append(f"the machine was already {info['busy before']} busy before the run: other work shared "
                         f"the cores, so the figures are noisier than on an idle machine")
        for model in (TINY, SQUEEZE):
            others = [f"{LABELS[k]} c={c} {r.other_share * 100:.0f}%" for k, byc in results[model].items()
                      for c, r in sorted(byc.items()) if r.other_share > 0.25]
            if others:
                notes.append(f"{model}: besides the client and the server, other work kept this share of a core busy "
                             f"during these measurements (other processes on the machine, and the kernel's own share "
                             f"of loopback networking): " + ", ".join(others))
            for key, byc in results[model].items():
                for conc, r in sorted(byc.items()):
                    if key == "infaas":
                        notes.append(f"INFaaS on {model} at c={conc}: API process {r.leader_cpu_s / r.wall_s * 100:.0f}% "
                                     f"of a core, its workers {(r.server_cpu_s - r.leader_cpu_s) / r.wall_s * 100:.0f}% "
                                     f"together; client {r.cpu_share * 100:.0f}%; machine {r.machine_share * 100:.0f}% "
                                     f"of {CORES} cores busy")
                    for st, body in sorted(r.samples.items()):
                        notes.append(f"{LABELS[key]} on {model} at c={conc}: {r.non200[st]} answer(s) with status {st}, "
                                     f"e.g. `{body.decode(errors='replace')[:200]}`")
                    for e, n in sorted(r.errors.items()):
                        notes.append(f"{LABELS[key]} on {model} at c={conc}: {n} transport error(s) {e}")
        for marker in ("Traceback", " ERROR ", "exception"):
            if marker in stack_tail:
                notes.append(f"the stack's log contains {marker.strip()!r} lines")
                print("stack log tail:\n" + stack_tail[-3000:], flush=True)
                break

        # ---- plot
        plot_note = ""
        if peers_py:
            bars = []
            for model, mlabel in ((TINY, "tiny MLP"), (SQUEEZE, "SqueezeNet")):
                log = model == TINY  # the tiny model's figures span four orders of magnitude
                panel32 = {"title": f"{mlabel}: throughput at concurrency 32 (higher is better)",
                           "unit": "requests/s" + (" (log)" if log else ""), "log": log, "bars": []}
                panel1 = {"title": f"{mlabel}: p50 latency at concurrency 1 (lower is better)",
                          "unit": "ms" + (" (log)" if log else ""), "log": log, "bars": []}
                for key in SYSTEMS[model]:
                    if key in results[model]:
                        panel32["bars"].append([LABELS[key], results[model][key][32].rps, key == "infaas"])
                        panel1["bars"].append([LABELS[key], results[model][key][1].pct(50), key == "infaas"])
                for label, r in raw[model].items():
                    if "error" not in r and "batch 32" not in label:
                        short = label.replace("onnxruntime in-process", "raw onnxruntime").replace(" (no HTTP)", "")
                        panel32["bars"].append([short, r["per_s"], False])
                bars += [panel32, panel1]
            spec = os.path.join(tmp, "plot.json")
            with open(spec, "w") as f:
                json.dump({"title": f"INFaaS vs peers, {CORES} cores, one client process", "panels": bars}, f)
            os.makedirs(os.path.dirname(PLOT), exist_ok=True)
            p = subprocess.run([peers_py, os.path.join(ROOT, "bench", "peers", "plot.py"), spec, PLOT],
                               capture_output=True, text=True, timeout=120)
            if p.returncode != 0:
                plot_note = f"the plot could not be drawn: {p.stderr.strip()[-300:]}"
        else:
            plot_note = "no plot: " + peers_state

        total = time.time() - t_start
        text = section(info, versions, peers_state, peers_s, chosen, ready_s, results, raw, missing, mem, mem_missing,
                       m_infaas.rss, targets, notes, sel_out, plot_note, total)
        write_doc(text)
        print()
        print(text)
        print(f"\nwritten to {os.path.relpath(DOC, os.getcwd())}; total run time {total:.1f} s", flush=True)
        ok = True
        return 0
    finally:
        for s in list(servers.values()):
            try:
                s.stop()
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                print(f"stopping {s.key}: {exc}", file=sys.stderr)
        if client is not None:
            client.close()
        stack.stop()
        if not ok:
            print(f"benchmark failed after {time.time() - t_start:.1f} s; stack log tail:\n{stack.log_tail()}",
                  file=sys.stderr, flush=True)
            for s in servers.values():
                print(f"{s.key} log tail:\n{s.log_tail()}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)


def _free_port() -> int:
    from infaas.adapters.local.processes import free_port

    return free_port(HOST)


def section(info, versions, peers_state, peers_s, chosen, ready_s, results, raw, missing, mem, mem_missing,
            infaas_rss, targets, notes, sel_out, plot_note, total) -> str:
    runs = "; ".join(
        f"{'tiny' if m == TINY else 'compute-bound'} c={c}: {ROUNDS} rounds per system, each {w:g} s warm-up then at most "
        f"{s / ROUNDS:g} s or {n // ROUNDS:,} requests" for m in (TINY, SQUEEZE) for c, w, s, n in RUNS[m]) + (
        " (the compute-bound model's 4 s warm-up at c=32, for every system, is time for INFaaS's autoscaler to see "
        "the load again after the other systems' rounds and load the replica on the second worker: in between, a "
        "quiet variant is scaled back to one replica, and the first seconds of a burst run on it)")
    now = datetime.datetime.now(datetime.timezone.utc)

    def about(name: str) -> str:
        c = chosen[name]
        prof = (c["variant"].get("profile") or {}).get("latency_ms", {}).get("1")
        return (f"variant `{c['id']}` ({c['size'] / 1e6:.2f} MB, sha256 `{c['sha'][:16]}…`), the one INFaaS chose "
                f"for a query by architecture, copied from its model store"
                + (f"; its profile says p50/p99 {prof[0]:.3f}/{prof[1]:.3f} ms at batch 1 inside onnxruntime" if prof
                   else ""))

    lines = [
        BEGIN,
        "## INFaaS side by side with a hand-written endpoint, raw onnxruntime, Ray Serve and BentoML",
        "",
        f"Generated by `make bench` (`.venv/bin/python bench/run.py`) on {now:%Y-%m-%d %H:%M} UTC; "
        f"the whole run took **{total:.0f} s** (peers' virtualenv {peers_state} in {peers_s:.0f} s; INFaaS built and "
        f"profiled both models' variants in {ready_s:.0f} s).",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores (`os.cpu_count()`), {info['memory']} of memory, {info['os']}; "
        f"Python {info['python']}, onnxruntime {info['onnxruntime']} (product's `.venv`). Peers, in their own "
        f"virtualenv `bench/.work/peers-venv`: {versions}. The client, INFaaS ({WORKERS} workers) and every peer share "
        f"these cores; before the run, other work kept {info['busy before']} of them busy. The client and every "
        f"server ran in autogroups of {info.get('autogroup', 'off')} (`INFAAS_BENCH_NICE`; Linux schedules sessions "
        "fairly whatever their nice value, so background work in other sessions would otherwise take a fair share "
        "of the cores).",
        "",
        "![throughput and latency of each system](img/performance.png)" if not plot_note else f"({plot_note})",
        "",
        "### Targets (issue 8)",
        "",
        *targets,
        "",
        "### Tiny model: MLP 512-256 on digits",
        "",
        f"Every system serves the same file: {about(TINY)}. One row of 64 float32 per request.",
        "",
        model_table(TINY, results[TINY], raw[TINY], missing),
        "",
        "### Compute-bound model: SqueezeNet 1.0 (onnx's light_squeezenet, batch dimension made dynamic)",
        "",
        f"Every system serves the same file: {about(SQUEEZE)}. One image of 3×224×224 float32 (588 KiB) per "
        "request. The graph is the `onnx` wheel's `backend/test/data/light/light_squeezenet.onnx` with its weights "
        "(ConstantOfShape nodes) materialised as He-scaled random initialisers, its batch dimension made dynamic, "
        "converted to opset 13 (the final Softmax becomes Flatten → Softmax → Reshape, which works at any batch; "
        "checked); registered with INFaaS as task `classification/imagenet-light` without validation data.",
        "",
        model_table(SQUEEZE, results[SQUEEZE], raw[SQUEEZE], missing),
        "",
        "### Memory of each whole stack at rest",
        "",
        "After all the load above, 3 s idle: the sum over every process of the stack (its session and its "
        "descendants) of RSS (shared pages counted once per process) and of PSS (shared pages split between the "
        "processes that share them).",
        "",
        memory_table(mem, mem_missing, infaas_rss),
        "",
        "### Selection microbenchmark",
        "",
        "`.venv/bin/python bench/selection_bench.py` (run by the bench after the servers stopped):",
        "",
        "```",
        sel_out,
        "```",
        "",
        "### How it was measured",
        "",
        "- **INFaaS**: `infaas up` with "
        f"{WORKERS} CPU workers, queried over its OIP binary endpoint `POST /v2/models/{{variant_id}}/infer` (JSON "
        "header + raw bytes, `Inference-Header-Content-Length`, binary output, `Authorization: Bearer`): API process "
        "(its lean HTTP path for the inference routes: parse, authenticate, select; concurrent queries for one "
        "variant and worker coalesced into one call of at most the variant's efficient batch) → worker over a local "
        "Unix socket (batching, onnxruntime with 1 intra-op thread) → back.",
        "- **FastAPI raw bytes**: `bench/baseline_server.py`, one FastAPI/uvicorn process with one session per model: "
        "`request.body()` → `np.frombuffer` → `session.run` (1 intra-op thread) → raw output bytes, nothing else.",
        "- **Ray Serve**: `bench/peers/ray_server.py`, a one-node Ray cluster on loopback "
        "(`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, `_node_ip_address=\"127.0.0.1\"`, no dashboard), Serve's proxy on "
        "127.0.0.1; per model one application per configuration, one replica, `max_ongoing_requests=64` (Serve's "
        "default collapses under 32 concurrent clients), access log off, raw float32 bytes in and raw bytes out; "
        "*+ @serve.batch* coalesces up to 32 requests (2 ms wait) into one `session.run`. The targets compare "
        "against the better of the two at c=32.",
        "- **BentoML**: `bench/peers/bento_service.py` under `bentoml serve`, one worker, access log off. Tiny "
        "model: a batchable API (adaptive batching, up to 32 requests, `max_latency_ms` 1000: at 10 ms it sheds "
        "most requests at c=32 with 503 \"process is overloaded\"), its JSON body `{\"x\": [[...]]}`, answers the "
        "probabilities as JSON. Compute-bound model: the raw float32 bytes as a multipart file upload (an image as "
        "JSON would cost more than the model; BentoML batches only tensor inputs), not batched, answers the "
        "probabilities as JSON.",
        "- **raw onnxruntime**: `bench/peers/ort_raw.py`, `session.run` in a loop in the process (1 intra-op "
        "thread), no HTTP, no client; *one process per core* starts one process per core together, each its own "
        "session, and sums their inferences/s (two rounds, before and after the HTTP rounds, merged). "
        "Its p50/p99 columns are those of one `session.run` call.",
        "- Before measuring, every system answered the same outputs as onnxruntime in-process for the same rows "
        "(8 digits rows, 2 random images).",
        "- **client**: one asyncio process "
        f"({info['client loop']} event loop), raw HTTP/1.1 over asyncio streams, one keep-alive connection per closed "
        "loop, the same code and pre-encoded request bytes for every system; {runs}; the rounds alternate the "
        "systems (A B C …, then … C B A) and are merged; traffic only to 127.0.0.1.".replace("{runs}", runs),
        "- **c=1 / c=32**: closed loops in the client; 1 measures latency alone, 32 throughput under load. "
        "**p50/p99**: time from writing the request to reading the whole answer, 200 answers only. **req/s**: 200 "
        "answers / wall time. **non-200 / errors**: other statuses and transport errors, never in the latencies.",
        "- **client CPU**: the benchmark process's CPU time / wall time (near 100%, the client, not the server, "
        "bounds the figure); **server CPU**: CPU time of all the server's processes / wall time in % of one core "
        f"(up to {CORES * 100}%); **machine CPU**: busy share of all cores (`/proc/stat`) during the measurement.",
        "- **INFaaS ÷ system**: for req/s above 1× means INFaaS serves more; for latency below 1× means INFaaS "
        "answers faster.",
    ]
    if notes:
        lines += ["", "### Observed during the run", ""] + [f"- {n}" for n in notes]
    lines.append(END)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
