"""Benchmark: the local INFaaS stack side by side with a hand-written endpoint,
raw onnxruntime, Ray Serve and BentoML, in one run, with two clients.

    .venv/bin/python bench/run.py        (or: make bench)

1. installs the peers (Ray Serve, BentoML, matplotlib, ...) into their own
   virtualenv, ``bench/.work/peers-venv`` (pinned versions; re-used on later runs;
   never the product's ``.venv``);
2. starts ``infaas up`` on a free loopback port (``StackProcess``), registers two
   models through the HTTP API and waits until their variants are built and
   profiled: the digits classifier "mlp-512-256" (tiny: 64 inputs, an MLP
   512-256) and "squeezenet-light", onnx's light SqueezeNet 1.0 (shipped in the
   ``onnx`` wheel's backend test data) with its batch dimension made dynamic and
   its weights materialised (compute-bound: 3x224x224 inputs);
3. asks the stack once per model, by architecture, which variant it chooses and
   copies that variant's file out of the stack's model store: every system then
   serves that very file;
4. starts the peers, each on 127.0.0.1 and a free port, in its own session:
   ``bench/baseline_server.py`` (FastAPI + uvicorn, one process; per model a
   raw float32 bytes endpoint and a JSON one), ``bench/peers/ray_server.py``
   (Ray Serve on loopback, per model one app without and one with
   ``@serve.batch``, ``max_ongoing_requests=64``)
   and ``bench/peers/bento_service.py`` (BentoML: adaptive batching on the tiny
   model, a raw-bytes file upload on the compute-bound one);
   checks that each (each format) answers the same outputs as onnxruntime
   in-process;
5. measures raw onnxruntime in-process (``bench/peers/ort_raw.py``: no HTTP;
   batch 1 and 32 on one process, and one process per core), then drives the
   HTTP systems with closed loops at concurrency 1 and 32, in rounds of at
   least 10 s after warm-up (``ROUND_S``, ``INFAAS_BENCH_ROUND_S``) that
   alternate the systems and the clients. Two clients (``benchlib.client``),
   each request described once and sent by both:

   - the light raw-socket client (``measure``: HTTP/1.1 over asyncio streams,
     keep-alive, one connection per loop, request bytes encoded once), which
     drives every system;
   - aiohttp (``measure_aiohttp``: one ``ClientSession``, a
     ``TCPConnector(limit=concurrency)``, keep-alive), a widely used client,
     which drives INFaaS and the FastAPI baseline only (``pip install -e
     '.[bench]'``; without it those rows are "not measured").

   Every comparison of INFaaS with the FastAPI baseline runs under both
   clients, in the same format on both sides: INFaaS's OIP binary extension
   vs FastAPI's raw bytes (both models), and INFaaS's OIP JSON vs FastAPI's
   JSON (the tiny model); result keys name the client (``infaas@aiohttp``;
   the raw-socket client's are the bare system keys). The peers keep the
   raw-socket client. INFaaS runs without a tenant rate limit, and any answer
   that is not a 200 fails its target;
6. measures each stack's memory at rest (RSS and PSS summed over all its
   processes, after the load, idle), stops everything it started by PID (the
   process's session; also on error), runs ``bench/selection_bench.py``, draws
   the plot (``docs/img/performance.png``, with the peers' matplotlib) and writes
   its section of docs/performance.md between marker comments (the rest of that
   file is kept).

Traffic goes to 127.0.0.1 only; every measurement is bounded in time and count.

This file holds what a reader tunes (the rounds, the durations, the systems) and ``main()``, one
function per phase; the pieces are in ``bench/benchlib/``: ``client`` (the two load-generating clients and
the requests), ``procs`` (processes' CPU and memory, from /proc), ``models``, ``servers`` (the peers)
and ``report`` (the tables and docs/performance.md), with the constants they share in ``config``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import httpx
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/, for benchlib (also when imported)

from benchlib.client import (  # noqa: E402
    CLIENTS,
    HttpRequest,
    Result,
    aiohttp_version,
    bento_image_request,
    bento_request,
    infaas_json_request,
    infaas_request,
    json_request,
    raw_request,
    run_client,
)
from benchlib.config import (  # noqa: E402  (benchlib.config also puts src/ on sys.path)
    CLIENT_LABELS,
    CORES,
    DOC,
    HOST,
    PEERS_VENV,
    PLOT,
    RAW_CLIENT,
    ROOT,
    SQUEEZE,
    SQUEEZE_TASK,
    TINY,
    WORK,
    WORKERS,
    is_infaas,
    label,
    split_key,
    with_client,
)
from benchlib.models import _close, build_squeezenet, decode_raw, ort_session  # noqa: E402
from benchlib.procs import Memory, _procs_of, memory_of, prefer  # noqa: E402
from benchlib.report import _f, best_of, machine, section, verdict, write_doc  # noqa: E402
from benchlib.servers import (  # noqa: E402
    Server,
    _free_port,
    ensure_peers,
    merge_raw,
    ort_raw,
    peer_versions,
)

from infaas.cli import digits  # noqa: E402
from infaas.client import Client  # noqa: E402
from infaas.local.launcher import StackProcess  # noqa: E402

# per model: (concurrency, warm-up seconds, at most seconds, at most requests), over all rounds.
# The compute-bound model at c=32 needs a replica on each worker: every system gets a 4 s warm-up
# there, time for INFaaS's autoscaler (2 s period) to see the load again after the other systems'
# rounds and load the second replica (a quiet variant is scaled back to one replica in between).
# Each round lasts at least 10 s after its warm-up (ROUND_S): long enough that a burst allowance,
# a GC pause or a scheduler hiccup does not make the figure. The request caps only stop a runaway.
ROUND_S = float(os.environ.get("INFAAS_BENCH_ROUND_S", "10"))
RUNS = {
    TINY: ((1, 0.5, 2 * ROUND_S, 1_000_000), (32, 0.5, 2 * ROUND_S, 10_000_000)),
    SQUEEZE: ((1, 0.5, 2 * ROUND_S, 100_000), (32, 4.0, 2 * ROUND_S, 1_000_000)),
}
# Each measurement is split into this many rounds, alternating the order of the
# systems, so that a burst of noise on the machine does not fall on one system only.
ROUNDS = 2
RAW_SECONDS = {TINY: 2.0, SQUEEZE: 2.5}
PER_CORE = f"onnxruntime in-process, batch 1, one process per core ({CORES}) (no HTTP)"
# What is measured per model, in the order of the tables: result keys, ``SYSTEM`` under the raw-socket client,
# ``SYSTEM@CLIENT`` under another (labels: benchlib.config.LABELS, CLIENT_LABELS). INFaaS and the minimal FastAPI
# endpoint under both clients, side by side in the same format (binary / raw bytes; JSON for the tiny model);
# the peers under the raw-socket client only.
SYSTEMS = {TINY: ("infaas", "fastapi", "infaas@aiohttp", "fastapi@aiohttp",
                  "infaas-json", "fastapi-json", "infaas-json@aiohttp", "fastapi-json@aiohttp",
                  "ray", "ray-batch", "bento"),
           SQUEEZE: ("infaas", "fastapi", "infaas@aiohttp", "fastapi@aiohttp", "ray", "ray-batch", "bento")}


@dataclass
class Started:
    """What main() started and stops at the end, also on error: the stack, its client, the peers."""

    stack: StackProcess
    servers: dict[str, Server] = field(default_factory=dict)
    client: Client | None = None


# ------------------------------------------------------------------ the phases
def describe_machine() -> dict[str, str]:
    """The machine, and this process's autogroup given the benchmark's nice value."""
    info = machine()
    info["autogroup"] = prefer(os.getpid())
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['memory']}; python {info['python']}, "
          f"onnxruntime {info['onnxruntime']}; busy before the run: {info['busy before']}", flush=True)
    return info


def prepare_peers() -> tuple[str | None, str, float, str]:
    """The peers' virtualenv: its python (or None), what happened, the seconds it took, the peers' versions."""
    os.makedirs(WORK, exist_ok=True)
    peers_py, peers_state, peers_s = ensure_peers(os.path.join(WORK, "peers-install.log"))
    print(f"peers' virtualenv {PEERS_VENV}: {peers_state} ({peers_s:.0f} s)", flush=True)
    versions = peer_versions() if peers_py else "none"
    return peers_py, peers_state, peers_s, versions


def start_infaas(started: Started, t_start: float) -> None:
    """Start the local stack (``infaas up``) on a free port."""
    stack = started.stack
    print(f"starting the local stack ({WORKERS} workers) ...", flush=True)
    stack.start()
    prefer(stack.proc.pid)
    print(f"  up at {stack.url} after {time.time() - t_start:.0f} s; training {TINY}, building {SQUEEZE} ...",
          flush=True)


def build_models(tmp: str) -> tuple:
    """Train the tiny model, build the compute-bound SqueezeNet: (data, trained, validation file, SqueezeNet file)."""
    data = digits.split()
    trained = digits.train(os.path.join(tmp, "models"), names=[TINY], data=data)[0]
    val_path = os.path.join(tmp, "validation.npz")
    with open(val_path, "wb") as f:
        f.write(digits.validation_npz(data))
    sq_src = build_squeezenet(os.path.join(tmp, "squeezenet-light.onnx"))
    return data, trained, val_path, sq_src


def register_models(started: Started, trained, val_path: str, sq_src: str) -> tuple[dict, float]:
    """Register both models with INFaaS and wait until their variants are built and profiled: (status, seconds)."""
    stack = started.stack
    client = started.client = Client(stack.url, api_key=stack.api_key, timeout_s=120.0)
    client.register(trained.path, name=TINY, task=digits.TASK, accuracy=round(trained.val_accuracy, 4),
                    validation=val_path)
    client.register(sq_src, name=SQUEEZE, task=SQUEEZE_TASK, accuracy=0.5)
    print("  registered both; waiting while the workers build and profile their variants ...", flush=True)
    t_reg = time.time()
    status = client.wait_ready([TINY, SQUEEZE], timeout_s=300)
    ready_s = time.time() - t_reg
    for name, st in status.items():
        for v in st["variants"]:
            print(f"    {v['id']:44} {v['status']}" + (f" ({v['message']})" if v.get("message") else ""))
        if st["status"] != "ready":
            raise RuntimeError(f"{name} is {st['status']}, not ready")
    print(f"  ready after {ready_s:.0f} s", flush=True)
    return status, ready_s


def copy_chosen_variants(started: Started, tmp: str, data, status: dict) -> tuple[dict, dict, dict]:
    """Ask INFaaS which variant it chooses per model and copy that file out of its store: (inputs, chosen, sessions)."""
    from infaas.core.settings import Settings
    from infaas.wiring.local import LocalAdapters

    stack, client = started.stack, started.client
    adapters = LocalAdapters(Settings(data_dir=stack.data_dir))
    rng = np.random.default_rng(1)
    inputs = {TINY: data.x_test[:8].astype(np.float32),
              SQUEEZE: rng.random((3, 3, 224, 224), dtype=np.float32)}
    chosen: dict[str, dict] = {}
    for name in (TINY, SQUEEZE):
        _, decision = client.infer(inputs[name][:1], architecture=name)
        vid = decision["variant"]
        record = adapters.store.get_variant(vid)
        path = os.path.join(tmp, f"{name}.variant.onnx")
        shutil.copyfile(adapters.models.local_path(record.model_key), path)
        with open(path, "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()
        variant = next(v for v in status[name]["variants"] if v["id"] == vid)
        chosen[name] = {"id": vid, "path": path, "sha": sha, "variant": variant, "size": os.path.getsize(path),
                        "input": client.model(name)["inputs"][0]["name"]}
        print(f"  {name}: INFaaS chose {vid} (sha256 {sha[:16]}…, {os.path.getsize(path) / 1e6:.1f} MB)", flush=True)
    sessions = {name: ort_session(c["path"]) for name, c in chosen.items()}
    return inputs, chosen, sessions


def start_peers(started: Started, tmp: str, peers_py: str | None, peers_state: str, chosen: dict,
                missing: dict[str, str]) -> None:
    """Start the FastAPI baseline, Ray Serve and BentoML side by side, each serving INFaaS's chosen files."""
    servers = started.servers
    fastapi = Server("fastapi", [sys.executable, os.path.join(ROOT, "bench", "baseline_server.py"),
                                 f"tiny={chosen[TINY]['path']}", f"squeeze={chosen[SQUEEZE]['path']}",
                                 "--host", HOST, "--port", str(_free_port())],
                     os.path.join(tmp, "fastapi.log"))
    fastapi.port = int(fastapi.argv[-1])
    fastapi.health = f"http://{HOST}:{fastapi.port}/health"
    servers["fastapi"] = fastapi
    if peers_py:
        penv = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0",
                    BENTOML_DO_NOT_TRACK="True", BENTOML_HOME=os.path.join(tmp, "bentoml"),
                    PYTHONUNBUFFERED="1")
        ray_port = _free_port()
        ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray puts unix sockets there
        ray = Server("ray", [peers_py, os.path.join(ROOT, "bench", "peers", "ray_server.py"), "--port", str(ray_port),
                             "--temp-dir", ray_tmp, f"tiny={chosen[TINY]['path']}",
                             f"squeeze={chosen[SQUEEZE]['path']}"],
                     os.path.join(tmp, "ray.log"), env=penv, ready_line="READY", stdin_stop=True)
        ray.port, ray.tmp = ray_port, ray_tmp
        servers["ray"] = ray
        bento_port = _free_port()
        bento = Server("bento", [os.path.join(PEERS_VENV, "bin", "bentoml"), "serve", "bento_service:Model",
                                 "--working-dir", os.path.join(ROOT, "bench", "peers"), "--host", HOST,
                                 "--port", str(bento_port)],
                       os.path.join(tmp, "bento.log"), env=dict(penv, BENCH_MODEL=chosen[TINY]["path"],
                                                                 BENCH_MODEL_IMAGE=chosen[SQUEEZE]["path"]),
                       health=f"http://{HOST}:{bento_port}/readyz")
        bento.port = bento_port
        servers["bento"] = bento
    else:
        for k in ("ray", "ray-batch", "bento"):
            missing[k] = peers_state
    t_peers = time.time()
    print("starting the peers: " + ", ".join(servers) + " ...", flush=True)
    for s in servers.values():
        s.start()
        prefer(s.pid)
    for key, s in list(servers.items()):
        try:
            s.wait_ready({"fastapi": 30, "ray": 150, "bento": 90}[key])
            for pid in _procs_of(s.pid):  # Ray's and BentoML's children start sessions of their own
                prefer(pid)
            print(f"  {key} up after {time.time() - t_peers:.0f} s", flush=True)
        except RuntimeError as exc:
            print(f"  {key} did not start: {exc}", flush=True)
            s.stop()
            del servers[key]
            for k in ((key, f"{key}-batch") if key == "ray" else (key,)):
                missing[k] = f"did not start: {exc}"
    if "fastapi" in missing:
        raise RuntimeError(f"the FastAPI baseline did not start: {missing['fastapi']}")


