"""End-to-end fixtures: one real local stack (``infaas up`` with two worker
processes on 127.0.0.1) for the whole e2e session, with two digits
classifiers trained here and registered through the HTTP API, ready to query.
"""

from __future__ import annotations

import os
import time

import httpx
import pytest
from stack_support import ARCHITECTURES, READY_TIMEOUT_S, Stack

from infaas.cli import digits
from infaas.client import Client
from infaas.local.launcher import StackProcess


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Stack:
    workdir = str(tmp_path_factory.mktemp("e2e-work"))
    data_dir = str(tmp_path_factory.mktemp("e2e-data"))
    proc = StackProcess(workers=2, data_dir=data_dir, log_path=os.path.join(workdir, "stack.log"))
    proc.start(timeout_s=90.0)
    client = http = None
    try:
        data = digits.split()
        trained = digits.train(os.path.join(workdir, "models"), names=list(ARCHITECTURES), data=data)
        assert sorted(t.name for t in trained) == sorted(ARCHITECTURES)
        validation_path = os.path.join(workdir, "validation.npz")
        with open(validation_path, "wb") as f:
            f.write(digits.validation_npz(data))

        client = Client(proc.url, timeout_s=30.0, api_key=proc.api_key)
        http = httpx.Client(base_url=proc.url, timeout=30.0, headers={"authorization": f"Bearer {proc.api_key}"})
        for t in trained:
            reg = client.register(t.path, name=t.name, task=digits.TASK, accuracy=round(t.val_accuracy, 4),
                                  validation=validation_path)
            assert reg["name"] == t.name
        status = client.wait_ready(list(ARCHITECTURES), timeout_s=READY_TIMEOUT_S)
        for name, s in status.items():
            assert s["status"] == "ready", f"{name}: {s}\n{proc.log_tail(80)}"
        # The API refreshes its view of the catalogue every few hundred ms:
        # poll until both architectures answer before handing the stack over.
        deadline = time.time() + 30.0
        pending = set(ARCHITECTURES)
        while pending:
            for name in list(pending):
                r = http.post("/v1/infer", json={"architecture": name, "inputs": data.x_test[:1].tolist()})
                if r.status_code == 200:
                    pending.discard(name)
            if pending:
                assert time.time() < deadline, f"not answering: {pending}\n{proc.log_tail(80)}"
                time.sleep(0.2)

        yield Stack(
            url=proc.url,
            data_dir=data_dir,
            workdir=workdir,
            client=client,
            http=http,
            data=data,
            models={t.name: t.model for t in trained},
            paths={t.name: t.path for t in trained},
            validation_path=validation_path,
            status=status,
            log_path=proc.log_path,
            process=proc,
        )
    finally:
        if client is not None:
            client.close()
        if http is not None:
            http.close()
        proc.stop()
