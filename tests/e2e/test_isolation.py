"""Attacks on a running local stack (``infaas up``, two worker processes), each refused or
contained while the stack's own queries keep succeeding (docs/security.md)."""

from __future__ import annotations

import os
import stat

import httpx
import numpy as np
from stack_support import ARCHITECTURES, Stack

from infaas.adapters.local.secret import SECRET_FILE, SOCKET_DIR
from infaas.adapters.workerclient import KEY_HEADER
from infaas.core import tensors

ARCH = ARCHITECTURES[0]


def workers(stack: Stack) -> list[dict]:
    return stack.http.get("/v1/workers").json()["workers"]


def secret(stack: Stack) -> str:
    with open(os.path.join(stack.data_dir, SECRET_FILE)) as f:
        return f.read().strip()


def victim_answers(stack: Stack, n: int = 5) -> int:
    ok = 0
    for i in range(n):
        r = stack.http.post("/v1/infer", json={"architecture": ARCH, "inputs": stack.data.x_test[i:i + 1].tolist()})
        ok += r.status_code == 200
    return ok


def test_a_worker_called_directly_without_the_worker_key_runs_nothing(stack: Stack):
    model = stack.client.model(ARCH)
    variant = next(v["id"] for v in model["variants"] if v["status"] == "ready")
    frame = tensors.encode({model["inputs"][0]["name"]: np.asarray(stack.data.x_test[:1], np.float32)})
    refused = 0
    for w in workers(stack):
        url = w["url"]
        before = httpx.get(f"{url}/health", headers={KEY_HEADER: secret(stack)}).json()["replicas"]
        for headers in ({}, {KEY_HEADER: "guess"}, {KEY_HEADER: secret(stack)[:-1] + "0"}):
            r = httpx.post(f"{url}/v1/infer/{variant}", content=frame,
                           headers={"content-type": tensors.CONTENT_TYPE, **headers})
            assert r.status_code == 401, r.text
            assert r.json()["field"] == "key"
            refused += 1
        after = httpx.get(f"{url}/health", headers={KEY_HEADER: secret(stack)}).json()["replicas"]
        assert after == before  # nothing was loaded for the caller
        # an unauthenticated /health says the state and nothing about tenants' models
        anonymous = httpx.get(f"{url}/health").json()
        assert set(anonymous) == {"state"}
        # the stack's own credential is what the API uses: it works
        r = httpx.post(f"{url}/v1/infer/{variant}", content=frame,
                       headers={"content-type": tensors.CONTENT_TYPE, KEY_HEADER: secret(stack)})
        assert r.status_code == 200, r.text
    assert refused == 3 * len(workers(stack)) >= 6
    assert victim_answers(stack) == 5


def test_the_data_dir_the_secret_and_the_sockets_are_the_owners_alone(stack: Stack):
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(stack.data_dir) == 0o700  # the catalogue, key hashes and models inside
    assert mode(os.path.join(stack.data_dir, SECRET_FILE)) == 0o600
    sockets = os.path.join(stack.data_dir, SOCKET_DIR)
    assert mode(sockets) == 0o700
    names = os.listdir(sockets)
    assert names and all(n.startswith("worker-") and n.endswith(".sock") for n in names)
    # no worker listens in the abstract namespace any more (no file permissions there)
    with open("/proc/net/unix") as f:
        assert not any("@infaas-worker" in line for line in f)
