"""Autoscaling: the alarms per hardware type, wired to the autoscaler function
through EventBridge, and a one-minute schedule.

Per hardware type two alarms, each a reason to run a control period now:

* ``<prefix>-latency-<hw>``: p99 of the selector's ``Infaas/QueryLatency``
  (dimension ``Hardware``) above ``infaas:latency_alarm_ms`` for 2 of 3
  minutes; missing data (no traffic) is not breaching;
* ``<prefix>-backlog-<hw>``: build jobs visible in ``build-<hw>`` for a
  minute, i.e. no worker of that type is taking them (a fleet at zero).

Alarm actions fire only on a state change, so the schedule keeps the policy
running while an alarm stays in ALARM, and lets it scale in when all is quiet.
"""

from __future__ import annotations

import json

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from .config import DeployConfig
from .data import Data
from .fleets import HEALTH_GRACE, HEALTH_MISSED, Fleets


class Autoscaling(Construct):
    def __init__(self, scope: Construct, id: str, *, config: DeployConfig, data: Data, fleets: Fleets,
                 autoscaler: lambda_.Function, prefix: str) -> None:
        super().__init__(scope, id)
        self.alarms: dict[str, list[cw.Alarm]] = {}
        for hw in config.fleets:
            latency = cw.Alarm(
                self, f"Latency-{hw}", alarm_name=f"{prefix}-latency-{hw}",
                alarm_description=f"p99 query latency on {hw} workers above {config.latency_alarm_ms:g} ms",
                metric=cw.Metric(namespace="Infaas", metric_name="QueryLatency", dimensions_map={"Hardware": hw},
                                 statistic="p99", period=Duration.minutes(1)),
                threshold=config.latency_alarm_ms, evaluation_periods=3, datapoints_to_alarm=2,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            )
            backlog = cw.Alarm(
                self, f"Backlog-{hw}", alarm_name=f"{prefix}-backlog-{hw}",
                alarm_description=f"build jobs waiting for a {hw} worker",
                metric=data.lanes[hw].metric_approximate_number_of_messages_visible(
                    period=Duration.minutes(1), statistic="Maximum"),
                threshold=1, evaluation_periods=1,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            )
            self.alarms[hw] = [latency, backlog]

        all_alarms = [a for pair in self.alarms.values() for a in pair]
        self.alarm_rule = events.Rule(
            self, "AlarmStateChange",
            description="infaas scaling alarms changed state: run a control period now",
            event_pattern=events.EventPattern(source=["aws.cloudwatch"], detail_type=["CloudWatch Alarm State Change"],
                                              resources=[a.alarm_arn for a in all_alarms]),
            targets=[targets.LambdaFunction(autoscaler, retry_attempts=2)],
        )
        self.schedule = events.Rule(
            self, "Schedule", description="infaas control period every minute",
            schedule=events.Schedule.rate(Duration.minutes(1)),
            targets=[targets.LambdaFunction(autoscaler, retry_attempts=0)],
        )

        autoscaler.add_environment("INFAAS_FLEET_GROUPS", json.dumps(fleets.group_names, sort_keys=True))
        # health from heartbeats (fleet.judge_health): the same grace as the groups' health checks
        autoscaler.add_environment("INFAAS_HEALTH_GRACE_S", str(int(HEALTH_GRACE.to_seconds())))
        autoscaler.add_environment("INFAAS_HEALTH_MISSED_S", str(int(HEALTH_MISSED.to_seconds())))
        autoscaler.add_to_role_policy(iam.PolicyStatement(
            actions=["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup",
                     "autoscaling:SetInstanceHealth"],
            resources=fleets.group_arns))
        autoscaler.add_to_role_policy(iam.PolicyStatement(
            actions=["autoscaling:DescribeAutoScalingGroups"], resources=["*"]))  # no resource-level permissions
        for lane in data.lanes.values():
            autoscaler.add_to_role_policy(iam.PolicyStatement(
                actions=["sqs:GetQueueAttributes", "sqs:GetQueueUrl"], resources=[lane.queue_arn]))
