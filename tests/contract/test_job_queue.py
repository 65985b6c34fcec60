"""Contract of ``JobQueue`` (see ``infaas.core.ports``), run against every implementation.

Every implementation is built to dead-letter after ``max_receives`` deliveries
(the fixture of that name says how many).
"""

from __future__ import annotations

from infaas.core.ports import JobQueue

LANE = "build-cpu"


def test_implements_the_protocol(job_queue):
    assert isinstance(job_queue, JobQueue)


def test_receive_from_an_empty_lane_is_none(job_queue):
    assert job_queue.receive(LANE) is None
    assert job_queue.depth(LANE) == 0


def test_send_receive_ack(job_queue, clock):
    body = {"kind": "build", "variant": "m:onnx-int8:cpu:b32", "opts": {"batch": [1, 8, 32], "scale": 0.5, "name": "é✓"}}
    job_id = job_queue.send(LANE, body)
    assert isinstance(job_id, str) and job_id
    assert job_queue.depth(LANE) == 1

    got = job_queue.receive(LANE, visibility_s=30)
    assert got is not None
    receipt, received = got
    assert received == body

    # While invisible, nobody else gets it.
    assert job_queue.receive(LANE, visibility_s=30) is None

    job_queue.ack(LANE, receipt)
    assert job_queue.depth(LANE) == 0
    clock.advance(31)  # acked: it never comes back
    assert job_queue.receive(LANE) is None


def test_unacked_message_reappears_after_the_visibility_timeout(job_queue, clock):
    job_queue.send(LANE, {"n": 1})
    first_receipt, _ = job_queue.receive(LANE, visibility_s=30)

    clock.advance(29)
    assert job_queue.receive(LANE, visibility_s=30) is None

    clock.advance(2)  # 31 s after the receive
    again = job_queue.receive(LANE, visibility_s=30)
    assert again is not None
    second_receipt, body = again
    assert body == {"n": 1}
    assert second_receipt != first_receipt

    job_queue.ack(LANE, second_receipt)
    clock.advance(31)
    assert job_queue.receive(LANE) is None
    assert job_queue.depth(LANE) == 0


def test_message_moves_to_the_dead_letter_lane_after_max_receives(job_queue, clock, max_receives):
    job_queue.send(LANE, {"poison": True})

    for _ in range(max_receives):
        got = job_queue.receive(LANE, visibility_s=10)
        assert got is not None and got[1] == {"poison": True}
        clock.advance(11)  # the worker died: no ack

    # The next delivery would be number max_receives + 1: it goes to the DLQ instead.
    assert job_queue.receive(LANE, visibility_s=10) is None
    assert job_queue.depth(LANE) == 0
    assert job_queue.depth(f"{LANE}-dlq") == 1

    dead = job_queue.receive(f"{LANE}-dlq", visibility_s=10)
    assert dead is not None and dead[1] == {"poison": True}
    job_queue.ack(f"{LANE}-dlq", dead[0])
    assert job_queue.depth(f"{LANE}-dlq") == 0


def test_a_message_acked_on_its_last_allowed_delivery_never_reaches_the_dlq(job_queue, clock, max_receives):
    job_queue.send(LANE, {"n": 1})
    for _ in range(max_receives - 1):
        assert job_queue.receive(LANE, visibility_s=10) is not None
        clock.advance(11)
    receipt, _ = job_queue.receive(LANE, visibility_s=10)
    job_queue.ack(LANE, receipt)

    clock.advance(11)
    assert job_queue.receive(LANE) is None
    assert job_queue.depth(LANE) == 0
    assert job_queue.depth(f"{LANE}-dlq") == 0


def test_lanes_are_independent(job_queue, clock):
    job_queue.send("build-cpu", {"hw": "cpu"})
    job_queue.send("build-gpu", {"hw": "gpu"})
    job_queue.send("build-gpu", {"hw": "gpu"})
    assert job_queue.depth("build-cpu") == 1
    assert job_queue.depth("build-gpu") == 2

    receipt, body = job_queue.receive("build-cpu")
    assert body == {"hw": "cpu"}
    assert job_queue.receive("build-cpu") is None  # the gpu lane's messages are not ours
    job_queue.ack("build-cpu", receipt)

    assert job_queue.depth("build-cpu") == 0
    assert job_queue.depth("build-gpu") == 2
    assert job_queue.receive("build-gpu")[1] == {"hw": "gpu"}
    assert job_queue.receive("build-gpu")[1] == {"hw": "gpu"}
    assert job_queue.receive("build-gpu") is None


def test_several_messages_are_each_delivered_once_while_invisible(job_queue, clock):
    for i in range(5):
        job_queue.send(LANE, {"i": i})
    assert job_queue.depth(LANE) == 5

    got = []
    while (m := job_queue.receive(LANE, visibility_s=60)) is not None:
        got.append(m)
    assert sorted(body["i"] for _, body in got) == [0, 1, 2, 3, 4]
    assert len({receipt for receipt, _ in got}) == 5

    for receipt, _ in got[:3]:
        job_queue.ack(LANE, receipt)
    clock.advance(61)  # the two unacked ones are visible again (depth of in-flight ones is not pinned down)
    assert job_queue.depth(LANE) == 2
    redelivered = [job_queue.receive(LANE), job_queue.receive(LANE), job_queue.receive(LANE)]
    assert redelivered[2] is None
    assert sorted(m[1]["i"] for m in redelivered[:2]) == sorted(body["i"] for _, body in got[3:])


def test_extend_keeps_a_message_from_a_second_consumer_and_from_the_dlq(job_queue, clock, max_receives):
    job_queue.send(LANE, {"long": True})
    receipt, _ = job_queue.receive(LANE, visibility_s=30)
    # the consumer is still at it well past max_receives visibility timeouts: extending each 20 s,
    # nobody else receives it, and it is never dead-lettered
    for _ in range(max_receives + 2):
        clock.advance(20)
        assert job_queue.extend(LANE, receipt, 30) is True
        assert job_queue.receive(LANE, visibility_s=30) is None
    job_queue.ack(LANE, receipt)
    clock.advance(31)
    assert job_queue.receive(LANE) is None
    assert job_queue.depth(LANE) == 0 and job_queue.depth(f"{LANE}-dlq") == 0


def test_a_consumer_that_stops_extending_loses_the_message_and_cannot_extend_it_back(job_queue, clock):
    job_queue.send(LANE, {"n": 1})
    first, _ = job_queue.receive(LANE, visibility_s=30)
    clock.advance(20)
    assert job_queue.extend(LANE, first, 30)
    clock.advance(31)  # 31 s after the extension: visible again, and another consumer takes it
    second, body = job_queue.receive(LANE, visibility_s=30)
    assert body == {"n": 1} and second != first
    # (the first receipt no longer holds it: SQLite says so; SQS may accept a stale receipt, and then
    # the first consumer's run goes on beside the second's, as after any redelivery)
    assert isinstance(job_queue.extend(LANE, first, 30), bool)
    clock.advance(20)
    assert job_queue.extend(LANE, second, 30) is True
    clock.advance(20)
    assert job_queue.receive(LANE, visibility_s=30) is None  # the second consumer's extension held
    job_queue.ack(LANE, second)
    assert job_queue.extend(LANE, second, 30) is False  # acknowledged: nothing to extend
    assert job_queue.depth(LANE) == 0
