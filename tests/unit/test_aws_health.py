"""The workers' health from their heartbeats (``infaas.adapters.aws.fleet.judge_health``), on a fake clock:
an instance is judged only after the grace, then by how long its worker has been silent."""

from __future__ import annotations

from infaas.adapters.aws.fleet import judge_health

GRACE, MISSED = 600.0, 180.0


class Periods:
    """The autoscaler's periods: each feeds the previous verdict's memory to the next."""

    def __init__(self) -> None:
        self.now, self.memory = 1_000.0, {}

    def run(self, in_service, heartbeats, advance: float = 60.0):
        verdict = judge_health(in_service, heartbeats, self.memory, self.now, grace_s=GRACE, missed_s=MISSED)
        self.memory = verdict.memory
        self.now += advance
        return verdict


def test_a_worker_that_never_heartbeats_is_unhealthy_once_the_grace_is_over():
    p = Periods()
    verdicts = [p.run(["i-a"], {}) for _ in range(11)]  # t = 0, 60, ..., 600 s after it was first seen
    assert [v.unhealthy for v in verdicts[:10]] == [()] * 10  # inside the grace: installing
    assert verdicts[10].unhealthy == ("i-a",)
    assert "no heartbeat ever" in verdicts[10].reasons[0]


def test_a_heartbeating_worker_stays_healthy_past_the_grace():
    p = Periods()
    for _ in range(30):
        assert p.run(["i-a"], {"i-a": p.now - 1.0}).unhealthy == ()


def test_a_worker_that_stops_heartbeating_is_unhealthy_after_the_missed_time():
    p = Periods()
    for _ in range(12):  # 11 minutes of heartbeats: past the grace
        p.run(["i-a"], {"i-a": p.now - 1.0})
    last = p.now - 60.0 - 1.0
    verdicts = [p.run(["i-a"], {}) for _ in range(4)]  # silent from here on
    assert [v.unhealthy for v in verdicts[:2]] == [(), ()]  # 61 s, 121 s: one missed period is not a fault
    assert verdicts[2].unhealthy == ("i-a",)  # 181 s >= 180 s
    assert verdicts[2].memory["i-a"]["beat"] == last


def test_a_short_gap_of_records_is_not_a_fault():
    """A worker record can be missing in one period (its TTL ran out between two heartbeats that were
    late): the last heartbeat seen is remembered, so one period without a record does nothing."""
    p = Periods()
    for i in range(20):
        beats = {} if i % 2 else {"i-a": p.now - 1.0}
        assert p.run(["i-a"], beats).unhealthy == ()


def test_a_worker_that_dies_inside_the_grace_waits_for_the_grace():
    p = Periods()
    p.run(["i-a"], {"i-a": p.now})
    verdicts = [p.run(["i-a"], {}) for _ in range(10)]
    assert all(v.unhealthy == () for v in verdicts[:9])  # 60..540 s: still inside the grace
    assert verdicts[9].unhealthy == ("i-a",)  # 600 s in service, silent for 600 s


def test_instances_that_left_are_forgotten_and_new_ones_start_their_own_grace():
    p = Periods()
    for _ in range(11):
        p.run(["i-a"], {"i-a": p.now})
    verdict = p.run(["i-b"], {})
    assert set(verdict.memory) == {"i-b"} and verdict.unhealthy == ()
    assert verdict.memory["i-b"]["seen"] == p.now - 60.0


def test_judging_is_pure():
    memory = {"i-a": {"seen": 0.0}}
    judge_health(["i-a"], {}, memory, 10_000.0, grace_s=GRACE, missed_s=MISSED)
    assert memory == {"i-a": {"seen": 0.0}}
