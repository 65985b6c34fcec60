"""The serverless CPU tier on this machine: ``FunctionTier`` over processes that stand in for
Lambda's execution environments.

Each *instance* is a process of its own running the tier's real handler
(``functions/inference/handler.py``, found beside the package in a source checkout, or in
``INFAAS_FUNCTION_HANDLER_DIR``), one per variant as the warm pool of ``core.tier.TierState``
counts them. Its cold start is real: the process starts, the handler imports numpy and
onnxruntime, "downloads" the variant's file from the local model store (the folder of
``FolderModelStore``, read through the same ``head_object``/``get_object`` calls the handler makes
on S3) into a cache folder of the instance's own, and opens a session. A warm instance answers
from memory. What differs from Lambda, on purpose: no CPU share is enforced (an instance runs at
the machine's speed, with the threads of its memory size), and nothing is billed.

* An invocation takes the most recently used idle instance of its variant, else starts one (cold).
* An instance idle for ``keep_warm_s`` (``INFAAS_FUNCTION_KEEP_WARM_S``, default
  ``tier.KEEP_WARM_S``) is stopped: the next invocation starts cold.
* At most ``concurrency`` invocations run at once (``INFAAS_FUNCTION_CONCURRENCY``); one more is
  throttled (``Unavailable``, 503), as Lambda throttles past the account's quota.
* An invocation running past ``timeout_s`` loses its instance (killed) and is a ``VariantFault``;
  so is an instance that dies.

Run as ``python -m infaas.adapters.local.functions <handler dir> <models dir>`` it is one instance:
a ``ready`` line once the handler is imported, then one JSON event per line in, one answer per
line out.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from infaas.core import tier
from infaas.core.errors import Unavailable, VariantFault
from infaas.core.ports import FunctionTier
from infaas.core.settings import SettingsError

HANDLER_ENV = "INFAAS_FUNCTION_HANDLER_DIR"
DEFAULT_CONCURRENCY = 4  # instances running at once on this machine (a 2-core VM runs two at full speed)
START_TIMEOUT_S = 60.0


def handler_dir() -> Path:
    """The inference function's folder: ``INFAAS_FUNCTION_HANDLER_DIR``, else ``functions/inference``
    of the source checkout this package is in."""
    configured = os.environ.get(HANDLER_ENV)
    folder = Path(configured) if configured else Path(__file__).resolve().parents[4] / "functions" / "inference"
    if not (folder / "handler.py").is_file():
        raise SettingsError(f"the local function tier runs the inference function's handler, and there is none at "
                            f"{folder}: set {HANDLER_ENV} to functions/inference of a source checkout, or "
                            "INFAAS_FUNCTION_TIER=off")
    return folder


@dataclass
class Instance:
    """One stand-in execution environment: a process, its pipes, when it was last used."""

    variant_id: str
    memory_mb: int
    proc: subprocess.Popen
    cache_dir: str
    started_ms: float  # process start to the handler imported, as measured here
    module_init_ms: float  # of that, the handler module's own imports (what it reports on its first answer)
    last_used: float = 0.0
    invocations: int = 0
    buffer: bytes = b""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover - a killed process always exits
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        shutil.rmtree(self.cache_dir, ignore_errors=True)


def _read_line(inst: Instance, deadline: float) -> dict | None:
    fd = inst.proc.stdout.fileno()
    while b"\n" not in inst.buffer:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            return None
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return None
        inst.buffer += chunk
    line, _, inst.buffer = inst.buffer.partition(b"\n")
    return json.loads(line)


class LocalFunctionTier(FunctionTier):
    def __init__(self, models_dir: str, *, keep_warm_s: float = tier.KEEP_WARM_S,
                 concurrency: int = DEFAULT_CONCURRENCY, timeout_s: float = 29.0, folder: Path | None = None,
                 work_dir: str | None = None, clock=time.time) -> None:
        self.models_dir = os.path.abspath(models_dir)
        self.keep_warm_s, self.concurrency, self.timeout_s = keep_warm_s, max(1, concurrency), timeout_s
        self.folder = folder or handler_dir()
        self.work_dir = work_dir or tempfile.mkdtemp(prefix="infaas-functions-")
        self.clock = clock
        self._lock = threading.Lock()
        self._idle: dict[str, list[Instance]] = {}  # variant -> idle instances, least recently used first
        self._running = 0
        self._started = 0
        self._closed = False

    # -- the pool -----------------------------------------------------------------------------------
    def _take(self, variant_id: str) -> Instance | None:
        """An idle warm instance of the variant (the most recently used), or None; counts the invocation
        against the concurrency limit either way (raises ``Unavailable`` past it)."""
        with self._lock:
            if self._closed:
                raise Unavailable("the function tier is shutting down", retry_after_s=1.0)
            if self._running >= self.concurrency:
                raise Unavailable(f"the function tier is throttled: {self.concurrency} invocations running "
                                  "(INFAAS_FUNCTION_CONCURRENCY)", retry_after_s=1.0)
            self._running += 1
            idle = self._idle.get(variant_id) or []
            while idle:
                inst = idle.pop()
                if inst.alive():
                    return inst
                inst.stop()
            return None

    def _give_back(self, inst: Instance | None) -> None:
        with self._lock:
            self._running -= 1
            if inst is not None and inst.alive() and not self._closed:
                inst.last_used = self.clock()
                self._idle.setdefault(inst.variant_id, []).append(inst)
                return
        if inst is not None:
            inst.stop()

    def expire(self) -> int:
        """Stop instances idle for ``keep_warm_s`` or more; how many were stopped."""
        now = self.clock()
        gone = []
        with self._lock:
            for vid, idle in list(self._idle.items()):
                keep = [i for i in idle if now - i.last_used < self.keep_warm_s and i.alive()]
                gone += [i for i in idle if i not in keep]
                if keep:
                    self._idle[vid] = keep
                else:
                    del self._idle[vid]
        for inst in gone:
            inst.stop()
        return len(gone)

    def warm(self) -> dict[str, int]:
        """Idle warm instances per variant (what a ``TierState`` would count)."""
        with self._lock:
            return {vid: len(v) for vid, v in self._idle.items() if v}

    def _start(self, variant_id: str, memory_mb: int) -> Instance:
        self._started += 1
        cache = os.path.join(self.work_dir, f"instance-{os.getpid()}-{self._started}")
        os.makedirs(cache, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MKL_", "AWS_"))}
        threads = tier.threads_for(memory_mb)
        env.update(INFAAS_MODEL_CACHE_DIR=cache, AWS_LAMBDA_FUNCTION_MEMORY_SIZE=str(memory_mb),
                   OMP_NUM_THREADS=str(threads), PYTHONDONTWRITEBYTECODE="1", INFAAS_BUCKET="local-models",
                   AWS_DEFAULT_REGION="us-east-1")
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "infaas.adapters.local.functions", str(self.folder),
                                 self.models_dir], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=None, env=env, cwd=str(self.folder))
        inst = Instance(variant_id, memory_mb, proc, cache, 0.0, 0.0)
        ready = _read_line(inst, time.monotonic() + START_TIMEOUT_S)
        if not ready or not ready.get("ready"):
            inst.stop()
            raise VariantFault(f"a function instance for {variant_id} did not start: "
                               f"{(ready or {}).get('init_error', 'no answer')}"[:500])
        inst.started_ms = (time.perf_counter() - t0) * 1000
        inst.module_init_ms = float(ready.get("module_init_ms") or 0.0)
        return inst

    def _invoke(self, variant_id: str, memory_mb: int, payload: bytes, timeout_s: float) -> tuple[bytes, Instance, bool]:
        inst = self._take(variant_id)
        fresh = inst is None
        try:
            if inst is None:
                inst = self._start(variant_id, memory_mb)
            with inst.lock:
                inst.proc.stdin.write(payload + b"\n")
                inst.proc.stdin.flush()
                answer = _read_line(inst, time.monotonic() + timeout_s)
                inst.invocations += 1
        except (OSError, ValueError) as exc:
            if inst is not None:
                inst.stop()
            self._give_back(None)
            raise VariantFault(f"the function instance for {variant_id} failed: {type(exc).__name__}: {exc}") from None
        except BaseException:
            if inst is not None:
                inst.stop()
            self._give_back(None)
            raise
        if answer is None:
            timed_out = inst.alive()
            inst.stop()
            self._give_back(None)
            raise VariantFault(f"the function for {variant_id} timed out after {timeout_s:g} s" if timed_out
                               else f"the function instance for {variant_id} exited")
        self._give_back(inst)
        return json.dumps(answer).encode(), inst, fresh

    async def invoke(self, variant_id: str, model_key: str, arrays: Mapping[str, Any], *, memory_mb: int,
                     outputs: tuple[str, ...] | None = None, query_id: str | None = None,
                     timeout_s: float | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        payload = tier.invocation_event(variant_id, model_key, arrays, outputs, query_id)
        t0 = time.perf_counter()
        body, inst, fresh = await asyncio.get_running_loop().run_in_executor(
            None, self._invoke, variant_id, memory_mb, payload, timeout_s or self.timeout_s)
        out, info = tier.invocation_answer(body, memory_mb)
        if fresh:  # the interpreter's own start, before the handler's imports, is part of this cold start
            info["init_ms"] += max(0.0, inst.started_ms - inst.module_init_ms)
            info["billed_ms"] = tier.billed_ms(info["init_ms"] + info["run_ms"])
            info["cost"] = tier.invocation_cost(info["billed_ms"], info["memory_mb"])
        info.update(cold=bool(info["cold"] or fresh), function=f"local-{memory_mb}",
                    round_trip_ms=(time.perf_counter() - t0) * 1000)
        return out, info

    async def close(self) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            idle = [i for v in self._idle.values() for i in v]
            self._idle = {}
        for inst in idle:
            inst.stop()
        shutil.rmtree(self.work_dir, ignore_errors=True)


# ------------------------------------------------------------------------- one instance (the child)
class _FolderObjects:
    """The two S3 calls the handler makes, on the local model store's folder."""

    def __init__(self, root: str, client_error: type) -> None:
        self.root, self.client_error = root, client_error

    def _path(self, key: str) -> str:
        from infaas.core.keys import check_key

        path = os.path.join(self.root, *check_key(key).split("/"))
        if not os.path.isfile(path):
            raise self.client_error({"Error": {"Code": "404", "Message": "Not Found"}}, "HeadObject")
        return path

    def head_object(self, Bucket: str, Key: str) -> dict:  # noqa: N803 - the SDK's argument names
        return {"ContentLength": os.path.getsize(self._path(Key))}

    def get_object(self, Bucket: str, Key: str) -> dict:  # noqa: N803
        return {"Body": open(self._path(Key), "rb")}  # noqa: SIM115 - the handler reads and drops it


