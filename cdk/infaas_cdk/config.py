"""Deployment parameters, read from CDK context.

Every parameter is a flat context key with a string value, so any of them can
be given on the command line (``cdk deploy -c infaas:gpu:max=4``); defaults
live in ``cdk.json``. ``load_cdk_json_context`` reads that file for runs of
``python cdk/app.py`` without the CLI (the CLI passes it itself).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

ROOT = Path(__file__).resolve().parents[2]
HARDWARE = ("cpu", "gpu", "inferentia")
TIER_HARDWARE = "lambda"  # the serverless CPU tier's variants (infaas.core.tier.HARDWARE): no fleet of its own
TIER_MEMORY_MB = (512, 1024, 1769, 3008)  # the sizes a lambda variant is profiled at (runtime/function_profile.py)
WORKER_PORT = 9000
LAMBDA_PYTHON = "3.12"  # layers/build.py builds for this version


# Per hardware type: instance type, group bounds, hourly price (us-east-1 on-demand, verify
# before relying on it), and the machine image (see worker_ami/README.md for why these).
FLEET_DEFAULTS = {
    "cpu": {"instance_type": "c6i.large", "min": "1", "max": "4", "price": "0.085", "ami": "",
            "root_device": "/dev/xvda", "root_gb": "30"},
    "gpu": {"instance_type": "g4dn.xlarge", "min": "0", "max": "2", "price": "0.526",
            "ami": "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id",
            "root_device": "/dev/xvda", "root_gb": "100"},
    "inferentia": {"instance_type": "inf2.xlarge", "min": "0", "max": "2", "price": "0.7582",
                   "ami": "/aws/service/neuron/dlami/multi-framework/ubuntu-24.04/latest/image_id",
                   "root_device": "/dev/sda1", "root_gb": "100"},
}


@dataclass(frozen=True)
class FleetConfig:
    hardware: str
    instance_type: str
    min_size: int
    max_size: int
    price_per_hour: float  # on-demand, for the scaling policy's cost decisions (INFAAS_HARDWARE_PRICES)
    ami_parameter: str | None  # an SSM parameter naming the image; None = Amazon Linux 2023
    root_device: str
    root_gb: int


@dataclass(frozen=True)
class DeployConfig:
    region: str | None
    max_azs: int
    fleets: dict[str, FleetConfig]
    build_hardware: str
    api_rate_rps: float
    api_burst: int
    latency_alarm_ms: float
    retain_data: bool
    require_artifacts: bool
    ssm: bool = True  # Session Manager on the workers (three interface endpoints)
    # The serverless CPU tier (docs/function-tier.md): one inference function per memory size, invoked by the
    # selector when no worker answers in time; lambda variants built for every CPU model
    tier: bool = True
    tier_memory_mb: tuple[int, ...] = TIER_MEMORY_MB
    tier_concurrency: int = 10  # what the selector plans with: a new account's quota until AWS raises it

    @staticmethod
    def from_context(get: Callable[[str], Any]) -> "DeployConfig":
        def text(key: str, default: str = "") -> str:
            value = get(f"infaas:{key}")
            return default if value is None else str(value).strip()

        def number(key: str, default: str, kind=int):
            raw = text(key, default)
            try:
                value = kind(raw)
            except ValueError:
                raise ValueError(f"context infaas:{key}={raw!r}: expected {kind.__name__}") from None
            if value < 0:
                raise ValueError(f"context infaas:{key}={raw!r}: must be >= 0")
            return value

        def flag(key: str, default: str) -> bool:
            raw = text(key, default).lower()
            if raw not in ("true", "false"):
                raise ValueError(f"context infaas:{key}={raw!r}: expected true or false")
            return raw == "true"

        fleets = {}
        for hw in HARDWARE:
            d = FLEET_DEFAULTS[hw]
            f = FleetConfig(
                hardware=hw,
                instance_type=text(f"{hw}:instance_type", d["instance_type"]),
                min_size=number(f"{hw}:min", d["min"]),
                max_size=number(f"{hw}:max", d["max"]),
                price_per_hour=number(f"{hw}:price_per_hour", d["price"], float),
                ami_parameter=text(f"{hw}:ami_parameter", d["ami"]) or None,
                root_device=d["root_device"],
                root_gb=int(d["root_gb"]),
            )
            if not f.min_size <= f.max_size:
                raise ValueError(f"context infaas:{hw}: need min <= max, got {f.min_size} > {f.max_size}")
            fleets[hw] = f
        tier_raw = text("tier", "on").lower()
        if tier_raw not in ("on", "off"):
            raise ValueError(f"context infaas:tier={tier_raw!r}: expected on or off")
        tier = tier_raw == "on"
        sizes_raw = text("tier:memory_mb", ",".join(str(m) for m in TIER_MEMORY_MB))
        try:
            sizes = tuple(sorted({int(m) for m in sizes_raw.split(",") if m.strip()}))
        except ValueError:
            raise ValueError(f"context infaas:tier:memory_mb={sizes_raw!r}: expected sizes in MB, e.g. 512,1024") from None
        if not sizes or any(not 128 <= m <= 10240 for m in sizes):
            raise ValueError(f"context infaas:tier:memory_mb={sizes_raw!r}: sizes must be 128..10240 MB")
        build = text("build_hardware", "cpu")
        kinds = [h.strip() for h in build.split(",") if h.strip()]
        unknown = [h for h in kinds if h not in HARDWARE and not (tier and h == TIER_HARDWARE)]
        if unknown:
            raise ValueError(f"context infaas:build_hardware: unknown hardware types {unknown}"
                             + (" (lambda needs infaas:tier=on)" if TIER_HARDWARE in unknown else ""))
        if tier and "cpu" in kinds and TIER_HARDWARE not in kinds:  # the tier runs every CPU model
            build = ",".join([*kinds, TIER_HARDWARE])
        return DeployConfig(
            region=text("region") or None,
            max_azs=max(1, number("max_azs", "2")),
            fleets=fleets,
            build_hardware=build,
            api_rate_rps=number("api_rate_rps", "200", float),
            api_burst=number("api_burst", "400"),
            latency_alarm_ms=number("latency_alarm_ms", "200", float),
            retain_data=flag("retain_data", "true"),
            require_artifacts=flag("require_artifacts", "false"),
            ssm=flag("ssm", "true"),
            tier=tier,
            tier_memory_mb=sizes,
            tier_concurrency=max(1, number("tier:concurrency", "10")),
        )


def hardware_prices(config: DeployConfig) -> str:
    """``INFAAS_HARDWARE_PRICES`` for every process of the deployment."""
    return ",".join(f"{hw}={f.price_per_hour:g}" for hw, f in config.fleets.items())


def load_cdk_json_context(path: Path = ROOT / "cdk.json") -> dict[str, Any]:
    """The ``context`` of cdk.json: feature flags and the defaults above."""
    return dict(json.loads(path.read_text()).get("context", {}))


def context_getter(values: Mapping[str, Any]) -> Callable[[str], Any]:
    return values.get
