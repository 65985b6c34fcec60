from infaas.core.reconcile import Loaded, reconcile


def test_no_plan_changes_nothing():
    assert reconcile(None, {"a": Loaded(False, 0.0)}, now=100.0, grace_s=5.0) == ([], [])


def test_loads_assigned_and_unloads_idle_unassigned_after_grace():
    loaded = {"a": Loaded(False, 90.0), "b": Loaded(False, 99.0), "c": Loaded(True, 0.0), "d": Loaded(False, 0.0)}
    to_load, to_unload = reconcile(("a", "e"), loaded, now=100.0, grace_s=5.0)
    assert to_load == ["e"]  # assigned, not loaded
    # b was used 1 s ago (< 5 s grace), c is busy: both stay; d idle for 100 s goes; a is assigned
    assert to_unload == ["d"]
