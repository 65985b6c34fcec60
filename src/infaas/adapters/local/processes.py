"""The local ``Fleet`` (``infaas.core.ports.Fleet``): worker processes on this machine.

`infaas up` starts ``INFAAS_WORKERS`` of them (``python -m infaas.worker``, each
also on a local socket the API prefers); the autoscaler adds workers with
``set_desired`` and removes one with ``drain`` (SIGTERM: the worker stops
taking work, finishes its queue, deregisters and exits), as the Auto Scaling
groups do on AWS (``adapters/aws/fleet.py``).
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading

from infaas.core.settings import Settings

log = logging.getLogger("infaas.local")


def ephemeral_ports(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> range:
    """The ports the kernel hands to outgoing connections (Linux's default where it does not say)."""
    try:
        with open(path, encoding="ascii") as f:
            low, high = (int(x) for x in f.read().split()[:2])
        return range(low, high + 1)
    except (OSError, ValueError):
        return range(32768, 61000)


def free_port(host: str = "127.0.0.1", rng: random.Random | None = None) -> int:
    """A port free on ``host`` now, for a server about to start on it. Drawn outside the ephemeral
    range: a port the kernel chose (bind to 0) can be taken, between this check and the server's
    bind, as the source port of any outgoing connection on the machine (a busy machine makes many);
    one outside it only by another server. Falls back to the kernel's choice. For tests and tools
    that must know a server's port before it starts; the workers bind their own (port 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    rng = rng or random.Random()
    eph = ephemeral_ports()
    pool = [p for p in range(10000, 49152) if p not in eph]  # 49152 up: the ephemeral range of macOS, BSD, Windows
    for port in rng.sample(pool, min(20, len(pool))):
        with socket.socket(family) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(family) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


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
        env = dict(os.environ, INFAAS_DATA_DIR=self.settings.data_dir, INFAAS_HOST=self.settings.host, OMP_NUM_THREADS="1")
        self.procs[worker_id] = subprocess.Popen(
            [sys.executable, "-m", "infaas.worker", "--hardware", hardware, "--worker-id", worker_id, "--local-socket"],
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
