"""One validated settings object per process, read once from the environment.

Every setting is ``INFAAS_<NAME>``; a bad value stops the process with a
message naming the variable and the value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Mapping

from infaas.core.domain import HardwareType

DEFAULT_PRICES = "cpu=0.085,gpu=0.526,inferentia=0.7582"


class SettingsError(ValueError):
    pass


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
    refuse_late: str = "off"  # "on": a query every replica would answer past its latency_ms gets 503 + Retry-After
    offline_root: str = ""  # local folders offline jobs may read and write; default <data_dir>/offline
    offline_max_files: int = 100_000  # input files per job
    offline_visibility_s: float = 30.0  # an item a worker took and did not finish is retried after this
    offline_quiet_s: float = 0.2  # a worker runs offline items only after this long without online requests
    snapshot_s: float = 0.2  # how often the API refreshes its view of the cluster
    worker_memory_bytes: int = 2 << 30  # replica memory budget per worker
    worker_threads: int = 1  # onnxruntime intra-op threads per replica
    request_timeout_s: float = 10.0  # API -> worker
    profile_timeout_s: float = 300.0
    profile_memory_bytes: int = 4 << 30
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
        if self.auth not in ("keys", "off"):
            raise SettingsError(f"INFAAS_AUTH={self.auth!r}: expected 'keys' or 'off'")
        if self.backend not in ("local", "aws"):
            raise SettingsError(f"INFAAS_BACKEND={self.backend!r}: expected 'local' or 'aws'")
        unpriced = [h for h in self.build_hardware_types if h not in self.hardware]
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
            try:
                value = kind(raw)
            except ValueError:
                raise SettingsError(f"{var}={raw!r}: expected {kind.__name__}") from None
            if kind in (int, float) and value < 0:
                raise SettingsError(f"{var}={raw!r}: must be >= 0")
            values[f.name] = value
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
