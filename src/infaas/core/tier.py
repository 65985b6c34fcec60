"""The serverless CPU tier (hardware type ``lambda``): its prices, its limits and its warm pool, as
pure functions. No I/O and no clock: time is passed in (``now``, epoch seconds).

A ``lambda`` variant is a CPU variant (onnxruntime on the CPU) run by an AWS Lambda function
whose memory size was chosen from its profile (``choose_memory``): Lambda gives a function a CPU
share proportional to its memory, so a larger size runs faster and costs more per millisecond.
Each invocation runs one batch; the function keeps the model loaded between invocations while
its execution environment stays warm. A query that finds no idle warm environment starts one
(a *cold start*: runtime start, imports, model download and load), which is why a prediction
carries a cold probability (``predict_ms``).

The warm pool is a frozen snapshot (``TierState``): per variant, the last-used times of its idle
warm environments and how many invocations are in flight; the account's concurrency limit; how
long an idle environment is assumed to stay warm. ``acquire`` and ``release`` return new states;
the selector, the scaling policy and the simulator all read and step the same snapshot.

Sources (read 2025): prices https://aws.amazon.com/lambda/pricing/ ; limits
https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html ; memory and CPU
https://docs.aws.amazon.com/lambda/latest/dg/configuration-memory.html ; billing of the init phase
https://aws.amazon.com/blogs/compute/aws-lambda-standardizes-billing-for-init-phase/ .
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Iterable, Mapping

from infaas.core.domain import Profile, interpolate_latency

HARDWARE = "lambda"  # the hardware type's name in the catalogue and in variant ids
HOST = "cpu"  # the machine type whose files the tier runs (built on its lane; its steady load moves there)

# -- prices (x86, us-east-1, the first pricing tier: up to 6 billion GB-seconds a month) ---------------
PRICE_PER_GB_SECOND = 0.0000166667  # USD per GB-second of duration (arm64 is 20 % less; not used here)
PRICE_PER_REQUEST = 0.20 / 1_000_000  # USD per invocation (0.20 USD per million requests)
BILLING_MS = 1  # duration is rounded up to the next millisecond (since December 2020)
# Since 1 August 2025 the init phase of on-demand functions is billed as duration too: a cold
# invocation is billed for its cold start plus its run (``invocation_cost(cold_start + run)``).

# -- limits ----------------------------------------------------------------------------------------
MIN_MEMORY_MB = 128
MAX_MEMORY_MB = 10240  # configurable in 1 MB steps
FULL_VCPU_MB = 1769  # "at 1,769 MB, a function has the equivalent of one vCPU" (one vCPU-second per second)
MAX_VCPUS = 6  # at 10,240 MB a function has up to 6 vCPUs (threads); its CPU time grows with memory
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024  # synchronous invocation: request and response, 6 MB each
MAX_DURATION_S = 900.0  # 15 minutes per invocation
DEFAULT_CONCURRENCY = 1000  # concurrent executions per account and region by default; NEW ACCOUNTS may
# start far lower (10 has been seen) until AWS raises it: check the account's ConcurrentExecutions quota
TMP_BYTES = 512 * 1024 * 1024  # /tmp (ephemeral storage) by default; configurable up to 10,240 MB

# -- assumptions (AWS publishes no figure) ---------------------------------------------------------------
KEEP_WARM_S = 300.0  # how long an idle execution environment is assumed to stay warm: AWS publishes no
# figure; 5 to 15 minutes is what measurements report, 5 min is the conservative end (more cold starts)
S3_DOWNLOAD_BYTES_PER_S = 50e6  # assumed S3 -> Lambda throughput for a model's first download
# (measurements report 50-90 MB/s for one GET stream inside a region; the lower end, conservative)


class Throttled(Exception):
    """No concurrency left: Lambda would throttle the invocation (TooManyRequestsException)."""


def check_memory(memory_mb: int) -> int:
    if not MIN_MEMORY_MB <= memory_mb <= MAX_MEMORY_MB:
        raise ValueError(f"Lambda memory must be {MIN_MEMORY_MB}..{MAX_MEMORY_MB} MB, not {memory_mb}")
    return int(memory_mb)


def cpu_share(memory_mb: int) -> float:
    """The CPU a function of ``memory_mb`` gets, in vCPUs: proportional to memory, one full vCPU at
    1,769 MB (0.289 at 512 MB, 1.70 at 3,008 MB), at most ``MAX_VCPUS``."""
    return min(float(MAX_VCPUS), check_memory(memory_mb) / FULL_VCPU_MB)


def threads_for(memory_mb: int) -> int:
    """Threads worth running in a function of ``memory_mb``: the CPU share rounded up."""
    return max(1, math.ceil(cpu_share(memory_mb) - 1e-9))


def billed_ms(duration_ms: float) -> int:
    """Duration as billed: rounded up to the next millisecond, at least one."""
    if duration_ms < 0 or math.isnan(duration_ms):
        raise ValueError(f"duration must be >= 0 ms, not {duration_ms}")
    # round first so that 3.0000000001 (a float sum) is not billed as 4 ms
    return max(BILLING_MS, BILLING_MS * math.ceil(round(duration_ms / BILLING_MS, 6)))


def invocation_cost(duration_ms: float, memory_mb: int) -> float:
    """USD for one invocation of ``duration_ms`` (rounded up to 1 ms) at ``memory_mb``, request price
    included. A cold invocation's duration includes its init phase (billed since August 2025)."""
    gb = check_memory(memory_mb) / 1024.0
    return billed_ms(duration_ms) / 1000.0 * gb * PRICE_PER_GB_SECOND + PRICE_PER_REQUEST