def _child(folder: str, models_dir: str) -> int:  # pragma: no cover - runs in the instance's own process
    import types

    t0 = time.perf_counter()
    try:
        import botocore.exceptions  # noqa: F401  (the handler imports boto3; the SDK is optional locally)
    except ImportError:
        class ClientError(Exception):
            def __init__(self, response: dict, operation: str) -> None:
                super().__init__(f"{operation}: {response['Error']['Code']}")
                self.response = response

        botocore = types.ModuleType("botocore")
        botocore.exceptions = types.ModuleType("botocore.exceptions")
        botocore.exceptions.ClientError = ClientError
        sys.modules.update({"botocore": botocore, "botocore.exceptions": botocore.exceptions})
        boto3 = types.ModuleType("boto3")
        boto3.client = lambda service, **_: None
        sys.modules["boto3"] = boto3
    sys.path.insert(0, folder)
    out = sys.stdout.buffer
    try:
        import botocore.exceptions as bexc
        import handler
    except BaseException as exc:
        out.write((json.dumps({"init_error": f"{type(exc).__name__}: {exc}"}) + "\n").encode())
        out.flush()
        return 1
    handler.s3_client = _FolderObjects(models_dir, bexc.ClientError)
    module_init_ms = float(getattr(handler, "MODULE_INIT_MS", (time.perf_counter() - t0) * 1000))
    out.write((json.dumps({"ready": True, "module_init_ms": module_init_ms}) + "\n").encode())
    out.flush()
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            answer = {"error": {"error": "the event is not JSON", "code": "invalid_input",
                                "message": "the event is not JSON"}, "status": 400}
        else:
            answer = handler.handler(event, None)
        out.write((json.dumps(answer, separators=(",", ":")) + "\n").encode())
        out.flush()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_child(sys.argv[1], sys.argv[2]))
