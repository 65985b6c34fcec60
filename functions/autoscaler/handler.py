"""Lambda: one control period of the autoscaler over the worker groups.

Invoked by EventBridge on every state change of a scaling alarm ("CloudWatch
Alarm State Change": query latency per hardware type, build backlog per
hardware type) and on a one-minute schedule, because an alarm action fires
only on a change and an alarm that stays in ALARM must keep scaling. Every
invocation does the same, whatever woke it: ``infaas.app.autoscaler.Autoscaler
.run_once`` -- read the workers' heartbeats, the ready variants and the policy
state from the store, call the pure ``scaling.plan``, raise group capacities,
drain the workers the plan releases (``AsgFleet.drain``: the instance leaves
through the group's termination hook after its worker drained), and save the
new state with a conditional write, so two overlapping invocations cannot
both act.

Two things come from AWS rather than from settings, read afresh each time:

* each hardware type's bounds are its Auto Scaling group's ``MinSize`` and
  ``MaxSize`` (one source of truth, set by ``cdk deploy``);
* a hardware type with build jobs waiting or running in its lane
  (``build-<hardware>``) keeps at least one worker, so a fleet at zero (the
  default for GPU and Inferentia) starts a machine to build and profile the
  variants of a newly registered model, and does not release it mid-build.

After the plan, the same period checks the workers' health from their
heartbeats (``infaas.adapters.aws.fleet.judge_health``): an instance in
service for longer than ``INFAAS_HEALTH_GRACE_S`` (the boot and install, 600 s)
whose worker has not heartbeated for ``INFAAS_HEALTH_MISSED_S`` (180 s) is
marked unhealthy (``SetInstanceHealth``) and Auto Scaling replaces it. What
the check remembers between periods (when each instance was first seen, its
last heartbeat) is one item of the table (``HEALTH_KEY``). Only the
invocation whose plan was applied checks, so two overlapping ones do not.

Environment (validated once per container, by the shared readers of
``infaas.core.settings``, so a bad value names its variable):
``INFAAS_FLEET_GROUPS`` (JSON ``{hardware: group name}``, parsed by
``infaas.wiring.aws.fleet_groups``) and the ``INFAAS_*`` variables of the
adapters and of the scaling policy (``INFAAS_SCALE_*``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any, Callable, Mapping

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

from infaas.adapters.aws import metrics as names
from infaas.adapters.aws._sdk import sdk_errors
from infaas.adapters.aws.fleet import (
    HEALTH_GRACE_S,
    HEALTH_MISSED_S,
    AsgFleet,
    HealthVerdict,
    judge_health,
)
from infaas.adapters.aws.sqs import queue_urls_by_name
from infaas.app.autoscaler import Autoscaler
from infaas.app.build import build_lane
from infaas.core.settings import Settings, env_float
from infaas.wiring import make_adapters
from infaas.wiring.aws import fleet_groups

logger = Logger()
# the package's own loggers (infaas.*) log through Powertools too: JSON, with the correlation id
logging.getLogger("infaas")
copy_config_to_registered_loggers(source_logger=logger, include={"infaas"})


HEALTH_KEY = ("FLEET#health", "H")  # the health check's memory between periods


class AwsAutoscaler:
    """``Autoscaler`` with the bounds and build floors of this period, and the health check."""

    def __init__(self, settings: Settings, adapters: Any, fleet: AsgFleet, *, grace_s: float = HEALTH_GRACE_S,
                 missed_s: float = HEALTH_MISSED_S, clock: Callable[[], float] = time.time) -> None:
        self.settings, self.adapters, self.fleet = settings, adapters, fleet
        self.grace_s, self.missed_s, self.clock = grace_s, missed_s, clock
        self.groups: dict[str, Any] = {}
        queue = adapters.queue
        self.sqs = queue.client
        self._lane_url = queue_urls_by_name(self.sqs, adapters.resources.queue_prefix) \
            if adapters.resources.queue_urls is None else adapters.resources.queue_urls.__getitem__

    def build_jobs(self, hardware: str) -> int:
        """Build jobs waiting or running (in flight) in the hardware type's lane."""
        with sdk_errors(f"reading the build lane of {hardware}"):
            attributes = self.sqs.get_queue_attributes(
                QueueUrl=self._lane_url(build_lane(hardware)),
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            )["Attributes"]
        return sum(int(v) for v in attributes.values())

    def params(self):
        groups = self.groups = self.fleet.states()
        base = self.settings.scaling_params()
        floors = {hw: min(1, g.max_size) if self.build_jobs(hw) else 0 for hw, g in groups.items()}
        return dataclasses.replace(
            base,
            min_workers={hw: max(g.min_size, floors[hw]) for hw, g in groups.items()},
            max_workers={hw: g.max_size for hw, g in groups.items()},
        )

    def run_once(self):
        params = self.params()
        plan = Autoscaler(self.adapters.store, self.fleet, params, self.settings.hardware).run_once()
        for hw, n in (plan.desired_workers.items() if plan else ()):
            names.emf(names.DESIRED_WORKERS, n, Hardware=hw)
        return plan, params

    def check_health(self, drained: tuple[str, ...] | list[str] = ()) -> HealthVerdict:
        """Mark the instances whose workers stopped heartbeating unhealthy (module docstring)."""
        store = self.adapters.store
        in_service = [i for g in self.groups.values() for i in g.in_service if i not in set(drained)]
        heartbeats = {w.id: w.heartbeat_at for w in store.workers()}
        item = store.table.get(*HEALTH_KEY)
        verdict = judge_health(in_service, heartbeats, (item or {}).get("body", {}), self.clock(),
                               grace_s=self.grace_s, missed_s=self.missed_s)
        for instance, reason in zip(verdict.unhealthy, verdict.reasons):
            logger.warning("worker instance unhealthy: %s", reason)
            self.fleet.mark_unhealthy(instance)
        store.table.put({"pk": HEALTH_KEY[0], "sk": HEALTH_KEY[1], "body": verdict.memory})
        names.emf(names.UNHEALTHY_WORKERS, len(verdict.unhealthy))
        return verdict


def build(env: Mapping[str, str] | None = None) -> AwsAutoscaler:
    env = os.environ if env is None else env
    settings = Settings.from_env(env)
    return AwsAutoscaler(settings, make_adapters(settings), AsgFleet(fleet_groups(env)),
                         grace_s=env_float(env, "INFAAS_HEALTH_GRACE_S", HEALTH_GRACE_S, low=0),
                         missed_s=env_float(env, "INFAAS_HEALTH_MISSED_S", HEALTH_MISSED_S, low=0))


AUTOSCALER = build()


@logger.inject_lambda_context(log_event=True)
def handler(event, context):
    logger.append_keys(trigger=event.get("detail-type", "direct") if isinstance(event, dict) else "direct")
    plan, params = AUTOSCALER.run_once()
    if plan is None:
        return {"applied": False, "reason": "another invocation applied a plan meanwhile"}
    health = AUTOSCALER.check_health(plan.drain)
    result = {
        "applied": True,
        "desired_workers": plan.desired_workers,
        "drain": list(plan.drain),
        "reasons": list(plan.reasons),
        "min_workers": dict(params.min_workers),
        "max_workers": dict(params.max_workers),
        "unhealthy": list(health.unhealthy),
    }
    logger.info("control period", extra=result)
    return result
