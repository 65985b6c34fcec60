"""`infaas up`: the API in this process, worker processes beside it, all on
127.0.0.1, metadata in SQLite and model files in a folder under ``data_dir``.
"""

from __future__ import annotations

import logging
import os
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
from infaas.wiring import make_adapters, worker_secret

log = logging.getLogger("infaas.local")


def build_services(settings: Settings) -> Services:
    adapters = make_adapters(settings)
    control = ControlPlane(adapters.store, adapters.models, adapters.queue, settings)
    # workers started here also listen on a Unix socket in the data dir (WorkerProcesses.start): the client
    # prefers it; every call carries the stack's worker credential
    client = HttpWorkerClient(timeout_s=settings.request_timeout_s, socket_dir=socket_dir(settings.data_dir),
                              key=worker_secret(settings))
    data = DataPlane(adapters.store, client, settings)
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
    raise RuntimeError(f"{count} worker(s) did not report within {timeout_s:g} s")


def run(settings: Settings) -> None:
    """Run the stack in the foreground until interrupted."""
    import uvicorn

    logs.configure("api")
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
        # The inference routes take the bare ASGI path (api.app.DataPlaneFastPath); everything else goes to FastAPI.
        uvicorn.run(create_app(services), host=settings.host, port=settings.port, log_level="warning", access_log=False,
                    timeout_keep_alive=65)
    finally:
        stop.set()
        workers.stop_all()
