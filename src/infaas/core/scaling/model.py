"""The scaling policy's types: its parameters, the snapshot it reads, the state it carries, the plan it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from infaas.core.domain import HardwareType, Variant, Worker


@dataclass(frozen=True)
class ScalingParams:
    period_s: float = 2.0  # how often the policy runs
    target_utilisation: float = 0.7  # share of profiled throughput a replica or worker is planned to use
    demand_decay: float = 0.8  # per period, how slowly the demand estimate falls
    scale_down_periods: int = 5  # consecutive periods asking for less before removing anything
    cooldown_s: float = 10.0  # after a change of a variant or a worker count, no removal for this long
    idle_unload_s: float = 60.0  # a variant with no demand this long loses its last replica
    move_ratio: float = 1.5  # move to other hardware when it is this many times cheaper
    min_workers: Mapping[str, int] = field(default_factory=dict)
    max_workers: Mapping[str, int] = field(default_factory=dict)
    budget_per_hour: float | None = None  # dollars per hour for all workers together (and the tier's invocations)
    budget_headroom: float = 0.05  # share of the budget the plan leaves off its machines: the tier's overflow swings
    latency_ms: float | None = None  # the latency objective queries ask for; hardware moves keep to it
    fill_fleet_ms: float | None = None  # fill pinned types (min == max workers) for this objective; None: off
    peak_halflife_s: float = 120.0  # pinned fleet: how slowly a task's remembered peak demand fades
    size_for_bursts: bool = True  # replicas (and a pinned fleet) sized for the typical sub-second clump too
    burst_halflife_s: float = 30.0  # the typical clump is a moving mean of the busiest windows with this half-life
    serve_weight: float = 0.5  # pinned fleet: what a row answered in time is worth beside its accuracy (0-1)
    clump_margin: float = 1.5  # pinned fleet: sized for this many times the typical clump ...
    outlier_share: float = 0.5  # ... or this share of the busiest recent one, if more (not the busiest itself)
    worker_release_s: float = 60.0  # a worker type shrinks only after asking for fewer this long
    keep_last_s: float = 10.0  # pinned fleet: a task's last replica, busy, delays its worker's switch this long at most

    def __post_init__(self) -> None:
        if not 0.0 <= self.budget_headroom < 1.0:
            raise ValueError(f"budget_headroom must be at least 0 and under 1 (a share of the budget), "
                             f"not {self.budget_headroom}")


@dataclass(frozen=True)
class Snapshot:
    now: float
    workers: tuple[Worker, ...]
    variants: Mapping[str, Variant]  # ready, profiled
    hardware: Mapping[str, HardwareType]
    desired_workers: Mapping[str, int]
    params: ScalingParams = ScalingParams()
    # variant -> (rows/s refused over the period, rows in its busiest sub-second window): demand the
    # selector turned away because every replica would have answered late (``core.burst.Unserved``)
    unserved: Mapping[str, tuple[float, int]] = field(default_factory=dict)
    # lambda variant -> invocations/s of the serverless tier over the period (``core.tier``)
    tier_rps: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PolicyState:
    demand_rps: Mapping[str, float] = field(default_factory=dict)  # variant -> estimate
    replicas: Mapping[str, int] = field(default_factory=dict)  # variant -> target replicas
    lower_periods: Mapping[str, int] = field(default_factory=dict)  # variant or "hw:<type>" -> count
    changed_at: Mapping[str, float] = field(default_factory=dict)  # variant or "hw:<type>" -> time
    last_demand_at: Mapping[str, float] = field(default_factory=dict)  # variant -> last time with demand
    queued_rows: Mapping[str, int] = field(default_factory=dict)  # variant -> rows queued last period
    peak_rps: Mapping[str, float] = field(default_factory=dict)  # task -> remembered peak demand (pinned fleet)
    burst_rows: Mapping[str, float] = field(default_factory=dict)  # variant -> typical rows in its busiest sub-second window
    tier_rps: Mapping[str, float] = field(default_factory=dict)  # lambda variant -> recent rate held (fading)
    kept_since: Mapping[str, float] = field(default_factory=dict)  # worker -> since when its switch waits (pinned fleet)

    def to_dict(self) -> dict:
        return {k: dict(getattr(self, k)) for k in self.__dataclass_fields__}

    @staticmethod
    def from_dict(d: Mapping | None) -> "PolicyState":
        d = d or {}
        return PolicyState(**{k: dict(d.get(k, {})) for k in PolicyState.__dataclass_fields__})


@dataclass(frozen=True)
class ScalingPlan:
    desired_workers: dict[str, int]
    assignments: dict[str, tuple[str, ...]]  # worker id -> variant ids it should hold
    drain: tuple[str, ...]  # workers to drain and release
    reasons: tuple[str, ...]  # one line per change, for the event log

    @property
    def changed(self) -> bool:
        return bool(self.reasons)