def endpoints(started: Started) -> tuple[dict, dict, dict]:
    """Each system's process tree, port, and path per model: (roots, ports, paths). A system's JSON endpoint is
    served by the same processes as its binary one."""
    stack, servers = started.stack, started.servers
    roots = {"infaas": stack.proc.pid, **{k: s.pid for k, s in servers.items()}}
    ports = {"infaas": stack.port, **{k: s.port for k, s in servers.items()}}
    for same, system in (("ray-batch", "ray"), ("infaas-json", "infaas"), ("fastapi-json", "fastapi")):
        roots[same], ports[same] = roots.get(system), ports.get(system)
    paths = {(TINY, "fastapi"): "/tiny/infer", (SQUEEZE, "fastapi"): "/squeeze/infer",
             (TINY, "fastapi-json"): "/tiny/infer_json", (SQUEEZE, "fastapi-json"): "/squeeze/infer_json",
             (TINY, "ray"): "/tiny", (TINY, "ray-batch"): "/tiny-batch",
             (SQUEEZE, "ray"): "/squeeze", (SQUEEZE, "ray-batch"): "/squeeze-batch"}
    return roots, ports, paths


def request_for(started: Started, chosen: dict, paths: dict, model: str, system: str, rows: np.ndarray) -> HttpRequest:
    """The request ``system`` (without its client) answers ``rows`` of ``model`` to: described once, for both clients."""
    stack = started.stack
    if system == "infaas":
        return infaas_request(chosen[model]["id"], rows, stack.api_key, chosen[model]["input"])
    if system == "infaas-json":
        return infaas_json_request(chosen[model]["id"], rows, stack.api_key, chosen[model]["input"])
    if system == "bento":
        return bento_request(rows) if model == TINY else bento_image_request(rows)
    if system == "fastapi-json":
        return json_request(paths[(model, system)], rows)
    return raw_request(paths[(model, system)], rows)


