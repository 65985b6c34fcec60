"""`infaas up`: the API in this process, worker processes beside it, all on
127.0.0.1, metadata in SQLite and model files in a folder under ``data_dir``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

from infaas.adapters.http.hotpath import hot_protocol
from infaas.adapters.workerclient import HttpWorkerClient
from infaas.api.app import DataRoutes, create_app
from infaas.api.deps import Services
from infaas.app.autoscaler import Autoscaler
from infaas.app.control import ControlPlane
from infaas.app.data import DataPlane
from infaas.core.settings import Settings
from infaas.wiring import make_adapters
from infaas.worker.server import free_port

log = logging.getLogger("infaas.local")


def build_services(settings: Settings) -> Services:
    adapters = make_adapters(settings)
    control = ControlPlane(adapters.store, adapters.models, adapters.queue, settings)
    # workers started here also listen on a local socket (WorkerProcesses.start): the client prefers it
    data = DataPlane(adapters.store, HttpWorkerClient(timeout_s=settings.request_timeout_s, local_sockets=True), settings)
    return Services(control, data, settings)


class WorkerProcesses:
    """Starts and stops local worker processes (one per core by default)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.procs: dict[str, subprocess.Popen] = {}
        self.hardware: dict[str, str] = {}
        self.restarts = 0
        self._draining: list[subprocess.Popen] = []
        self.lock = threading.RLock()  # the supervisor and the control loop both change the set

    def start(self, hardware: str = "cpu", worker_id: str | None = None) -> str:
        worker_id = worker_id or self._next_id(hardware)
        self.hardware[worker_id] = hardware
        port = free_port(self.settings.host)
        env = dict(os.environ, INFAAS_DATA_DIR=self.settings.data_dir, INFAAS_HOST=self.settings.host, OMP_NUM_THREADS="1")
        self.procs[worker_id] = subprocess.Popen(
            [sys.executable, "-m", "infaas.worker", "--hardware", hardware, "--port", str(port), "--worker-id", worker_id,
             "--local-socket"],
            env=env,
        )
        return worker_id

    def stop(self, worker_id: str, timeout_s: float = 15.0) -> None:
        proc = self.procs.pop(worker_id, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # the worker drains, then deregisters
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop_all(self) -> None:
        for worker_id in list(self.procs):
            self.stop(worker_id)
        for proc in self._draining:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()

    def restart_dead(self, store) -> list[str]:
        """Restart workers that exited on their own (crash, kill). Their record is
        removed first, so selection stops sending them work at once instead of
        waiting for the heartbeat to expire."""
        restarted = []
        for worker_id, proc in list(self.procs.items()):
            if proc.poll() is None:
                continue
            log.warning("worker %s exited with %s; restarting it", worker_id, proc.returncode)
            try:
                store.remove_worker(worker_id)
            except Exception:  # the store may be briefly busy; the record expires anyway
                pass
            del self.procs[worker_id]
            self.start(self.hardware[worker_id], worker_id)
            self.restarts += 1
            restarted.append(worker_id)
        return restarted


    # -- the Fleet port (infaas.core.ports.Fleet) ----------------------------------
    def desired(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for worker_id in self.procs:
            out[self.hardware[worker_id]] = out.get(self.hardware[worker_id], 0) + 1
        return out

    def set_desired(self, hardware: str, count: int) -> None:
        """Start workers up to ``count``; fewer is done by ``drain``, one chosen worker at a time."""
        while self.desired().get(hardware, 0) < count:
            worker_id = self.start(hardware, self._next_id(hardware))
            log.info("started worker %s", worker_id)

    def drain(self, worker_id: str) -> None:
        """SIGTERM: the worker stops taking work, finishes its queue, deregisters, exits."""
        proc = self.procs.pop(worker_id, None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            self._draining.append(proc)
            log.info("draining worker %s", worker_id)
        self._draining = [p for p in self._draining if p.poll() is None]

    def _next_id(self, hardware: str) -> str:
        n = 1
        while f"{hardware}-{n}" in self.procs:
            n += 1
        return f"{hardware}-{n}"


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
    raise RuntimeError(f"{count} worker(s) did not report within {timeout_s:g} s")


def run(settings: Settings) -> None:
    """Run the stack in the foreground until interrupted."""
    import uvicorn

    os.makedirs(settings.data_dir, exist_ok=True)
    services = build_services(settings)
    workers = WorkerProcesses(settings)
    for _ in range(settings.workers):
        workers.start("cpu")
    stop = threading.Event()
    threading.Thread(target=supervise, args=(workers, services.control.store, 0.5, stop), daemon=True).start()
    try:
        wait_for_workers(services, settings.workers)
        if settings.autoscale == "on":
            scaler = Autoscaler(services.control.store, workers, settings.scaling_params(), settings.hardware)
            threading.Thread(target=control_loop, args=(scaler, settings.scale_period_s, stop), daemon=True).start()
        print(f"INFaaS is up on http://{settings.host}:{settings.port} with {settings.workers} cpu worker(s); "
              f"data in {settings.data_dir}; API docs at http://{settings.host}:{settings.port}/docs", flush=True)
        if settings.auth == "keys" and not services.control.store.keys():
            print("No API key exists yet. Create the first one (shown once) in another terminal with:\n"
                  f"  infaas tenants create <tenant> --scopes query,register,admin --data-dir {settings.data_dir}\n"
                  "then send it as 'Authorization: Bearer <key>' (the CLI reads INFAAS_API_KEY).", flush=True)
        # Keep idle client connections longer than clients keep them (httpx: 5 s), so a
        # client never reuses a connection the server is closing at that moment.
        # The inference routes take the lean HTTP path (infaas.adapters.http.hotpath); everything else goes to the app.
        uvicorn.run(create_app(services), host=settings.host, port=settings.port, log_level="warning", access_log=False,
                    timeout_keep_alive=65, http=hot_protocol(DataRoutes(services)))
    finally:
        stop.set()
        workers.stop_all()
