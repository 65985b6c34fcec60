"""Attacks on a running local stack (``infaas up``, two worker processes), each refused or
contained while the stack's own queries keep succeeding (docs/security.md)."""

from __future__ import annotations

import json
import os
import stat
import time

import httpx
import numpy as np
import pytest
from fakes import memory_growing_model, npz_bomb
from stack_support import ARCHITECTURES, READY_TIMEOUT_S, Stack

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
        key = secret(stack)
        near = key[:-1] + ("1" if key.endswith("0") else "0")  # one character off, never the key itself
        for headers in ({}, {KEY_HEADER: "guess"}, {KEY_HEADER: near}):
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


# ----------------------------------------------------------------- tenants
@pytest.fixture(scope="module")
def tenants(stack: Stack) -> dict[str, httpx.Client]:
    from infaas.app import identity
    from infaas.core.settings import Settings
    from infaas.wiring.local import LocalAdapters

    store = LocalAdapters(Settings(data_dir=stack.data_dir)).store
    out = {}
    for name in ("victim", "attacker", "third"):
        key = identity.create_key(store, f"team-{name}", ("query", "register"))[1]
        out[name] = httpx.Client(base_url=stack.url, timeout=30.0, headers={"authorization": f"Bearer {key}"})
    yield out
    for c in out.values():
        c.close()


def register(client: httpx.Client, path: str, name: str, task: str, accuracy: float, *, visibility: str = "private",
             validation: str | None = None) -> httpx.Response:
    files = {"file": ("m.onnx", open(path, "rb").read(), "application/octet-stream")}
    if validation:
        files["validation"] = ("v.npz", open(validation, "rb").read(), "application/octet-stream")
    return client.post("/v1/models", files=files,
                       data={"name": name, "task": task, "accuracy": str(accuracy), "visibility": visibility})


def wait_ready(client: httpx.Client, name: str, timeout_s: float = READY_TIMEOUT_S) -> dict:
    deadline = time.time() + timeout_s
    while (m := client.get(f"/v1/models/{name}").json())["status"] not in ("ready", "failed"):
        assert time.time() < deadline, m
        time.sleep(0.3)
    return m


def test_a_model_shared_into_another_tenants_task_never_answers_its_queries(stack: Stack, tenants, tmp_path):
    victim, attacker = tenants["victim"], tenants["attacker"]
    task = "victim/digits"
    r = register(victim, stack.paths["logistic-regression"], "victim-model", task, 0.95,
                 validation=stack.validation_path)
    assert r.status_code == 201, r.text
    assert wait_ready(victim, "victim-model")["status"] == "ready"
    # the attacker shares a model into the victim's task, declaring it perfect, and loads it
    r = register(attacker, stack.paths["mlp-32"], "hijack", task, 1.0, visibility="shared")
    assert r.status_code == 201, r.text
    assert wait_ready(attacker, "hijack")["status"] == "ready"
    row = stack.data.x_test[:1].tolist()
    assert attacker.post("/v1/infer", json={"architecture": "hijack", "inputs": row}).status_code == 200
    answered = {"victim": 0, "attacker": 0, "refused": 0}
    for i in range(20):
        for floor in (0.99, 0.9):
            r = victim.post("/v1/infer", json={"task": task, "inputs": stack.data.x_test[i:i + 1].tolist(),
                                               "objective": {"min_accuracy": floor}})
            if r.status_code == 200:
                arch = r.json()["decision"]["variant"].split(":")[0]
                answered["attacker" if arch == "hijack" else "victim"] += 1
            else:
                assert r.status_code == 422, r.text  # 0.99 is more than the victim's own model has
                answered["refused"] += 1
    assert answered["attacker"] == 0 and answered["victim"] == 20 and answered["refused"] == 20, answered
    # a third tenant querying the task sees the owner's shared models only: here none (the victim's is private)
    r = attacker.post("/v1/infer", json={"task": task, "inputs": row})
    assert r.status_code == 200 and r.json()["decision"]["variant"].startswith("hijack:")  # its own, for itself
    # a third tenant can neither query the task nor see it listed: the attacker's shared model is not
    # the owner's, so the task's existence is not confirmed to anyone who cannot use it
    third = tenants["third"]
    assert third.post("/v1/infer", json={"task": task, "inputs": row}).status_code == 404
    assert task not in {t["task"] for t in third.get("/v1/tasks").json()["tasks"]}
    listed = {t["task"]: t["architectures"] for t in attacker.get("/v1/tasks").json()["tasks"]}
    assert listed[task] == ["hijack"]  # the attacker's own, as its task queries use


