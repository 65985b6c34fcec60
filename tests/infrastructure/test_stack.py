"""What the synthesised template must contain."""

from __future__ import annotations

import json

import pytest

HARDWARE = ("cpu", "gpu", "inferentia")


def _ref(value) -> str:
    """The logical id a Ref / Fn::GetAtt points at."""
    if isinstance(value, dict):
        if "Ref" in value:
            return value["Ref"]
        if "Fn::GetAtt" in value:
            return value["Fn::GetAtt"][0]
    raise AssertionError(f"not a reference: {value!r}")


def _statements(synthesized, role_id: str) -> list[dict]:
    out = []
    for policy in synthesized.resources("AWS::IAM::Policy").values():
        if role_id in [_ref(r) for r in policy["Properties"]["Roles"]]:
            out += policy["Properties"]["PolicyDocument"]["Statement"]
    return out


def _actions(statements: list[dict]) -> set[str]:
    out = set()
    for s in statements:
        a = s["Action"]
        out |= {a} if isinstance(a, str) else set(a)
    return out


# -- data ---------------------------------------------------------------------------
def test_metadata_table_keys_index_ttl_and_encryption(synthesized):
    table = synthesized.one("AWS::DynamoDB::Table")["Properties"]
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}]
    (gsi,) = table["GlobalSecondaryIndexes"]
    assert gsi["IndexName"] == "gsi1" and gsi["Projection"] == {"ProjectionType": "ALL"}
    assert gsi["KeySchema"] == [{"AttributeName": "gsi1pk", "KeyType": "HASH"},
                                {"AttributeName": "gsi1sk", "KeyType": "RANGE"}]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["SSESpecification"]["SSEEnabled"] is True
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True


