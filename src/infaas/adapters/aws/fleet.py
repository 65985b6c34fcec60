"""The worker fleet on EC2 Auto Scaling: one group per hardware type.

Why one group per hardware type (``cpu``, ``gpu``, ``inferentia``): each has
its own machine image, instance type and price, the autoscaler decides a
count per hardware type, and warm pools (stopped, pre-booted instances) cannot
be used with mixed-instance groups.

Draining before release
-----------------------
A worker must stop receiving queries before its machine goes away. Every
group carries a *termination lifecycle hook* (declared by the CDK stack, name
``HOOK_NAME``), so any scale-in, whoever starts it (``set_desired`` lowering
the count, ``release`` of one chosen instance, an Availability Zone
rebalance), holds the instance in ``Terminating:Wait`` until the instance says
it is done. On the instance, ``python -m infaas.adapters.aws.fleet
drain-watch`` (a systemd unit, see ``worker_ami/``) polls the instance
metadata item ``autoscaling/target-lifecycle-state``; when it reads
``Terminated`` it

1. sends ``SIGUSR1`` to the worker: the worker heartbeats ``state=draining``
   and stops taking build jobs; selectors drop it from their next snapshot
   (``selection`` only picks workers that are ``up``);
2. waits ``drain_s`` (longer than a selector's snapshot period plus the
   index's propagation delay), while queries already routed there finish;
3. stops the worker service (``SIGTERM``: it finishes busy replicas,
   deregisters from the table and exits);
4. completes the lifecycle action with ``CONTINUE``, so the instance
   terminates at once instead of waiting out the hook's heartbeat timeout
   (which is the fallback when the machine is wedged).

``drain(worker_id)`` (the ``Fleet`` port) is how the autoscaler picks
*which* worker goes: workers are named after their instance id, and the
instance is released with ``TerminateInstanceInAutoScalingGroup`` and
``ShouldDecrementDesiredCapacity``, which goes through the same hook.
``set_desired`` only ever raises a group's capacity, as the port says.

Health from heartbeats
----------------------
EC2 status checks only say the machine runs. A worker whose install failed,
or whose agent died and stays dead, passes them while it never heartbeats.
``judge_health`` is the autoscaler's check, a pure function over one
snapshot (the groups' in-service instances, the live worker records with
their last heartbeat, what the previous period remembered): an instance is
*unhealthy* once it has been in service longer than ``grace_s`` (the boot and
install; ``HEALTH_GRACE_S``) and its worker has not heartbeated for
``missed_s`` (``HEALTH_MISSED_S``; heartbeats come every 2 s, so this is
dozens of missed ones). ``mark_unhealthy`` tells Auto Scaling
(``SetInstanceHealth``), which replaces the instance through the drain hook.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from infaas.adapters import logs
from infaas.adapters.aws._sdk import default_client, sdk_errors
from infaas.core.errors import InvalidInput, NotFound
from infaas.core.settings import env_float, env_str

log = logging.getLogger("infaas.fleet")

HOOK_NAME = "infaas-drain"  # the termination lifecycle hook on every group
IN_SERVICE = "InService"


@dataclass(frozen=True)
class GroupState:
    hardware: str
    name: str
    desired: int
    min_size: int
    max_size: int
    instances: tuple[tuple[str, str], ...]  # (instance id, lifecycle state)

    @property
    def in_service(self) -> list[str]:
        return [i for i, state in self.instances if state == IN_SERVICE]


class AsgFleet:
    """``Fleet`` over one Auto Scaling group per hardware type.

    ``groups`` maps each hardware type to its group's name (the stack passes
    it to the autoscaler as ``INFAAS_FLEET_GROUPS``)."""

    def __init__(self, groups: Mapping[str, str], client: Any = None) -> None:
        if not groups:
            raise InvalidInput("a fleet needs at least one hardware type -> group name", field="groups")
        self.groups = dict(groups)
        self.client = client if client is not None else default_client("autoscaling")

    def _name(self, hardware: str) -> str:
        try:
            return self.groups[hardware]
        except KeyError:
            raise NotFound(f"no worker group for hardware type {hardware!r}", field="hardware") from None

    def states(self) -> dict[str, GroupState]:
        """Every group in one ``DescribeAutoScalingGroups`` (all pages)."""
        by_name = {name: hw for hw, name in self.groups.items()}
        out: dict[str, GroupState] = {}
        with sdk_errors("describing the worker groups"):
            pages = self.client.get_paginator("describe_auto_scaling_groups").paginate(
                AutoScalingGroupNames=list(by_name)
            )
            for page in pages:
                for g in page["AutoScalingGroups"]:
                    hw = by_name[g["AutoScalingGroupName"]]
                    out[hw] = GroupState(
                        hardware=hw,
                        name=g["AutoScalingGroupName"],
                        desired=int(g["DesiredCapacity"]),
                        min_size=int(g["MinSize"]),
                        max_size=int(g["MaxSize"]),
                        instances=tuple((i["InstanceId"], i["LifecycleState"]) for i in g.get("Instances", [])),
                    )
        missing = sorted(set(self.groups) - set(out))
        if missing:
            raise NotFound(f"worker groups of {missing} do not exist", field="groups")
        return out

    def state(self, hardware: str) -> GroupState:
        name = self._name(hardware)
        with sdk_errors(f"describing worker group {name}"):
            groups = self.client.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
        if not groups:
            raise NotFound(f"worker group {name} does not exist", field="hardware")
        g = groups[0]
        return GroupState(
            hardware, name, int(g["DesiredCapacity"]), int(g["MinSize"]), int(g["MaxSize"]),
            tuple((i["InstanceId"], i["LifecycleState"]) for i in g.get("Instances", [])),
        )

    # -- Fleet port ---------------------------------------------------------------
    def desired(self) -> dict[str, int]:
        return {hw: s.desired for hw, s in self.states().items()}

    def set_desired(self, hardware: str, count: int) -> None:
        """Raise the group's desired capacity to ``count`` (at most its maximum).

        As the port says, this only ever adds capacity: a lower count is
        ignored, because removing capacity is ``drain`` of one chosen worker
        (lowering the desired count here as well would let the group terminate
        a second, arbitrary instance)."""
        state = self.state(hardware)
        target = min(int(count), state.max_size)
        if target <= state.desired:
            if count < state.desired:
                log.info("%s: desired %d below the current %d is left to drain()", hardware, count, state.desired)
            return
        with sdk_errors(f"setting the desired capacity of {state.name}"):
            self.client.set_desired_capacity(AutoScalingGroupName=state.name, DesiredCapacity=target, HonorCooldown=False)

    def drain(self, worker_id: str) -> None:
        """Release the worker's instance (workers are named after their instance
        id): ``TerminateInstanceInAutoScalingGroup`` with the desired capacity
        decremented, which holds the instance in the termination hook while its
        drain watcher drains the worker (module docstring). An instance that is
        already leaving, or in no group of this fleet, is left alone."""
        for state in self.states().values():
            lifecycle = dict(state.instances).get(worker_id)
            if lifecycle is None:
                continue
            if lifecycle != IN_SERVICE:
                log.info("worker %s is already %s", worker_id, lifecycle)
                return
            with sdk_errors(f"releasing {worker_id} from {state.name}"):
                self.client.terminate_instance_in_auto_scaling_group(InstanceId=worker_id,
                                                                     ShouldDecrementDesiredCapacity=True)
            return
        log.warning("worker %s is not an instance of any worker group; nothing to release", worker_id)

    def complete_drain(self, group_name: str, instance_id: str, hook: str = HOOK_NAME) -> None:
        """Tell Auto Scaling the instance has drained and may terminate now."""
        with sdk_errors(f"completing the lifecycle action of {instance_id}"):
            self.client.complete_lifecycle_action(
                AutoScalingGroupName=group_name,
                LifecycleHookName=hook,
                InstanceId=instance_id,
                LifecycleActionResult="CONTINUE",
            )


    def mark_unhealthy(self, instance_id: str) -> None:
        """Auto Scaling replaces the instance (it leaves through the drain hook)."""
        with sdk_errors(f"marking {instance_id} unhealthy"):
            self.client.set_instance_health(InstanceId=instance_id, HealthStatus="Unhealthy",
                                            ShouldRespectGracePeriod=False)


# -- health from heartbeats -------------------------------------------------------------
HEALTH_GRACE_S = 600.0  # = the groups' health check grace period (cdk: fleets.HEALTH_GRACE)
HEALTH_MISSED_S = 180.0  # three control periods without a heartbeat


@dataclass(frozen=True)
class HealthVerdict:
    unhealthy: tuple[str, ...]  # instance ids to mark unhealthy now
    memory: dict[str, dict[str, float]]  # per in-service instance: first seen, last heartbeat (for the next period)
    reasons: tuple[str, ...]


def judge_health(in_service: list[str] | tuple[str, ...], heartbeats: Mapping[str, float],
                 memory: Mapping[str, Mapping[str, float]], now: float, *,
                 grace_s: float = HEALTH_GRACE_S, missed_s: float = HEALTH_MISSED_S) -> HealthVerdict:
    """Which in-service instances to mark unhealthy (module docstring).

    ``heartbeats`` maps worker ids (= instance ids) of live worker records to their last heartbeat;
    ``memory`` is what the previous period returned: per instance ``seen`` (when first seen in service)
    and ``beat`` (the last heartbeat seen, absent if never). Instances no longer in service are
    forgotten; an instance is judged only after ``grace_s`` in service, and then only by how long ago
    its worker last heartbeated (never: since it was first seen)."""
    out: dict[str, dict[str, float]] = {}
    unhealthy, reasons = [], []
    for instance in sorted(in_service):
        before = memory.get(instance) or {}
        record = {"seen": float(before.get("seen", now))}
        beats = [b for b in (before.get("beat"), heartbeats.get(instance)) if b is not None]
        if beats:
            record["beat"] = float(max(beats))
        out[instance] = record
        if now - record["seen"] < grace_s:
            continue
        silent_s = now - record.get("beat", record["seen"])
        if silent_s >= missed_s:
            unhealthy.append(instance)
            what = "no heartbeat ever" if "beat" not in record else f"no heartbeat for {silent_s:.0f} s"
            reasons.append(f"{instance}: {what} after {now - record['seen']:.0f} s in service")
    return HealthVerdict(tuple(unhealthy), out, tuple(reasons))


# -- on the worker machine: the drain watcher -----------------------------------------
IMDS = "http://169.254.169.254/latest"


def imds_get(path: str, timeout_s: float = 2.0) -> str | None:
    """One instance-metadata item with IMDSv2 (a session token first); None if absent."""
    try:
        token_req = urllib.request.Request(
            f"{IMDS}/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}
        )
        token = urllib.request.urlopen(token_req, timeout=timeout_s).read().decode()
        req = urllib.request.Request(f"{IMDS}/meta-data/{path}", headers={"X-aws-ec2-metadata-token": token})
        return urllib.request.urlopen(req, timeout=timeout_s).read().decode().strip()
    except OSError:
        return None


@dataclass
class DrainWatcher:
    """Runs the drain steps (module docstring) when the instance is told to terminate."""

    read_target_state: Callable[[], str | None]
    signal_worker: Callable[[int], None]
    stop_worker: Callable[[], None]
    complete: Callable[[], None]  # CompleteLifecycleAction(CONTINUE) for this instance
    drain_s: float = 5.0
    poll_s: float = 5.0
    sleep: Callable[[float], None] = time.sleep

    def check_once(self) -> bool:
        """True when the instance was asked to terminate and has now drained."""
        if self.read_target_state() != "Terminated":
            return False
        log.info("this instance is leaving its group: draining the worker")
        self.signal_worker(signal.SIGUSR1)
        self.sleep(self.drain_s)
        self.stop_worker()
        self.complete()
        log.info("worker drained; lifecycle action completed")
        return True

    def run(self) -> None:
        while not self.check_once():
            self.sleep(self.poll_s)


def _systemctl(*args: str) -> None:
    subprocess.run(["systemctl", *args], check=False, timeout=120)


def drain_watch_env(env: Mapping[str, str]) -> dict[str, Any]:
    """``drain-watch``'s defaults from the environment (``INFAAS_GROUP``, ``INFAAS_DRAIN_S``), read with
    the shared readers of ``infaas.core.settings``: a bad value raises ``SettingsError`` naming its variable."""
    return {
        "group": env_str(env, "INFAAS_GROUP") or None,
        "drain_s": env_float(env, "INFAAS_DRAIN_S", 5.0, low=0),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m infaas.adapters.aws.fleet")
    sub = parser.add_subparsers(dest="command", required=True)
    watch = sub.add_parser("drain-watch", help="on a worker machine: drain the worker before the instance terminates")
    defaults = drain_watch_env(os.environ)
    watch.add_argument("--group", default=defaults["group"],
                       help="this instance's Auto Scaling group (default: INFAAS_GROUP)")
    watch.add_argument("--unit", default="infaas-worker.service", help="the worker's systemd unit")
    watch.add_argument("--drain-s", type=float, default=defaults["drain_s"],
                       help="seconds between draining and stopping the worker (default: INFAAS_DRAIN_S, 5)")
    args = parser.parse_args(argv)
    logs.configure("drain-watcher")
    instance_id = imds_get("instance-id")
    if not args.group or not instance_id:
        parser.error("needs --group (or INFAAS_GROUP) and instance metadata")
    fleet = AsgFleet({"self": args.group})
    watcher = DrainWatcher(
        read_target_state=lambda: imds_get("autoscaling/target-lifecycle-state"),
        signal_worker=lambda sig: _systemctl("kill", "--signal", signal.Signals(sig).name, args.unit),
        stop_worker=lambda: _systemctl("stop", args.unit),
        complete=lambda: fleet.complete_drain(args.group, instance_id),
        drain_s=args.drain_s,
    )
    watcher.run()


if __name__ == "__main__":
    main()
