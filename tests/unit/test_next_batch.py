"""``batching.next_batch``: which queued requests a replica's next batch runs. Rows still in time go
first, and the batch is no longer than the oldest of them can wait for; rows already late run once
none in time is left, never dropped. The burst cases replay a clump on a fake clock."""

from __future__ import annotations

import math

from infaas.core.batching import next_batch


def per_row(ms: float):
    return lambda rows: ms * rows


def test_in_time_requests_run_oldest_first_up_to_the_batch_limit():
    queue = [(1000.0 + k, 1) for k in range(12)]
    assert next_batch(queue, 0.0, per_row(10), 8) == list(range(8))


def test_a_request_late_even_alone_waits_behind_those_still_in_time():
    # the first two would finish at 10 ms, past their deadlines (5 ms): the batch skips them
    queue = [(5.0, 1), (5.0, 1), (300.0, 1), (300.0, 1)]
    assert next_batch(queue, 0.0, per_row(10), 8) == [2, 3]
    # with none in time left, the late ones run, oldest first: answered, not dropped
    assert next_batch([(5.0, 1), (6.0, 1), (7.0, 1)], 0.0, per_row(10), 2) == [0, 1]


def test_the_batch_is_cut_to_what_the_oldest_in_time_request_can_wait_for():
    # 8 rows would take 80 ms; the oldest must be answered within 45 ms: 4 rows (40 ms) run
    queue = [(45.0, 1)] + [(300.0, 1)] * 7
    assert next_batch(queue, 0.0, per_row(10), 8) == [0, 1, 2, 3]


def test_requests_of_several_rows_and_one_over_the_limit():
    assert next_batch([(math.inf, 3), (math.inf, 4), (math.inf, 2)], 0.0, per_row(1), 8) == [0, 1]
    assert next_batch([(math.inf, 20), (math.inf, 1)], 0.0, per_row(1), 8) == [0]  # runs alone
    # no objective (deadline inf): always in time
    assert next_batch([(math.inf, 1)] * 3, 1e12, per_row(1), 8) == [0, 1, 2]


def test_the_queue_is_read_only_as_far_as_the_batch_needs():
    def queue():
        for k in range(10_000):
            if k > 8:
                raise AssertionError("read past the batch")
            yield (1000.0, 1)

    assert next_batch(queue(), 0.0, per_row(1), 8) == list(range(8))


def replay(arrivals_ms, objective_ms, batch_ms, max_batch, choose):
    """One replica on a fake clock: batches one at a time, each taking ``batch_ms(rows)``; ``choose``
    picks the next batch from the queue. Returns every row's finish time (ms), by arrival."""
    finish = [math.nan] * len(arrivals_ms)
    queue: list[int] = []
    now, i = 0.0, 0
    while i < len(arrivals_ms) or queue:
        while i < len(arrivals_ms) and arrivals_ms[i] <= now:
            queue.append(i)
            i += 1
        if not queue:
            now = arrivals_ms[i]
            continue
        take = choose([(arrivals_ms[k] + objective_ms, 1) for k in queue], now, batch_ms, max_batch)
        now += batch_ms(len(take))
        for pos in sorted(take, reverse=True):
            finish[queue.pop(pos)] = now
    return finish


def fifo(queue, now, batch_ms, max_batch):
    return list(range(min(len(list(queue)), max_batch)))


def test_a_clump_behind_rows_already_late_is_answered_in_time():
    """The case that decides bursty traffic: a clump the replica cannot clear in time (40 rows at
    0 ms), then a second one (12 rows at 250 ms). First come, first served answers the second
    clump late too, behind rows that were late anyway; ``next_batch`` answers it in time and
    still answers every row."""
    arrivals = [0.0] * 64 + [150.0] * 12
    batch_ms = lambda rows: 20.0 + 5.0 * rows  # noqa: E731 - 60 ms for a batch of 8
    on_time = {}
    for name, rule in (("fifo", fifo), ("next_batch", next_batch)):
        finish = replay(arrivals, 300.0, batch_ms, 8, rule)
        assert not any(math.isnan(f) for f in finish), name  # every row answered
        on_time[name] = [f - a <= 300.0 for f, a in zip(finish, arrivals)]
    assert sum(on_time["next_batch"][64:]) == 12 and sum(on_time["fifo"][64:]) == 0
    assert sum(on_time["next_batch"][:64]) == sum(on_time["fifo"][:64]) == 40  # the first clump loses nothing


def test_the_cut_keeps_every_request_taken_in_time_not_only_the_oldest():
    # the oldest has no objective; the second must be answered within 45 ms: 4 rows, not 8
    queue = [(math.inf, 1), (45.0, 1)] + [(300.0, 1)] * 6
    assert next_batch(queue, 0.0, per_row(10), 8) == [0, 1, 2, 3]


def test_a_request_long_overdue_runs_first_so_none_waits_for_ever():
    queue = [(5.0, 1)] + [(10_000.0, 1)] * 3
    assert next_batch(queue, 100.0, per_row(10), 8) == [1, 2, 3]  # late, not yet overdue: behind
    assert next_batch(queue, 100.0, per_row(10), 8, overdue_ms=50.0) == [0, 1, 2, 3]  # overdue: oldest first
