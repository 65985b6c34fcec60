"""One validated settings object per process, read once from the environment.

Every setting is ``INFAAS_<NAME>``; a bad value stops the process with a
message naming the variable and the value.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, fields
from typing import Mapping

from infaas.core.domain import HardwareType
from infaas.core.tier import HARDWARE as FUNCTION_HARDWARE

DEFAULT_PRICES = "cpu=0.085,gpu=0.526,inferentia=0.7582"


class SettingsError(ValueError):
    pass


# --- field readers -----------------------------------------------------------
# Shared by every entry point that reads the environment (``Settings.from_env``,
# ``infaas.wiring.aws``, the Lambda handlers, the worker machine's scripts), so
# that a bad value always stops the process with the variable's name, the value
# and what was expected. ``parse_*`` check one raw string; ``env_*`` read it
# from an environment mapping, where unset or blank means "use the default".


def _bounds(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"between {low} and {high}"
    if low is not None:
        return f">= {low}"
    return f"<= {high}"


def _check_range(name: str, raw: str, value: float, low: float | None, high: float | None) -> None:
    if (low is not None or high is not None) and not (
        (low is None or value >= low) and (high is None or value <= high)  # NaN fails both comparisons
    ):
        raise SettingsError(f"{name}={raw!r}: must be {_bounds(low, high)}")


def parse_int(name: str, raw: str, low: int | None = None, high: int | None = None) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected an integer") from None
    _check_range(name, raw, value, low, high)
    return value


def parse_float(name: str, raw: str, low: float | None = None, high: float | None = None) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a number") from None
    if math.isnan(value):
        raise SettingsError(f"{name}={raw!r}: expected a number")
    _check_range(name, raw, value, low, high)
    return value


def parse_json_object(name: str, raw: str, shape: str = "{name: string}", *, non_empty: bool = False) -> dict[str, str]:
    """A JSON object of strings to strings, e.g. ``{"cpu": "group-name"}``."""
    expected = f"{name}={raw!r}: expected a {'non-empty ' if non_empty else ''}JSON object {shape}"
    try:
        value = json.loads(raw)
    except ValueError:
        raise SettingsError(expected) from None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise SettingsError(expected)
    if non_empty and not value:
        raise SettingsError(expected)
    return dict(value)


def _env_raw(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name)
    return None if raw is None or not raw.strip() else raw.strip()


def env_int(env: Mapping[str, str], name: str, default: int, low: int | None = None, high: int | None = None) -> int:
    raw = _env_raw(env, name)
    return default if raw is None else parse_int(name, raw, low, high)


def env_float(
    env: Mapping[str, str], name: str, default: float, low: float | None = None, high: float | None = None
) -> float:
    raw = _env_raw(env, name)
    return default if raw is None else parse_float(name, raw, low, high)


def env_str(env: Mapping[str, str], name: str, default: str = "") -> str:
    raw = _env_raw(env, name)
    return default if raw is None else raw


def env_str_required(env: Mapping[str, str], name: str, why: str = "") -> str:
    raw = _env_raw(env, name)
    if raw is None:
        raise SettingsError(f"{name} is not set" + (f": {why}" if why else ""))
    return raw


def env_json_object(
    env: Mapping[str, str],
    name: str,
    shape: str = "{name: string}",
    *,
    required: bool = False,
    non_empty: bool = False,
) -> dict[str, str] | None:
    """The variable's JSON object; None when it is unset or blank and not ``required``."""
    raw = _env_raw(env, name)
    if raw is None:
        if required:
            raise SettingsError(f"{name} is not set: expected a {'non-empty ' if non_empty else ''}JSON object {shape}")
        return None
    return parse_json_object(name, raw, shape, non_empty=non_empty)


def parse_prices(text: str) -> dict[str, HardwareType]:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, price = part.partition("=")
        try:
            value = float(price)
        except ValueError:
            raise SettingsError(f"INFAAS_HARDWARE_PRICES: {part!r} is not name=dollars_per_hour") from None
        if value < 0 or not name:
            raise SettingsError(f"INFAAS_HARDWARE_PRICES: {part!r} needs a name and a price >= 0")
        out[name] = HardwareType(name, value)
    return out


