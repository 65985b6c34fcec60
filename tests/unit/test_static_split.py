"""The best static split in hindsight (``infaas sim static-split``): its queue model by hand, the
MILP's choice on configurations written out, and a tiny workload end to end, replayed through the
simulator with the product's selector."""

from __future__ import annotations

import pytest
from fakes import make_profile, make_variant

from infaas.core.domain import HardwareType
from infaas.sim import data, runner
from infaas.sim.engine import ClusterSpec
from infaas.sim.static_split import (
    Config,
    Device,
    FixedSplit,
    Outcome,
    best_split,
    device_classes,
    find,
    queue_model,
    task_configs,
)

FAST = Device("fast", (0.0, 10.0, 15.0), 2, 0.8)


def test_a_free_device_takes_the_largest_batch_that_ends_in_time():
    # four rows at 0 ms: batch of 2 runs 0 -> 15 ms, the next 2 run 15 -> 30 ms, all within 300 ms
    assert queue_model([0.0] * 4, [FAST], 300.0) == Outcome(late=0, served=4, accuracy_sum=pytest.approx(3.2))


def test_rows_no_device_can_answer_in_time_are_dropped_as_late():
    # objective 20 ms: the first 2 rows end at 15 ms; at 15 ms even a batch of 1 (10 ms) ends past 20 ms
    assert queue_model([0.0] * 4, [FAST], 20.0) == Outcome(late=2, served=2, accuracy_sum=pytest.approx(1.6))


def test_devices_share_one_queue():
    assert queue_model([0.0] * 4, [FAST, FAST], 20.0).late == 0


def test_the_most_accurate_free_device_goes_first():
    slow_good = Device("good", (0.0, 50.0, 60.0), 2, 1.0)
    out = queue_model([0.0, 0.0], [FAST, slow_good], 300.0)
    assert out.served == 2 and out.accuracy_sum == pytest.approx(2.0)


def config(task, late, served, acc_sum, gpus=1):
    return Config(task, {"gpu": gpus}, {f"{task}-{late}-{gpus}": gpus}, Outcome(late, served, acc_sum))


def test_the_split_misses_fewest_at_the_accuracy_asked():
    a_fast, a_good = config("a", 0, 100, 90.0), config("a", 5, 95, 95.0)
    b_fast, b_huge = config("b", 0, 100, 80.0), config("b", 0, 100, 100.0, gpus=2)
    configs = [a_fast, a_good, b_fast, b_huge]
    assert best_split(configs, ["a", "b"], {"gpu": 2}, 85.0) == [a_fast, b_fast]  # 170 / 200 = 85, none late
    assert best_split(configs, ["a", "b"], {"gpu": 2}, 87.0) == [a_good, b_fast]  # 175 / 195: 5 late for the accuracy
    assert best_split(configs, ["a", "b"], {"gpu": 3}, 95.0) == [a_fast, b_huge]  # a third gpu fits the big one
    assert best_split(configs, ["a", "b"], {"gpu": 2}, 95.0) is None


def test_types_that_run_another_types_profile_count_as_its_devices():
    assert device_classes({"cpu": 10, "vpu": 10, "gpu-pascal": 4}) == {"cpu": 20, "gpu-pascal": 4}


TASK = "classification/digits"
GOOD = make_variant("good", accuracy=1.0, max_batch=4, visibility="shared",
                    profile=make_profile({1: (40.0, 44.0), 2: (60.0, 66.0), 4: (100.0, 110.0)}, load_ms=10.0))
QUICK = make_variant("quick", accuracy=0.7, max_batch=4, visibility="shared",
                     profile=make_profile({1: (4.0, 4.4), 2: (6.0, 6.6), 4: (10.0, 11.0)}, load_ms=10.0))
SPEC = ClusterSpec(hardware={"cpu": HardwareType("cpu", 0.0)}, start_s={"cpu": 1.0}, memory_bytes={"cpu": 2 << 30},
                   max_machines={"cpu": 2}, jitter=False)