def systems_of(model: str) -> list[str]:
    """The systems measured on ``model``, whatever the client, in the order of SYSTEMS."""
    return list(dict.fromkeys(split_key(k)[0] for k in SYSTEMS[model]))


def is_missing(key: str, missing: dict[str, str]) -> bool:
    """Whether a result key is left out: its system or the system under its client."""
    return key in missing or split_key(key)[0] in missing


def _answer_of(http: httpx.Client, req: HttpRequest, port: int, model: str, system: str, sess,
               chosen: dict) -> dict[str, np.ndarray]:
    """What one system answered for the rows ``x``, by output name (BentoML: the probabilities alone)."""
    r = http.request(req.method, req.url(port), headers=req.headers, content=req.body)
    r.raise_for_status()
    names = [o.name for o in sess.get_outputs()]
    if system == "infaas-json":
        doc = r.json()
        if doc.get("model_version") != chosen[model]["id"]:
            raise RuntimeError(f"asked for {chosen[model]['id']}, INFaaS ran {doc.get('model_version')}")
        return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in doc["outputs"]}
    if system == "fastapi-json":
        return dict(zip(names, (np.asarray(o) for o in r.json()["outputs"])))
    if system == "bento":
        floats = [o.name for o in sess.get_outputs() if o.type == "tensor(float)"]
        return {floats[-1]: np.asarray(r.json(), dtype=np.float32)}
    return decode_raw(r.content, sess, 1)


