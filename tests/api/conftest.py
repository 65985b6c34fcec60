"""The in-process API tier: the FastAPI app and one worker agent in this process and one
event loop, no HTTP server, no child process but the profiler's.

Requests go through Starlette's test client (httpx over the ASGI interface) into the
same app `infaas up` serves; the data plane reaches the worker through
``InProcessWorkerClient`` (the worker's ``answer_infer``, as its HTTP route calls it).
Everything else is real: SQLite, the model folder, the job queue, the build job that
converts and profiles the variants, onnxruntime. Two digits classifiers are trained
and registered over the API, as in the e2e tier, so the same ``Stack`` serves both.
"""

from __future__ import annotations

import logging
import os
import time

import pytest
from fastapi.testclient import TestClient
from stack_support import ARCHITECTURES, READY_TIMEOUT_S, Stack

from infaas.adapters import logs
from infaas.adapters.workerclient import InProcessWorkerClient
from infaas.api.app import create_app
from infaas.api.deps import Services
from infaas.app.control import ControlPlane
from infaas.app.data import DataPlane
from infaas.app.identity import create_key
from infaas.cli import digits
from infaas.client import Client
from infaas.core.settings import Settings
from infaas.wiring.local import LocalAdapters
from infaas.worker.server import WorkerAgent

_LOG_HANDLERS: list[logging.Handler] = []  # the session stack's log file, while it is up


@pytest.fixture(autouse=True)
def _stack_log_attached():
    """What a test here reads from the stack's log file must not depend on which tests ran before
    it in this process: a front end started in-process (``logs.configure``) replaces the root
    logger's handlers, and a Lambda handler imported in-process gives the ``infaas`` loggers
    Powertools' handlers and stops them propagating. For each test here, the stack's file is on
    the root logger and the ``infaas`` loggers propagate to it; what they were is put back after."""
    root = logging.getLogger()
    for handler in _LOG_HANDLERS:
        if handler not in root.handlers:
            root.addHandler(handler)
            root.setLevel(logging.INFO)
    ours = [logging.getLogger(name) for name in sorted(logging.root.manager.loggerDict)
            if name == "infaas" or name.startswith("infaas.")]
    saved = [(lg, lg.propagate, lg.handlers[:], lg.level) for lg in ours]
    for lg in ours:
        lg.propagate, lg.handlers[:] = True, []
        lg.setLevel(logging.NOTSET)
    yield
    for lg, propagate, handlers, level in saved:
        lg.propagate, lg.handlers[:] = propagate, handlers
        lg.setLevel(level)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Stack:
    workdir = str(tmp_path_factory.mktemp("api-work"))
    data_dir = str(tmp_path_factory.mktemp("api-data"))
    log_path = os.path.join(workdir, "stack.log")
    handler = logging.FileHandler(log_path)
    handler.setFormatter(logs.JsonFormatter("in-process"))
    root = logging.getLogger()
    saved_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    _LOG_HANDLERS.append(handler)

    settings = Settings(data_dir=data_dir)
    adapters = LocalAdapters(settings)
    agent = WorkerAgent(settings, hardware="cpu", worker_id="cpu-1", url="inproc://cpu-1", adapters=adapters)
    data_plane = DataPlane(adapters.store, InProcessWorkerClient({agent.url: agent}), settings)
    control = ControlPlane(adapters.store, adapters.models, adapters.queue, settings)
    app = create_app(Services(control, data_plane, settings))
    _, key = create_key(adapters.store, "local", ("query", "register", "admin"))
    try:
        with TestClient(app, base_url="http://testserver", raise_server_exceptions=False) as http:
            http.portal.call(agent.start)  # heartbeat, build-job and offline loops, in the app's event loop
            try:
                client = Client(http=http, api_key=key)  # the same httpx client: one key header for both
                data = digits.split()
                trained = digits.train(os.path.join(workdir, "models"), names=list(ARCHITECTURES), data=data)
                validation_path = os.path.join(workdir, "validation.npz")
                with open(validation_path, "wb") as f:
                    f.write(digits.validation_npz(data))
                for t in trained:
                    client.register(t.path, name=t.name, task=digits.TASK, accuracy=round(t.val_accuracy, 4),
                                    validation=validation_path)
                status = client.wait_ready(list(ARCHITECTURES), timeout_s=READY_TIMEOUT_S)
                for name, s in status.items():
                    assert s["status"] == "ready", f"{name}: {s}"
                deadline = time.time() + 30.0  # the data plane refreshes its snapshot every few hundred ms
                for name in ARCHITECTURES:
                    while http.post("/v1/infer", json={"architecture": name,
                                                       "inputs": data.x_test[:1].tolist()}).status_code != 200:
                        assert time.time() < deadline, f"{name} does not answer"
                        time.sleep(0.2)
                yield Stack(
                    url=str(http.base_url), data_dir=data_dir, workdir=workdir, client=client, http=http, data=data,
                    models={t.name: t.model for t in trained}, paths={t.name: t.path for t in trained},
                    validation_path=validation_path, status=status, log_path=log_path,
                )
            finally:
                http.portal.call(agent.stop)
    finally:
        _LOG_HANDLERS.remove(handler)
        root.removeHandler(handler)
        root.setLevel(saved_level)
        handler.close()