def test_model_bucket_is_encrypted_private_versioned_and_tls_only(synthesized):
    buckets = synthesized.resources("AWS::S3::Bucket")
    models = next(b for k, b in buckets.items() if k.startswith("DataModels"))["Properties"]
    assert models["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "AES256"}
    assert models["PublicAccessBlockConfiguration"] == {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                                                        "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    assert models["VersioningConfiguration"] == {"Status": "Enabled"}
    assert "LoggingConfiguration" in models
    rules = {r["Id"]: r for r in models["LifecycleConfiguration"]["Rules"] if "Id" in r}
    assert rules["expire-unregistered-uploads"]["Prefix"] == "uploads/"
    for bucket in buckets.values():  # every bucket, the access-log bucket too, is encrypted
        assert "BucketEncryption" in bucket["Properties"]
    denies = [s for p in synthesized.resources("AWS::S3::BucketPolicy").values()
              for s in p["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert any(s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in denies)


def test_each_build_lane_has_a_dead_letter_queue(synthesized):
    queues = synthesized.resources("AWS::SQS::Queue")
    by_name = {q["Properties"]["QueueName"]: (k, q["Properties"]) for k, q in queues.items()}
    for hw in HARDWARE:
        _, lane = by_name[f"infaas-build-{hw}"]
        dlq_id, dlq = by_name[f"infaas-build-{hw}-dlq"]
        assert lane["RedrivePolicy"]["maxReceiveCount"] == 3  # = SqsJobQueue(max_receives=3)
        assert _ref(lane["RedrivePolicy"]["deadLetterTargetArn"]) == dlq_id
        assert lane["SqsManagedSseEnabled"] is True and dlq["SqsManagedSseEnabled"] is True
        assert dlq["MessageRetentionPeriod"] > lane["MessageRetentionPeriod"]


# -- API ------------------------------------------------------------------------------
def _apis(synthesized) -> dict[str, str]:
    """RestApi logical id -> "keys" or "iam" (``Api.rest_api``, ``Api.iam_api``)."""
    return {k: "iam" if k.startswith("ApiIamRest") else "keys" for k in synthesized.resources("AWS::ApiGateway::RestApi")}


def test_every_method_has_the_key_authorizer_or_iam_and_nothing_is_open(synthesized):
    """The API-key entry point: every method has the REQUEST authorizer (identity source the
    Authorization header, answers cached 30 s); the IAM one: every method AWS_IAM. The same routes on both."""
    apis = _apis(synthesized)
    assert sorted(apis.values()) == ["iam", "keys"]
    (authorizer_id, authorizer), = synthesized.resources("AWS::ApiGateway::Authorizer").items()
    props = authorizer["Properties"]
    assert props["Type"] == "REQUEST" and props["IdentitySource"] == "method.request.header.Authorization"
    assert props["AuthorizerResultTtlInSeconds"] == 30
    assert apis[_ref(props["RestApiId"])] == "keys"
    assert "FunctionsAuthorizer" in json.dumps(props["AuthorizerUri"])
    methods = {"keys": set(), "iam": set()}
    for logical_id, method in synthesized.resources("AWS::ApiGateway::Method").items():
        p = method["Properties"]
        kind = apis[_ref(p["RestApiId"])]
        if kind == "keys":
            assert p["AuthorizationType"] == "CUSTOM" and _ref(p["AuthorizerId"]) == authorizer_id, logical_id
        else:
            assert p["AuthorizationType"] == "AWS_IAM" and "AuthorizerId" not in p, logical_id
        assert "RequestValidatorId" in p, logical_id
        methods[kind].add((p["HttpMethod"], logical_id.replace("ApiIamRest", "ApiRest")[:-8]))
    assert len(methods["keys"]) >= 5 and methods["keys"] == methods["iam"]


def test_the_authorizer_reads_key_items_only(synthesized):
    fn_id, fn = next((k, f) for k, f in synthesized.resources("AWS::Lambda::Function").items()
                     if k.startswith("FunctionsAuthorizer"))
    statements = [s for s in _statements(synthesized, _ref(fn["Properties"]["Role"]))
                  if not all(a.startswith("logs:") for a in _actions([s]))]  # its own log group aside
    assert statements == [{
        "Action": "dynamodb:GetItem", "Effect": "Allow",
        "Resource": {"Fn::GetAtt": [_ref(statements[0]["Resource"]), "Arn"]},
        "Condition": {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["KEY#*"]}}}]
    assert _ref(statements[0]["Resource"]).startswith("DataMetadata")
    env = fn["Properties"]["Environment"]["Variables"]
    assert set(env) == {"INFAAS_BACKEND", "INFAAS_TABLE", "POWERTOOLS_LOG_LEVEL", "POWERTOOLS_SERVICE_NAME"}
    assert "VpcConfig" not in fn["Properties"]
    permissions = [p["Properties"] for p in synthesized.resources("AWS::Lambda::Permission").values()
                   if _ref(p["Properties"]["FunctionName"]) == fn_id]
    assert permissions and all(p["Principal"] == "apigateway.amazonaws.com" for p in permissions)


def test_api_routes_the_data_plane_to_the_selector_and_the_rest_to_the_frontend(synthesized):
    resources = synthesized.resources("AWS::ApiGateway::Resource")
    path_of = {}

    def path(logical_id: str) -> str:
        if logical_id not in path_of:
            props = resources[logical_id]["Properties"]
            parent = props["ParentId"]
            prefix = path(_ref(parent)) if isinstance(parent, dict) and "Ref" in parent else ""
            path_of[logical_id] = f"{prefix}/{props['PathPart']}"
        return path_of[logical_id]

    functions = synthesized.resources("AWS::Lambda::Function")
    routes = {}
    for method in synthesized.resources("AWS::ApiGateway::Method").values():
        props = method["Properties"]
        uri = json.dumps(props["Integration"]["Uri"])
        target = next(name for name in ("Frontend", "Selector") if any(
            k.startswith(f"Functions{name}") and k in uri for k in functions))
        where = path(_ref(props["ResourceId"])) if "Ref" in props["ResourceId"] else "/"
        routes[(props["HttpMethod"], where)] = target
    assert routes[("POST", "/v1/infer")] == "Selector"
    assert routes[("ANY", "/v2/{proxy+}")] == "Selector"
    assert routes[("ANY", "/v1/{proxy+}")] == "Frontend"


def test_api_throttling_size_limits_waf_and_logs(synthesized):
    stages = synthesized.resources("AWS::ApiGateway::Stage").values()
    assert len(stages) == 2  # one per entry point
    for stage in stages:
        (settings,) = [s for s in stage["Properties"]["MethodSettings"] if s["HttpMethod"] == "*"]
        assert settings["ThrottlingRateLimit"] == 200 and settings["ThrottlingBurstLimit"] == 400
        assert "AccessLogSetting" in stage["Properties"]
    for api in synthesized.resources("AWS::ApiGateway::RestApi").values():
        # every body binary: tritonclient sends tensors without a Content-Type
        assert api["Properties"]["BinaryMediaTypes"] == ["*/*"]
    assert sorted(a["Properties"]["Name"] for a in synthesized.resources("AWS::ApiGateway::RestApi").values()) == [
        "infaas-api", "infaas-api-iam"]
    acl = synthesized.one("AWS::WAFv2::WebACL")["Properties"]
    assert acl["Scope"] == "REGIONAL"
    assert any("RateBasedStatement" in r["Statement"] for r in acl["Rules"])
    associated = {json.dumps(a["Properties"]["ResourceArn"])
                  for a in synthesized.resources("AWS::WAFv2::WebACLAssociation").values()}
    assert len(associated) == 2  # both stages
    for fn in synthesized.resources("AWS::Lambda::Function").values():
        env = fn["Properties"].get("Environment", {}).get("Variables", {})
        if "INFAAS_MAX_BODY_BYTES" in env:  # the app's own body limit, under Lambda's 6 MB
            assert int(env["INFAAS_MAX_BODY_BYTES"]) < 6_000_000


# -- functions ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def functions(synthesized):
    found = {}
    for logical_id, fn in synthesized.resources("AWS::Lambda::Function").items():
        for name in ("Frontend", "Selector", "Autoscaler"):
            if logical_id.startswith(f"Functions{name}"):
                found[name.lower()] = fn["Properties"]
    assert set(found) == {"frontend", "selector", "autoscaler"}
    return found


def test_three_functions_with_their_own_roles_and_the_layer(functions, synthesized):
    roles = {name: _ref(fn["Role"]) for name, fn in functions.items()}
    assert len(set(roles.values())) == 3
    for name, fn in functions.items():
        assert fn["Runtime"] == "python3.12" and fn["Handler"] == "handler.handler"
        assert len(fn["Layers"]) == 1
        role = synthesized.template["Resources"][roles[name]]["Properties"]
        assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "lambda.amazonaws.com"}
        assert not role.get("ManagedPolicyArns")  # inline, least-privilege grants only
        env = fn["Environment"]["Variables"]
        assert env["INFAAS_BACKEND"] == "aws" and env["INFAAS_QUEUE_PREFIX"] == "infaas-"
        assert env["POWERTOOLS_SERVICE_NAME"] == f"infaas-{name}"


def test_only_the_selector_is_in_the_vpc(functions):
    assert "VpcConfig" in functions["selector"]
    assert "VpcConfig" not in functions["frontend"] and "VpcConfig" not in functions["autoscaler"]


def test_roles_are_least_privilege(functions, synthesized):
    selector = _actions(_statements(synthesized, _ref(functions["selector"]["Role"])))
    # reads, and one conditional write: the serverless tier's demand item (test_iam_map checks its condition)
    assert {a for a in selector if a.startswith("dynamodb:")} <= {
        "dynamodb:BatchGetItem", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:Query",
        "dynamodb:GetItem", "dynamodb:Scan", "dynamodb:ConditionCheckItem", "dynamodb:DescribeTable",
        "dynamodb:PutItem"}
    assert not any(a.startswith(("s3:", "sqs:", "autoscaling:")) for a in selector)
    frontend = _actions(_statements(synthesized, _ref(functions["frontend"]["Role"])))
    assert "sqs:SendMessage" in frontend and not any(a.startswith("autoscaling:") for a in frontend)
    autoscaler = _actions(_statements(synthesized, _ref(functions["autoscaler"]["Role"])))
    assert {"autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"} <= autoscaler
    assert not any(a.startswith(("s3:", "sqs:SendMessage", "sqs:ReceiveMessage")) for a in autoscaler)


def test_functions_log_with_powertools_and_measure_in_emf(functions):
    for fn in functions.values():
        assert fn["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"] == "Infaas"
        assert "LoggingConfig" in fn  # its own log group, with retention


# -- network -------------------------------------------------------------------------
def test_vpc_has_no_nat_and_uses_endpoints(synthesized):
    assert not synthesized.resources("AWS::EC2::NatGateway")
    assert not synthesized.resources("AWS::EC2::InternetGateway")
    endpoints = synthesized.resources("AWS::EC2::VPCEndpoint").values()
    services = {json.dumps(e["Properties"]["ServiceName"]): e["Properties"].get("VpcEndpointType", "Gateway")
                for e in endpoints}
    kinds = {(name, kind) for s, kind in services.items() for name in ("dynamodb", "s3", "sqs", "autoscaling")
             if f".{name}" in s}
    assert kinds == {("dynamodb", "Gateway"), ("s3", "Gateway"), ("sqs", "Interface"), ("autoscaling", "Interface")}
    synthesized.one("AWS::EC2::FlowLog")


def test_only_the_selector_reaches_the_workers(synthesized, functions):
    selector_sg = _ref(functions["selector"]["VpcConfig"]["SecurityGroupIds"][0])
    worker_sgs = {_ref(lt["Properties"]["LaunchTemplateData"]["SecurityGroupIds"][0])
                  for lt in synthesized.resources("AWS::EC2::LaunchTemplate").values()}
    (worker_sg,) = worker_sgs
    inline = synthesized.template["Resources"][worker_sg]["Properties"].get("SecurityGroupIngress", [])
    assert inline == []
    ingress = [i["Properties"] for i in synthesized.resources("AWS::EC2::SecurityGroupIngress").values()
               if _ref(i["Properties"]["GroupId"]) == worker_sg]
    assert ingress == [{"IpProtocol": "tcp", "FromPort": 9000, "ToPort": 9000, "GroupId": {"Fn::GetAtt": [worker_sg, "GroupId"]},
                        "SourceSecurityGroupId": {"Fn::GetAtt": [selector_sg, "GroupId"]},
                        "Description": "queries from the selector function only"}]


# -- fleets --------------------------------------------------------------------------
def test_one_auto_scaling_group_per_hardware_type_from_launch_templates(synthesized):
    groups = {g["Properties"]["AutoScalingGroupName"]: g["Properties"]
              for g in synthesized.resources("AWS::AutoScaling::AutoScalingGroup").values()}
    assert set(groups) == {f"infaas-workers-{hw}" for hw in HARDWARE}
    assert not synthesized.resources("AWS::AutoScaling::LaunchConfiguration")
    templates = synthesized.resources("AWS::EC2::LaunchTemplate")
    for name, group in groups.items():
        assert _ref(group["LaunchTemplate"]["LaunchTemplateId"]) in templates
        assert "LaunchConfigurationName" not in group
    assert (groups["infaas-workers-cpu"]["MinSize"], groups["infaas-workers-cpu"]["MaxSize"]) == ("1", "4")
    assert groups["infaas-workers-gpu"]["MinSize"] == "0"
    for lt in templates.values():
        data = lt["Properties"]["LaunchTemplateData"]
        assert data["MetadataOptions"]["HttpTokens"] == "required"
        assert all(d["Ebs"]["Encrypted"] for d in data["BlockDeviceMappings"])
        assert "UserData" in data and "IamInstanceProfile" in data
    hooks = synthesized.resources("AWS::AutoScaling::LifecycleHook").values()
    assert sorted(h["Properties"]["LifecycleTransition"] for h in hooks) == ["autoscaling:EC2_INSTANCE_TERMINATING"] * 3
    assert {h["Properties"]["LifecycleHookName"] for h in hooks} == {"infaas-drain"}


def test_worker_user_data_tells_the_agent_its_region_table_and_queues(synthesized):
    for lt in synthesized.resources("AWS::EC2::LaunchTemplate").values():
        text = json.dumps(lt["Properties"]["LaunchTemplateData"]["UserData"])
        for needle in ("/etc/infaas/worker.env", "INFAAS_TABLE=", "INFAAS_BUCKET=", "INFAAS_QUEUE_PREFIX=infaas-",
                       "AWS_REGION=", "AWS::Region", "INFAAS_GROUP=infaas-workers-", "install.sh"):
            assert needle in text, needle


# -- autoscaling and observability -------------------------------------------------------
def test_alarms_are_wired_to_the_autoscaler_with_a_schedule(synthesized, functions):
    alarms = synthesized.resources("AWS::CloudWatch::Alarm")
    scaling = {k for k, a in alarms.items() if a["Properties"]["AlarmName"].startswith(("infaas-latency-",
                                                                                          "infaas-backlog-"))}
    assert len(scaling) == 2 * len(HARDWARE)
    rules = list(synthesized.resources("AWS::Events::Rule").values())
    autoscaler_id = next(k for k in synthesized.resources("AWS::Lambda::Function") if k.startswith("FunctionsAutoscaler"))
    alarm_rule = next(r["Properties"] for r in rules if "EventPattern" in r["Properties"])
    assert alarm_rule["EventPattern"]["detail-type"] == ["CloudWatch Alarm State Change"]
    assert {_ref(r) for r in alarm_rule["EventPattern"]["resources"]} == scaling
    schedule = next(r["Properties"] for r in rules if "ScheduleExpression" in r["Properties"])
    assert schedule["ScheduleExpression"] == "rate(1 minute)"
    for rule in (alarm_rule, schedule):
        assert [_ref(t["Arn"]) for t in rule["Targets"]] == [autoscaler_id]
    groups = json.loads(functions["autoscaler"]["Environment"]["Variables"]["INFAAS_FLEET_GROUPS"])
    assert groups == {hw: f"infaas-workers-{hw}" for hw in HARDWARE}


def test_dashboard_and_outputs(synthesized):
    dashboard = synthesized.one("AWS::CloudWatch::Dashboard")["Properties"]
    body = json.dumps(dashboard["DashboardBody"])
    for needle in ("QueryLatency", "GroupInServiceInstances", "ApproximateNumberOfMessagesVisible", "5XXError"):
        assert needle in body
    assert {"ApiUrl", "IamApiUrl", "TableName", "BucketName", "QueuePrefix", "Dashboard"} <= set(
        synthesized.template["Outputs"])


def test_no_function_reserves_concurrency(functions):
    """A new account's concurrency quota is 10, and Lambda keeps 10 unreserved: any reservation fails the deploy."""
    for name, fn in functions.items():
        assert "ReservedConcurrentExecutions" not in fn, name


def test_a_second_stack_names_its_resources_after_itself(build_app, tmp_path):
    app, stack = build_app(context={"infaas:stack_name": "Staging"}, outdir=str(tmp_path), nag=False)
    app.synth()
    template = json.loads((tmp_path / f"{stack.stack_name}.template.json").read_text())
    names = set()
    for r in template["Resources"].values():
        props = r.get("Properties", {})
        for key in ("AutoScalingGroupName", "QueueName", "AlarmName", "DashboardName", "LifecycleHookName"):
            if isinstance(props.get(key), str):
                names.add(props[key])
    assert names and all(n.startswith("staging-") or n == "infaas-drain" for n in names), sorted(names)
