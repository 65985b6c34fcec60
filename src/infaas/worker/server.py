"""The worker process: an HTTP server for inference, a heartbeat, a job loop.

Routes (internal; only the API / selector talks to them, and proves it: every call
carries the stack's worker credential, ``x-infaas-worker-key``, ``wiring.worker_secret``;
without it a worker answers 401 and does nothing, loads nothing):

* ``POST /v1/infer/{variant_id}``: body is a tensor frame (``infaas.core.tensors``),
  header ``x-infaas-objective-ms`` carries the tightest latency objective; the
  answer is a frame, or JSON ``{"error", "message"}`` with the error's status.
* ``GET /health``: state; with the credential also id, hardware, replicas and each replica's process id.

The server is a bare ASGI app (no framework) under uvicorn. Started by `infaas up`
(``--local-socket``), a worker also serves the API on this machine over a Unix socket
in the data dir's 0700 ``sockets`` folder with the frame protocol of ``adapters/frames.py``
(the same requests and credential, no HTTP).

Run: ``python -m infaas.worker --hardware cpu --port 9001 --data-dir .infaas-data``.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from infaas.adapters import frames, logs
from infaas.adapters.http.asgi import send_bytes, serve_asgi
from infaas.adapters.local.secret import socket_dir, socket_path
from infaas.adapters.workerclient import KEY_HEADER, MODEL_HEADER
from infaas.app import offline
from infaas.app.autoscaler import assignments_for
from infaas.app.build import build_lane, queue_reprofile, run_build_job
from infaas.core import calibration, errors, tensors
from infaas.core.domain import WORKER_DRAINING, WORKER_UP, Variant, Worker
from infaas.core.errors import InfaasError, InvalidInput, NotFound, Unavailable
from infaas.core.reconcile import Loaded, grace_s, reconcile
from infaas.core.settings import Settings
from infaas.runtime import sandbox
from infaas.runtime.executor import load_executor
from infaas.runtime.hardware import missing_runtimes, probe_runtimes
from infaas.runtime.profile import ProfileLimits
from infaas.wiring import make_adapters, open_location, worker_secret
from infaas.worker.replicas import ReplicaCache

log = logging.getLogger("infaas.worker")

_FRAME = tensors.CONTENT_TYPE.encode()
_KEY = KEY_HEADER.encode()
_MODEL = MODEL_HEADER.encode()
_JSON = b"application/json"
DRIFT_READ_S = 10.0  # a re-profile asked for: how often the worker looks for the new profile


class WorkerAgent:
    def __init__(self, settings: Settings, *, hardware: str, worker_id: str, url: str, adapters=None,
                 key: str | None = None) -> None:
        self.settings = settings
        self.key = (key if key is not None else worker_secret(settings)).encode()  # every caller must show it
        self.hardware = hardware
        self.id = worker_id
        self.url = url
        self.adapters = adapters or make_adapters(settings)
        self.store = self.adapters.store
        self.state = WORKER_UP
        self.started_at = time.time()
        # a query the worker has not answered a second before the API would give up on it is
        # answered 502 for its variant: the API then neither retries it elsewhere nor suspects the worker
        self.cache = ReplicaCache(self._load, memory_budget_bytes=settings.worker_memory_bytes, threads=1,
                                  lookup=self.store.get_variant,
                                  deadline_s=max(1.0, settings.request_timeout_s - 1.0))
        self._served_at_last_beat: dict[str, int] = {}
        self._drift: dict[str, calibration.DriftWatch] = {}  # variant id -> how long its served latency has drifted
        self._drift_read: dict[str, float] = {}  # variant id -> when its record was last read for a new profile
        self._last_beat = time.time()
        self._tasks: list[asyncio.Task] = []
        self.inflight = 0
        self.last_online = -1e9  # time.monotonic() of the last online request
        # What really works here (a worker declared gpu without CUDA reports only the CPU provider),
        # and what it lacks to take build jobs for its hardware type.
        self.runtimes = probe_runtimes(hardware)
        self.missing_runtimes = missing_runtimes(hardware, self.runtimes)
        self.cache_dir = os.path.join(settings.data_dir, "cache")  # TensorRT engines and the like
        # the API joins queries into one call up to max_body_bytes of tensors; the frame adds its header
        self.limit = 2 * settings.max_body_bytes
        self.frame_socket: socket.socket | None = None  # a local socket for frames (main() sets it)
        self._frame_server: asyncio.AbstractServer | None = None

    # -- loading ---------------------------------------------------------
    def _load(self, variant_id: str) -> tuple[Variant, Any]:
        variant = self.store.get_variant(variant_id)
        if variant.status != "ready" or not variant.model_key:
            raise Unavailable(f"variant {variant_id} is {variant.status}, not ready", retry_after_s=2.0)
        if variant.hardware != self.hardware:
            raise InvalidInput(f"variant {variant_id} runs on {variant.hardware}, this worker is {self.hardware}", field="variant")
        path = self.adapters.models.local_path(variant.model_key)
        if self.settings.replica_isolation == "process" and sandbox.isolated(variant):
            # the batch deadline: a second under the API's wait for the worker, so the API hears why
            return variant, sandbox.IsolatedExecutor(variant, path, allowance_bytes=self.settings.worker_memory_bytes,
                                                     intra_op_threads=self.settings.worker_threads,
                                                     cache_dir=self.cache_dir,
                                                     deadline_s=max(1.0, self.settings.request_timeout_s - 1.0),
                                                     max_answer_bytes=self.settings.max_answer_bytes)
        return variant, load_executor(variant, path, intra_op_threads=self.settings.worker_threads, cache_dir=self.cache_dir)

    # -- background loops -------------------------------------------------
    async def start(self) -> None:
        self.heartbeat()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._heartbeat_loop()), loop.create_task(self._job_loop()),
                       loop.create_task(self._offline_loop())]
        try:  # SIGUSR1: drain (the AWS drain watcher sends it before stopping the machine)
            loop.add_signal_handler(signal.SIGUSR1, self.drain)
        except (NotImplementedError, RuntimeError, ValueError):  # no signals here (not the main thread)
            pass

    def drain(self) -> None:
        """Stop taking new work: queries already here finish, new ones are refused
        (``answer``) and retried elsewhere by the caller, and selectors drop a worker
        that is not ``up`` from their next snapshot. Stopping (SIGTERM) comes later."""
        if self.state == WORKER_UP:
            log.info("worker %s draining", self.id)
        self.state = WORKER_DRAINING
        try:
            self.heartbeat()
        except InfaasError as exc:
            log.warning("heartbeat failed: %s", exc.message)

    async def stop(self) -> None:
        """Drain: stop taking new work, finish what is queued, deregister."""
        self.state = WORKER_DRAINING
        self.heartbeat()
        deadline = time.time() + 10
        while any(r.busy for r in self.cache.replicas.values()) and time.time() < deadline:
            await asyncio.sleep(0.01)
        for t in self._tasks:
            t.cancel()
        await self.cache.close()
        try:
            self.store.remove_worker(self.id)
        except InfaasError:
            pass

    def heartbeat(self) -> None:
        now = time.time()
        period = max(now - self._last_beat, 1e-3)
        loads = []
        for vid, r in self.cache.replicas.items():
            loads.append(r.load_report(period, self._served_at_last_beat.get(vid, 0)))
            self._served_at_last_beat[vid] = r.served_rows
        self._last_beat = now
        self.store.heartbeat(
            Worker(
                id=self.id,
                hardware=self.hardware,
                url=self.url,
                state=self.state,
                memory_budget_bytes=self.cache.memory_budget_bytes,
                memory_used_bytes=self.cache.memory_used_bytes,
                replicas=tuple(loads),
                heartbeat_at=now,
                started_at=self.started_at,
                runtimes=self.runtimes,
            ),
            ttl_s=self.settings.heartbeat_ttl_s,
        )

    async def _heartbeat_loop(self) -> None:
        parent = os.getppid()
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            if os.getppid() != parent:  # the stack that started us is gone: drain and exit
                log.warning("parent process exited; worker %s stopping", self.id)
                os.kill(os.getpid(), signal.SIGTERM)
            try:  # store I/O off the event loop: a busy store must not stall online queries
                await asyncio.get_running_loop().run_in_executor(None, self.heartbeat)
                await self._reconcile()
                await asyncio.get_running_loop().run_in_executor(None, self.check_drift, time.time())
            except InfaasError as exc:
                log.warning("heartbeat failed: %s", exc.message)

    def check_drift(self, now: float) -> None:
        """Served latency against each replica's profile (``core.calibration.watch``): a variant
        drifted beyond the bound for long enough gets a re-profile job; a replica holding an older
        profile than the store's takes the new record and starts its estimates over."""
        for vid, replica in list(self.cache.replicas.items()):
            profile = replica.variant.profile
            if profile is None:
                continue
            try:
                self._check_drift(vid, replica, profile, now)
            except InfaasError as exc:  # deleted meanwhile, a busy store: the next beat looks again
                log.info("drift check of %s: %s", vid, exc.message)

    def _check_drift(self, vid: str, replica, profile, now: float) -> None:
        state, reason = calibration.watch(self._drift.get(vid), list(replica.served.values()), profile.measured_at, now)
        if state is None:
            self._drift.pop(vid, None)
        else:
            self._drift[vid] = state
        if reason is not None:
            if queue_reprofile(self.store, self.adapters.queue, vid, profile.measured_at, reason):
                return
        elif state is None or not state.requested or now - self._drift_read.get(vid, 0.0) < DRIFT_READ_S:
            return
        self._drift_read[vid] = now  # asked for (by us or another worker): is the new profile in?
        current = self.store.get_variant(vid)
        if (current.profile is not None and current.profile.measured_at != profile.measured_at
                and current.model_key == replica.variant.model_key):
            replica.refresh(current)
            self._drift.pop(vid, None)

    async def _reconcile(self) -> None:
        """Load assigned replicas ahead of traffic; unload unassigned idle ones."""
        if self.state != WORKER_UP:
            return
        loaded = {vid: Loaded(r.busy, r.last_used) for vid, r in self.cache.replicas.items()}
        grace = grace_s(self.settings.scale_period_s)
        assigned = await asyncio.get_running_loop().run_in_executor(None, assignments_for, self.store, self.id)
        to_load, to_unload = reconcile(assigned, loaded, time.time(), grace)
        for vid in to_unload:
            await self.cache.unload(vid, reason="no longer assigned by the autoscaler")
        for vid in to_load:
            try:
                await self.cache.get(vid)
            except InfaasError as exc:
                log.warning("could not load assigned %s: %s", vid, exc.message)

    def _online_idle(self) -> bool:
        """No online request in flight, queued, or in the last ``offline_quiet_s``:
        only then may offline work use the core. A worker with steady online
        traffic leaves offline work to idle workers."""
        return (self.inflight == 0 and time.monotonic() - self.last_online >= self.settings.offline_quiet_s
                and not any(r.busy for r in self.cache.replicas.values()))

    async def _offline_loop(self) -> None:
        """Offline items on spare capacity only: online queries keep priority,
        between items and between batches of one item."""
        loop = asyncio.get_running_loop()

        def executor_for(variant_id: str):
            return asyncio.run_coroutine_threadsafe(self.cache.get(variant_id), loop).result().executor

        def lowest_priority() -> None:  # the offline thread yields the core to the API and online work
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
            except OSError:
                pass

        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="offline", initializer=lowest_priority)

        while self.state == WORKER_UP:
            if not self._online_idle():
                await asyncio.sleep(0.01)
                continue
            msg = await self._receive(offline.LANE, self.settings.offline_visibility_s, pool, idle_s=0.2)
            if msg is None:
                continue
            receipt, body = msg
            try:
                await loop.run_in_executor(pool, lambda: offline.run_received(
                    receipt, body, self.store, self.settings, executor_for,
                    lambda uri, tenant: open_location(uri, self.settings, tenant), self.adapters.queue,
                    may_run=self._online_idle))
            except Exception:  # not acknowledged: retried after the visibility timeout, then dead-lettered
                log.exception("offline item %s/%s failed; it will be retried", body.get("job"), body.get("item"))

    async def _receive(self, lane: str, visibility_s: float, pool, *, idle_s: float):
        """One message from ``lane`` (store I/O off the event loop), or None after
        waiting ``idle_s`` when the lane is empty or the queue is briefly unavailable."""
        try:
            msg = await asyncio.get_running_loop().run_in_executor(
                pool, lambda: self.adapters.queue.receive(lane, visibility_s=visibility_s))
        except InfaasError:
            msg = None
        if msg is None:
            await asyncio.sleep(idle_s)
        return msg

    async def _job_loop(self) -> None:
        loop = asyncio.get_running_loop()
        lane = build_lane(self.hardware)
        limits = ProfileLimits(timeout_s=self.settings.profile_timeout_s, memory_bytes=self.settings.profile_memory_bytes)
        if self.missing_runtimes:  # never take a job this machine cannot build: it waits for a worker that can
            log.warning("worker %s is declared %s but lacks %s (has %s): not taking %s jobs",
                        self.id, self.hardware, ", ".join(self.missing_runtimes), ", ".join(self.runtimes) or "nothing", lane)
            return
        while self.state == WORKER_UP:
            msg = await self._receive(lane, 900.0, None, idle_s=0.25)
            if msg is None:
                continue
            receipt, body = msg
            log.info("build job %s on %s", body.get("architecture"), self.hardware)
            try:
                await loop.run_in_executor(None, lambda: run_build_job(
                    body, self.store, self.adapters.models, limits=limits, cache_dir=self.cache_dir,
                    queue=self.adapters.queue, memory_budget_bytes=self.cache.memory_budget_bytes))
                await loop.run_in_executor(None, self.adapters.queue.ack, lane, receipt)
            except NotFound as exc:  # architecture deleted meanwhile: nothing to do
                log.info("build job dropped: %s", exc.message)
                await loop.run_in_executor(None, self.adapters.queue.ack, lane, receipt)
            except Exception:
                log.exception("build job failed; it will be retried")

    # -- ASGI -------------------------------------------------------------
    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"]
        trusted = self._trusted(scope["headers"])
        if scope["method"] == "POST" and path.startswith("/v1/infer/"):
            if not trusted:  # refused before the body is read: nothing loads, nothing runs
                status, media, extra, payload = errors.encode(errors.Unauthenticated(
                    "a worker answers its stack only: no or a wrong worker key", field="key"))
                await send_bytes(send, status, media, payload, extra)
                return
            await serve_asgi(self.answer_infer, path, scope, receive, send, self.limit)
        elif path == "/health":  # tenants' models are nobody else's business
            body = {"state": self.state}
            if trusted:
                body.update(worker=self.id, hardware=self.hardware, replicas=sorted(self.cache.replicas),
                            processes={vid: pid for vid, r in self.cache.replicas.items()
                                       if (pid := getattr(r.executor, "pid", None)) is not None})
            await send_bytes(send, 200, _JSON, json.dumps(body).encode())
        else:
            status, media, extra, payload = errors.encode(NotFound(f"no route {path!r} on a worker", field="path"))
            await send_bytes(send, status, media, payload, extra)

    def _trusted(self, headers: list) -> bool:
        for k, v in headers:
            if k == _KEY:
                return hmac.compare_digest(v, self.key)
        return False

    async def answer_infer(self, path: str, headers: list, body: bytes) -> tuple[int, bytes, list, bytes]:
        """``POST /v1/infer/{variant}`` (HTTP, from an API on another machine)."""
        objective = rid = model = None
        for k, v in headers:
            if k == _MODEL:
                model = v.decode("latin-1")
            elif k == b"x-infaas-objective-ms":
                try:
                    objective = float(v)
                except ValueError:
                    return errors.encode(InvalidInput("x-infaas-objective-ms must be a number", field="headers"))
            elif k == logs.HEADER:
                rid = v
        return await self.answer(path[len("/v1/infer/") :], objective, rid, body, model)

    async def answer(self, variant_id: str, objective: float | None, rid: str | bytes | None,
                     body: bytes, model: str | None = None) -> tuple[int, bytes, list, bytes]:
        """Run ``body`` (a tensor frame) through the variant's replica, loading it if needed: the one
        handler behind the HTTP route, the local frame socket and the in-process client.
        A draining worker refuses a new query (503 ``worker_draining``: the caller tries another
        worker at once) while those it took before the drain finish."""
        if self.state != WORKER_UP:
            return errors.encode(errors.WorkerDraining(f"worker {self.id} is draining; send this query elsewhere"))
        self.inflight += 1
        self.last_online = time.monotonic()
        token = logs.REQUEST_ID.set(None if rid is None else logs.request_id_from(rid))
        try:
            feed = tensors.decode(body)
            if not feed:
                raise InvalidInput("tensor frame has no tensors", field="body")
            first = next(iter(feed.values()))
            rows = first.shape[0] if first.ndim else 1
            replica = await self.cache.get(variant_id, model)
            outputs = await replica.infer(feed, rows, objective)
            size = sandbox.answer_bytes(outputs)  # (a replica process checks it before sending it here)
            if size > self.settings.max_answer_bytes:
                raise InvalidInput(f"these inputs make the model answer {size} bytes, over the limit of "
                                   f"{self.settings.max_answer_bytes} (INFAAS_MAX_ANSWER_BYTES)", field="inputs")
            return 200, _FRAME, [], tensors.encode(outputs)
        except InfaasError as exc:
            return errors.encode(exc)
        except Exception as exc:  # never leave the API without an answer
            log.exception("inference failed")
            return errors.internal(f"worker error: {type(exc).__name__}")
        finally:
            logs.REQUEST_ID.reset(token)
            self.inflight -= 1

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.start()
                if self.frame_socket is not None:  # the API on this machine sends frames here
                    limit, key = self.limit, self.key.decode()
                    self._frame_server = await asyncio.start_unix_server(
                        lambda r, w: frames.serve(r, w, self.answer, limit, key), sock=self.frame_socket)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._frame_server is not None:
                    self._frame_server.close()
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from infaas.adapters.http import guard

    parser = argparse.ArgumentParser(prog="python -m infaas.worker", description="Run one INFaaS worker process.")
    parser.add_argument("--hardware", default="cpu", help="hardware type this worker declares (default: cpu)")
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=0, help="0 (the default): a port the kernel picks, held from the start")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--worker-id", default=None)
    parser.add_argument("--local-socket", action="store_true",
                        help="also listen on a Unix socket in <data-dir>/sockets (0700), for an API "
                             "on the same machine (`infaas up` passes it)")
    args = parser.parse_args(argv)
    logs.configure("worker")
    settings = Settings.from_env(data_dir=args.data_dir, host=args.host)
    # Offline work runs in a thread beside the event loop that answers online
    # queries: hand the interpreter over every 0.5 ms rather than every 5 ms.
    sys.setswitchinterval(0.0005)
    # The worker binds its port itself (0: the kernel picks one) and hands the socket to uvicorn, so
    # no other process can take the port between the choice and the bind; the heartbeat tells the
    # table the address.
    try:
        tcp = listen_socket(settings.host, args.port)
    except OSError as exc:
        parser.exit(1, f"python -m infaas.worker: cannot listen on {settings.host}:{args.port}: {exc.strerror} "
                       "(another process holds it? leave --port out, and the worker takes a free one)\n")
    port = tcp.getsockname()[1]
    worker_id = args.worker_id or f"{args.hardware}-{uuid.uuid4().hex[:8]}"
    host = f"[{settings.host}]" if ":" in settings.host else settings.host  # an IPv6 address in a URL
    agent = WorkerAgent(settings, hardware=args.hardware, worker_id=worker_id, url=f"http://{host}:{port}")
    config = uvicorn.Config(agent, host=settings.host, port=port, log_level="warning", lifespan="on",
                            timeout_graceful_shutdown=10, access_log=False, timeout_keep_alive=65,
                            log_config=None,  # uvicorn's lines as JSON lines too (adapters.logs)
                            http=guard.from_settings(f"worker {worker_id}", settings).protocol())
    server = uvicorn.Server(config)
    log.info("worker %s (%s) listening on %s:%d", worker_id, args.hardware, settings.host, port)
    sockets = [tcp]
    if args.local_socket:  # HTTP on TCP for everyone, frames on the local socket for the API here
        agent.frame_socket = local_socket(port, socket_dir(settings.data_dir))
    if args.hardware == "cpu":
        limit_memory(settings.worker_memory_bytes)
        if settings.replica_isolation == "process":
            sandbox.warm_up()  # the fork server replica processes start from, now rather than at the first load
    server.run(sockets=sockets)