def check_answers(started: Started, inputs: dict, chosen: dict, sessions: dict, ports: dict, paths: dict,
                  missing: dict[str, str]) -> None:
    """Check that every system, in every format, answers what onnxruntime in-process answers, with the very
    requests the clients send (a peer that does not is left out; INFaaS or FastAPI that does not stops the run)."""
    client = started.client
    print("checking that every system answers the same outputs ...", flush=True)
    with httpx.Client(timeout=60.0) as http:
        for model in (TINY, SQUEEZE):
            sess = sessions[model]
            in_name = sess.get_inputs()[0].name
            for system in systems_of(model):
                if system in missing:
                    continue
                try:
                    for i in range(len(inputs[model]) if model == TINY else 2):
                        x = inputs[model][i:i + 1]
                        want = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {in_name: x})))
                        if system == "infaas":
                            got, decision = client.infer(x, variant=chosen[model]["id"])
                            if decision["variant"] != chosen[model]["id"]:
                                raise RuntimeError(f"asked for {chosen[model]['id']}, INFaaS ran {decision['variant']}")
                        else:
                            req = request_for(started, chosen, paths, model, system, x)
                            got = _answer_of(http, req, ports[system], model, system, sess, chosen)
                        for k, v in got.items():
                            _close(v, want[k], f"{label(system)} on {model}, output {k}")
                except (RuntimeError, httpx.HTTPError, KeyError, ValueError) as exc:
                    if system.startswith(("infaas", "fastapi")):
                        raise
                    print(f"  {system} on {model}: {exc}", flush=True)
                    missing[system] = f"wrong answers: {exc}"