def split_for(arrivals_ms, min_accuracy):
    w = data.explicit_workload([(t, TASK) for t in arrivals_ms])
    return w, find(w, [GOOD, QUICK], {"cpu": 2}, min_accuracy)


def test_light_load_gets_the_accurate_variant_and_a_clump_a_fast_one_beside_it():
    w, light = split_for([i * 200.0 for i in range(20)], 90.0)
    assert light.replicas() == {GOOD.id: 1} and light.late == 0 and light.accuracy == pytest.approx(100.0)
    # 40 rows at once: two GOOD replicas clear 2 x 3 batches of 4 = 24 within 300 ms; GOOD + QUICK all
    # 40, at 73 on average (GOOD takes the first 4, QUICK clears the other 36 while GOOD runs them);
    # QUICK alone all 40, at 70
    w, clump = split_for([0.0] * 40, 72.0)
    assert clump.replicas() == {GOOD.id: 1, QUICK.id: 1} and clump.late == 0
    res, _, sim = runner.run(w, runner.Setup("fixed", SPEC, [GOOD, QUICK], {"cpu": 2}),
                             FixedSplit(clump.replicas(), {"cpu": 2}))
    assert res.requests == 40 and sorted({sim.info_by_index[k].id for k in sim.served_by}) == sorted([GOOD.id, QUICK.id])


def test_the_replay_runs_the_split_alone_on_the_devices_it_uses():
    # a fast but poor gpu variant beside: the split at accuracy 100 holds GOOD only, and the replay
    # neither starts the empty gpu nor loads the poor variant on it for the rows GOOD answers late
    poor = make_variant("poor", accuracy=0.5, hardware="gpu-pascal", max_batch=4, visibility="shared",
                        profile=make_profile({1: (4.0, 4.4), 4: (10.0, 11.0)}, hardware="gpu-pascal", load_ms=10.0))
    spec = ClusterSpec(hardware={"cpu": HardwareType("cpu", 0.0), "gpu-pascal": HardwareType("gpu-pascal", 0.0)},
                       start_s={"cpu": 1.0, "gpu-pascal": 1.0}, memory_bytes={"cpu": 2 << 30, "gpu-pascal": 2 << 30},
                       max_machines={"cpu": 1, "gpu-pascal": 1}, jitter=False)
    devices = {"cpu": 1, "gpu-pascal": 1}
    w = data.explicit_workload([(0.0, TASK)] * 40)
    split = find(w, [GOOD, poor], devices, 100.0)
    assert split.replicas() == {GOOD.id: 1} and split.late == 28  # 3 batches of 4 within 300 ms
    res, _, sim = runner.run(w, runner.Setup("fixed", spec, [GOOD, poor], devices), FixedSplit(split.replicas(), devices))
    assert list(sim.machines) == ["cpu-1"]
    assert {sim.info_by_index[k].id for k in sim.served_by if k >= 0} == {GOOD.id}
    assert res.mean_accuracy == pytest.approx(100.0) and res.strict_violation_rate > 0.5


def test_equal_variants_keep_one_of_them():
    twin = make_variant("twin", accuracy=1.0, max_batch=4, visibility="shared", profile=GOOD.profile)
    configs = task_configs(TASK, [0.0] * 4, [GOOD, twin], {"cpu": 2}, 300.0)
    assert configs and {vid for c in configs for vid in c.replicas} == {GOOD.id}  # "good" sorts first


def test_nothing_to_model_is_an_error_not_an_empty_split():
    w = data.explicit_workload([(t * 10.0, TASK) for t in range(5)])
    with pytest.raises(ValueError, match="no second has more than 10 arrivals"):
        find(w, [GOOD, QUICK], {"cpu": 2}, 90.0, busy_above=10)
    slow = make_variant("slow", accuracy=1.0, max_batch=1, visibility="shared", profile=make_profile({1: (200.0, 200.0)}))
    with pytest.raises(ValueError, match=f"no variant of {TASK} can batch within the 300 ms objective"):
        find(w, [slow], {"cpu": 2}, 90.0)
