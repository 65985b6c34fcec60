"""The worker's log shipper (``infaas.adapters.aws.logship``) against CloudWatch Logs on moto: the journal's
entries after the saved cursor, in order, in the instance's stream; the cursor saved only once they are in."""

from __future__ import annotations

import json
import time
import uuid
from types import SimpleNamespace

import pytest

from infaas.adapters.aws import logship
from infaas.core.errors import InfaasError

NOW_US = int(time.time() * 1e6)  # CloudWatch takes events of the last 14 days only


def entry(i: int, message="hello", unit="infaas-worker.service") -> str:
    return json.dumps({"__CURSOR": f"c{i}", "__REALTIME_TIMESTAMP": str(NOW_US + i * 1000),
                       "MESSAGE": message, "_SYSTEMD_UNIT": unit})


class Journal:
    """``journalctl`` as a function: the entries after ``--after-cursor``; every call recorded."""

    def __init__(self, lines):
        self.lines, self.calls = list(lines), []

    def __call__(self, args, **kw):
        self.calls.append(args)
        after = next((a.split("=", 1)[1] for a in args if a.startswith("--after-cursor=")), None)
        cursors = [x.split('"__CURSOR": "', 1)[-1].split('"', 1)[0] for x in self.lines]
        start = cursors.index(after) + 1 if after in cursors else 0
        return SimpleNamespace(stdout="\n".join(self.lines[start:]) + "\n", returncode=0)


@pytest.fixture
def group(deployment):
    name = f"/{deployment.prefix}/workers-{uuid.uuid4().hex[:6]}"
    deployment.client("logs").create_log_group(logGroupName=name)
    return name


def _messages(deployment, group, stream):
    return [e["message"] for e in deployment.client("logs").get_log_events(
        logGroupName=group, logStreamName=stream, startFromHead=True)["events"]]


def test_entries_after_the_cursor_are_shipped_once_in_order(deployment, group, tmp_path):
    journal = Journal([entry(1, "starting"), entry(2, [104, 105, 255]), "not json", entry(3, "up", "infaas-drain.service")])
    shipper = logship.LogShipper(group, "i-1", client=deployment.client("logs"))
    cursor = str(tmp_path / "state" / "cursor")
    assert logship.ship_round(shipper, cursor, journal) == 3
    assert _messages(deployment, group, "i-1") == [
        "infaas-worker.service: starting", "infaas-worker.service: hi\ufffd", "infaas-drain.service: up"]
    assert open(cursor).read() == "c3"
    assert logship.ship_round(shipper, cursor, journal) == 0  # nothing new
    assert journal.calls[-1][:5] == ["journalctl", "--no-pager", "-o", "json", "--after-cursor=c3"]
    assert journal.calls[-1][5:] == ["-u", "infaas-worker.service", "-u", "infaas-drain.service",
                                     "-u", "infaas-logs.service"]
    journal.lines.append(entry(4, "later"))
    # a second shipper (the unit restarted) finds its stream already there
    again = logship.LogShipper(group, "i-1", client=deployment.client("logs"))
    assert logship.ship_round(again, cursor, journal) == 1
    assert _messages(deployment, group, "i-1")[-1] == "infaas-worker.service: later"


def test_a_failed_put_keeps_the_cursor_so_the_entries_go_next_round(deployment, tmp_path):
    journal = Journal([entry(1)])
    shipper = logship.LogShipper("/no/such/group", "i-2", client=deployment.client("logs"))
    cursor = str(tmp_path / "cursor")
    with pytest.raises(InfaasError):
        logship.ship_round(shipper, cursor, journal)
    assert not (tmp_path / "cursor").exists()


def test_batches_keep_to_the_limits_of_one_put():
    items = [{"timestamp": i, "message": "x" * 1000} for i in range(2500, 0, -1)]
    batches = list(logship.batches(items))
    assert [len(b) for b in batches] == [877, 877, 746]  # 900,000 bytes with 26 bytes per event
    assert [e["timestamp"] for b in batches for e in b] == list(range(1, 2501))
    assert [len(b) for b in logship.batches([{"timestamp": 1, "message": "m"}] * 2500)] == [1000, 1000, 500]


def test_main_ships_in_rounds_and_survives_a_failed_round(deployment, group, tmp_path, monkeypatch):
    monkeypatch.setenv("INFAAS_WORKER_ID", "i-3")
    journal = Journal([entry(1, "one")])
    calls = {"n": 0}

    def flaky(args, **kw):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("journalctl is busy")
        return journal(args, **kw)

    sleeps = []
    logship.main(["--group", group, "--cursor-file", str(tmp_path / "cursor"), "--every-s", "2"],
                 sleep=sleeps.append, rounds=2, run=flaky)
    assert sleeps == [2.0, 2.0] and _messages(deployment, group, "i-3") == ["infaas-worker.service: one"]
    with pytest.raises(SystemExit):
        logship.main(["--group", ""], rounds=0)
