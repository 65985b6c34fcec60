"""The load-generating clients, what they measure, and the request builders of each system.

Two clients drive the same closed loops and fill the same ``Result``:

- ``measure``: a light asyncio HTTP/1.1 client over raw streams (keep-alive, one connection per
  loop, the request bytes encoded once), as little client work per request as Python allows;
- ``measure_aiohttp``: aiohttp, a widely used client (one ``ClientSession``, a ``TCPConnector``
  with ``limit=concurrency``, keep-alive), what a typical Python caller pays per request.

Each request is described once (``HttpRequest``: method, path, headers, body); the raw client
sends its bytes (``wire``), aiohttp its url, headers and body."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.parse
from collections.abc import Awaitable, Callable
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


# ------------------------------------------------------------ the closed loops
Call = Callable[[], Awaitable[tuple[int, bytes]]]  # one request: (status, body)
ClientFn = Callable[..., Awaitable[Result]]  # measure / measure_aiohttp


async def _loop(call: Call, reset: Callable[[], None], failures: tuple[type[BaseException], ...], res: Result | None,
                deadline: float, budget: list[int]) -> None:
    """Closed loop: send, wait for the answer, send again; until the deadline
    or until the shared request budget is spent. ``res`` None: a warm-up, nothing kept."""
    clock = time.perf_counter
    while budget[0] > 0 and clock() < deadline:
        budget[0] -= 1
        t0 = clock()
        try:
            status, body = await call()
        except failures as exc:
            reset()
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


async def _run_loops(system: str, root: int, loops: list[tuple[Call, Callable[[], None]]],
                     failures: tuple[type[BaseException], ...], warmup_s: float, max_s: float,
                     max_requests: int) -> Result:
    """Warm up every loop (results thrown away), then measure them together: the answers, and the
    CPU of this process, of the server's processes and of the whole machine meanwhile."""
    warm_until = time.perf_counter() + warmup_s
    await asyncio.gather(*(_loop(c, r, failures, None, warm_until, [1 << 30]) for c, r in loops))
    res = Result(system, len(loops))
    budget = [max_requests]
    server0, busy0 = tree_cpu_s(root), machine_busy_s()
    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(_loop(c, r, failures, res, t0 + max_s, budget) for c, r in loops))
    res.wall_s = time.perf_counter() - t0
    res.cpu_s = time.process_time() - cpu0
    res.machine_busy_s = machine_busy_s() - busy0
    server1 = tree_cpu_s(root)
    res.server_cpu_s, res.leader_cpu_s = server1[0] - server0[0], server1[1] - server0[1]
    return res


# --------------------------------------------------------- the raw-socket client
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

    async def timed_call(self) -> tuple[int, bytes]:
        return await asyncio.wait_for(self.call(), 30.0)


RAW_FAILURES = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, RuntimeError,
                ValueError)


async def measure(system: str, port: int, root: int, request: HttpRequest, concurrency: int, warmup_s: float,
                  max_s: float, max_requests: int) -> Result:
    """The raw-socket client: ``concurrency`` closed loops, one keep-alive connection each, opened
    before the warm-up; ``request`` encoded once. ``root``: the server's process tree, for its CPU."""
    wire = request.wire(port)
    conns = [Conn(port, wire) for _ in range(concurrency)]
    try:
        await asyncio.gather(*(c.open() for c in conns))
        return await _run_loops(system, root, [(c.timed_call, c.close) for c in conns], RAW_FAILURES, warmup_s, max_s,
                                max_requests)
    finally:
        for c in conns:
            c.close()


# ------------------------------------------------------------------ aiohttp
def aiohttp_version() -> str | None:
    """aiohttp's version, or None where it is not installed (``pip install -e '.[bench]'``)."""
    try:
        import aiohttp
    except ImportError:
        return None
    return aiohttp.__version__


