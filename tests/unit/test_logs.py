"""The structured logger (``adapters/logs.py``): JSON lines with the request id."""

from __future__ import annotations

import io
import json
import logging

import pytest

from infaas.adapters import logs


@pytest.fixture
def stream():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    out = io.StringIO()
    logs.configure("worker", level="INFO", stream=out)
    yield out
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


def lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_lines_carry_the_request_id_of_the_query_being_handled(stream):
    log = logging.getLogger("logs-under-test.worker")  # outside "infaas": Powertools may own those loggers
    log.info("before")
    token = logs.REQUEST_ID.set("trace-1")
    try:
        log.warning("during %s", "work")
    finally:
        logs.REQUEST_ID.reset(token)
    log.info("after")
    before, during, after = lines(stream)
    assert "request_id" not in before and "request_id" not in after
    assert during["request_id"] == "trace-1" and during["message"] == "during work"
    assert during["level"] == "WARNING" and during["service"] == "worker" and during["logger"] == "logs-under-test.worker"
    assert during["location"].startswith("test_lines_carry_the_request_id")
    assert during["timestamp"].endswith("Z")


def test_exceptions_are_one_json_field(stream):
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("logs-under-test.api").exception("failed")
    (line,) = lines(stream)
    assert line["message"] == "failed" and "ValueError: boom" in line["exception"]


@pytest.mark.parametrize("given, kept", [
    (b"abc-123", True), (b"A.b_c-9", True), (b"x" * 64, True),
    (b"x" * 65, False), (b"a b", False), (b'a"b', False), (b"\xff", False), (b"", False), (None, False),
])
def test_a_callers_id_is_kept_only_when_safe_to_log_and_echo(given, kept):
    rid = logs.request_id_from(given)
    assert (rid == (given or b"").decode("latin-1")) is kept
    if not kept:
        assert len(rid) == 32 and int(rid, 16) >= 0
