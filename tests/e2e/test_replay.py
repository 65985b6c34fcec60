"""``infaas replay`` against a stack of its own: a small synthetic trace (two families, 300 queries
over 10 s) sent open-loop, then through the simulator with the profiles the stack measured. The
report must account for every query once, live and simulated; the timings themselves are not
asserted (docs/evaluation.md, "Live replay", has the figures of a full run)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from infaas.cli import main
from infaas.local.launcher import StackProcess
from infaas.sim import data

pytestmark = pytest.mark.e2e

QUERIES, SECONDS = 300, 10.0


def test_replay_accounts_for_every_query(tmp_path, capsys):
    w = data.synthetic_workload({"proteus/a": 20.0, "proteus/b": 10.0}, SECONDS, kind="gamma", cv=2.0, seed=1)
    arrival, task = w.arrival_ms[:QUERIES], w.task[:QUERIES]
    trace = tmp_path / "trace.csv"
    trace.write_text("".join(f"{t:.3f},{w.tasks[k]},50\n" for t, k in zip(arrival, task)))
    with StackProcess(workers=2, data_dir=str(tmp_path / "data"), log_path=str(tmp_path / "stack.log")) as stack:
        rc = main(["--url", stack.url, "--api-key", stack.api_key, "replay", "--trace", str(trace), "--scale", "1",
                   "--duration", "30", "--register-digits", "--json"])
        out = capsys.readouterr().out
        assert rc == 0, stack.log_tail(60)
    report = json.loads(out)
    n = len(arrival)
    live, sim = report["live"], report["simulated"]
    assert report["queries"] == n == live["queries"] == sim["queries"]
    # every query once: answered, refused, timed out, failed or not sent
    assert live["answered"] + live["refused"] + live["timed_out"] + live["failed"] + live["not_sent"] == n
    assert live["sent"] == n - live["not_sent"]
    assert live["refused"] == sum(live["refused_by_status"].values())
    assert sum(live["variants"].values()) == live["answered"] > 0
    assert 0 <= live["late_at_edge"] <= live["answered"] and 0 <= live["late_in_service"] <= live["answered"]
    assert live["late_at_edge_rate"] == pytest.approx(live["late_at_edge"] / live["answered"])
    not_answered = n - live["answered"]
    assert not_answered <= live["violations"] <= not_answered + live["late_at_edge"] + live["below_accuracy_floor"]
    assert live["below_accuracy_floor"] == 0  # the service never answers below a query's floor
    # the trace's two families both map onto the one digits task; floors rank its architectures
    assert report["task_map"] == {"proteus/a": "classification/digits", "proteus/b": "classification/digits"}
    floors = report["floors"]
    assert floors["free"] is None and floors["premium"] >= floors["standard"]
    # the machine time is the workers' over the run
    assert live["workers"] == 2 and live["machine_seconds"] == pytest.approx(2 * live["wall_s"], abs=0.2)
    # the simulator's run of the same plan accounts for every query too, on the same fleet
    assert sim["answered"] + sim["refused"] <= n and sim["answered"] > 0
    assert 0 <= sim["late"] <= sim["answered"]
    assert sim["accuracy_violations"] == 0
    assert sum(sim["machine_seconds"].values()) == pytest.approx(2 * (float(np.max(arrival)) / 1000.0), rel=0.5)
    assert isinstance(report["agree"], bool) and isinstance(report["terms"], list)
