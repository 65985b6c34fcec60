"""Start `infaas up` as a child process on a free loopback port and stop it.

Used by the demo, the end-to-end tests and the benchmarks, so each of them
runs the same stack a user starts by hand.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

import httpx

from infaas.adapters.local.processes import free_port


def log_tail(path, n: int = 40) -> str:
    """The last ``n`` lines of a log file ("" when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return b"\n".join(f.read().splitlines()[-n:]).decode(errors="replace")
    except OSError:
        return ""


class StackProcess:
    def __init__(self, *, workers: int = 2, data_dir: str | None = None, env: dict[str, str] | None = None,
                 log_path: str | None = None) -> None:
        self.workers = workers
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="infaas-")
        self.data_dir = data_dir or self._tmp.name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env or {}
        self.log_path = log_path or os.path.join(self.data_dir, "stack.log")
        self.proc: subprocess.Popen | None = None
        self.api_key: str | None = None

    def create_key(self, tenant: str = "local", scopes: tuple[str, ...] = ("query", "register", "admin")) -> str:
        """A key straight in the stack's store (what `infaas tenants create` does)."""
        from infaas.app.identity import create_key
        from infaas.core.settings import Settings
        from infaas.wiring.local import LocalAdapters

        _, key = create_key(LocalAdapters(Settings(data_dir=self.data_dir)).store, tenant, scopes)
        return key

    def start(self, timeout_s: float = 90.0) -> "StackProcess":
        """Start the stack; ``api_key`` then holds an admin key of the local tenant."""
        os.makedirs(self.data_dir, exist_ok=True)
        self.api_key = self.create_key()
        env = dict(os.environ, **self.env)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "infaas.cli", "up", "--port", str(self.port), "--workers", str(self.workers),
             "--data-dir", self.data_dir],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"infaas up exited with {self.proc.returncode}; see {self.log_path}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"stack not ready after {timeout_s:g} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        return log_tail(self.log_path, n)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc:
            try:  # anything left in the process group (workers) goes too
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if getattr(self, "_log", None):
            self._log.close()
        if self._tmp:
            self._tmp.cleanup()

    def __enter__(self) -> "StackProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