def run_rounds(started: Started, inputs: dict, chosen: dict, roots: dict, ports: dict, paths: dict,
               missing: dict[str, str]) -> tuple[dict, dict]:
    """Raw onnxruntime, then every HTTP system under its clients in alternating rounds, per model: (raw, results)."""
    raw: dict[str, dict[str, dict]] = {TINY: {}, SQUEEZE: {}}
    results: dict[str, dict[str, dict[int, Result]]] = {TINY: {}, SQUEEZE: {}}

    def http_rounds(model: str) -> None:
        requests = {s: request_for(started, chosen, paths, model, s, inputs[model][:1]) for s in systems_of(model)}
        keys = [k for k in SYSTEMS[model] if not is_missing(k, missing)]
        for conc, warm, max_s, max_n in RUNS[model]:
            merged = {k: Result(k, conc) for k in keys}
            for rnd in range(ROUNDS):
                for key in (keys if rnd % 2 == 0 else keys[::-1]):
                    system, client = split_key(key)
                    r = run_client(CLIENTS[client](key, ports[system], roots[system], requests[system], conc, warm,
                                                   max_s / ROUNDS, max_n // ROUNDS))
                    print(f"  {model:17} c={conc:<3} round {rnd + 1} {key:20} {r.ok:>7,} ok, {r.bad} bad, "
                          f"p50 {r.pct(50):.3f} ms, p99 {r.pct(99):.3f} ms, {r.rps:,.0f} req/s, "
                          f"client CPU {r.cpu_share * 100:.0f}%, server CPU {r.server_share * 100:.0f}%, "
                          f"machine CPU {r.machine_share * 100:.0f}%", flush=True)
                    merged[key].merge(r)
            for key in keys:
                results[model].setdefault(key, {})[conc] = merged[key]

    print("measuring the tiny model ...", flush=True)
    raw[TINY]["onnxruntime in-process, batch 1 (no HTTP)"] = _raw_run(chosen, TINY, 1, 1)
    raw[TINY]["onnxruntime in-process, batch 32, per sample (no HTTP)"] = _raw_run(chosen, TINY, 1, 32)
    http_rounds(TINY)
    print("measuring the compute-bound model ...", flush=True)
    per_core = []
    r = _raw_run(chosen, SQUEEZE, CORES, 1)
    if "error" not in r:
        per_core.append(r)
    raw[SQUEEZE]["onnxruntime in-process, batch 1, 1 process (no HTTP)"] = _raw_run(chosen, SQUEEZE, 1, 1)
    http_rounds(SQUEEZE)
    r = _raw_run(chosen, SQUEEZE, CORES, 1)  # a second round after the HTTP rounds, for fairness
    if "error" not in r:
        per_core.append(r)
    raw[SQUEEZE][PER_CORE] = merge_raw(per_core) if per_core else r
    return raw, results


def _raw_run(chosen: dict, model: str, procs: int, batch: int) -> dict:
    """Raw onnxruntime in-process, no HTTP (``bench/peers/ort_raw.py``): its figures, or the error."""
    try:
        r = ort_raw(chosen[model]["path"], procs, batch, RAW_SECONDS[model])
    except (RuntimeError, subprocess.SubprocessError, ValueError) as exc:
        return {"error": str(exc)}
    print(f"  raw onnxruntime {model:17} {procs} process(es), batch {batch:>2}: {r['per_s']:,.0f} inferences/s, "
          f"one call p50 {r['p50_ms']:.3f} ms", flush=True)
    return r


def measure_memory(started: Started, results: dict, missing: dict[str, str]) -> tuple:
    """Each whole stack's memory at rest, after the load: (mem, mem_missing, m_infaas, best, ray_mem_key)."""
    stack, servers = started.stack, started.servers
    time.sleep(3.0)
    mem: dict[str, tuple[str, Memory]] = {}
    mem_missing: dict[str, str] = {}
    m_infaas = memory_of(stack.proc.pid)
    mem[f"INFaaS (API + {len(m_infaas.processes) - 1} workers)"] = ("both models", m_infaas)
    mem["FastAPI (raw bytes and JSON)"] = ("both models", memory_of(servers["fastapi"].pid))
    best = {m: best_of(results[m], ("ray", "ray-batch")) for m in (TINY, SQUEEZE)}
    ray_mem_key = None
    if "ray" in servers:
        servers["ray"].remember()
        m_ray = memory_of(servers["ray"].pid)
        apps = {TINY: "tiny", SQUEEZE: "squeeze"}
        keep = {apps[m] + ("-batch" if best[m] == "ray-batch" else "") for m in (TINY, SQUEEZE)}

        def other_replica(cmd: str) -> bool:
            m = re.match(r"ray::ServeReplica:([^:]+):", cmd)
            return bool(m) and m.group(1) not in keep

        ray_mem_key = "Ray Serve (one replica per model)"
        mem[ray_mem_key] = (f"both models, the better configuration of each ({', '.join(sorted(keep))})",
                            m_ray.without(other_replica))
        mem["Ray Serve (all 4 apps deployed)"] = ("both models, with and without @serve.batch", m_ray)
    else:
        mem_missing["Ray Serve"] = missing.get("ray", "not started")
    if "bento" in servers:
        servers["bento"].remember()
        mem["BentoML"] = ("both models", memory_of(servers["bento"].pid))
    else:
        mem_missing["BentoML"] = missing.get("bento", "not started")
    for k, (_, m) in mem.items():
        print(f"  memory at rest {k:40} {len(m.processes):>2} processes, RSS {m.rss / (1 << 20):,.0f} MiB, "
              f"PSS {_f(m.pss / (1 << 20), 0)} MiB", flush=True)
    return mem, mem_missing, m_infaas, best, ray_mem_key


def stop_servers(started: Started) -> str:
    """Stop the peers, the client and the stack; the tail of the stack's log, read before it stopped."""
    stack, servers, client = started.stack, started.servers, started.client
    stack_tail = stack.log_tail(300)
    for key in list(servers):
        servers.pop(key).stop()
    client.close()
    started.client = None
    stack.stop()
    return stack_tail


def selection_microbenchmark() -> tuple[str, list[float], int]:
    """``bench/selection_bench.py``, on a machine without our servers: (its output, its p99s, its exit status)."""
    sel = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "selection_bench.py")], capture_output=True,
                         text=True, timeout=300, cwd=ROOT)
    sel_out = (sel.stdout.strip() or sel.stderr.strip()[-500:])
    print(sel_out, flush=True)
    sel_p99 = [float(x) for x in re.findall(r"p99 ([0-9.]+) us", sel_out)]
    return sel_out, sel_p99, sel.returncode


FORMATS = (("infaas", "fastapi", "binary: INFaaS OIP binary vs FastAPI raw bytes"),
           ("infaas-json", "fastapi-json", "JSON: INFaaS OIP JSON vs FastAPI JSON"))