def download_ms(size_bytes: int, bytes_per_s: float = S3_DOWNLOAD_BYTES_PER_S) -> float:
    """The assumed time to fetch a model of ``size_bytes`` from S3 into /tmp at a cold start."""
    return max(0, size_bytes) / bytes_per_s * 1000.0


# -- profiles and the memory size ---------------------------------------------------------------------
@dataclass(frozen=True)
class FunctionProfile:
    """What was measured for one variant at one memory size: warm latency per batch, (p50, p99) ms
    of one invocation's run (no cold start in it), and the cold start measured apart (runtime
    start, imports, model download and load)."""

    memory_mb: int
    latency_ms: Mapping[int, tuple[float, float]]
    cold_start_ms: float

    def latency_at(self, batch: int, percentile: str = "p99") -> float:
        """One warm run at ``batch`` rows: measured, linearly interpolated between measured batches,
        infinite beyond the largest (the variant does not run it)."""
        return interpolate_latency(self.latency_ms, sorted(self.latency_ms), batch, percentile)

    def cost_per_request(self, batch: int = 1, cold: bool = False) -> float:
        """USD for one invocation of ``batch`` rows at the median run time (plus the cold start if cold)."""
        run = self.latency_at(batch, "p50")
        if math.isinf(run):
            return math.inf
        return invocation_cost(run + (self.cold_start_ms if cold else 0.0), self.memory_mb)

    def to_dict(self) -> dict:
        return {"memory_mb": self.memory_mb, "cold_start_ms": self.cold_start_ms,
                "latency_ms": {str(b): list(v) for b, v in sorted(self.latency_ms.items())}}

    @staticmethod
    def from_dict(d: Mapping) -> "FunctionProfile":
        return FunctionProfile(int(d["memory_mb"]), {int(b): (float(v[0]), float(v[1])) for b, v in d["latency_ms"].items()},
                               float(d["cold_start_ms"]))


def function_profile_of(profile: Profile) -> FunctionProfile:
    """The tier's view of a ``lambda`` variant's stored profile: its latency at the chosen memory
    size (``Profile.memory_mb``), its cold start in ``load_ms``."""
    if not profile.memory_mb:
        raise ValueError(f"a profile of hardware {profile.hardware!r} has no function memory size")
    return FunctionProfile(profile.memory_mb, dict(profile.latency_ms), profile.load_ms)


