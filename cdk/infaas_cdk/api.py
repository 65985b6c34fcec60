"""The REST APIs: API keys through a Lambda authorizer, or IAM; throttling, size limits, WAF.

Two entry points to the same functions, with the same routes (Lambda proxy integrations):

| path | methods | function |
|---|---|---|
| ``/v1/infer`` | POST | selector (data plane) |
| ``/v2``, ``/v2/{proxy+}`` | ANY | selector (Open Inference Protocol) |
| ``/v1/{proxy+}`` | ANY | frontend (models, uploads, tasks, workers) |
| ``/openapi.json`` | GET | frontend |

* ``rest_api`` (output ``ApiUrl``): every method has the REQUEST authorizer (``functions/authorizer``),
  identity source the ``Authorization`` header, answers cached ``AUTHORIZER_TTL_S`` per header value:
  the local stack's bearer keys (``infaas tenants create``), for ``tritonclient``, ``curl`` and the CLI.
* ``iam_api`` (output ``IamApiUrl``): every method requires IAM (SigV4) authorisation, for AWS-native
  callers (roles of other services, SDKs); which principal may call which method and path is an IAM
  policy on that API's ``execute-api`` ARNs.

A method has one kind of authorisation in API Gateway, and an authorizer cannot verify a SigV4
signature, so the two ways in are two APIs rather than one method accepting both.
Limits: each stage throttles to ``infaas:api_rate_rps`` with bursts of ``infaas:api_burst``; one WAF
web ACL limits each client address and drops known-bad addresses on both; bodies are capped by API
Gateway (10 MB), Lambda (6 MB) and the app (``INFAAS_MAX_BODY_BYTES``, 5 MiB here, answered with
413); larger models go through a presigned S3 upload capped by S3 itself.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_wafv2 as waf
from constructs import Construct

from .config import DeployConfig

# Every body is binary to API Gateway: a request body reaches the function base64-encoded whatever its
# Content-Type (Mangum decodes it), and a base64 answer (Mangum's, for any non-text media type) goes back as
# bytes whatever the client's Accept says. With a list of types instead, a client that sends binary without
# one of them -- tritonclient's binary tensors carry no Content-Type -- has its bytes mangled as text, and an
# OIP binary answer comes back as base64 text unless the client's first Accept type is on the list.
BINARY_MEDIA_TYPES = ["*/*"]
WAF_REQUESTS_PER_5_MIN_PER_IP = 60_000  # 200/s sustained from one address
# How long API Gateway reuses the authorizer's answer for one Authorization header: a key costs one
# authorizer call (one DynamoDB read) per this period, and a revoked key is refused within it.
AUTHORIZER_TTL_S = 30


class Api(Construct):
    def __init__(self, scope: Construct, id: str, *, config: DeployConfig, frontend: lambda_.IFunction,
                 selector: lambda_.IFunction, authorizer: lambda_.IFunction, prefix: str = "infaas") -> None:
        super().__init__(scope, id)
        access_logs = logs.LogGroup(self, "AccessLogs", retention=logs.RetentionDays.ONE_MONTH,
                                    removal_policy=RemovalPolicy.DESTROY)
        self.rest_api = self._rest_api("Rest", f"{prefix}-api", "infaas: API keys (bearer), control and data plane",
                                       config, access_logs)
        self.iam_api = self._rest_api("IamRest", f"{prefix}-api-iam",
                                      "infaas: IAM (SigV4) callers, control and data plane", config, access_logs)
        self.key_authorizer = apigw.RequestAuthorizer(
            self, "KeyAuthorizer", handler=authorizer, authorizer_name=f"{prefix}-api-keys",
            identity_sources=[apigw.IdentitySource.header("Authorization")],
            results_cache_ttl=Duration.seconds(AUTHORIZER_TTL_S))
        front, select = apigw.LambdaIntegration(frontend), apigw.LambdaIntegration(selector)
        _routes(self.rest_api, front, select, authorization_type=apigw.AuthorizationType.CUSTOM,
                authorizer=self.key_authorizer)
        _routes(self.iam_api, front, select, authorization_type=apigw.AuthorizationType.IAM)

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
        waf.CfnWebACLAssociation(self, "IamWafAssociation", resource_arn=self.iam_api.deployment_stage.stage_arn,
                                 web_acl_arn=acl.attr_arn)
        self.web_acl = acl

    @property
    def rest_apis(self) -> tuple[apigw.RestApi, apigw.RestApi]:
        return self.rest_api, self.iam_api

    def _rest_api(self, id: str, name: str, description: str, config: DeployConfig,
                  access_logs: logs.LogGroup) -> apigw.RestApi:
        return apigw.RestApi(
            self, id,
            rest_api_name=name,
            description=description,
            endpoint_types=[apigw.EndpointType.REGIONAL],
            binary_media_types=BINARY_MEDIA_TYPES,
            cloud_watch_role=id == "Rest",  # the account's logging role, once
            cloud_watch_role_removal_policy=RemovalPolicy.DESTROY if id == "Rest" else None,
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


def _routes(api: apigw.RestApi, front: apigw.LambdaIntegration, select: apigw.LambdaIntegration,
            **auth) -> None:
    """The routes (module docstring) on ``api``, each method with ``auth`` and the request validator."""
    validator = api.add_request_validator("Validator", validate_request_parameters=True, validate_request_body=True)
    options = {**auth, "request_validator": validator}
    v1 = api.root.add_resource("v1")
    v1.add_resource("{proxy+}").add_method("ANY", front, **options)
    v1.add_resource("infer").add_method("POST", select, **options)
    v2 = api.root.add_resource("v2")
    v2.add_method("ANY", select, **options)
    v2.add_resource("{proxy+}").add_method("ANY", select, **options)
    api.root.add_resource("openapi.json").add_method("GET", front, **options)


def _visibility(name: str) -> waf.CfnWebACL.VisibilityConfigProperty:
    return waf.CfnWebACL.VisibilityConfigProperty(cloud_watch_metrics_enabled=True, metric_name=name,
                                                  sampled_requests_enabled=True)