def test_registering_into_another_tenants_private_task_reveals_nothing(stack: Stack, tenants, tmp_path):
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    x = np.random.default_rng(0).random((40, 8)).astype(np.float32)
    model = LogisticRegression(max_iter=200).fit(x, (x[:, 0] > 0.5).astype(int))
    path = tmp_path / "eight.onnx"
    path.write_bytes(to_onnx(model, x[:1], options={id(model): {"zipmap": False}}, target_opset=17).SerializeToString())
    victim, attacker = tenants["victim"], tenants["attacker"]
    r = register(victim, stack.paths["logistic-regression"], "victim-secret", "victim/private-task", 0.9)
    assert r.status_code == 201, r.text
    # another input shape in the same task name: no "task takes inputs [...]" with the victim's spec
    r = register(attacker, str(path), "prober", "victim/private-task", 0.9)
    assert r.status_code == 201, r.text  # the attacker's own model, for its own queries only
    assert "[-1,64]" not in r.text.replace(" ", "") and "victim-secret" not in r.text
    tasks = {t["task"]: t for t in attacker.get("/v1/tasks").json()["tasks"]}
    assert "victim-secret" not in json.dumps(tasks)


# ----------------------------------------------------------------- offline files
def test_offline_jobs_stay_in_their_tenants_area(stack: Stack, tenants):
    victim, attacker = tenants["victim"], tenants["attacker"]
    root = os.path.join(stack.data_dir, "offline")
    mine, theirs = os.path.join(root, "team-attacker"), os.path.join(root, "team-victim")
    os.makedirs(os.path.join(theirs, "in"), exist_ok=True)
    os.makedirs(os.path.join(theirs, "out"), exist_ok=True)
    np.save(os.path.join(theirs, "in", "secret.npy"), stack.data.x_test[:2])
    with open(os.path.join(theirs, "out", "results.out.npz"), "wb") as f:
        f.write(b"the victim's results")
    os.makedirs(os.path.join(mine, "in"), exist_ok=True)
    os.symlink(os.path.join(theirs, "in", "secret.npy"), os.path.join(mine, "in", "linked.npy"))
    os.symlink(os.path.join(theirs, "in"), os.path.join(mine, "linked-dir"))
    job = {"architecture": "logistic-regression"}
    refused = 0
    for src, dst in ((os.path.join(theirs, "in"), "out"),  # read the victim's inputs by absolute path
                     ("../team-victim/in", "out"),  # ... or by a relative one
                     ("linked-dir", "out"),  # ... or through a linked folder
                     ("in", os.path.join(theirs, "out")),  # overwrite the victim's outputs
                     ("in", "../team-victim/out"),
                     ("s3://some-bucket/in", "out")):  # make the local API sign AWS requests
        r = attacker.post("/v1/jobs", json={**job, "input": src, "output": dst})
        assert r.status_code in (400, 403), (src, dst, r.text)
        assert r.json()["field"] in ("location", "input"), r.text
        refused += 1
    # a linked file inside the attacker's own folder is not an input
    r = attacker.post("/v1/jobs", json={**job, "input": "in", "output": "out"})
    assert r.status_code == 400 and "no " in r.json()["message"], r.text
    assert refused == 6
    with open(os.path.join(theirs, "out", "results.out.npz"), "rb") as f:
        assert f.read() == b"the victim's results"
    # the victim's own job in its own area still runs, on its own model
    r = register(victim, stack.paths["logistic-regression"], "victim-offline", "victim/offline", 0.9)
    assert r.status_code == 201, r.text
    assert wait_ready(victim, "victim-offline")["status"] == "ready"
    r = victim.post("/v1/jobs", json={"architecture": "victim-offline", "input": "in", "output": "out2"})
    assert r.status_code == 201, r.text


