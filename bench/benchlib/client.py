"""The load-generating client: a closed-loop asyncio HTTP/1.1 client over raw streams
(keep-alive, one connection per loop, request bytes encoded once), what it measures, and the
request builders of each system."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.parse
from dataclasses import dataclass, field

import numpy as np

from benchlib.config import CORES, HOST
from benchlib.procs import machine_busy_s, tree_cpu_s


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
    def cpu_ms_per_answer(self) -> float:
        """CPU of all the server's processes per 200 answer, in ms."""
        return self.server_cpu_s * 1000 / self.ok if self.ok else float("nan")

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