class Targets:
    """The lines of the targets of issue 8, each met, not met or not measured, with its numbers."""

    def __init__(self, results: dict) -> None:
        self.results, self.lines = results, []

    def get(self, model: str, key: str, conc: int) -> Result | None:
        return self.results[model].get(key, {}).get(conc)

    def add(self, text: str, ok: bool | None, numbers: str) -> None:
        self.lines.append(f"- {text}: {verdict(ok)} — {numbers}")

    def versus(self, text: str, model: str, conc: int, ours_key: str, theirs_key: str, missing: dict[str, str],
               ok, numbers) -> None:
        """A target comparing two results: ``ok(ours, theirs)``, ``numbers(ours, theirs)``; an INFaaS result with
        any non-200 answer fails it; a result not measured makes it "not measured"."""
        ours, theirs = self.get(model, ours_key, conc), self.get(model, theirs_key, conc)
        if ours is None or theirs is None:
            gone = theirs_key if ours is not None else ours_key
            self.add(text, None, missing.get(gone) or missing.get(split_key(gone)[0]) or f"{label(gone)} not measured")
            return
        if not ours.ok or not theirs.ok:  # no 200 answer to compare: INFaaS fails, a peer is not measured
            empty = ours if not ours.ok else theirs
            self.add(text, False if not ours.ok else None,
                     f"{label(empty.system)}: no 200 answer ({empty.bad} other answers / errors)")
            return
        bad = f"; {ours.bad} INFaaS answer(s) not a 200" if ours.bad else ""
        self.add(text, bool(ok(ours, theirs)) and not ours.bad, numbers(ours, theirs) + bad)


def _against_fastapi(t: Targets, missing: dict[str, str]) -> None:
    """The tiny model against the minimal FastAPI endpoint in the same format, under each client."""
    checks = (
        (32, "c=32 throughput ≥ 1.0× the minimal FastAPI endpoint", lambda o, f: o.rps >= f.rps,
         lambda o, f: f"INFaaS {o.rps:,.0f} req/s vs {f.rps:,.0f} req/s = {o.rps / f.rps:.2f}×"),
        (32, "c=32 server CPU per answer ≤ the minimal FastAPI endpoint's",
         lambda o, f: o.cpu_ms_per_answer <= f.cpu_ms_per_answer,
         lambda o, f: f"INFaaS {o.cpu_ms_per_answer:.3f} ms vs {f.cpu_ms_per_answer:.3f} ms of CPU per 200 answer "
                      f"= {o.cpu_ms_per_answer / f.cpu_ms_per_answer:.2f}×"),
        (1, "c=1 p50 ≤ 2× the minimal FastAPI endpoint's p50", lambda o, f: o.pct(50) <= 2 * f.pct(50),
         lambda o, f: f"INFaaS {o.pct(50):.3f} ms vs {f.pct(50):.3f} ms = {o.pct(50) / f.pct(50):.2f}×"),
    )
    for conc, what, ok, numbers in checks:
        for ours, theirs, fmt in FORMATS:
            for client in CLIENTS:
                t.versus(f"Tiny model, {what} ({fmt}; {CLIENT_LABELS[client]})", TINY, conc,
                         with_client(ours, client), with_client(theirs, client), missing, ok, numbers)


def _against_raw_onnxruntime(t: Targets, raw: dict, missing: dict[str, str]) -> None:
    """The compute-bound model at c=32 against raw onnxruntime with one process per core, under each client."""
    pc = raw[SQUEEZE][PER_CORE]
    for client in CLIENTS:
        what = (f"Compute-bound model, c=32 throughput ≥ 0.8× raw onnxruntime one process per core ({CORES}) "
                f"(INFaaS OIP binary; {CLIENT_LABELS[client]})")
        s32 = t.get(SQUEEZE, with_client("infaas", client), 32)
        if "error" in pc or s32 is None:
            t.add(what, None, pc.get("error") or missing.get(with_client("infaas", client)) or "INFaaS not measured")
            continue
        bad = f"; {s32.bad} answer(s) not a 200" if s32.bad else ""
        t.add(what, s32.rps >= 0.8 * pc["per_s"] and not s32.bad,
              f"INFaaS {s32.rps:,.1f} req/s vs {pc['per_s']:,.1f} inferences/s = {s32.rps / pc['per_s']:.2f}×{bad}")


def _against_peers(t: Targets, missing: dict[str, str], best: dict) -> None:
    """INFaaS against Ray Serve and BentoML (the raw-socket client)."""
    for model, peer, factor, what in ((TINY, "ray", 10, "Ray Serve"), (TINY, "bento", 5, "BentoML"),
                                      (SQUEEZE, "ray", 2, "Ray Serve"), (SQUEEZE, "bento", 2, "BentoML")):
        mname = "Tiny" if model == TINY else "Compute-bound"
        key = best[model] if peer == "ray" else ("bento" if "bento" in t.results[model] else None)
        if key is None:
            t.add(f"{mname} model, ≥ {factor}× {what}'s throughput at a lower p99", None,
                  missing.get(peer) or "not measured")
            continue
        t.versus(f"{mname} model, ≥ {factor}× {what}'s throughput at a lower p99 (its best: {label(key)}; "
                 f"INFaaS OIP binary)", model, 32, "infaas", key, missing,
                 lambda o, p, factor=factor: o.rps >= factor * p.rps and o.pct(99) < p.pct(99),
                 lambda o, p: f"c=32: INFaaS {o.rps:,.0f} req/s vs {p.rps:,.0f} = {o.rps / p.rps:.2f}×; "
                              f"p99 {o.pct(99):.2f} ms vs {p.pct(99):.2f} ms")