def choose_memory(profiles: Iterable[FunctionProfile], objective_ms: float, batch: int = 1) -> FunctionProfile | None:
    """The memory size with the lowest cost per request whose warm p99 at ``batch`` meets
    ``objective_ms``; on equal cost the faster (lower p99), then the smaller size. None if no size
    meets the objective."""
    meets = [p for p in profiles if p.latency_at(batch, "p99") <= objective_ms]
    if not meets:
        return None
    return min(meets, key=lambda p: (p.cost_per_request(batch), p.latency_at(batch, "p99"), p.memory_mb))


# -- the warm pool ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pool:
    """One variant's execution environments: last-used times of the idle warm ones (ascending), and
    how many invocations are running."""

    idle: tuple[float, ...] = ()
    in_flight: int = 0


@dataclass(frozen=True)
class TierState:
    """The warm pool of the whole tier at one moment. ``pools`` is never changed in place: every
    step returns a new state."""

    pools: Mapping[str, Pool] = dataclasses.field(default_factory=dict)
    concurrency: int = DEFAULT_CONCURRENCY
    keep_warm_s: float = KEEP_WARM_S

    def pool(self, vid: str) -> Pool:
        return self.pools.get(vid, Pool())

    def _with(self, vid: str, pool: Pool) -> "TierState":
        pools = dict(self.pools)
        if pool.idle or pool.in_flight:
            pools[vid] = pool
        else:
            pools.pop(vid, None)
        return dataclasses.replace(self, pools=pools)


def warm_idle(state: TierState, vid: str, now: float) -> tuple[float, ...]:
    """Last-used times of ``vid``'s idle environments still warm at ``now`` (used less than
    ``keep_warm_s`` ago)."""
    return tuple(t for t in state.pool(vid).idle if now - t < state.keep_warm_s)


def expire(state: TierState, now: float) -> TierState:
    """The state with every environment idle for ``keep_warm_s`` or more gone."""
    pools = {}
    for vid, pool in state.pools.items():
        kept = Pool(warm_idle(state, vid, now), pool.in_flight)
        if kept.idle or kept.in_flight:
            pools[vid] = kept
    return dataclasses.replace(state, pools=pools)


def in_flight(state: TierState) -> int:
    return sum(p.in_flight for p in state.pools.values())


def available(state: TierState, now: float) -> int:
    """Invocations that may start at ``now`` before the account's concurrency limit throttles them
    (idle warm environments do not count against it: only running invocations do)."""
    return max(0, state.concurrency - in_flight(state))


def cold_probability(state: TierState, vid: str, now: float) -> float:
    """The chance that an invocation of ``vid`` starting at ``now`` starts cold: 0 when an idle warm
    environment is there to take it, else 1. (Within the concurrency limit; beyond it the
    invocation is throttled, which ``available`` and ``predict_ms`` say.)"""
    return 0.0 if warm_idle(state, vid, now) else 1.0


def acquire(state: TierState, vid: str, now: float) -> tuple[TierState, bool]:
    """An invocation of ``vid`` starts at ``now``: it takes the most recently used idle warm
    environment (so the others age out first), else starts a cold one. Returns (new state, cold).
    Raises ``Throttled`` when no concurrency is left."""
    if available(state, now) <= 0:
        raise Throttled(f"concurrency limit {state.concurrency} reached")
    idle = warm_idle(state, vid, now)
    cold = not idle
    pool = Pool(idle[:-1] if idle else (), state.pool(vid).in_flight + 1)
    return state._with(vid, pool), cold


def release(state: TierState, vid: str, now: float) -> TierState:
    """An invocation of ``vid`` ends at ``now``: its environment becomes idle and warm, last used now."""
    pool = state.pool(vid)
    if pool.in_flight <= 0:
        raise ValueError(f"no invocation of {vid} is in flight")
    idle = tuple(sorted((*warm_idle(state, vid, now), float(now))))
    return state._with(vid, Pool(idle, pool.in_flight - 1))


def predict_ms(profile: FunctionProfile, state: TierState, vid: str, now: float, batch: int = 1) -> tuple[float, float]:
    """(latency ms, cold probability) of an invocation of ``vid`` at ``now`` with ``batch`` rows: the
    warm p99, plus the whole cold start whenever the cold probability is above 0 (the conservative
    case). Infinite when the concurrency limit would throttle it."""
    p = cold_probability(state, vid, now)
    if available(state, now) <= 0:
        return math.inf, p
    return profile.latency_at(batch, "p99") + (profile.cold_start_ms if p > 0 else 0.0), p