# ----------------------------------------------------------------- memory
def _worker_pids(stack: Stack) -> dict[int, int]:
    from stack_support import child_pids

    out = {}
    for pid in child_pids(stack.process.proc.pid):
        try:
            with open(f"/proc/{pid}/status") as f:
                out[pid] = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (FileNotFoundError, ProcessLookupError, StopIteration):  # gone meanwhile (or a zombie): not a worker
            continue
    return out


def test_a_model_that_grows_with_its_input_cannot_take_the_workers_memory(stack: Stack, tenants, tmp_path):
    attacker = tenants["attacker"]
    path = tmp_path / "grow.onnx"
    memory_growing_model(path)
    r = register(attacker, str(path), "grower", "attacker/grow", 0.5)
    assert r.status_code == 201, r.text
    assert wait_ready(attacker, "grower")["status"] == "ready"
    small = attacker.post("/v1/infer", json={"architecture": "grower", "inputs": [[3.0]]})
    assert small.status_code == 200 and small.json()["outputs"][0]["data"] == [6.0], small.text
    before = _worker_pids(stack)
    # 1.5e9 floats: 6 GB, three times the replica budget (2 GiB), while the victim keeps querying
    import threading

    answers: list[int] = []
    stop = threading.Event()

    def victim() -> None:
        while not stop.is_set():
            answers.append(victim_answers(stack, 1))

    t = threading.Thread(target=victim)
    t.start()
    try:
        bigs = [attacker.post("/v1/infer", json={"architecture": "grower", "inputs": [[1.5e9]]}) for _ in range(3)]
    finally:
        stop.set()
        t.join()
    for big in bigs:  # each such query fails alone, naming the replica's limit ...
        assert big.status_code == 400 and big.json()["field"] == "inputs", big.text
    after = _worker_pids(stack)
    assert set(after) == set(before)  # ... no worker died: every tenant's replicas are still there
    assert max(after.values()) < 1 << 20  # kB: no worker process held the query's memory (its replica did)
    print(f"memory attack: 3 queries of 6 GB refused, victim answered {sum(answers)}/{len(answers)} meanwhile")
    assert answers and sum(answers) == len(answers)
    assert attacker.post("/v1/infer", json={"architecture": "grower", "inputs": [[3.0]]}).json()["outputs"][0]["data"] == [6.0]
    assert victim_answers(stack) == 5



def test_a_replica_process_killed_takes_nothing_else_with_it(stack: Stack, tenants, tmp_path):
    """The kernel's OOM killer (here: SIGKILL) ends one tenant's replica process: its worker, the
    other tenants' replicas and the next query on that model are unaffected."""
    import signal

    attacker = tenants["attacker"]
    path = tmp_path / "grow.onnx"
    memory_growing_model(path)
    r = register(attacker, str(path), "grower-2", "attacker/grow2", 0.5)
    assert r.status_code in (201, 409), r.text
    assert wait_ready(attacker, "grower-2")["status"] == "ready"
    assert attacker.post("/v1/infer", json={"architecture": "grower-2", "inputs": [[1.0]]}).status_code == 200
    workers_before = _worker_pids(stack)
    killed = 0
    for w in workers(stack):
        health = httpx.get(f"{w['url']}/health", headers={KEY_HEADER: secret(stack)}).json()
        for vid, pid in health["processes"].items():
            assert pid not in workers_before  # a process of its own, not the worker
            if vid.startswith("grower-2:"):
                os.kill(pid, signal.SIGKILL)
                killed += 1
    assert killed >= 1
    assert victim_answers(stack) == 5
    r = attacker.post("/v1/infer", json={"architecture": "grower-2", "inputs": [[2.0]]})
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [4.0], r.text  # a new replica process
    assert set(_worker_pids(stack)) == set(workers_before)


