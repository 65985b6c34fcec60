"""Observability: one CloudWatch dashboard, and alarms an operator should see.

The dashboard shows the query path (API requests and errors, selector
latency per hardware type, worker faults), the functions (invocations,
errors, duration), the fleets (in-service instances per group), the build
lanes and their dead-letter queues, and the table's throttling.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from .config import DeployConfig
from .data import Data
from .fleets import Fleets

MINUTE = Duration.minutes(1)


class Observability(Construct):
    def __init__(self, scope: Construct, id: str, *, config: DeployConfig, data: Data, fleets: Fleets,
                 rest_apis: tuple[apigw.RestApi, ...], functions: dict[str, lambda_.Function], prefix: str,
                 tier=None) -> None:
        super().__init__(scope, id)
        hardware = list(config.fleets)
        self.dashboard = cw.Dashboard(self, "Dashboard", dashboard_name=f"{prefix}-overview",
                                      default_interval=Duration.hours(3))
        def api_metric(api: apigw.RestApi, name: str, stat: str = "Sum") -> cw.Metric:
            return cw.Metric(namespace="AWS/ApiGateway", metric_name=name, statistic=stat, period=MINUTE,
                             dimensions_map={"ApiName": api.rest_api_name, "Stage": api.deployment_stage.stage_name})

        for api, entry in zip(rest_apis, ("API keys", "IAM")):  # the two entry points (api.py)
            self.dashboard.add_widgets(
                cw.GraphWidget(title=f"API ({entry}) requests and errors", width=12,
                               left=[api_metric(api, "Count"), api_metric(api, "4XXError"), api_metric(api, "5XXError")]),
                cw.GraphWidget(title=f"API ({entry}) latency (p50, p99)", width=12,
                               left=[api_metric(api, "Latency", "p50"), api_metric(api, "Latency", "p99")]),
            )
        self.dashboard.add_widgets(
            cw.GraphWidget(title="Query latency p99 by hardware (ms)", width=12, left=[
                cw.Metric(namespace="Infaas", metric_name="QueryLatency", dimensions_map={"Hardware": hw},
                          statistic="p99", period=MINUTE, label=hw) for hw in hardware]),
            cw.GraphWidget(title="Queries by hardware; worker faults", width=12, left=[
                cw.Metric(namespace="Infaas", metric_name="Queries", dimensions_map={"Hardware": hw},
                          statistic="Sum", period=MINUTE, label=hw) for hw in hardware],
                right=[cw.Metric(namespace="Infaas", metric_name="WorkerFaults",  # adapters.aws.metrics.DIMENSIONS
                                 statistic="Sum", period=MINUTE)]),
        )
        self.dashboard.add_widgets(*[
            cw.GraphWidget(title=f"{name} function", width=8,
                           left=[fn.metric_invocations(period=MINUTE), fn.metric_errors(period=MINUTE)],
                           right=[fn.metric_duration(period=MINUTE, statistic="p99")])
            for name, fn in functions.items()
        ])
        self.dashboard.add_widgets(
            cw.GraphWidget(title="Workers in service by hardware", width=12, left=[
                cw.Metric(namespace="AWS/AutoScaling", metric_name="GroupInServiceInstances",
                          dimensions_map={"AutoScalingGroupName": fleets.group_names[hw]}, statistic="Maximum",
                          period=MINUTE, label=hw) for hw in hardware]),
            cw.GraphWidget(title="Build lanes: waiting, dead-lettered", width=12,
                           left=[q.metric_approximate_number_of_messages_visible(period=MINUTE, label=f"build-{hw}")
                                 for hw, q in data.lanes.items()],
                           right=[q.metric_approximate_number_of_messages_visible(period=MINUTE, label=f"dlq-{hw}")
                                  for hw, q in data.dead_letters.items()]),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(title="Metadata table: throttled requests", width=12, left=[
                data.table.metric_throttled_requests_for_operations(
                    operations=[dynamodb.Operation.GET_ITEM, dynamodb.Operation.QUERY, dynamodb.Operation.PUT_ITEM,
                                dynamodb.Operation.UPDATE_ITEM], period=MINUTE)]),
        )

        # operator alarms (shown on the dashboard; subscribe a topic to act on them)
        self.operator_alarms = [
            cw.Alarm(self, f"DeadLetters-{hw}", alarm_name=f"{prefix}-dead-letters-{hw}",
                     alarm_description=f"build jobs for {hw} failed {3} times and were dead-lettered",
                     metric=q.metric_approximate_number_of_messages_visible(period=Duration.minutes(5),
                                                                            statistic="Maximum"),
                     threshold=1, evaluation_periods=1,
                     comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                     treat_missing_data=cw.TreatMissingData.NOT_BREACHING)
            for hw, q in data.dead_letters.items()
        ]
        for api, suffix in zip(rest_apis, ("", "-iam")):
            self.operator_alarms.append(cw.Alarm(
                self, f"Api5xx{suffix}", alarm_name=f"{prefix}-api{suffix}-5xx",
                alarm_description=f"API{' (IAM)' if suffix else ''} answers 5xx",
                metric=api_metric(api, "5XXError"), threshold=5, evaluation_periods=5, datapoints_to_alarm=3,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING))
        # workers replaced because they stopped heartbeating (or never started): one now and then is a machine
        # fault; several in a quarter of an hour is a broken bundle or image (read the worker log group)
        unhealthy = cw.Metric(namespace="Infaas", metric_name="UnhealthyWorkers", statistic="Sum",
                              period=Duration.minutes(15))
        self.operator_alarms.append(cw.Alarm(
            self, "UnhealthyWorkers", alarm_name=f"{prefix}-unhealthy-workers",
            alarm_description="workers replaced for silence (no heartbeat): read the worker log group "
                              f"{fleets.log_group.log_group_name}, streams <instance id> and <instance id>/install",
            metric=unhealthy, threshold=3, evaluation_periods=1,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING))
        self.dashboard.add_widgets(cw.GraphWidget(title="Workers marked unhealthy (no heartbeat)", width=12, left=[
            cw.Metric(namespace="Infaas", metric_name="UnhealthyWorkers", statistic="Sum", period=MINUTE)]))
        if tier is not None:
            self._tier(tier, prefix)
        self.dashboard.add_widgets(cw.AlarmStatusWidget(title="Alarms", width=24, alarms=self.operator_alarms))

    def _tier(self, tier, prefix: str) -> None:
        """The serverless tier: its functions as Lambda measures them, what the selector saw (errors,
        throttles: alarmed), per memory size."""
        fns = tier.functions
        self.dashboard.add_widgets(
            cw.GraphWidget(title="Serverless tier: invocations, errors, throttles (Lambda)", width=12,
                           left=[m for mb, fn in fns.items() for m in (
                               fn.metric_invocations(period=MINUTE, label=f"{mb} MB"),
                               fn.metric_errors(period=MINUTE, label=f"errors {mb} MB"),
                               fn.metric_throttles(period=MINUTE, label=f"throttles {mb} MB"))],
                           right=[fn.metric_duration(period=MINUTE, statistic="p99", label=f"p99 {mb} MB")
                                  for mb, fn in fns.items()]),
            cw.GraphWidget(title="Serverless tier: as the selector saw it", width=12, left=[
                cw.Metric(namespace="Infaas", metric_name=name, statistic="Sum", period=MINUTE)
                for name in ("FunctionErrors", "FunctionThrottles")]),  # adapters.aws.metrics.DIMENSIONS
        )
        # a function that fails (its model, its memory, its timeout) or is throttled (the account's concurrency
        # quota: 10 on a new account) sends queries to machines, or refuses them when none is up
        for name, what, threshold in (
                ("FunctionErrors", "invocations of the inference functions failed (read their log group "
                 f"{tier.log_group.log_group_name})", 5),
                ("FunctionThrottles", "invocations of the inference functions were throttled: the account's "
                 "Lambda concurrency quota is spent (ask AWS to raise ConcurrentExecutions)", 10)):
            self.operator_alarms.append(cw.Alarm(
                self, f"Tier{name}", alarm_name=f"{prefix}-tier-{name[len('Function'):].lower()}",
                alarm_description=what,
                metric=cw.Metric(namespace="Infaas", metric_name=name, statistic="Sum", period=Duration.minutes(5)),
                threshold=threshold, evaluation_periods=1,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING))
