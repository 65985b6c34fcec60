"""The servers and the peers: a peer server in its own session (stopped by PID), the peers'
virtualenv, raw onnxruntime in-process (``bench/peers/ort_raw.py``), a free port."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import httpx
import numpy as np

from benchlib.config import HOST, PEERS_PY, PEERS_VENV, ROOT, WORK
from benchlib.procs import _proc_table, _procs_of
from infaas.local.launcher import log_tail

PEER_PINS = ("ray[serve]==2.60.0", "bentoml==1.4.40", "onnxruntime==1.32.0", "numpy==2.4.6", "fastapi==0.165.0",
             "uvicorn==0.54.0", "matplotlib==3.11.2")


class Server:
    """A peer server started as its own session on 127.0.0.1; stopped by PID."""

    def __init__(self, key: str, argv: list[str], log_path: str, *, env: dict[str, str] | None = None,
                 cwd: str | None = None, health: str | None = None, ready_line: str | None = None,
                 stdin_stop: bool = False) -> None:
        self.key, self.argv, self.log_path, self.env, self.cwd = key, argv, log_path, env, cwd
        self.health, self.ready_line, self.stdin_stop = health, ready_line, stdin_stop
        self.proc: subprocess.Popen | None = None
        self.seen: dict[int, str] = {}  # pid -> start time, of every process of this server seen

    def start(self) -> "Server":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd,
                                     stdin=subprocess.PIPE if self.stdin_stop else subprocess.DEVNULL,
                                     start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, n: int = 15) -> str:
        return log_tail(self.log_path, n)

    def remember(self) -> None:
        for pid, f in _procs_of(self.pid).items():
            self.seen[pid] = f[19]

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with {self.proc.returncode}: {self.log_tail(6)}")
            try:
                if self.ready_line is not None:
                    with open(self.log_path, "rb") as f:
                        if self.ready_line.encode() not in f.read():
                            raise httpx.TransportError("not yet")
                if self.health is None or httpx.get(self.health, timeout=1.0).status_code == 200:
                    self.remember()
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"not up after {timeout_s:g} s: {self.log_tail(6)}")

    def stop(self, grace_s: float = 20.0) -> None:
        if self.proc is None:
            return
        try:
            self.remember()
        except OSError:
            pass
        if self.proc.poll() is None:
            try:
                if self.stdin_stop and self.proc.stdin:
                    self.proc.stdin.write(b"stop\n")
                    self.proc.stdin.close()
                else:
                    os.kill(self.proc.pid, signal.SIGTERM)
            except (OSError, ValueError):
                pass
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
        # whatever of this server is left (Ray's agents outlive its driver): by PID, checking the start time
        table = _proc_table()
        left = {pid for pid in _procs_of(self.proc.pid, table)} | {
            pid for pid, start in self.seen.items() if pid in table and table[pid][19] == start}
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.proc.poll() is None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        if getattr(self, "_log", None):
            self._log.close()
        if getattr(self, "tmp", None):
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.proc = None


def ensure_peers(log_path: str) -> tuple[str | None, str, float]:
    """The peers' virtualenv (created and filled on the first run, re-used later):
    its python, what happened (or the error), and the seconds it took."""
    t0 = time.time()
    stamp = os.path.join(PEERS_VENV, ".bench-pins")
    want = "\n".join(PEER_PINS) + "\n"
    try:
        if os.path.exists(PEERS_PY) and os.path.exists(stamp) and open(stamp).read() == want:
            return PEERS_PY, "re-used", time.time() - t0
        os.makedirs(WORK, exist_ok=True)
        with open(log_path, "ab") as log:
            if not os.path.exists(PEERS_PY):
                subprocess.run([sys.executable, "-m", "venv", PEERS_VENV], check=True, stdout=log, stderr=log, timeout=120)
            subprocess.run([PEERS_PY, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *PEER_PINS],
                           check=True, stdout=log, stderr=log, timeout=900)
        with open(stamp, "w") as f:
            f.write(want)
        return PEERS_PY, "installed", time.time() - t0
    except (OSError, subprocess.SubprocessError) as exc:
        tail = ""
        try:
            tail = open(log_path, errors="replace").read().strip().splitlines()[-1]
        except (OSError, IndexError):
            pass
        return None, f"peers' virtualenv could not be installed: {exc} {tail}".strip(), time.time() - t0


def peer_versions() -> str:
    code = ("import importlib.metadata as m; print(', '.join(f'{p} {m.version(p)}' for p in "
            "('ray', 'bentoml', 'onnxruntime', 'fastapi', 'uvicorn', 'starlette', 'matplotlib')))")
    try:
        return subprocess.run([PEERS_PY, "-c", code], capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def ort_raw(model: str, procs: int, batch: int, seconds: float) -> dict:
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "peers", "ort_raw.py"), model, "--procs", str(procs),
                        "--batch", str(batch), "--seconds", str(seconds)], capture_output=True, text=True,
                       timeout=seconds + 180)
    if r.returncode != 0:
        raise RuntimeError(f"ort_raw.py failed: {r.stderr.strip()[-300:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def merge_raw(parts: list[dict]) -> dict:
    out = dict(parts[0])
    for k in ("calls", "inferences", "wall_s", "cpu_s"):
        out[k] = sum(p[k] for p in parts)
    # within a round the processes run side by side (wall_s is the round's); rounds add up
    out["per_s"] = out["inferences"] / out["wall_s"]
    out["p50_ms"] = float(np.mean([p["p50_ms"] for p in parts]))
    out["p99_ms"] = max(p["p99_ms"] for p in parts)
    out["rounds"] = len(parts)
    return out


def _free_port() -> int:
    from infaas.adapters.local.processes import free_port

    return free_port(HOST)
