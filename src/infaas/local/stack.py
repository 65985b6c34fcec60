"""`infaas up`: the API in this process, worker processes beside it, all on
127.0.0.1, metadata in SQLite and model files in a folder under ``data_dir``.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import threading
import time

from infaas.adapters import logs
from infaas.adapters.local.processes import WorkerProcesses
from infaas.adapters.local.secret import socket_dir
from infaas.adapters.workerclient import HttpWorkerClient
from infaas.api.app import create_app
from infaas.api.deps import Services
from infaas.app.autoscaler import Autoscaler
from infaas.app.control import ControlPlane
from infaas.app.data import DataPlane
from infaas.core.settings import Settings
from infaas.wiring import make_adapters, make_function_tier, worker_secret

log = logging.getLogger("infaas.local")

LOCK_FILE = "infaas-up.lock"  # in the data dir: held (flock) by the `infaas up` using it, which writes its pid there


class StartError(RuntimeError):
    """`infaas up` cannot start; the message is one line for people, saying what to change."""


def lock_data_dir(data_dir: str) -> int:
    """Take the data dir for this process: an exclusive ``flock`` on ``<data_dir>/infaas-up.lock``,
    held as long as the returned descriptor is open (the kernel drops it when the process ends,
    however it ends). Two stacks on one data dir would share the store and give their workers
    the same ids; the second one fails here at once, naming the pid that holds the dir."""
    path = os.path.join(data_dir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # not inherited by the worker processes (PEP 446)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder_pid(fd)
        os.close(fd)
        who = f"pid {holder}" if holder else "another process"
        raise StartError(f"the data dir {os.path.abspath(data_dir)} is in use by another 'infaas up' ({who}); "
                         "stop that one, or give this one its own with --data-dir or INFAAS_DATA_DIR") from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _holder_pid(fd: int, tries: int = 10) -> int | None:
    """The pid the lock's holder wrote (it writes it just after taking the lock: wait a moment for it)."""
    for _ in range(tries):
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text.isdigit():
            return int(text)
        time.sleep(0.05)
    return None


def bind_api_socket(host: str, port: int) -> socket.socket:
    """The API's listening socket, bound before anything else starts: a busy port fails here with
    one line, and no other program can take the port between this check and the server starting
    (uvicorn serves on this very socket)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    how = "choose another port with --port N or INFAAS_PORT=N"
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a port in TIME_WAIT is free
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartError(f"port {port} on {host} is already in use (another 'infaas up' or another program); "
                             f"{how}") from None
        if exc.errno == errno.EACCES:
            raise StartError(f"port {port} on {host}: permission denied (ports below 1024 need privileges); "
                             f"{how}") from None
        raise StartError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; check INFAAS_HOST, or {how}") from None
    return sock


def build_services(settings: Settings) -> Services:
    adapters = make_adapters(settings)
    control = ControlPlane(adapters.store, adapters.models, adapters.queue, settings)
    # workers started here also listen on a Unix socket in the data dir (WorkerProcesses.start): the client
    # prefers it; every call carries the stack's worker credential
    client = HttpWorkerClient(timeout_s=settings.request_timeout_s, socket_dir=socket_dir(settings.data_dir),
                              key=worker_secret(settings))
    # the serverless tier (INFAAS_FUNCTION_TIER=on): processes on this machine running the inference function
    data = DataPlane(adapters.store, client, settings, functions=make_function_tier(settings, adapters.models))
    return Services(control, data, settings)


def supervise(workers: WorkerProcesses, store, period_s: float, stop: threading.Event) -> None:
    while not stop.wait(period_s):
        with workers.lock:
            workers.restart_dead(store)


def control_loop(autoscaler, period_s: float, stop: threading.Event) -> None:
    while not stop.wait(period_s):
        try:
            with autoscaler.fleet.lock:
                autoscaler.run_once()
        except Exception:  # a failed period is logged; the next one starts from the store again
            log.exception("autoscaler period failed")


def wait_for_workers(services: Services, count: int, timeout_s: float = 60.0) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if len(services.control.store.workers()) >= count:
            return
        time.sleep(0.1)
    raise StartError(f"{count} worker(s) did not report within {timeout_s:g} s; their errors are in the log above")


def run(settings: Settings) -> None:
    """Run the stack in the foreground until interrupted. Raises ``StartError`` (before any worker
    starts) when the data dir is another stack's or the port is taken."""
    import uvicorn

    from infaas.adapters.http import guard

    logs.configure("api")
    os.makedirs(settings.data_dir, exist_ok=True)
    lock = lock_data_dir(settings.data_dir)
    try:
        sock = bind_api_socket(settings.host, settings.port)
    except BaseException:
        os.close(lock)
        raise
    port = sock.getsockname()[1]  # the one bound, should the setting be 0 (any free port)
    workers = WorkerProcesses(settings)
    stop = threading.Event()
    services = None
    try:
        services = build_services(settings)
        for _ in range(settings.workers):
            workers.start("cpu")
        threading.Thread(target=supervise, args=(workers, services.control.store, 0.5, stop), daemon=True).start()
        wait_for_workers(services, settings.workers)
        if settings.autoscale == "on":
            scaler = Autoscaler(services.control.store, workers, settings.scaling_params(), settings.hardware)
            threading.Thread(target=control_loop, args=(scaler, settings.scale_period_s, stop), daemon=True).start()

        def started() -> None:
            print(f"INFaaS is up on http://{settings.host}:{port} with {settings.workers} cpu worker(s); "
                  f"data in {settings.data_dir}; API docs at http://{settings.host}:{port}/docs", flush=True)
            if settings.auth == "keys" and not services.control.store.keys():
                print("No API key exists yet. Create one per team (shown once) in another terminal with:\n"
                      f"  infaas tenants create <team> --scopes query,register --data-dir {settings.data_dir}\n"
                      "then send it as 'Authorization: Bearer <key>' (the CLI reads INFAAS_API_KEY). The admin scope "
                      "(workers, events, metrics: every tenant's model names) is for the operator only.", flush=True)

        # Keep idle client connections longer than clients keep them (httpx: 5 s), so a
        # client never reuses a connection the server is closing at that moment.
        # The inference routes take the bare ASGI path (api.app.DataPlaneFastPath); everything else goes to FastAPI.
        # log_config=None: uvicorn's own lines ("Invalid HTTP request received.") go through this
        # process's JSON lines (adapters.logs) instead of plain text in the same stream.
        # http=: uvicorn's httptools protocol with a bound on open connections and header and body
        # deadlines (adapters/http/guard.py), which uvicorn alone does not have.
        config = uvicorn.Config(create_app(services), host=settings.host, port=port, log_level="warning",
                                access_log=False, timeout_keep_alive=65, log_config=None,
                                http=guard.from_settings("api", settings).protocol())
        server = _server(uvicorn, config, started)
        server.run(sockets=[sock])
        if not server.started:
            raise StartError("the API did not start; its error is in the log above")
    finally:
        stop.set()
        workers.stop_all()
        if services is not None and getattr(services.data.functions, "shutdown", None) is not None:
            services.data.functions.shutdown()  # the tier's instances on this machine
        sock.close()
        os.close(lock)


def _server(uvicorn, config, on_started):
    """A uvicorn server that calls ``on_started`` once it serves (never before)."""

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                on_started()

    return Server(config)
