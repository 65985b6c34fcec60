"""A quick look at the data plane alone: INFaaS next to the FastAPI baseline.

    .venv/bin/python bench/quick.py [tiny] [squeeze] [--fastapi] [--seconds 3]

Re-uses the pieces of ``bench/run.py``, in ``bench/benchlib/`` (client, requests,
models), and keeps the stack's data under ``bench/.work/quick-data`` so later runs
skip building and profiling the variants. For iterating on the hot path; ``make bench``
is the measurement of record.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib.client import Result, infaas_request, measure, raw_request, run_client  # noqa: E402
from benchlib.config import ROOT, SQUEEZE, SQUEEZE_TASK, TINY, WORK, WORKERS  # noqa: E402
from benchlib.models import build_squeezenet  # noqa: E402
from benchlib.procs import _procs_of  # noqa: E402
from benchlib.servers import Server, _free_port  # noqa: E402

from infaas.cli import digits  # noqa: E402
from infaas.client import Client  # noqa: E402
from infaas.local.launcher import StackProcess  # noqa: E402


def _leaders(root: int) -> str:
    """CPU seconds of each process of a tree, for a per-process share."""
    out = {}
    for pid, f in _procs_of(root).items():
        out[pid] = (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    return out


def _prio(nice: int | None, *pids: int) -> None:
    if nice is None:
        return
    for pid in pids:
        try:
            with open(f"/proc/{pid}/autogroup", "w") as f:
                f.write(str(nice))
        except OSError as exc:
            print(f"autogroup nice of {pid}: {exc}")


def show(label: str, r: Result, before: dict, after: dict) -> None:
    per = ", ".join(f"{(after[p] - before.get(p, 0)) / r.wall_s * 100:.0f}%" for p in sorted(after))
    print(f"{label:22} c={r.concurrency:<3} {r.ok:>7,} ok {r.bad} bad  p50 {r.pct(50):7.3f}  p99 {r.pct(99):8.3f} ms  "
          f"{r.rps:8,.1f} req/s  client {r.cpu_share * 100:3.0f}%  server {r.server_share * 100:3.0f}% "
          f"[{per}]  machine {r.machine_share * 100:3.0f}%", flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("models", nargs="*", default=["tiny"])
    p.add_argument("--fastapi", action="store_true")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--conc", default="1,32")
    p.add_argument("--prio", type=int, default=None,
                   help="autogroup nice for the client and the servers' sessions (Linux; e.g. -5 so that background "
                        "work in other sessions does not take a fair share of the cores meanwhile)")
    p.add_argument("--profile", default="", help="a folder: py-spy records each INFaaS process (py-spy on PATH)")
    args = p.parse_args()
    data_dir = os.path.join(WORK, "quick-data")
    os.makedirs(data_dir, exist_ok=True)
    stack = StackProcess(workers=WORKERS, data_dir=data_dir, log_path=os.path.join(WORK, "quick-stack.log"))
    fastapi = None
    try:
        stack.start()
        _prio(args.prio, os.getpid(), stack.proc.pid)
        client = Client(stack.url, api_key=stack.api_key, timeout_s=120.0)
        data = digits.split()
        tiny_path = os.path.join(WORK, "quick-tiny.onnx")
        sq_path = os.path.join(WORK, "quick-squeeze.onnx")
        if not os.path.exists(sq_path):
            build_squeezenet(sq_path)
        if not os.path.exists(tiny_path):
            t = digits.train(os.path.join(WORK, "quick-models"), names=[TINY], data=data)[0]
            shutil.copyfile(t.path, tiny_path)
        names = {"tiny": TINY, "squeeze": SQUEEZE}
        for key in args.models:
            try:
                if key == "tiny":
                    client.register(tiny_path, name=TINY, task=digits.TASK, accuracy=0.9)
                else:
                    client.register(sq_path, name=SQUEEZE, task=SQUEEZE_TASK, accuracy=0.5)
            except Exception as exc:  # already there
                print("register:", exc)
        client.wait_ready([names[k] for k in args.models], timeout_s=300)
        rng = np.random.default_rng(1)
        inputs = {"tiny": data.x_test[:1].astype(np.float32), "squeeze": rng.random((1, 3, 224, 224), dtype=np.float32)}
        chosen = {}
        from infaas.core.settings import Settings
        from infaas.wiring.local import LocalAdapters

        adapters = LocalAdapters(Settings(data_dir=data_dir))
        for key in args.models:
            _, d = client.infer(inputs[key], architecture=names[key])
            chosen[key] = (d["variant"], client.model(names[key])["inputs"][0]["name"])
            path = os.path.join(WORK, f"quick-{key}.variant.onnx")
            shutil.copyfile(adapters.models.local_path(adapters.store.get_variant(chosen[key][0]).model_key), path)
        if args.fastapi:
            port = _free_port()
            fastapi = Server("fastapi", [sys.executable, os.path.join(ROOT, "bench", "baseline_server.py"),
                                           *(f"{k}={os.path.join(WORK, f'quick-{k}.variant.onnx')}" for k in args.models),
                                           "--port", str(port)], os.path.join(WORK, "quick-fastapi.log"),
                               health=f"http://127.0.0.1:{port}/health")
            fastapi.port = port
            fastapi.start().wait_ready(30)
            _prio(args.prio, fastapi.pid)
        for key in args.models:
            for conc in (int(c) for c in args.conc.split(",")):
                systems = [("infaas", stack.port, stack.proc.pid,
                            infaas_request(chosen[key][0], inputs[key], stack.api_key, chosen[key][1]))]
                if fastapi:
                    systems.append(("fastapi", fastapi.port, fastapi.pid,
                                    raw_request(f"/{key}/infer", inputs[key])))
                for name, port, root, req in systems:
                    spies = []
                    if args.profile and name == "infaas":
                        import subprocess

                        os.makedirs(args.profile, exist_ok=True)
                        spies = [subprocess.Popen(["py-spy", "record", "-p", str(pid), "-d", str(int(args.seconds)),
                                                   "-r", "200", "-f", "raw", "-o",
                                                   os.path.join(args.profile, f"{key}-c{conc}-{pid}.txt")],
                                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                                 for pid in _procs_of(root)]
                        time.sleep(0.5)
                    before = _leaders(root)
                    r = run_client(measure(name, port, root, req, conc, 0.5, args.seconds, 1_000_000))
                    show(f"{name} {key}", r, before, _leaders(root))
                    for status, body in r.samples.items():
                        print(f"  {r.non200[status]} answers {status}, e.g. {body[:200]!r}")
                    for spy in spies:
                        spy.wait()
    finally:
        if fastapi:
            fastapi.stop()
        stack.stop()


if __name__ == "__main__":
    main()