def parse_counts(text: str, var: str) -> dict[str, int]:
    """``cpu=1,gpu=0`` -> {"cpu": 1, "gpu": 0}."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, n = part.partition("=")
        if not name or not n.isdigit():
            raise SettingsError(f"{var}: {part!r} is not hardware=count")
        out[name] = int(n)
    return out


@dataclass(frozen=True)
class Settings:
    data_dir: str = ".infaas-data"
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 2  # local worker processes (one per core is the default shape)
    hardware_prices: str = DEFAULT_PRICES
    build_hardware: str = "cpu"  # hardware types this deployment builds variants for (comma-separated)
    backend: str = "local"  # "local" (SQLite, folder) or "aws" (DynamoDB, S3, SQS)
    auth: str = "keys"  # "keys": every request needs an API key; "off": one local tenant, all scopes
    tenant_rps: float = 5000.0  # requests per second per tenant (0 = unlimited); above one machine's capacity
    tenant_burst: float = 10000.0  # requests a tenant may send at once above its rate
    max_body_bytes: int = 8 << 20  # inference and control requests other than uploads
    max_upload_bytes: int = 200 << 20  # model uploads
    max_rows: int = 4096  # rows per inference request
    max_models_per_tenant: int = 100  # architectures one tenant may hold (0 = no limit): builds and listings are shared
    # HTTP connections per server (API and each worker); beyond it, connections without a request in
    # progress are closed first, then newcomers get 503 (adapters/http/guard.py)
    max_connections: int = 1000
    header_timeout_s: float = 10.0  # a request header must arrive whole within this, or 408
    body_timeout_s: float = 30.0  # the longest gap between pieces of a request body
    heartbeat_s: float = 0.5
    heartbeat_ttl_s: float = 3.0  # a worker silent this long is out of selection
    suspect_s: float = 2.0  # a worker that just failed a request is out of selection this long
    autoscale: str = "on"  # "on": the control loop adds and removes replicas and workers; "off": fixed
    scale_period_s: float = 2.0  # control loop period
    scale_target_utilisation: float = 0.7  # share of profiled throughput planned per replica and worker
    scale_down_periods: int = 5  # consecutive periods asking for less before removing
    scale_cooldown_s: float = 10.0  # no removal this soon after a change
    scale_idle_unload_s: float = 60.0  # a variant unused this long loses its last replica
    min_workers: str = ""  # per hardware type, e.g. "cpu=1"; default: cpu = workers
    max_workers: str = ""  # per hardware type, e.g. "cpu=4"; default: cpu = max(workers, cores): one worker process per core
    budget_per_hour: float = 0.0  # dollars per hour for all workers; 0 = no cap
    scale_worker_release_s: float = 60.0  # a hardware type sheds workers only after asking for fewer this long
    # A pinned fleet (a type whose min and max workers are equal, paid for whether used or not) is
    # filled with the most accurate replicas this latency objective allows (ms); 0 = off
    scale_fill_fleet_ms: float = 0.0
    # the latency objective the service's queries ask for (ms): hardware moves keep to it, and
    # replicas are sized for the typical sub-second clump answered within it; 0 = neither
    scale_latency_ms: float = 0.0
    refuse_late: str = "off"  # "on": a query every replica would answer past its latency_ms gets 503 + Retry-After
    offline_root: str = ""  # local folders offline jobs may read and write; default <data_dir>/offline
    # s3://bucket/prefix under which each tenant's offline jobs read and write (<prefix>/<tenant>/...);
    # unset: s3:// locations are refused (on AWS the deployment sets it)
    offline_s3_root: str = ""
    offline_max_files: int = 100_000  # input files per job
    offline_visibility_s: float = 30.0  # an item a worker took and stopped extending is retried after this
    offline_item_limit_s: float = 3600.0  # an item that has run this long (waits for online work not counted) fails
    offline_expand_timeout_s: float = 900.0  # a job not made into items this long after its submission ends failed
    offline_quiet_s: float = 0.2  # a worker runs offline items only after this long without online requests
    snapshot_s: float = 0.2  # how often the API refreshes its view of the cluster
    worker_memory_bytes: int = 2 << 30  # replica memory budget per worker
    worker_threads: int = 1  # onnxruntime intra-op threads per replica
    # "process": each CPU replica in a process of its own, its address space capped at the replica
    # budget (runtime/sandbox.py); "thread": in the worker's process (one trusted tenant, no isolation)
    replica_isolation: str = "process"
    max_answer_bytes: int = 32 << 20  # outputs of one batch on a worker; more is a 400 (a model told to answer gigabytes)
    request_timeout_s: float = 10.0  # API -> worker
    # The credential every API -> worker call carries. Locally, when unset, a random one kept
    # in <data_dir>/worker.secret (0600); on AWS the Secrets Manager secret worker_secret_arn names.
    worker_secret: str = ""
    worker_secret_arn: str = ""
    profile_timeout_s: float = 300.0
    profile_memory_bytes: int = 4 << 30
    # The serverless CPU tier (core/tier.py, docs/function-tier.md): "on" lets the selector answer with a
    # ``lambda`` variant when no machine replica does in time; locally its functions are processes on this
    # machine (adapters/local/functions.py), on AWS the stack's inference functions (INFAAS_FUNCTION_NAMES)
    function_tier: str = "off"
    function_keep_warm_s: float = 300.0  # an idle function instance is assumed warm this long (tier.KEEP_WARM_S)
    function_concurrency: int = 0  # invocations at once before throttling; 0: local 4, AWS tier.DEFAULT_CONCURRENCY
    # the share of that concurrency one tenant's invocations may hold at once in one data-plane process
    # (at least one): a tenant whose invocations run long cannot take the tier from the others (1: no limit)
    function_tenant_share: float = 0.5
    hardware: Mapping[str, HardwareType] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.hardware:
            object.__setattr__(self, "hardware", parse_prices(self.hardware_prices))
        if self.autoscale not in ("on", "off"):
            raise SettingsError(f"INFAAS_AUTOSCALE={self.autoscale!r}: expected 'on' or 'off'")
        if not 0 < self.scale_target_utilisation <= 1:
            raise SettingsError(f"INFAAS_SCALE_TARGET_UTILISATION={self.scale_target_utilisation}: expected 0 < x <= 1")
        if self.refuse_late not in ("on", "off"):
            raise SettingsError(f"INFAAS_REFUSE_LATE={self.refuse_late!r}: expected 'on' or 'off'")
        if self.replica_isolation not in ("process", "thread"):
            raise SettingsError(f"INFAAS_REPLICA_ISOLATION={self.replica_isolation!r}: expected 'process' or 'thread'")
        if self.auth not in ("keys", "off"):
            raise SettingsError(f"INFAAS_AUTH={self.auth!r}: expected 'keys' or 'off'")
        if not 1 <= self.offline_visibility_s <= 43_200:
            raise SettingsError(f"INFAAS_OFFLINE_VISIBILITY_S={self.offline_visibility_s}: expected 1 to 43200 seconds "
                                "(SQS's range; a worker extends it while it runs an item)")
        if not self.offline_item_limit_s > 0:
            raise SettingsError(f"INFAAS_OFFLINE_ITEM_LIMIT_S={self.offline_item_limit_s}: expected more than 0 seconds "
                                "(inf for no limit)")
        if self.backend not in ("local", "aws"):
            raise SettingsError(f"INFAAS_BACKEND={self.backend!r}: expected 'local' or 'aws'")
        if self.function_tier not in ("on", "off"):
            raise SettingsError(f"INFAAS_FUNCTION_TIER={self.function_tier!r}: expected 'on' or 'off'")
        if not 0 < self.function_tenant_share <= 1:
            raise SettingsError(f"INFAAS_FUNCTION_TENANT_SHARE={self.function_tenant_share}: expected 0 < x <= 1")
        # the function tier (``lambda``) is priced per invocation (core/tier.py), not per hour
        unpriced = [h for h in self.build_hardware_types if h not in self.hardware and h != FUNCTION_HARDWARE]
        if unpriced:
            raise SettingsError(f"INFAAS_BUILD_HARDWARE: {unpriced} have no price in INFAAS_HARDWARE_PRICES")

    @staticmethod
    def from_env(env: Mapping[str, str] | None = None, **overrides) -> "Settings":
        env = os.environ if env is None else env
        values: dict = {}
        for f in fields(Settings):
            if f.name == "hardware":
                continue
            var = f"INFAAS_{f.name.upper()}"
            if var not in env:
                continue
            raw = env[var]
            kind = type(f.default)
            if kind is int:
                values[f.name] = parse_int(var, raw, low=0)
            elif kind is float:
                values[f.name] = parse_float(var, raw, low=0)
            else:
                values[f.name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return Settings(**values)

    def scaling_params(self):
        """The autoscaling policy's parameters (``infaas.core.scaling.ScalingParams``)."""
        from infaas.core.scaling import ScalingParams

        cores = os.cpu_count() or 1
        lo = parse_counts(self.min_workers, "INFAAS_MIN_WORKERS") or {"cpu": self.workers}
        hi = parse_counts(self.max_workers, "INFAAS_MAX_WORKERS") or {"cpu": max(self.workers, cores)}
        return ScalingParams(
            period_s=self.scale_period_s,
            target_utilisation=self.scale_target_utilisation,
            scale_down_periods=self.scale_down_periods,
            cooldown_s=self.scale_cooldown_s,
            idle_unload_s=self.scale_idle_unload_s,
            min_workers=lo,
            max_workers=hi,
            budget_per_hour=self.budget_per_hour or None,
            worker_release_s=self.scale_worker_release_s,
            fill_fleet_ms=self.scale_fill_fleet_ms or None,
            latency_ms=self.scale_latency_ms or None,
        )

    @property
    def build_hardware_types(self) -> tuple[str, ...]:
        return tuple(h.strip() for h in self.build_hardware.split(",") if h.strip())

    @property
    def offline_root_dir(self) -> str:
        return self.offline_root or os.path.join(self.data_dir, "offline")

    @property
    def db_path(self) -> str:
        return os.path.join(self.data_dir, "metadata.sqlite3")

    @property
    def models_dir(self) -> str:
        return os.path.join(self.data_dir, "models")
