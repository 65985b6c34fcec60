"""The ``Fleet`` port (``core/ports.py``), the same tests over every implementation:
worker processes on this machine (``adapters/local/processes.py``) and EC2 Auto
Scaling groups (``adapters/aws/fleet.py``, on moto).

The contract the autoscaler relies on: ``desired`` counts the workers a
hardware type holds; ``set_desired`` only ever adds capacity (a lower count is
left to ``drain``); ``drain`` releases exactly the worker it names, and an id
the fleet does not hold changes nothing.
"""

from __future__ import annotations

from infaas.core.ports import Fleet


def test_it_is_a_fleet(fleet):
    assert isinstance(fleet.fleet, Fleet)


def test_desired_counts_the_workers_held(fleet):
    assert fleet.fleet.desired()["cpu"] == 1 == len(fleet.members("cpu"))


def test_set_desired_adds_capacity(fleet):
    fleet.fleet.set_desired("cpu", 3)
    assert fleet.fleet.desired()["cpu"] == 3
    assert len(fleet.members("cpu")) == 3
    fleet.fleet.set_desired("cpu", 3)  # asking again for what is there changes nothing
    assert fleet.fleet.desired()["cpu"] == 3


def test_set_desired_never_removes_capacity(fleet):
    fleet.fleet.set_desired("cpu", 2)
    before = fleet.members("cpu")
    fleet.fleet.set_desired("cpu", 0)
    fleet.fleet.set_desired("cpu", 1)
    assert fleet.fleet.desired()["cpu"] == 2 and fleet.members("cpu") == before


def test_drain_releases_exactly_the_worker_it_names(fleet):
    fleet.fleet.set_desired("cpu", 2)
    first, second = fleet.members("cpu")
    fleet.fleet.drain(second)
    assert fleet.fleet.desired()["cpu"] == 1
    assert fleet.members("cpu") == [first]
    fleet.fleet.drain(second)  # already leaving: nothing more happens
    assert fleet.members("cpu") == [first]


def test_draining_an_unknown_worker_changes_nothing(fleet):
    before = fleet.members("cpu")
    fleet.fleet.drain("i-0000000000000000")
    fleet.fleet.drain("cpu-99")
    assert fleet.fleet.desired()["cpu"] == 1 and fleet.members("cpu") == before
