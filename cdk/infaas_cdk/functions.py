"""The four Lambda functions, each with its own role, log group and grants.

Code: ``functions/<name>/`` plus the ``infaas`` package (staged at synth);
third-party packages: one layer built by ``layers/build.py`` (no Docker).
Roles are per function and start empty: logging to the function's own log
group, then only the grants the stack adds (``table.grant_read_data(fn)``
style), so the selector can read the table and nothing else, and the API-key
authorizer can read API keys' items (``GetItem`` on ``KEY#*`` partitions) and
nothing else.
"""

from __future__ import annotations

from aws_cdk import Annotations, Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from .artifacts import layer_dir, stage_function
from .config import DeployConfig, hardware_prices
from .data import LANE_SEND, TABLE_READ, TABLE_WRITE, Data
from .network import Network
from .tier import Tier

RUNTIME = lambda_.Runtime.PYTHON_3_12  # = layers/build.py PYTHON_VERSION
API_TIMEOUT = Duration.seconds(29)  # API Gateway's integration timeout
AUTHORIZER_TIMEOUT = Duration.seconds(10)
KEY_ITEMS = "KEY#*"  # the partition keys of API keys (infaas.app.store.MetadataStore.put_key)
TIER_DEMAND_ITEM = "STATE#tier-demand"  # infaas.app.data.TIER_DEMAND, as MetadataStore.put_state keys it


class Functions(Construct):
    def __init__(self, scope: Construct, id: str, *, config: DeployConfig, data: Data, network: Network,
                 tier: "Tier | None" = None) -> None:
        super().__init__(scope, id)
        path, built = layer_dir(config.require_artifacts)
        if not built:
            Annotations.of(self).add_warning_v2(
                "infaas:layer-not-built", "The dependencies layer is a placeholder: run `make layers` before deploying.")
        self.layer = lambda_.LayerVersion(
            self, "Deps", code=lambda_.Code.from_asset(str(path)), compatible_runtimes=[RUNTIME],
            compatible_architectures=[lambda_.Architecture.X86_64],
            description="infaas: numpy, onnx, fastapi, mangum, powertools (layers/requirements.txt)",
        )
        self.common_env = {
            **data.adapter_environment(),
            "INFAAS_BUILD_HARDWARE": config.build_hardware,
            "INFAAS_HARDWARE_PRICES": hardware_prices(config),
            "INFAAS_MAX_BODY_BYTES": str(5 << 20),  # below Lambda's 6 MB request payload
            "POWERTOOLS_METRICS_NAMESPACE": "Infaas",
            "POWERTOOLS_LOG_LEVEL": "INFO",
        }
        self.frontend = self._function("Frontend", "frontend", memory_mb=2048, timeout=API_TIMEOUT)
        tier_env = {} if tier is None else {
            "INFAAS_FUNCTION_TIER": "on", "INFAAS_FUNCTION_NAMES": tier.names_json(),
            "INFAAS_FUNCTION_CONCURRENCY": str(config.tier_concurrency)}
        self.selector = self._function(
            "Selector", "selector", memory_mb=1024, timeout=API_TIMEOUT,
            vpc=network, env={"INFAAS_SNAPSHOT_S": "1.0", "INFAAS_WORKER_SECRET_ARN": data.worker_key.secret_arn,
                              **tier_env},
        )
        self.autoscaler = self._function(
            # no reserved concurrency: a new account's quota (10) cannot spare it, and two overlapping runs are
            # safe anyway (the plan is one conditionally written item: the loser applies nothing)
            "Autoscaler", "autoscaler", memory_mb=512, timeout=Duration.seconds(60),
            env={"INFAAS_SCALE_PERIOD_S": "60", "INFAAS_SCALE_COOLDOWN_S": "300", "INFAAS_SCALE_DOWN_PERIODS": "10",
                 "INFAAS_SCALE_IDLE_UNLOAD_S": "900"},
        )

        # least privilege, per function
        # (each action is one the function's calls make: tests/infrastructure/test_iam_map.py)
        data.grant_table(self.frontend, TABLE_WRITE)
        data.grant_objects(self.frontend, ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"), list_keys=True)
        data.grant_lanes(self.frontend, LANE_SEND)
        data.grant_table(self.selector, TABLE_READ)
        data.grant_worker_key(self.selector)  # the selector alone among the functions calls workers
        if tier is not None:  # the serverless tier: invoking its functions
            tier.grant_invoke(self.selector)
        # publishing the tier's recent rate and the queries it turned away, per variant, for the autoscaler
        # (one item, the policy state TIER_DEMAND of infaas.app.data; no other write)
        self.selector.add_to_role_policy(iam.PolicyStatement(
            actions=["dynamodb:PutItem"], resources=[data.table.table_arn],
            conditions={"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": [TIER_DEMAND_ITEM]}}))
        data.grant_table(self.autoscaler, TABLE_WRITE)

        # the API-key authorizer: one key's item at a time, nothing else in the table, no other service
        self.authorizer = self._function(
            "Authorizer", "authorizer", memory_mb=512, timeout=AUTHORIZER_TIMEOUT, common=False,
            env={"INFAAS_BACKEND": "aws", "INFAAS_TABLE": data.table.table_name, "POWERTOOLS_LOG_LEVEL": "INFO"},
        )
        self.authorizer.add_to_role_policy(iam.PolicyStatement(
            actions=["dynamodb:GetItem"], resources=[data.table.table_arn],
            conditions={"ForAllValues:StringLike": {"dynamodb:LeadingKeys": [KEY_ITEMS]}}))

    def _function(self, id: str, name: str, *, memory_mb: int, timeout: Duration, vpc: Network | None = None,
                  env: dict[str, str] | None = None, reserved: int | None = None,
                  common: bool = True) -> lambda_.Function:
        log_group = logs.LogGroup(self, f"{id}Logs", retention=logs.RetentionDays.ONE_MONTH,
                                  removal_policy=RemovalPolicy.DESTROY)
        role = iam.Role(self, f"{id}Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                        description=f"infaas {name} function: its own log group and its grants only")
        role.add_to_policy(iam.PolicyStatement(actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                                               resources=[log_group.log_group_arn, f"{log_group.log_group_arn}:*"]))
        vpc_options = {}
        if vpc is not None:
            # ENIs in the VPC: these EC2 actions take no resource-level permissions.
            role.add_to_policy(iam.PolicyStatement(
                actions=["ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DeleteNetworkInterface",
                         "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"],
                resources=["*"]))
            vpc_options = {"vpc": vpc.vpc, "vpc_subnets": vpc.subnets, "security_groups": [vpc.selector_sg]}
        fn = lambda_.Function(
            self, id,
            runtime=RUNTIME,
            architecture=lambda_.Architecture.X86_64,
            handler="handler.handler",
            code=lambda_.Code.from_asset(str(stage_function(name))),
            layers=[self.layer],
            memory_size=memory_mb,
            timeout=timeout,
            role=role,
            log_group=log_group,
            environment={**(self.common_env if common else {}), "POWERTOOLS_SERVICE_NAME": f"infaas-{name}",
                         **(env or {})},
            reserved_concurrent_executions=reserved,
            description=f"infaas {name}",
            **vpc_options,
        )
        return fn