def test_a_string_label_model_is_served_and_takes_no_worker_from_anyone(stack: Stack, tenants, tmp_path):
    """A scikit-learn classifier with string labels (its ``label`` output a tensor of strings) once
    failed every query as a worker fault, and the workers it failed on were taken out of selection
    for every tenant. Its labels are now BYTES; queried 30 times beside the victim's queries."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.random((200, 4)).astype(np.float32)
    words = np.array(["cat", "dog", "emu"])
    y = words[np.minimum((x[:, 0] * 3).astype(int), 2)]
    clf = LogisticRegression(max_iter=500).fit(x, y)
    path = tmp_path / "labels.onnx"
    path.write_bytes(to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}}).SerializeToString())
    attacker = tenants["attacker"]
    r = register(attacker, str(path), "string-labels", "attacker/labels", 0.9)
    assert r.status_code == 201, r.text
    assert wait_ready(attacker, "string-labels")["status"] == "ready"
    before = {w["id"] for w in workers(stack)}
    theirs = ours = 0
    for i in range(30):
        r = attacker.post("/v1/infer", json={"architecture": "string-labels", "inputs": x[i:i + 1].tolist()})
        assert r.status_code == 200, r.text
        label = next(o for o in r.json()["outputs"] if o["name"] == "label")
        assert label["datatype"] == "BYTES" and label["data"] == clf.predict(x[i:i + 1]).tolist()
        theirs += 1
        ours += victim_answers(stack, 1)
    print(f"string-label model: {theirs}/30 answered with its labels, victim {ours}/30")
    assert ours == 30
    assert {w["id"] for w in workers(stack)} == before


def test_a_tenants_slow_queries_cost_its_own_queries_not_the_workers(stack: Stack, tenants, tmp_path):
    """Eight queries at once on a model whose run time grows with its input (a loop of a trillion
    trips): each is answered 502 for its variant at the worker's deadline, none is retried onto
    another worker, no worker leaves selection, and the victim's queries go on meanwhile."""
    import threading

    from fakes import slow_model

    attacker = tenants["attacker"]
    path = tmp_path / "slow.onnx"
    slow_model(path)
    r = register(attacker, str(path), "slow-loop", "attacker/slow", 0.5)
    assert r.status_code == 201, r.text
    assert wait_ready(attacker, "slow-loop")["status"] == "ready"
    assert attacker.post("/v1/infer", json={"architecture": "slow-loop", "inputs": [[3.0]]}).json()["outputs"][0]["data"] == [6.0]
    ready = lambda: stack.http.get("/v2/health/ready").json()  # noqa: E731
    workers_before = ready()
    answers: list[int] = []
    seen_workers: list[int] = []
    stop = threading.Event()

    def victim() -> None:
        while not stop.is_set():
            answers.append(victim_answers(stack, 1))
            seen_workers.append(ready().get("workers", 0))
            time.sleep(0.05)

    def slow(out: list) -> None:
        out.append(attacker.post("/v1/infer", json={"architecture": "slow-loop", "inputs": [[1e12]]}, timeout=60.0))

    watcher = threading.Thread(target=victim)
    watcher.start()
    slows: list[httpx.Response] = []
    threads = [threading.Thread(target=slow, args=(slows,)) for _ in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        stop.set()
        watcher.join()
    codes = sorted({(r.status_code, r.json().get("code")) for r in slows})
    print(f"slow queries: {len(slows)} answered {codes}; victim {sum(answers)}/{len(answers)}, "
          f"ready workers seen {min(seen_workers)}..{max(seen_workers)}")
    assert codes == [(502, "variant_fault")], [r.text for r in slows]
    assert all("retried" not in r.text for r in slows)
    assert answers and sum(answers) == len(answers)  # no 503 "no worker is up" for the victim
    assert min(seen_workers) == workers_before["workers"]

# ----------------------------------------------------------------- connections
HALF_OPEN = 20_000


def test_twenty_thousand_half_open_connections_keep_no_client_out(stack: Stack):
    """Twenty thousand connections that send half a request header and hold it, from processes
    other than the victim's: the API holds at most its connection bound, pushes the oldest
    half-sent ones out for every newcomer, and the victim's queries keep succeeding, on its kept
    connection and on new ones, during the attack and after."""
    import subprocess
    import sys
    from urllib.parse import urlsplit

    from half_open import descriptors

    url = urlsplit(stack.url)
    api_pid = stack.process.proc.pid
    per_process = min(10_000, descriptors())
    counts = [per_process] * (HALF_OPEN // per_process) + ([HALF_OPEN % per_process] if HALF_OPEN % per_process else [])
    script = os.path.join(os.path.dirname(os.path.dirname(__file__)), "half_open.py")
    kept = httpx.Client(base_url=stack.url, timeout=30.0, headers=dict(stack.http.headers))
    x = stack.data.x_test[:1].tolist()
    assert kept.post("/v1/infer", json={"architecture": ARCH, "inputs": x}).status_code == 200
    hold_s = 8.0  # under the API's 10 s header deadline: every attacker connection is still held
    attackers = [subprocess.Popen([sys.executable, script, url.hostname, str(url.port), str(n), str(hold_s)],
                                  stdout=subprocess.PIPE, text=True) for n in counts]
    try:
        connected = sum(int(a.stdout.readline().split()[1]) for a in attackers)  # "connected N"
        ok_kept = ok_new = 0
        most_fds = 0
        for _ in range(5):  # while every attacker still holds its connections
            most_fds = max(most_fds, len(os.listdir(f"/proc/{api_pid}/fd")))
            ok_kept += kept.post("/v1/infer", json={"architecture": ARCH, "inputs": x}).status_code == 200
            with httpx.Client(base_url=stack.url, timeout=30.0, headers=dict(stack.http.headers)) as fresh:
                ok_new += fresh.post("/v1/infer", json={"architecture": ARCH, "inputs": x}).status_code == 200
        results = [json.loads(a.stdout.readline()) for a in attackers]
    finally:
        for a in attackers:
            a.kill()
            a.wait()
    print(f"half-open attack: {connected} connected, victim answered {ok_kept}/5 on its kept connection and "
          f"{ok_new}/5 on new ones, API held at most {most_fds} descriptors; attackers saw {results}")
    assert connected >= HALF_OPEN * 0.95, results  # the attack really opened them
    assert ok_kept == 5 and ok_new == 5
    assert most_fds < 1000 + 200  # the bound (INFAAS_MAX_CONNECTIONS, 1000) plus the API's own files
    assert sum(r["closed"] for r in results) >= connected - 1000  # all but the bound were pushed out
    assert victim_answers(stack) == 5
    deadline = time.time() + 20
    while "connections at the limit of 1000" not in stack.log_tail(400):
        assert time.time() < deadline, "the push-outs were not logged"
        time.sleep(0.5)



# ----------------------------------------------------------------- limits before work
def _raw(stack: Stack, head: bytes, body_part: bytes = b"", timeout_s: float = 10.0) -> tuple[bytes, float]:
    """Send a request head and the start of its body on a raw socket; the answer's first bytes and
    the seconds it took, without ever sending the rest of the body."""
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(stack.url)
    with socket.create_connection((url.hostname, url.port), timeout=timeout_s) as s:
        started = time.monotonic()
        s.sendall(head + body_part)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        return data, time.monotonic() - started


def _key(stack: Stack) -> str:
    return stack.http.headers["authorization"].split()[1]


def _upload_head(length: int, key: str | None) -> bytes:
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return (f"POST /v1/models HTTP/1.1\r\nHost: t\r\n{auth}Content-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def test_uploads_are_refused_before_their_bodies_arrive(stack: Stack):
    """Without a key, or over the documented upload limit (INFAAS_MAX_UPLOAD_BYTES, 200 MiB), the
    answer comes after the head and one MiB of the body: nothing waits for, or spools, the rest."""
    part = b"--b\r\n" + b"x" * (1 << 20)
    answer, _ = _raw(stack, _upload_head(390 << 20, None), part)  # no key, 390 MiB declared
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    answer, _ = _raw(stack, _upload_head(150 << 20, None), part)  # no key, within the limit
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    answer, _ = _raw(stack, _upload_head(300 << 20, _key(stack)), part)  # a key, over the limit
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    answer, _ = _raw(stack, _upload_head((200 << 20) + 1, _key(stack)), part)  # one byte over: the limit holds
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]

    # no Content-Length: a multipart form sent in chunks, until the server answers (at most 210 MiB)
    import select
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(stack.url)
    with socket.create_connection((url.hostname, url.port), timeout=30) as s:
        s.sendall((f"POST /v1/models HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {_key(stack)}\r\n"
                   "Content-Type: multipart/form-data; boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n").encode())
        first = b'--b\r\nContent-Disposition: form-data; name="file"; filename="m.onnx"\r\n\r\n'
        s.sendall(b"%x\r\n%s\r\n" % (len(first), first))
        block = b"%x\r\n%s\r\n" % (1 << 20, bytes(1 << 20))
        sent = 0
        while sent < 210 and not select.select([s], [], [], 0)[0]:
            try:
                s.sendall(block)
            except OSError:
                break
            sent += 1
        answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), (sent, answer[:300])  # the limit's own answer, not a 400
    assert victim_answers(stack) == 5


def test_two_authorization_headers_are_a_400_on_every_route(stack: Stack, tenants):
    victim = tenants["victim"].headers["authorization"]
    attacker = tenants["attacker"].headers["authorization"]
    x = stack.data.x_test[:1].tolist()
    routes = [("POST", "/v1/infer", {"json": {"architecture": ARCH, "inputs": x}}),
              ("POST", f"/v2/models/{ARCH}/infer",
               {"json": {"inputs": [{"name": stack.client.model(ARCH)["inputs"][0]["name"], "shape": [1, 64],
                                     "datatype": "FP32", "data": x[0]}]}}),
              ("GET", "/v1/models", {}), ("GET", "/v1/jobs", {}), ("GET", f"/v2/models/{ARCH}", {})]
    for method, path, kwargs in routes:
        for pair in ([("authorization", victim), ("authorization", attacker)],
                     [("authorization", attacker), ("authorization", victim)]):
            r = httpx.request(method, stack.url + path, headers=pair, timeout=30.0, **kwargs)
            assert r.status_code == 400, (path, r.text)
            assert r.json()["field"] == "authorization"
    assert victim_answers(stack) == 5


def test_a_small_validation_file_that_unpacks_to_gigabytes_is_refused_unopened(stack: Stack, tenants, tmp_path):
    blob = npz_bomb(1024)  # 1 GiB of zeros, about 1 MB packed
    assert len(blob) < 2 << 20
    bomb = tmp_path / "bomb.npz"
    bomb.write_bytes(blob)
    model = os.path.join(stack.workdir, "models", f"{ARCH}.onnx")
    api_pid = stack.process.proc.pid
    r = register(tenants["attacker"], model, "bomb-carrier", "attacker/bomb", 0.9, validation=str(bomb))
    assert r.status_code == 400 and r.json()["field"] == "validation", r.text
    assert "unpacks to" in r.json()["message"]
    with open(f"/proc/{api_pid}/status") as f:
        rss_kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    assert rss_kib < 1 << 20  # the API never held the unpacked gigabyte
    assert victim_answers(stack) == 5
