"""The autoscaler reads the serverless tier's published rate (``app.data.tier_demand``) into its
snapshot: a steady tier load that machines serve for less becomes the machine variant's demand and
gets a worker; a rare one stays on the tier. The real SQLite store, the real ``plan``."""

from __future__ import annotations

import dataclasses

from fakes import make_architecture, make_profile, make_variant

from infaas.adapters.local.sqlite import SqliteDatabase, SqliteItemTable
from infaas.app.autoscaler import Autoscaler
from infaas.app.data import TIER_DEMAND
from infaas.app.store import MetadataStore
from infaas.core import tier
from infaas.core.domain import HardwareType
from infaas.core.scaling import ScalingParams


class Fleet:
    """The fleet port as the plan sees it: desired counts, nothing launched."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {"cpu": 0}

    def desired(self) -> dict[str, int]:
        return dict(self.counts)

    def set_desired(self, hardware: str, count: int) -> None:
        self.counts[hardware] = count

    def drain(self, worker_id: str) -> None:
        pass


def scaler(tmp_path, rate: float):
    now = 1_000_000.0
    store = MetadataStore(SqliteItemTable(SqliteDatabase(str(tmp_path / "db.sqlite3"))), clock=lambda: now)
    profile = make_profile({1: (10.0, 10.0), 8: (40.0, 40.0)})
    cpu = make_variant("net", max_batch=8, profile=profile)
    fn = make_variant("net", hardware=tier.HARDWARE, max_batch=8,
                      profile=dataclasses.replace(profile, hardware=tier.HARDWARE, memory_mb=1769, load_ms=800.0))
    store.create_architecture(make_architecture("net"))
    store.put_variant(cpu)
    store.put_variant(fn)
    store.put_state(TIER_DEMAND, {"entries": {"api-1": {"at": now - 1.0, "rates": {fn.id: rate}}}}, expect_version=0)
    fleet = Fleet()
    params = ScalingParams(min_workers={"cpu": 0}, max_workers={"cpu": 4})
    return Autoscaler(store, fleet, params, {"cpu": HardwareType("cpu", 0.085)}, clock=lambda: now), fleet, cpu


def test_a_steady_tier_load_that_machines_serve_for_less_gets_a_worker(tmp_path):
    auto, fleet, cpu = scaler(tmp_path, rate=300.0)
    result = auto.run_once()
    assert fleet.counts["cpu"] >= 1
    assert any(r.startswith("tier:") and cpu.id in r for r in result.reasons)


def test_a_rare_tier_load_stays_on_the_tier(tmp_path):
    auto, fleet, _ = scaler(tmp_path, rate=0.5)
    result = auto.run_once()
    assert fleet.counts["cpu"] == 0
    assert result is None or not any(r.startswith("tier:") for r in result.reasons)
