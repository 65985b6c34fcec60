"""``infaas.core.eviction.choose_evictions``: least recently used idle replicas first."""

from __future__ import annotations

from infaas.core.eviction import Resident, choose_evictions


def r(vid: str, mb: int, last_used: float, busy: bool = False) -> Resident:
    return Resident(vid, mb << 20, last_used, busy)


MB = 1 << 20


def test_nothing_to_evict_when_it_fits():
    residents = [r("a", 100, 1), r("b", 100, 2)]
    assert choose_evictions(residents, 500 * MB, 300 * MB) == []  # 200 + 300 = 500 <= 500
    assert choose_evictions([], 500 * MB, 500 * MB) == []


def test_least_recently_used_first_and_only_as_many_as_needed():
    residents = [r("a", 100, last_used=30), r("b", 100, last_used=10), r("c", 100, last_used=20), r("d", 100, last_used=40)]
    # used 400 + incoming 150 = 550 > 400: evict b (10) -> 450 > 400, then c (20) -> 350 <= 400
    assert choose_evictions(residents, 400 * MB, 150 * MB) == ["b", "c"]
    # incoming 50: 450 > 400; evicting b alone -> 350 <= 400
    assert choose_evictions(residents, 400 * MB, 50 * MB) == ["b"]


def test_ties_in_last_use_break_by_variant_id():
    residents = [r("z", 100, 5), r("m", 100, 5), r("a", 100, 9)]
    # used 300 + 100 = 400 > 300: one eviction among the two oldest (both at 5) -> "m" before "z"
    assert choose_evictions(residents, 300 * MB, 100 * MB) == ["m"]


def test_busy_replicas_are_never_evicted():
    residents = [r("oldest-busy", 300, 1, busy=True), r("b", 100, 5), r("c", 100, 7)]
    # used 500 + 100 = 600 > 500: skip the busy one, evict b (5) -> 500 <= 500
    assert choose_evictions(residents, 500 * MB, 100 * MB) == ["b"]
    # incoming 250: evict b -> 650 > 500, c -> 550 > 500, busy one is not an option: cannot fit
    assert choose_evictions(residents, 500 * MB, 250 * MB) is None


def test_none_when_even_evicting_every_idle_replica_is_not_enough():
    assert choose_evictions([r("a", 100, 1), r("b", 100, 2)], 500 * MB, 600 * MB) is None
    assert choose_evictions([r("a", 100, 1, busy=True)], 150 * MB, 100 * MB) is None
    assert choose_evictions([], 100 * MB, 101 * MB) is None


def test_evicting_everything_idle_when_that_is_exactly_enough():
    residents = [r("a", 100, 2), r("b", 100, 1), r("busy", 100, 0, busy=True)]
    # 300 + 200 = 500 > 300: b -> 400 > 300, a -> 300 <= 300
    assert choose_evictions(residents, 300 * MB, 200 * MB) == ["b", "a"]