# -- the function's contract (functions/inference/handler.py) ---------------------------------------------
# What the data plane sends and reads back, whatever runs the function (AWS Lambda, or the local
# stand-in processes): pure encoding, no I/O. Arrays travel as one base64 ``.npz`` (exact dtypes and
# shapes, about 4/3 of their bytes), and the answer's outputs come back the same way.
def invocation_event(variant_id: str, model_key: str, arrays: Mapping, outputs: Iterable[str] | None = None,
                     query_id: str | None = None) -> bytes:
    """The invocation's JSON payload. Raises ``PayloadTooLarge`` over the synchronous limit (the
    caller sends such a query to a machine instead)."""
    import base64
    import io
    import json

    import numpy as np

    from infaas.core.errors import PayloadTooLarge

    buf = io.BytesIO()
    np.savez(buf, **{name: np.asarray(a) for name, a in arrays.items()})
    event = {"variant_id": variant_id, "model_key": model_key, "inputs": base64.b64encode(buf.getvalue()).decode("ascii")}
    if outputs:
        event["outputs"] = list(outputs)
    if query_id:
        event["id"] = query_id
    payload = json.dumps(event, separators=(",", ":")).encode()
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(f"the invocation would be {len(payload):,} bytes, over the function tier's synchronous "
                              f"limit of {MAX_PAYLOAD_BYTES:,} (6 MB)", field="inputs")
    return payload


def invocation_answer(payload: bytes | Mapping, memory_mb: int) -> tuple[dict, dict]:
    """(outputs by name, info) of the function's answer: ``info`` holds ``cold``, ``init_ms``,
    ``run_ms``, ``memory_mb``, ``billed_ms`` (init and run as billed) and ``cost`` (USD, the request
    price included). A refusal the function answered (``{"error", "status"}``) is raised as the
    product's error; an answer that is not the function's is a ``VariantFault``."""
    import base64
    import io
    import json

    import numpy as np

    from infaas.core.errors import VariantFault, decode

    try:
        doc = json.loads(payload) if isinstance(payload, (bytes, bytearray, str)) else dict(payload)
    except ValueError:
        raise VariantFault(f"the function answered something that is not JSON: {bytes(payload)[:200]!r}") from None
    if not isinstance(doc, dict):
        raise VariantFault(f"the function answered {type(doc).__name__}, not an object")
    if "error" in doc:
        status = doc.get("status") if isinstance(doc.get("status"), int) else 502
        raise decode(status, json.dumps(doc["error"]).encode())
    try:
        raw = doc["outputs"]
        if isinstance(raw, str):
            with np.load(io.BytesIO(base64.b64decode(raw)), allow_pickle=False) as z:
                outputs = {name: z[name] for name in z.files}
        else:
            from infaas.core.oip import tensors_from_json

            outputs = tensors_from_json(raw)
        init_ms, run_ms = float(doc.get("init_ms") or 0.0), float(doc.get("run_ms") or 0.0)
    except Exception as exc:  # noqa: BLE001 - a malformed answer is the function's fault
        raise VariantFault(f"the function's answer is malformed: {type(exc).__name__}: {str(exc)[:200]}") from None
    size = int(doc.get("memory_mb") or memory_mb)
    billed = billed_ms(init_ms + run_ms)
    info = {"cold": bool(doc.get("cold")), "environment_cold": bool(doc.get("environment_cold")), "init_ms": init_ms,
            "run_ms": run_ms, "memory_mb": size, "billed_ms": billed,
            "cost": invocation_cost(billed, min(max(size, MIN_MEMORY_MB), MAX_MEMORY_MB)), "rows": doc.get("rows")}
    return outputs, info


def function_size(memory_mb: int, deployed: Iterable[int]) -> int | None:
    """The deployed function size that runs a variant profiled at ``memory_mb``: that size, else
    the smallest larger one (more CPU, never less memory), else None."""
    sizes = sorted(set(int(s) for s in deployed))
    return next((s for s in sizes if s >= memory_mb), None)