def _non200(t: Targets) -> None:
    """Every INFaaS answer, in every format, under every client, a 200."""
    counts = {m: {k: sum(r.bad for r in byc.values()) for k, byc in t.results[m].items() if is_infaas(k)}
              for m in t.results}
    parts = []
    for m, byk in counts.items():
        worst = ", ".join(f"{label(k)} {n}" for k, n in byk.items() if n)
        parts.append(f"{'tiny' if m == TINY else 'compute-bound'}: {sum(byk.values())} non-200 / errors"
                     + (f" ({worst})" if worst else ""))
    t.add("Every INFaaS answer in every round, every format and under both clients a 200 (any other status fails "
          "the round)", not any(n for byk in counts.values() for n in byk.values()), ", ".join(parts))


def check_targets(results: dict, raw: dict, missing: dict[str, str], best: dict, sel_p99: list[float],
                  sel_returncode: int, mem: dict, mem_missing: dict[str, str], m_infaas: Memory,
                  ray_mem_key: str | None) -> list[str]:
    """The targets of issue 8, each met, not met or not measured, with its numbers; those against the minimal
    FastAPI endpoint and raw onnxruntime once per client."""
    t = Targets(results)
    _non200(t)
    _against_fastapi(t, missing)
    _against_raw_onnxruntime(t, raw, missing)
    _against_peers(t, missing, best)
    t.add("Selection over 10,000 variants and 1,000 replicas, p99 ≤ 50 µs per decision",
          (max(sel_p99) <= 50.0) if sel_p99 else None,
          ("p99 " + " / ".join(f"{x:g} µs" for x in sel_p99) + " (each line of its output below)") if sel_p99
          else f"selection_bench.py printed no p99 (exit {sel_returncode})")
    if ray_mem_key:
        a, b = m_infaas.rss, mem[ray_mem_key][1].rss
        t.add("Memory of the whole local stack at rest ≤ 0.5× Ray Serve's", a <= 0.5 * b,
              f"INFaaS {a / (1 << 20):,.0f} MiB vs Ray Serve (one replica per model) {b / (1 << 20):,.0f} MiB RSS "
              f"= {a / b:.2f}× (PSS: {_f(m_infaas.pss / (1 << 20), 0)} vs "
              f"{_f(mem[ray_mem_key][1].pss / (1 << 20), 0)} MiB)")
    else:
        t.add("Memory of the whole local stack at rest ≤ 0.5× Ray Serve's", None, mem_missing.get("Ray Serve", ""))
    return t.lines


def observations(info: dict, results: dict, raw: dict, stack_tail: str) -> list[str]:
    """Notes on what bounds the figures: busy cores, INFaaS's CPU split, non-200 answers, errors in the stack's log."""
    pc = raw[SQUEEZE][PER_CORE]  # as in the targets
    s32 = results[SQUEEZE].get("infaas", {}).get(32)
    notes = []
    one = raw[SQUEEZE].get("onnxruntime in-process, batch 1, 1 process (no HTTP)", {})
    if CORES > 1 and s32 and "per_s" in one and "per_s" in pc and pc["per_s"] < 1.5 * one["per_s"]:
        notes.append(f"raw onnxruntime with one process per core made {pc['per_s']:,.0f} inferences/s, less than "
                     f"1.5× the {one['per_s']:,.0f}/s of one process: other work held cores meanwhile, so the "
                     f"compute-bound ratio against it flatters INFaaS; compare with 1 process × {CORES} = "
                     f"{one['per_s'] * CORES:,.0f}/s (INFaaS reached {s32.rps / (one['per_s'] * CORES):.2f}× that)")
    if info["busy before"] != "unknown" and int(info["busy before"].rstrip("%")) > 20:
        notes.append(f"the machine was already {info['busy before']} busy before the run: other work shared "
                     f"the cores, so the figures are noisier than on an idle machine")
    for model in (TINY, SQUEEZE):
        others = [f"{label(k)} c={c} {r.other_share * 100:.0f}%" for k, byc in results[model].items()
                  for c, r in sorted(byc.items()) if r.other_share > 0.25]
        if others:
            notes.append(f"{model}: besides the client and the server, other work kept this share of a core busy "
                         f"during these measurements (other processes on the machine, and the kernel's own share "
                         f"of loopback networking): " + ", ".join(others))
        for key, byc in results[model].items():
            for conc, r in sorted(byc.items()):
                notes += _result_notes(model, key, conc, r)
    for marker in ("Traceback", " ERROR ", "exception"):
        if marker in stack_tail:
            notes.append(f"the stack's log contains {marker.strip()!r} lines")
            print("stack log tail:\n" + stack_tail[-3000:], flush=True)
            break
    return notes


def _result_notes(model: str, key: str, conc: int, r: Result) -> list[str]:
    """INFaaS's CPU split (under the raw-socket client), and any answer that was not a 200."""
    notes = []
    if is_infaas(key) and split_key(key)[1] == RAW_CLIENT:
        notes.append(f"{label(key)} on {model} at c={conc}: API process {r.leader_cpu_s / r.wall_s * 100:.0f}% "
                     f"of a core, its workers {(r.server_cpu_s - r.leader_cpu_s) / r.wall_s * 100:.0f}% "
                     f"together; client {r.cpu_share * 100:.0f}%; machine {r.machine_share * 100:.0f}% "
                     f"of {CORES} cores busy")
    for st, body in sorted(r.samples.items()):
        notes.append(f"{label(key)} on {model} at c={conc}: {r.non200[st]} answer(s) with status {st}, "
                     f"e.g. `{body.decode(errors='replace')[:200]}`")
    for e, n in sorted(r.errors.items()):
        notes.append(f"{label(key)} on {model} at c={conc}: {n} transport error(s) {e}")
    return notes


