"""Replica processes: each CPU replica's runtime in a process of its own, under a hard memory limit.

One worker serves many tenants' variants. Run in the worker's own process, a model whose
allocations grow with its input (or that crashes the runtime) takes the worker's memory, and
with it every other tenant's replicas. Here each replica's executor lives in a child process,
as Triton's Python backend runs its stubs:

- the child's address space is capped (``RLIMIT_AS``) at what it holds once the model is loaded
  plus ``allowance_bytes`` (the worker's replica budget, ``INFAAS_WORKER_MEMORY_BYTES``), so one
  run cannot grow past it: the runtime's allocation fails and that query gets a 400 naming the
  limit;
- a child that dies (a crash, the kernel's OOM killer) fails only the batch it was running
  (502 ``variant_fault``: the model's fault, the worker stays in selection); the next batch
  starts a new child. After ``MAX_DEATHS`` deaths within ``DEATH_WINDOW_S`` the replica refuses
  work (502) until the window has passed: the variant is faulty on this worker;
- the worker and the other replicas never share its memory, so they keep serving.

Children are forked from a fork server that has imported numpy and onnxruntime once
(``multiprocessing``'s ``forkserver``), so a replica starts in milliseconds plus its model's load.
Batches go to the child and answers come back over a pipe (pickled arrays); the worker's batcher
(``worker/replicas.py``) is unchanged. GPU and Inferentia replicas stay in the worker's process:
each child would open its own device context.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import resource
import threading
import time
from typing import Mapping

import numpy as np

from infaas.core import errors
from infaas.core.domain import Variant
from infaas.core.errors import ExecutorError, InfaasError, InvalidInput, VariantFault

log = logging.getLogger("infaas.runtime")

MAX_DEATHS = 3
DEATH_WINDOW_S = 60.0
LOAD_TIMEOUT_S = 300.0
# imported once in the fork server, so every replica process starts with them
PRELOAD = ["numpy", "onnxruntime", "infaas.runtime.executor", "infaas.runtime.sandbox"]

_context = None
_context_lock = threading.Lock()


def context():
    """The ``forkserver`` multiprocessing context, its server preloaded (started on first use)."""
    global _context
    with _context_lock:
        if _context is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(PRELOAD)
            _context = ctx
        return _context


def warm_up() -> None:
    """Start the fork server now (a second or so of imports) rather than at the first load."""
    from multiprocessing import forkserver

    context()
    forkserver.ensure_running()


def isolated(variant: Variant) -> bool:
    """Whether this variant's replicas run in a process of their own (CPU variants)."""
    return variant.hardware == "cpu"


