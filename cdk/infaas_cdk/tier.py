"""The serverless CPU tier (``-c infaas:tier=on``, the default; docs/function-tier.md).

One inference function (``functions/inference``) per memory size a ``lambda`` variant may be
profiled at (``infaas:tier:memory_mb``, default 512, 1,024, 1,769 and 3,008 MB): the selector
invokes the function of the variant's size (``INFAAS_FUNCTION_NAMES``) when no worker answers
in time. Each runs Python 3.12 with its own layer (onnxruntime and numpy, ``build/layers/inference``),
a timeout of the API's 29 s, 512 MB of ``/tmp`` (the handler keeps at most 400 MiB of models
there), the model bucket's name, no VPC (it reaches only S3), and one role shared by the sizes:
``s3:GetObject`` on the bucket's ``variants/*`` and writing to its own log group, nothing else.
No reserved or provisioned concurrency: a new account's quota (10) cannot spare it.
"""

from __future__ import annotations

from aws_cdk import Annotations, Duration, RemovalPolicy, Size, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from .artifacts import inference_layer_dir, stage_function
from .config import DeployConfig
from .data import Data

RUNTIME = lambda_.Runtime.PYTHON_3_12  # = layers/build.py PYTHON_VERSION
TIMEOUT = Duration.seconds(29)  # the API's integration timeout: a query never waits longer
VARIANTS = "variants/*"  # the keys of built variants (infaas.app.build): all the function reads


class Tier(Construct):
    def __init__(self, scope: Construct, id: str, *, config: DeployConfig, data: Data) -> None:
        super().__init__(scope, id)
        path, built = inference_layer_dir(config.require_artifacts)
        if not built:
            Annotations.of(self).add_warning_v2(
                "infaas:inference-layer-not-built",
                "The inference function's layer is a placeholder: run `make layers` before deploying.")
        self.layer = lambda_.LayerVersion(
            self, "Onnxruntime", code=lambda_.Code.from_asset(str(path)), compatible_runtimes=[RUNTIME],
            compatible_architectures=[lambda_.Architecture.X86_64],
            description="infaas inference function: onnxruntime, numpy (layers/requirements-inference.txt)")
        self.log_group = logs.LogGroup(self, "Logs", retention=logs.RetentionDays.ONE_MONTH,
                                       removal_policy=RemovalPolicy.DESTROY)
        self.role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                             description="infaas inference functions: the variants' files and their own log group only")
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[self.log_group.log_group_arn, f"{self.log_group.log_group_arn}:*"]))
        self.role.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject"],
                                                    resources=[data.bucket.arn_for_objects(VARIANTS)]))
        code = lambda_.Code.from_asset(str(stage_function("inference")))
        self.functions: dict[int, lambda_.Function] = {}
        for mb in config.tier_memory_mb:
            self.functions[mb] = lambda_.Function(
                self, f"Inference{mb}",
                runtime=RUNTIME,
                architecture=lambda_.Architecture.X86_64,
                handler="handler.handler",
                code=code,
                layers=[self.layer],
                memory_size=mb,
                ephemeral_storage_size=Size.mebibytes(512),
                timeout=TIMEOUT,
                role=self.role,
                log_group=self.log_group,
                environment={"INFAAS_BUCKET": data.bucket.bucket_name,
                             "POWERTOOLS_SERVICE_NAME": "infaas-inference"},
                description=f"infaas inference ({mb} MB): the serverless CPU tier's lambda variants",
            )

    def names_json(self) -> str:
        """``INFAAS_FUNCTION_NAMES`` for the selector: ``{"<memory MB>": "<function name>"}``."""
        return Stack.of(self).to_json_string({str(mb): fn.function_name for mb, fn in self.functions.items()})

    def grant_invoke(self, grantee: iam.IGrantable) -> None:
        """``lambda:InvokeFunction`` on these functions (their unqualified ARNs), nothing else."""
        grantee.grant_principal.add_to_principal_policy(iam.PolicyStatement(
            actions=["lambda:InvokeFunction"], resources=[fn.function_arn for fn in self.functions.values()]))