MEMORY_HEADROOM = 1 << 30  # address space beyond the replica budget: thread stacks, allocator arenas, runtimes


def limit_memory(budget_bytes: int) -> int | None:
    """Cap this worker's address space at what it holds now plus the replica budget and a headroom
    (``RLIMIT_AS``), so that a model whose allocations grow with its input fails that query (the
    runtime's allocation fails and the variant answers an error) instead of taking the machine's
    memory and every tenant's replicas with it. CPU workers only: CUDA and the Neuron runtime
    reserve far more address space than they use. Returns the limit set, or None."""
    import ctypes
    import resource

    try:  # few malloc arenas: each reserves 64 MiB of address space per thread that allocates
        ctypes.CDLL("libc.so.6").mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/status") as f:
            held = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    except (OSError, StopIteration, ValueError):
        return None
    limit = held + budget_bytes + MEMORY_HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    log.info("address space limited to %d MiB (%d MiB held at start, replica budget %d MiB)",
             limit >> 20, held >> 20, budget_bytes >> 20)
    return limit


def listen_socket(host: str, port: int) -> socket.socket:
    """The worker's TCP socket, bound to ``host`` (IPv4 or IPv6) at ``port``, or at a port the
    kernel picks when ``port`` is 0."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    tcp = socket.socket(family, socket.SOCK_STREAM)
    try:
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((host, port))
        tcp.listen(2048)  # listening at once: no other socket can bind the port meanwhile (SO_REUSEADDR)
    except OSError:
        tcp.close()
        raise
    return tcp


def local_socket(port: int, directory: str) -> socket.socket | None:
    """A Unix stream socket in ``directory`` (0700: no other local user can connect) beside the
    worker's TCP ``port``: between processes of one machine a Unix socket costs a fraction of a
    loopback TCP round trip. None where there is none (not Linux, or the path cannot be bound)."""
    if not sys.platform.startswith("linux"):
        return None
    local = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = socket_path(directory, port)
    try:
        if os.path.exists(path):  # left by a worker that died on this port
            os.unlink(path)
        local.bind(path)
        os.chmod(path, 0o600)
    except OSError as exc:  # taken, or the path is too long for a Unix socket: serve TCP only
        log.warning("no local socket for port %d: %s", port, exc)
        local.close()
        return None
    return local


if __name__ == "__main__":
    main()
