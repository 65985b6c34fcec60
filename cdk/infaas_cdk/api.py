"""The REST API: IAM authorisation on every method, throttling, size limits, WAF.

Routes (Lambda proxy integrations):

| path | methods | function |
|---|---|---|
| ``/v1/infer`` | POST | selector (data plane) |
| ``/v2``, ``/v2/{proxy+}`` | ANY | selector (Open Inference Protocol) |
| ``/v1/{proxy+}`` | ANY | frontend (models, uploads, tasks, workers) |
| ``/openapi.json`` | GET | frontend |

Every method requires IAM (SigV4) authorisation; which principal may call
which method and path is an IAM policy on the API's ``execute-api`` ARNs.
Limits: the stage throttles to ``infaas:api_rate_rps`` with bursts of
``infaas:api_burst``; a WAF web ACL limits each client address and drops
known-bad addresses; bodies are capped by API Gateway (10 MB), Lambda
(6 MB) and the app (``INFAAS_MAX_BODY_BYTES``, 5 MiB here, answered with 413);
larger models go through a presigned S3 upload capped by S3 itself.
"""

from __future__ import annotations

from aws_cdk import RemovalPolicy, aws_apigateway as apigw, aws_lambda as lambda_, aws_logs as logs, aws_wafv2 as waf
from constructs import Construct

from .config import DeployConfig

# Every body is binary to API Gateway: a request body reaches the function base64-encoded whatever its
# Content-Type (Mangum decodes it), and a base64 answer (Mangum's, for any non-text media type) goes back as
# bytes whatever the client's Accept says. With a list of types instead, a client that sends binary without
# one of them -- tritonclient's binary tensors carry no Content-Type -- has its bytes mangled as text, and an
# OIP binary answer comes back as base64 text unless the client's first Accept type is on the list.
BINARY_MEDIA_TYPES = ["*/*"]
WAF_REQUESTS_PER_5_MIN_PER_IP = 60_000  # 200/s sustained from one address


class Api(Construct):
    def __init__(self, scope: Construct, id: str, *, config: DeployConfig, frontend: lambda_.IFunction,
                 selector: lambda_.IFunction) -> None:
        super().__init__(scope, id)
        access_logs = logs.LogGroup(self, "AccessLogs", retention=logs.RetentionDays.ONE_MONTH,
                                    removal_policy=RemovalPolicy.DESTROY)
        self.rest_api = apigw.RestApi(
            self, "Rest",
            description="infaas: control plane (frontend) and data plane (selector)",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            binary_media_types=BINARY_MEDIA_TYPES,
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.DESTROY,
            deploy_options=apigw.StageOptions(
                stage_name="api",
                throttling_rate_limit=config.api_rate_rps,
                throttling_burst_limit=config.api_burst,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                metrics_enabled=True,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True, http_method=True, ip=True, protocol=True, request_time=True,
                    resource_path=True, response_length=True, status=True, user=True),
            ),
        )
        validator = self.rest_api.add_request_validator("Validator", validate_request_parameters=True,
                                                     validate_request_body=True)
        iam_only = {"authorization_type": apigw.AuthorizationType.IAM, "request_validator": validator}

        front = apigw.LambdaIntegration(frontend)
        select = apigw.LambdaIntegration(selector)
        v1 = self.rest_api.root.add_resource("v1")
        v1.add_resource("{proxy+}").add_method("ANY", front, **iam_only)
        v1.add_resource("infer").add_method("POST", select, **iam_only)
        v2 = self.rest_api.root.add_resource("v2")
        v2.add_method("ANY", select, **iam_only)
        v2.add_resource("{proxy+}").add_method("ANY", select, **iam_only)
        self.rest_api.root.add_resource("openapi.json").add_method("GET", front, **iam_only)

        acl = waf.CfnWebACL(
            self, "Waf",
            scope="REGIONAL",
            default_action=waf.CfnWebACL.DefaultActionProperty(allow={}),
            visibility_config=_visibility("infaas-api"),
            rules=[
                waf.CfnWebACL.RuleProperty(
                    name="per-address-rate", priority=0, action=waf.CfnWebACL.RuleActionProperty(block={}),
                    statement=waf.CfnWebACL.StatementProperty(rate_based_statement=waf.CfnWebACL.RateBasedStatementProperty(
                        limit=WAF_REQUESTS_PER_5_MIN_PER_IP, aggregate_key_type="IP")),
                    visibility_config=_visibility("per-address-rate"),
                ),
                waf.CfnWebACL.RuleProperty(
                    name="aws-ip-reputation", priority=1,
                    override_action=waf.CfnWebACL.OverrideActionProperty(none={}),
                    statement=waf.CfnWebACL.StatementProperty(
                        managed_rule_group_statement=waf.CfnWebACL.ManagedRuleGroupStatementProperty(
                            vendor_name="AWS", name="AWSManagedRulesAmazonIpReputationList")),
                    visibility_config=_visibility("aws-ip-reputation"),
                ),
            ],
        )
        waf.CfnWebACLAssociation(self, "WafAssociation", resource_arn=self.rest_api.deployment_stage.stage_arn,
                                 web_acl_arn=acl.attr_arn)
        self.web_acl = acl


def _visibility(name: str) -> waf.CfnWebACL.VisibilityConfigProperty:
    return waf.CfnWebACL.VisibilityConfigProperty(cloud_watch_metrics_enabled=True, metric_name=name,
                                                  sampled_requests_enabled=True)