async def measure_aiohttp(system: str, port: int, root: int, request: HttpRequest, concurrency: int,
                          warmup_s: float, max_s: float, max_requests: int) -> Result:
    """aiohttp, as a typical caller uses it: one ``ClientSession`` with a ``TCPConnector(limit=concurrency)``
    (keep-alive; each loop takes a pooled connection per request), ``concurrency`` closed loops, a 30 s
    timeout per request; otherwise as ``measure`` (warm-up, round, caps, CPU, non-200 answers)."""
    import aiohttp

    url, headers, body, method = request.url(port), request.headers, request.body, request.method
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30.0)) as session:

        async def call() -> tuple[int, bytes]:
            async with session.request(method, url, headers=headers, data=body) as resp:
                return resp.status, await resp.read()

        failures = (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError)
        return await _run_loops(system, root, [(call, _nothing)] * concurrency, failures, warmup_s, max_s,
                                max_requests)


def _nothing() -> None:
    """After a failed request aiohttp has already dropped its connection."""


CLIENTS: dict[str, ClientFn] = {"raw": measure, "aiohttp": measure_aiohttp}


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
@dataclass(frozen=True)
class HttpRequest:
    """One request, described once: the raw client sends ``wire(port)``, aiohttp ``url(port)``,
    ``headers`` and ``body`` (it adds Host and Content-Length itself, and a few headers of its own)."""

    path: str
    body: bytes
    headers: dict[str, str]  # Content-Type and the system's own (auth, binary header length)
    method: str = "POST"

    def url(self, port: int) -> str:
        return f"http://{HOST}:{port}{self.path}"

    def wire(self, port: int) -> bytes:
        head = [f"{self.method} {self.path} HTTP/1.1", f"Host: {HOST}:{port}", f"Content-Length: {len(self.body)}",
                *(f"{k}: {v}" for k, v in self.headers.items()), "", ""]
        return "\r\n".join(head).encode("latin-1") + self.body


OCTETS = {"Content-Type": "application/octet-stream"}
JSON = {"Content-Type": "application/json"}


def _f32(rows: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rows, dtype=np.float32)


def _oip_path(variant_id: str) -> str:
    return f"/v2/models/{urllib.parse.quote(variant_id, safe=':')}/infer"


def infaas_request(variant_id: str, rows: np.ndarray, api_key: str, input_name: str) -> HttpRequest:
    """OIP binary extension, as ``infaas.client.Client.infer`` builds it; ``input_name``: the model's input."""
    arr = _f32(rows)
    raw = arr.tobytes()
    header = json.dumps({
        "inputs": [{"name": input_name, "shape": list(arr.shape), "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)}}],
        "parameters": {"binary_data_output": True},
    }).encode()
    return HttpRequest(_oip_path(variant_id), header + raw,
                       {**OCTETS, "Inference-Header-Content-Length": str(len(header)),
                        "Authorization": f"Bearer {api_key}"})


def infaas_json_request(variant_id: str, rows: np.ndarray, api_key: str, input_name: str) -> HttpRequest:
    """OIP v2 JSON: the input tensor's data as a flat list, the outputs answered as JSON too."""
    arr = _f32(rows)
    body = json.dumps({"inputs": [{"name": input_name, "shape": list(arr.shape), "datatype": "FP32",
                                   "data": arr.ravel().tolist()}]}).encode()
    return HttpRequest(_oip_path(variant_id), body, {**JSON, "Authorization": f"Bearer {api_key}"})


def raw_request(path: str, rows: np.ndarray) -> HttpRequest:
    """The raw float32 bytes of the rows (bench/baseline_server.py's ``/NAME/infer``, Ray Serve)."""
    return HttpRequest(path, _f32(rows).tobytes(), dict(OCTETS))


def json_request(path: str, rows: np.ndarray) -> HttpRequest:
    """``{"x": [[...]]}`` (bench/baseline_server.py's ``/NAME/infer_json``, BentoML's ``/predict``)."""
    return HttpRequest(path, json.dumps({"x": _f32(rows).tolist()}).encode(), dict(JSON))


def bento_request(rows: np.ndarray) -> HttpRequest:
    return json_request("/predict", rows)


BOUNDARY = "infaas-bench-boundary-7c1f"


def multipart(field_name: str, raw: bytes) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field_name}\"; filename=\"x.bin\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + raw + f"\r\n--{BOUNDARY}--\r\n".encode()


def bento_image_request(rows: np.ndarray) -> HttpRequest:
    """BentoML's file upload: the raw float32 bytes as a multipart file."""
    return HttpRequest("/image", multipart("data", _f32(rows).tobytes()),
                       {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