def draw_plot(peers_py: str | None, peers_state: str, tmp: str, results: dict, raw: dict) -> str:
    """``docs/img/performance.png``, with the peers' matplotlib; why not, if it was not drawn."""
    plot_note = ""
    if peers_py:
        bars = []
        for model, mlabel in ((TINY, "tiny MLP"), (SQUEEZE, "SqueezeNet")):
            log = model == TINY  # the tiny model's figures span four orders of magnitude
            panel32 = {"title": f"{mlabel}: throughput at concurrency 32 (higher is better)",
                       "unit": "requests/s" + (" (log)" if log else ""), "log": log, "bars": []}
            panel1 = {"title": f"{mlabel}: p50 latency at concurrency 1 (lower is better)",
                      "unit": "ms" + (" (log)" if log else ""), "log": log, "bars": []}
            for key in SYSTEMS[model]:
                if key in results[model]:
                    panel32["bars"].append([label(key), results[model][key][32].rps, is_infaas(key)])
                    panel1["bars"].append([label(key), results[model][key][1].pct(50), is_infaas(key)])
            for name, r in raw[model].items():
                if "error" not in r and "batch 32" not in name:
                    short = name.replace("onnxruntime in-process", "raw onnxruntime").replace(" (no HTTP)", "")
                    panel32["bars"].append([short, r["per_s"], False])
            bars += [panel32, panel1]
        spec = os.path.join(tmp, "plot.json")
        with open(spec, "w") as f:
            json.dump({"title": f"INFaaS vs peers, {CORES} cores, one client process (raw-socket client or aiohttp)",
                       "panels": bars}, f)
        os.makedirs(os.path.dirname(PLOT), exist_ok=True)
        p = subprocess.run([peers_py, os.path.join(ROOT, "bench", "peers", "plot.py"), spec, PLOT],
                           capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            plot_note = f"the plot could not be drawn: {p.stderr.strip()[-300:]}"
    else:
        plot_note = "no plot: " + peers_state
    return plot_note


def write_report(t_start: float, info, versions, peers_state, peers_s, chosen, ready_s, results, raw, missing, mem,
                 mem_missing, m_infaas, targets, notes, sel_out, plot_note) -> None:
    """Write the section of docs/performance.md and print it."""
    total = time.time() - t_start
    text = section(info, versions, peers_state, peers_s, chosen, ready_s, results, raw, missing, mem, mem_missing,
                   m_infaas.rss, targets, notes, sel_out, plot_note, total, rounds=ROUNDS, run_plan=RUNS,
                   systems=SYSTEMS)
    write_doc(text)
    print()
    print(text)
    print(f"\nwritten to {os.path.relpath(DOC, os.getcwd())}; total run time {total:.1f} s", flush=True)


# -------------------------------------------------------------------- main
def main() -> int:
    t_start = time.time()
    info = describe_machine()
    tmp = tempfile.mkdtemp(prefix="infaas-bench-")
    peers_py, peers_state, peers_s, versions = prepare_peers()

    # No tenant rate limit for the bench's tenant: a 429 is an answer the other systems never give,
    # and a cheap one, so it would flatter the closed-loop rate; every answer must be a 200.
    # No access log either: the FastAPI baseline, Ray Serve and BentoML run without theirs.
    stack = StackProcess(workers=WORKERS, data_dir=os.path.join(tmp, "data"), log_path=os.path.join(tmp, "stack.log"),
                         env={"INFAAS_TENANT_RPS": "0", "INFAAS_ACCESS_LOG": "off"})
    os.makedirs(stack.data_dir)
    started = Started(stack)
    servers = started.servers
    missing: dict[str, str] = {}  # system or result key -> why it was not measured
    if aiohttp_version() is None:
        missing.update({k: "aiohttp is not installed (.venv/bin/pip install -e '.[bench]')"
                        for m in SYSTEMS for k in SYSTEMS[m] if split_key(k)[1] == "aiohttp"})
    ok = False
    try:
        start_infaas(started, t_start)
        data, trained, val_path, sq_src = build_models(tmp)
        status, ready_s = register_models(started, trained, val_path, sq_src)
        inputs, chosen, sessions = copy_chosen_variants(started, tmp, data, status)
        start_peers(started, tmp, peers_py, peers_state, chosen, missing)
        roots, ports, paths = endpoints(started)
        check_answers(started, inputs, chosen, sessions, ports, paths, missing)
        raw, results = run_rounds(started, inputs, chosen, roots, ports, paths, missing)
        mem, mem_missing, m_infaas, best, ray_mem_key = measure_memory(started, results, missing)
        stack_tail = stop_servers(started)
        sel_out, sel_p99, sel_returncode = selection_microbenchmark()
        targets = check_targets(results, raw, missing, best, sel_p99, sel_returncode, mem, mem_missing, m_infaas,
                                ray_mem_key)
        notes = observations(info, results, raw, stack_tail)
        plot_note = draw_plot(peers_py, peers_state, tmp, results, raw)
        write_report(t_start, info, versions, peers_state, peers_s, chosen, ready_s, results, raw, missing, mem,
                     mem_missing, m_infaas, targets, notes, sel_out, plot_note)
        ok = True
        return 0
    finally:
        for s in list(servers.values()):
            try:
                s.stop()
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                print(f"stopping {s.key}: {exc}", file=sys.stderr)
        if started.client is not None:
            started.client.close()
        stack.stop()
        if not ok:
            print(f"benchmark failed after {time.time() - t_start:.1f} s; stack log tail:\n{stack.log_tail()}",
                  file=sys.stderr, flush=True)
            for s in servers.values():
                print(f"{s.key} log tail:\n{s.log_tail()}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