class IsolatedExecutor:
    """The ``Executor`` interface (``runtime/executor.py``) over a child process that holds the
    real executor. ``run`` is blocking and serialised (one batch at a time per replica)."""

    isolated = True  # ``worker/replicas.py``: never run on the event loop; a thread of its own per replica

    def __init__(self, variant: Variant, path: str, *, allowance_bytes: int, intra_op_threads: int = 1,
                 cache_dir: str | None = None, clock=time.monotonic, deadline_s: float = 9.0,
                 max_answer_bytes: int = 32 << 20) -> None:
        self.variant = variant
        self.deadline_s = deadline_s
        self._args = (variant, path, intra_op_threads, cache_dir, allowance_bytes, max_answer_bytes)
        self._clock = clock
        self._lock = threading.Lock()
        self._deaths: collections.deque = collections.deque()
        self._proc = None
        self._conn = None
        self.limit_bytes = 0  # the child's address-space limit
        self.input_names: tuple[str, ...] = ()
        self.output_names: tuple[str, ...] = ()
        self._start()

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def _start(self) -> None:
        ctx = context()
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(target=serve, args=(theirs, *self._args), daemon=True, name=f"replica {self.variant.id}")
        proc.start()
        theirs.close()
        try:
            if not mine.poll(LOAD_TIMEOUT_S):
                raise ExecutorError(f"the replica process of {self.variant.id} did not load within {LOAD_TIMEOUT_S:g} s")
            message = mine.recv()
        except EOFError:
            proc.join(5)
            mine.close()
            raise VariantFault(f"the replica process of {self.variant.id} ended while loading ({_how(proc.exitcode)})",
                               field="variant") from None
        except BaseException:
            proc.kill()
            proc.join(5)
            mine.close()
            raise
        if message[0] == "error":
            proc.join(5)
            mine.close()
            raise errors.decode(message[1], message[2])
        _, self.input_names, self.output_names, self.limit_bytes = message
        self._proc, self._conn = proc, mine

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            if self._proc is not None and not self._proc.is_alive():
                self._reap()  # it died while idle (the OOM killer, a signal): a death, and a new one below
            if self._proc is None:
                self._restart()
            try:
                self._conn.send(dict(inputs))
                if not self._conn.poll(self.deadline_s):  # a run whose time grows with its input
                    self._proc.kill()
                    self._reap()
                    raise VariantFault(
                        f"the replica of {self.variant.id} ran this batch past its deadline of {self.deadline_s:g} s "
                        "and was stopped; the worker and its other replicas are unaffected", field="variant")
                message = self._conn.recv()
            except (EOFError, OSError):
                how = self._reap()
                raise VariantFault(
                    f"the replica process of {self.variant.id} ended while running this batch ({how}); "
                    "the worker and its other replicas are unaffected, the next batch starts a new one",
                    field="variant") from None
            if message[0] == "ok":
                return message[1]
            raise errors.decode(message[1], message[2])

    def _restart(self) -> None:
        now = self._clock()
        while self._deaths and now - self._deaths[0] > DEATH_WINDOW_S:
            self._deaths.popleft()
        if len(self._deaths) >= MAX_DEATHS:
            wait = DEATH_WINDOW_S - (now - self._deaths[0])
            raise VariantFault(f"variant {self.variant.id} failed {len(self._deaths)} times in {DEATH_WINDOW_S:g} s "
                               f"on this worker; not restarted for another {wait:.0f} s", field="variant")
        self._start()

    def _reap(self) -> str:
        proc, self._proc = self._proc, None
        self._conn.close()
        proc.join(5)
        if proc.exitcode is None:
            proc.kill()
            proc.join(5)
        self._deaths.append(self._clock())
        how = _how(proc.exitcode)
        log.warning("replica process of %s (pid %s) ended: %s", self.variant.id, proc.pid, how)
        return how

    def close(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is None:
                return
            try:
                self._conn.send(None)  # asks the child to leave
            except OSError:
                pass
            self._conn.close()
            proc.join(2)
            if proc.exitcode is None:
                proc.kill()
                proc.join(5)


def _how(exitcode: int | None) -> str:
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit status {exitcode}"


# ----------------------------------------------------------------- the child
def serve(conn, variant: Variant, path: str, threads: int, cache_dir: str | None, allowance: int,
          max_answer_bytes: int) -> None:
    """The replica process: load the executor, cap the address space, then run batches until
    the worker sends None or goes away."""
    from infaas.runtime.executor import load_executor

    try:
        executor = load_executor(variant, path, intra_op_threads=threads, cache_dir=cache_dir)
        limit = limit_address_space(allowance)
    except InfaasError as exc:
        conn.send(("error", exc.status, errors.encode(exc)[3]))
        return
    except Exception as exc:  # noqa: BLE001 - any load failure is the variant's, reported to the worker
        failure = ExecutorError(f"could not load {variant.id}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
        conn.send(("error", failure.status, errors.encode(failure)[3]))
        return
    conn.send(("ready", tuple(executor.input_names), tuple(executor.output_names), limit))
    while True:
        try:
            feed = conn.recv()
        except (EOFError, OSError):
            return  # the worker is gone
        except MemoryError:
            answer(conn, InvalidInput(f"the query needs more memory than this replica's limit of {limit >> 20} MiB",
                                      field="inputs"))
            continue
        if feed is None:
            return
        try:
            outputs = executor.run(feed)
            del feed
            size = answer_bytes(outputs)
            if size > max_answer_bytes:
                raise InvalidInput(f"these inputs make the model answer {size} bytes, over the limit of "
                                   f"{max_answer_bytes} (INFAAS_MAX_ANSWER_BYTES)", field="inputs")
            conn.send(("ok", outputs))
        except InfaasError as exc:
            answer(conn, exc)
        except MemoryError:
            answer(conn, InvalidInput(f"the query needs more memory than this replica's limit of {limit >> 20} MiB",
                                      field="inputs"))
        except Exception as exc:  # noqa: BLE001 - the batch fails, the replica stays
            answer(conn, ExecutorError(f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"))


def answer_bytes(outputs: Mapping[str, np.ndarray]) -> int:
    """The size of a batch's outputs: array bytes, and the text of string tensors."""
    total = 0
    for v in outputs.values():
        if v.dtype == object:
            total += sum(len(x) if isinstance(x, (str, bytes)) else 8 for x in v.ravel())
        else:
            total += v.nbytes
    return total


def answer(conn, exc: InfaasError) -> None:
    conn.send(("error", exc.status, errors.encode(exc)[3]))


def limit_address_space(allowance: int) -> int:
    """Cap this process's address space at what it holds now plus ``allowance``; the limit set."""
    with open("/proc/self/status") as f:
        held = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    limit = held + allowance
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    return limit
