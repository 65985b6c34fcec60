"""Profiling under a CPU hog: the profile of a busy machine is within 20 % (p50) of the quiet
one at every batch size, or the profile is deferred with its reason.

Real processes spinning on every core for tens of seconds and a timing comparison: it runs
under ``make bench`` (INFAAS_LOAD_TESTS=1), not in the default suite, where it would slow the
other tests on a shared machine and be judged on their noise. The policy itself (rounds,
verdict, deferral, the re-sent job) is tested deterministically in tests/unit/test_calibration.py
and tests/runtime/test_profile_noise.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from infaas.cli import digits
from infaas.core.domain import TensorSpec, Variant
from infaas.runtime.profile import ProfileDeferred, ProfileLimits, profile_in_subprocess

SPECS = (TensorSpec("X", "float32", (-1, 64)),)
LIMITS = ProfileLimits(timeout_s=300)  # the defaults a worker uses


def start_hog() -> list[subprocess.Popen]:
    """One process spinning per core."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]


def stop_hog(hog: list[subprocess.Popen]) -> None:
    for p in hog:
        p.terminate()
    for p in hog:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("digits"))
    return {t.name: t.path for t in digits.train(out, names=["mlp-32", "mlp-512-256", "random-forest-200"])}


@pytest.mark.parametrize("name", ["mlp-32", "mlp-512-256", "random-forest-200"])
def test_a_profile_under_a_cpu_hog_is_within_20_percent_of_the_quiet_one_or_deferred(models, name, tmp_path):
    calibration = str(tmp_path / "calibration.json")  # this host's quiet time, learnt by the quiet profile
    variant = Variant(architecture=name, format="fp32", runtime="onnxruntime", hardware="cpu", max_batch=32,
                      task=digits.TASK, tenant="local").to_dict()
    quiet = profile_in_subprocess(models[name], variant, SPECS, None, LIMITS, calibration_file=calibration)
    hog = start_hog()
    try:
        time.sleep(0.5)  # the hog is spinning everywhere
        try:
            busy = profile_in_subprocess(models[name], variant, SPECS, None, LIMITS, calibration_file=calibration,
                                         defer_busy=True)
        except ProfileDeferred as exc:
            busy = None
            deferred = exc
    finally:
        stop_hog(hog)
    assert all(p.poll() is not None for p in hog)
    print(f"\n{name}: quiet profile noise {quiet['noise']:.2f}x in {quiet['rounds']} rounds")
    if busy is None:
        print(f"{name} under the hog: {deferred.message} ({deferred.result['rounds']} rounds)")
        assert re.fullmatch(r"deferred: machine busy \(calibration \d+\.\d times its quiet time\)", deferred.message)
        assert deferred.result["rounds"] == LIMITS.noise.max_rounds  # repeated up to the bound first
        return
    print(f"{name} under the hog: noise {busy['noise']:.2f}x in {busy['rounds']} rounds")
    for b, (q50, q99) in quiet["latency_ms"].items():
        b50, b99 = busy["latency_ms"][b]
        print(f"  batch {b:>2}: p50 quiet {q50:.4f} ms, busy {b50:.4f} ms ({b50 / q50 - 1:+.1%}); "
              f"p99 quiet {q99:.4f}, busy {b99:.4f}; busy rounds' p50 {busy['spread_ms'][b][0]:.4f}-"
              f"{busy['spread_ms'][b][1]:.4f}")
    for b, (q50, _) in quiet["latency_ms"].items():
        assert abs(busy["latency_ms"][b][0] / q50 - 1) <= 0.20, f"batch {b}"
