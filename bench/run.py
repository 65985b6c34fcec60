"""Benchmark: the local INFaaS stack against a hand-written endpoint, side by side.

    .venv/bin/python bench/run.py        (or: make bench)

1. starts ``infaas up`` on a free loopback port (``StackProcess``), trains the
   digits classifier "mlp-512-256", registers it through the HTTP API with its
   validation data and waits until its variants are built and profiled;
2. asks the stack once, by architecture, which variant it chooses, and copies
   that variant's ONNX file out of the stack's model store
   (``<data_dir>/models/<model_key>``);
3. starts ``bench/baseline_server.py`` (FastAPI + uvicorn + one onnxruntime
   session, one process) on that very file, and checks that both systems give
   the same outputs for the same rows;
4. drives both with the same closed-loop asyncio HTTP/1.1 client (raw streams,
   keep-alive, one connection per loop, request bytes encoded once): INFaaS
   through its OIP binary endpoint ``/v2/models/{variant_id}/infer``, the
   baseline through ``/infer`` with the raw float32 row. Concurrency 1 for
   latency, concurrency 32 for throughput; each measurement after a warm-up and
   bounded by time and by request count;
5. prints a markdown table, writes it into docs/performance.md between marker
   comments (the rest of that file is kept) and stops everything it started,
   also on error.

Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import os
import platform
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

from infaas import digits  # noqa: E402
from infaas.client import Client  # noqa: E402
from infaas.local.launcher import StackProcess  # noqa: E402

ARCHITECTURE = "mlp-512-256"
WORKERS = 2  # the default of `infaas up`
HOST = "127.0.0.1"
# (concurrency, warm-up seconds, at most seconds, at most requests)
RUNS = ((1, 1.0, 8.0, 20_000), (32, 1.0, 8.0, 200_000))
# Each measurement is split into this many rounds, alternating the two systems,
# so that a burst of noise on the machine does not fall on one system only.
ROUNDS = 2
DOC = os.path.join(ROOT, "docs", "performance.md")
BEGIN = "<!-- bench/run.py: local-vs-baseline BEGIN (generated; edit bench/run.py instead) -->"
END = "<!-- bench/run.py: local-vs-baseline END -->"


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
    leader_cpu_s: float = 0.0  # of which the group's leader (INFaaS: the API process)

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
        return self.machine_busy_s / (self.wall_s * (os.cpu_count() or 1)) if self.wall_s else float("nan")


def group_cpu_s(pgid: int) -> tuple[float, float]:
    """CPU seconds (user + system) of the live processes in process group
    ``pgid``: all of them, and the group leader alone."""
    tick, total, leader = os.sysconf("SC_CLK_TCK"), 0, 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the name: state ppid pgrp ... utime(11) stime(12)
            total += int(fields[11]) + int(fields[12])
            if int(pid) == pgid:
                leader = int(fields[11]) + int(fields[12])
    return total / tick, leader / tick


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
            status, body = await conn.call()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, RuntimeError, ValueError) as exc:
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


async def measure(system: str, port: int, pgid: int, request: bytes, concurrency: int, warmup_s: float,
                  max_s: float, max_requests: int) -> Result:
    conns = [Conn(port, request) for _ in range(concurrency)]
    try:
        await asyncio.gather(*(c.open() for c in conns))
        # warm-up: same connections, results thrown away
        await asyncio.gather(*(_loop(c, None, time.perf_counter() + warmup_s, [1 << 30]) for c in conns))
        res = Result(system, concurrency)
        budget = [max_requests]
        server0, busy0 = group_cpu_s(pgid), machine_busy_s()
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(_loop(c, res, t0 + max_s, budget) for c in conns))
        res.wall_s = time.perf_counter() - t0
        res.cpu_s = time.process_time() - cpu0
        res.machine_busy_s = machine_busy_s() - busy0
        server1 = group_cpu_s(pgid)
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
def http_request(port: int, path: str, body: bytes, extra_headers: dict[str, str]) -> bytes:
    head = [f"POST {path} HTTP/1.1", f"Host: {HOST}:{port}", "Content-Type: application/octet-stream",
            f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in extra_headers.items()), "", ""]
    return "\r\n".join(head).encode("latin-1") + body


def infaas_request(port: int, variant_id: str, row: np.ndarray, api_key: str) -> bytes:
    """OIP binary extension, as ``infaas.client.Client.infer`` builds it."""
    arr = np.ascontiguousarray(row, dtype=np.float32)
    raw = arr.tobytes()
    header = json.dumps({
        "inputs": [{"name": "input", "shape": list(arr.shape), "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)}}],
        "parameters": {"binary_data_output": True},
    }).encode()
    path = f"/v2/models/{urllib.parse.quote(variant_id, safe=':')}/infer"
    return http_request(port, path, header + raw, {"Inference-Header-Content-Length": str(len(header)),
                                                   "Authorization": f"Bearer {api_key}"})


def baseline_request(port: int, row: np.ndarray) -> bytes:
    return http_request(port, "/infer", np.ascontiguousarray(row, dtype=np.float32).tobytes(), {})


# --------------------------------------------------------------- the baseline
class Baseline:
    def __init__(self, model_path: str, log_path: str) -> None:
        from infaas.worker.server import free_port

        self.model_path, self.log_path = model_path, log_path
        self.port = free_port(HOST)
        self.url = f"http://{HOST}:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 30.0) -> None:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "bench", "baseline_server.py"), self.model_path,
             "--host", HOST, "--port", str(self.port)],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"baseline server exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"baseline server not up after {timeout_s:g} s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()


def decode_baseline(body: bytes, model_path: str, rows: int) -> dict[str, np.ndarray]:
    """The baseline answers the raw bytes of every output, in order."""
    import onnxruntime as ort

    kinds = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(double)": np.float64,
             "tensor(int32)": np.int32}
    outs, offset = {}, 0
    for o in ort.InferenceSession(model_path, providers=["CPUExecutionProvider"]).get_outputs():
        dtype = np.dtype(kinds[o.type])
        per_row = int(np.prod([d for d in o.shape[1:]])) if len(o.shape) > 1 else 1
        n = rows * per_row
        outs[o.name] = np.frombuffer(body, dtype=dtype, count=n, offset=offset).reshape((rows, per_row) if len(o.shape) > 1 else (rows,))
        offset += n * dtype.itemsize
    if offset != len(body):
        raise RuntimeError(f"baseline answer has {len(body) - offset} unexpected bytes")
    return outs


def check_same_outputs(client: Client, baseline: Baseline, variant_id: str, model_path: str, rows: np.ndarray) -> None:
    with httpx.Client(timeout=10.0) as http:
        for row in rows:
            x = row[None, :].astype(np.float32)
            ours, decision = client.infer(x, variant=variant_id)
            if decision["variant"] != variant_id:
                raise RuntimeError(f"asked for {variant_id}, INFaaS ran {decision['variant']}")
            r = http.post(f"{baseline.url}/infer", content=x.tobytes())
            r.raise_for_status()
            theirs = decode_baseline(r.content, model_path, 1)
            if set(ours) != set(theirs):
                raise RuntimeError(f"outputs differ in names: {sorted(ours)} vs {sorted(theirs)}")
            for k in ours:
                a, b = np.asarray(ours[k]).reshape(theirs[k].shape), theirs[k]
                if not np.allclose(a, b, rtol=1e-5, atol=1e-6):
                    raise RuntimeError(f"output {k!r} differs between INFaaS and the baseline: {a} vs {b}")


# ---------------------------------------------------------------- the report
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
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
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
    share = (machine_busy_s() - b0) / (seconds * (os.cpu_count() or 1))
    return "unknown" if share != share else f"{share * 100:.0f}%"


def _f(x: float, d: int = 2) -> str:
    return "-" if x != x else f"{x:,.{d}f}"


def _ratio(a: float, b: float) -> str:
    return "-" if not (a == a and b == b) or b == 0 else f"{a / b:.2f}×"


def _bad(r: Result) -> str:
    if not r.bad:
        return "0"
    parts = [f"{n}×{s}" for s, n in sorted(r.non200.items())] + [f"{n}×{e}" for e, n in sorted(r.errors.items())]
    return f"{r.bad} ({', '.join(parts)})"


def table(results: list[tuple[Result, Result]]) -> str:
    out = ["| concurrency | system | requests (200) | non-200 / errors | p50 ms | p99 ms | requests/s | client CPU "
           "| server CPU | machine CPU |",
           "|---:|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for ours, base in results:
        c = ours.concurrency
        for r, name in ((ours, "INFaaS"), (base, "baseline")):
            out.append(f"| {c} | {name} | {r.ok:,} | {_bad(r)} | {_f(r.pct(50), 3)} | {_f(r.pct(99), 3)} | "
                       f"{_f(r.rps, 0)} | {r.cpu_share * 100:.0f}% | {r.server_share * 100:.0f}% | {_f(r.machine_share * 100, 0)}% |")
        out.append(f"| {c} | **INFaaS / baseline** | | | **{_ratio(ours.pct(50), base.pct(50))}** | "
                   f"**{_ratio(ours.pct(99), base.pct(99))}** | **{_ratio(ours.rps, base.rps)}** | | "
                   f"{_ratio(ours.server_share, base.server_share)} | |")
    return "\n".join(out)


def section(tbl: str, info: dict[str, str], variant: dict, sha: str, total_s: float, notes: list[str]) -> str:
    runs = "; ".join(f"concurrency {c}: {ROUNDS} rounds per system, each {w:g} s warm-up then at most "
                     f"{s / ROUNDS:g} s or {n // ROUNDS:,} requests" for c, w, s, n in RUNS)
    profile = (variant.get("profile") or {}).get("latency_ms", {}).get("1")
    lines = [
        BEGIN,
        "## Local stack vs a hand-written endpoint",
        "",
        f"Generated by `.venv/bin/python bench/run.py` (`make bench`) on "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; the whole run took {total_s:.0f} s.",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores (`os.cpu_count()`), {info['os']}; "
        f"Python {info['python']}, onnxruntime {info['onnxruntime']}. Client, INFaaS ({WORKERS} workers) "
        f"and baseline all share these cores; before the run, other work kept {info['busy before']} of them busy.",
        "",
        f"Both systems serve the same file: variant `{variant['id']}` of `{ARCHITECTURE}` (digits, "
        f"one row of 64 float32 per request), the variant INFaaS chose for a query by architecture, "
        f"copied from its model store (sha256 `{sha[:16]}…`)"
        + (f"; its profile says p50/p99 {profile[0]:.3f}/{profile[1]:.3f} ms at batch 1 inside onnxruntime" if profile else "")
        + ". Before measuring, both gave the same outputs for the same rows.",
        "",
        tbl,
        "",
        "What the columns mean:",
        "",
        f"- **system**: *INFaaS* is `infaas up` with {WORKERS} CPU workers, queried over its OIP binary "
        "endpoint `POST /v2/models/{variant_id}/infer` (JSON header + raw bytes, "
        "`Inference-Header-Content-Length`, binary output): API process (FastAPI/uvicorn: parse, validate, "
        "select) → HTTP hop to a worker (dynamic batching, onnxruntime with 1 intra-op thread) → back. "
        "*baseline* is `bench/baseline_server.py`: one FastAPI/uvicorn process, `request.body()` → "
        "`np.frombuffer` → `session.run` (1 intra-op thread) → raw output bytes, nothing else.",
        "- **concurrency**: number of closed loops in the client, each with its own keep-alive connection, "
        "sending the next request as soon as the previous answer arrived. 1 measures latency alone, "
        "32 measures throughput under load.",
        "- **requests (200)**: answers with status 200 counted in the measurement; **non-200 / errors**: other "
        "statuses (count × status) and transport errors, also counted and never in the latencies.",
        "- **p50 ms / p99 ms**: median and 99th percentile of the time the client measured from writing "
        "the request to reading the whole answer, 200 answers only.",
        "- **requests/s**: 200 answers divided by the wall time of the measurement.",
        "- **client CPU**: CPU time of the benchmark process (`time.process_time`) divided by the wall time "
        "of the measurement; near 100% the client itself, not the server, limits the figure.",
        "- **server CPU**: CPU time of the server's processes (for INFaaS the API process and its workers, "
        "for the baseline its one process) divided by the wall time, in % of one core (above 100% = "
        "more than one core busy); the ratio row says how much more CPU INFaaS spends for its answers.",
        "- **machine CPU**: busy share of all cores (from `/proc/stat`) during the measurement: client, "
        "servers and anything else running on the machine; near 100% the machine is saturated.",
        "- **INFaaS / baseline**: ratio of the two systems (for latency above 1× means INFaaS is slower, "
        "for requests/s below 1× means INFaaS serves less).",
        "",
        f"Client: one asyncio process ({info['client loop']} event loop), raw HTTP/1.1 over asyncio streams, "
        f"the same code and the same pre-encoded request bytes for both systems; {runs}; the rounds alternate "
        f"the two systems (A B, then B A) and are merged; traffic only to 127.0.0.1.",
    ]
    if notes:
        lines += ["", "Observed during the run:", ""] + [f"- {n}" for n in notes]
    lines.append(END)
    return "\n".join(lines) + "\n"


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


# -------------------------------------------------------------------- main
def main() -> int:
    t_start = time.time()
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores; python {info['python']}, onnxruntime {info['onnxruntime']}; "
          f"busy before the run: {info['busy before']}", flush=True)
    tmp = tempfile.mkdtemp(prefix="infaas-bench-")
    stack = StackProcess(workers=WORKERS, data_dir=os.path.join(tmp, "data"), log_path=os.path.join(tmp, "stack.log"))
    os.makedirs(stack.data_dir)
    baseline: Baseline | None = None
    client: Client | None = None
    ok = False
    try:
        print(f"starting the local stack ({WORKERS} workers) ...", flush=True)
        stack.start()
        print(f"  up at {stack.url} after {time.time() - t_start:.1f} s; training {ARCHITECTURE} ...", flush=True)
        data = digits.split()
        trained = digits.train(os.path.join(tmp, "models"), names=[ARCHITECTURE], data=data)[0]
        val_path = os.path.join(tmp, "validation.npz")
        with open(val_path, "wb") as f:
            f.write(digits.validation_npz(data))

        client = Client(stack.url, api_key=stack.api_key)
        client.register(trained.path, name=ARCHITECTURE, task=digits.TASK, accuracy=round(trained.val_accuracy, 4),
                        validation=val_path)
        print("  registered; waiting while the workers build and profile its variants ...", flush=True)
        status = client.wait_ready([ARCHITECTURE], timeout_s=120)[ARCHITECTURE]
        for v in status["variants"]:
            print(f"    {v['id']:36} {v['status']}" + (f" ({v['message']})" if v.get("message") else ""))
        if status["status"] != "ready":
            raise RuntimeError(f"{ARCHITECTURE} is {status['status']}, not ready")

        # The variant the stack chooses for this architecture; both systems then serve exactly it.
        _, decision = client.infer(data.x_test[:1], architecture=ARCHITECTURE)
        variant_id = decision["variant"]
        variant = next(v for v in status["variants"] if v["id"] == variant_id)
        from infaas.local.wiring import LocalAdapters
        from infaas.settings import Settings

        adapters = LocalAdapters(Settings(data_dir=stack.data_dir))
        record = adapters.store.get_variant(variant_id)
        src = adapters.models.local_path(record.model_key)  # <data_dir>/models/<model_key>
        model_path = os.path.join(tmp, "baseline.onnx")
        shutil.copyfile(src, model_path)
        with open(model_path, "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()
        print(f"  chosen variant {variant_id}: {record.model_key} (sha256 {sha[:16]}…)", flush=True)

        baseline = Baseline(model_path, os.path.join(tmp, "baseline.log"))
        baseline.start()
        print(f"baseline up at {baseline.url}; checking both give the same outputs ...", flush=True)
        check_same_outputs(client, baseline, variant_id, model_path, data.x_test[:20])

        row = data.x_test[:1].astype(np.float32)
        requests = {"INFaaS": (stack.port, stack.proc.pid, infaas_request(stack.port, variant_id, row, stack.api_key)),
                    "baseline": (baseline.port, baseline.proc.pid, baseline_request(baseline.port, row))}
        results: list[tuple[Result, Result]] = []
        for conc, warm, max_s, max_n in RUNS:
            merged = {system: Result(system, conc) for system in requests}
            for rnd in range(ROUNDS):
                order = list(requests) if rnd % 2 == 0 else list(requests)[::-1]
                for system in order:
                    port, pgid, req = requests[system]
                    r = run_client(measure(system, port, pgid, req, conc, warm, max_s / ROUNDS, max_n // ROUNDS))
                    print(f"  c={conc:<3} round {rnd + 1} {system:9} {r.ok:>7,} ok, {r.bad} bad, p50 {r.pct(50):.3f} ms, "
                          f"p99 {r.pct(99):.3f} ms, {r.rps:,.0f} req/s, client CPU {r.cpu_share * 100:.0f}%, "
                          f"server CPU {r.server_share * 100:.0f}%, "
                          f"machine CPU {r.machine_share * 100:.0f}%", flush=True)
                    merged[system].merge(r)
            results.append((merged["INFaaS"], merged["baseline"]))

        notes = []
        if info["busy before"] != "unknown" and int(info["busy before"].rstrip("%")) > 20:
            notes.append(f"the machine was already {info['busy before']} busy before the run: other work shared "
                         f"the cores, so the figures are noisier than on an idle machine")
        for ours, _ in results:
            notes.append(f"INFaaS server CPU at concurrency {ours.concurrency}: API process "
                         f"{ours.leader_cpu_s / ours.wall_s * 100:.0f}% of a core, its {WORKERS} workers "
                         f"{(ours.server_cpu_s - ours.leader_cpu_s) / ours.wall_s * 100:.0f}% together")
        for ours, base in results:
            for r in (ours, base):
                other = (r.machine_busy_s - r.cpu_s - r.server_cpu_s) / r.wall_s if r.wall_s else 0.0
                if other > 0.25:
                    notes.append(f"{r.system} at concurrency {r.concurrency}: besides the client and the server, "
                                 f"{other * 100:.0f}% of a core was busy meanwhile (other work on the machine, and "
                                 f"the kernel's own share of loopback networking)")
                for s, body in sorted(r.samples.items()):
                    notes.append(f"{r.system} at concurrency {r.concurrency}: {r.non200[s]} answer(s) with status {s}, "
                                 f"e.g. `{body.decode(errors='replace')[:200]}`")
                for e, n in sorted(r.errors.items()):
                    notes.append(f"{r.system} at concurrency {r.concurrency}: {n} transport error(s) {e}")
        tail = stack.log_tail(200)
        for marker in ("Traceback", " ERROR ", "exception"):
            if marker in tail:
                notes.append(f"the stack's log contains {marker.strip()!r} lines (see {stack.log_path} during the run)")
                print("stack log tail:\n" + tail, flush=True)
                break

        tbl = table(results)
        total = time.time() - t_start
        write_doc(section(tbl, info, variant, sha, total, notes))
        print()
        print(tbl)
        for n in notes:
            print("note: " + n)
        print(f"\nwritten to {os.path.relpath(DOC, os.getcwd())}; total run time {total:.1f} s", flush=True)
        ok = True
        return 0
    finally:
        if client is not None:
            client.close()
        if baseline is not None:
            baseline.stop()
        stack.stop()
        if not ok:
            print(f"benchmark failed after {time.time() - t_start:.1f} s; stack log tail:\n{stack.log_tail()}",
                  file=sys.stderr, flush=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
