"""cdk-nag (AwsSolutions) acknowledgements: each finding left standing, with its reason.

cdk-nag 3 acknowledges findings one by one (``AwsSolutions::<rule>[<finding>]``)
through CDK's own ``Validations.of(construct).acknowledge``. Everything not
listed here fails ``make synth`` and the infrastructure tests.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, Stack, Validations
from constructs import IConstruct

PACK = "AwsSolutions::"


def _ack(construct: IConstruct, rule: str, reason: str) -> None:
    Validations.of(construct).acknowledge(Acknowledgment(id=PACK + rule, reason=reason))


def _arn(stack: Stack, construct: IConstruct) -> str:
    return f"<{stack.get_logical_id(construct.node.default_child)}.Arn>"


def acknowledge(stack) -> None:  # stack: InfaasStack
    fns, data, fleets, api = stack.functions, stack.data, stack.fleets, stack.api
    table, bucket = _arn(stack, data.table), _arn(stack, data.bucket)

    # -- API --------------------------------------------------------------------------
    for method in api.rest_api.methods:
        _ack(method, "AwsSolutions-COG4",
             "Every method of the API-key entry point uses the Lambda REQUEST authorizer instead of Cognito: "
             "callers present the service's own bearer API keys (hashed in the metadata table, the same keys as the "
             "local stack); the app enforces each key's scopes per route (see docs/aws.md).")
    for method in api.iam_api.methods:
        _ack(method, "AwsSolutions-COG4",
             "Every method of the IAM entry point uses IAM (SigV4) authorisation instead of Cognito: callers are AWS "
             "principals, and IAM policies on execute-api ARNs say which of them may call which method "
             "(see docs/aws.md).")
    _ack(api.rest_api, "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
         "AmazonAPIGatewayPushToCloudWatchLogs]",
         "API Gateway's account-level logging role; AWS maintains this service-role policy for exactly that use.")

    # -- functions ----------------------------------------------------------------------
    for fn in (fns.frontend, fns.selector, fns.autoscaler, fns.authorizer):
        _ack(fn, "AwsSolutions-L1",
             "Python 3.12 on purpose: the dependencies layer is built for cp312 wheels (layers/build.py); the "
             "runtime and the layer move together.")
        log_group = stack.get_logical_id(fn.log_group.node.default_child)
        _ack(fn.role, f"AwsSolutions-IAM5[Resource::<{log_group}.Arn>:*]",
             "Log streams of the function's own log group: stream names are created by Lambda at run time.")
    for role in (fns.frontend.role, fns.selector.role, fns.autoscaler.role, fleets.role):
        _ack(role, f"AwsSolutions-IAM5[Resource::{table}/index/*]",
             "The table's indexes (gsi1): index ARNs are the table ARN plus /index/<name>; item actions "
             "only (Data.grant_table).")
    _ack(fns.selector.role, "AwsSolutions-IAM5[Resource::*]",
         "Creating and deleting the network interfaces of a function in a VPC: these EC2 actions have no "
         "resource-level permissions (the same actions as AWSLambdaVPCAccessExecutionRole).")
    _ack(fns.autoscaler.role, "AwsSolutions-IAM5[Resource::*]",
         "autoscaling:DescribeAutoScalingGroups has no resource-level permissions; the changing actions are "
         "limited to this deployment's groups.")

    # -- the serverless tier's inference functions (tier.py) --------------------------------
    if stack.tier is not None:
        for fn in stack.tier.functions.values():
            _ack(fn, "AwsSolutions-L1",
                 "Python 3.12 on purpose: the inference layer is built for cp312 wheels (layers/build.py); the "
                 "runtime and the layer move together.")
        tier_logs = stack.get_logical_id(stack.tier.log_group.node.default_child)
        _ack(stack.tier.role, f"AwsSolutions-IAM5[Resource::<{tier_logs}.Arn>:*]",
             "Log streams of the inference functions' own log group: stream names are created by Lambda at run time.")
        _ack(stack.tier.role, f"AwsSolutions-IAM5[Resource::{bucket}/variants/*]",
             "The built variants' files (variants/<architecture>/<hash>/...): keys are created at run time; the "
             "functions read nothing else of the bucket.")

    # -- model bucket: object-level grants (Data.grant_objects) --------------------------
    for role in (fns.frontend.role, fleets.role):
        _ack(role, f"AwsSolutions-IAM5[Resource::{bucket}/*]",
             "Objects of the model bucket: keys are created at run time (architectures/, variants/, uploads/).")

    # -- Auto Scaling groups ------------------------------------------------------------------
    for name in fleets.group_names.values():
        arn = ("arn:<AWS::Partition>:autoscaling:<AWS::Region>:<AWS::AccountId>:autoScalingGroup:*:"
               f"autoScalingGroupName/{name}")
        reason = ("A group ARN contains a UUID assigned at creation; the ARN is pinned to this deployment's "
                  "group by its name.")
        _ack(fleets.role, f"AwsSolutions-IAM5[Resource::{arn}]", reason)
        _ack(fns.autoscaler.role, f"AwsSolutions-IAM5[Resource::{arn}]", reason)
    _ack(fleets.role, "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonSSMManagedInstanceCore]",
         "Session Manager on the workers (an operator's shell without SSH or an open port): AWS maintains this "
         "policy for exactly the SSM agent's calls, which change with the agent.")
    worker_logs = stack.get_logical_id(fleets.log_group.node.default_child)
    _ack(fleets.role, f"AwsSolutions-IAM5[Resource::<{worker_logs}.Arn>:*]",
         "Log streams of the worker log group: one per instance, named by its id at run time.")
    for group in fleets.groups.values():
        _ack(group, "AwsSolutions-AS3",
             "Scaling is decided by the autoscaler function, which records every change with its reasons in the "
             "metadata table's event log; instance counts are on the dashboard. No SNS notifications needed.")

    # -- the worker key -----------------------------------------------------------------
    _ack(data.worker_key, "AwsSolutions-SMG4",
         "The worker key is an internal credential between the selector and the workers, generated at deploy time "
         "and read by them at start; rotating it means redeploying (docs/security.md). Automatic rotation would "
         "need a rotation function and a window in which workers hold the old key.")
