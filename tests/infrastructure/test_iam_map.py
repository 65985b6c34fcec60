"""The IAM map: every AWS call the deployed code makes, against what the template grants the role that makes it.

The calls are found statically: every boto3 client method called in the AWS adapters, the AWS wiring,
the API's AWS glue and the Lambda handlers (``client.put_item(...)``, ``client.get_paginator("list_objects_v2")``,
``client.generate_presigned_post(...)``), each named by the function that makes it (``DynamoItemTable.get``),
and every ``aws <service> <command>`` of the worker's boot (the launch templates' user data, the bundle's
install script and units). Method names become IAM actions by botocore's own service models
(``put_item`` -> ``dynamodb:PutItem``), with a small table where the action differs (``head_object`` needs
``s3:GetObject``).

Which role runs which of those functions is ``RUNS`` below: each Lambda function's role and the worker
instance role. Every call site must be run by some role (or be local provisioning, run by none), so a new
call fails here until it is placed. Then, per role: every action its calls need must be granted to it
(missing), and every action granted to it must be needed by one of its calls or be the role's plumbing
(its log group, the ENIs of a function in the VPC) (excess; wildcard actions count as excess).
"""

from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path

import botocore.session
import pytest
from botocore import xform_name

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [
    *sorted((ROOT / "src" / "infaas" / "adapters" / "aws").glob("*.py")),
    ROOT / "src" / "infaas" / "wiring" / "aws.py",
    ROOT / "src" / "infaas" / "api" / "aws.py",
    *sorted((ROOT / "functions").rglob("*.py")),
]
WORKER_SCRIPTS = [ROOT / "worker_ami" / "install.sh", *sorted((ROOT / "worker_ami" / "systemd").glob("*"))]

# Client methods that are no API operation, or whose IAM action is not the operation's name.
ACTION_OF = {
    ("s3", "head_object"): "s3:GetObject",
    ("s3", "list_objects_v2"): "s3:ListBucket",
    ("s3", "generate_presigned_post"): "s3:PutObject",  # the browser's POST is signed with the caller's grant
    ("sqs", "send_message_batch"): "sqs:SendMessage",  # SendMessageBatch is authorised as SendMessage
    ("lambda", "invoke"): "lambda:InvokeFunction",  # the Invoke operation's IAM action
}
CLIENT_METHODS = {"generate_presigned_post": "s3"}
# `aws <service> <command>` in the worker's boot: the action it needs.
CLI_ACTION = {
    ("s3", "cp"): "s3:GetObject",  # downloads only (s3:// as the source)
    ("logs", "create-log-stream"): "logs:CreateLogStream",  # the install log (install.sh)
    ("logs", "put-log-events"): "logs:PutLogEvents",
    ("autoscaling", "set-instance-health"): "autoscaling:SetInstanceHealth",  # a failed install
}

TABLE_ITEMS = {"DynamoItemTable.get", "DynamoItemTable._query", "DynamoItemTable._put_if",
               "DynamoItemTable._put_unconditional", "DynamoItemTable.delete"}
QUEUE_LOOKUP = {"queue_urls_by_name.resolve", "SqsJobQueue._check_redrive", "SqsJobQueue.depth"}
RUNS: dict[str, set[str]] = {
    # the API-key check: one key's item
    "authorizer": {"DynamoItemTable.get"},
    # the data plane: reads the table (routing snapshot, keys), the worker key; calls workers over HTTP; invokes the
    # serverless tier's functions and publishes their recent rate (one policy-state item: DataPlane._publish_tier_demand)
    "selector": {"DynamoItemTable.get", "DynamoItemTable._query", "read_secret", "LambdaFunctionTier._invoke",
                 "DynamoItemTable._put_if"},
    # the serverless tier's inference functions: a variant's file from the model bucket
    "inference": {"_load"},
    # the control plane: models (upload, presigned upload, delete), offline job submission, build jobs
    "frontend": TABLE_ITEMS | QUEUE_LOOKUP | {
        "S3ModelStore.put", "S3ModelStore.get", "S3ModelStore.local_path", "S3ModelStore.delete",
        "S3ModelStore.list", "S3ModelStore._etag", "S3Location.list", "S3Location.exists", "S3Location.read",
        "start_upload", "SqsJobQueue.send"},
    # the control loop: the groups, the lanes' depth, the plan and events in the table
    "autoscaler": TABLE_ITEMS | QUEUE_LOOKUP | {
        "AsgFleet.states", "AsgFleet.state", "AsgFleet.set_desired", "AsgFleet.drain", "AsgFleet.mark_unhealthy",
        "AwsAutoscaler.build_jobs"},
    # `python -m infaas.worker`, the drain watcher (`python -m infaas.adapters.aws.fleet drain-watch`) and the
    # log shipper (`python -m infaas.adapters.aws.logship`)
    "worker": TABLE_ITEMS | QUEUE_LOOKUP | {
        "S3ModelStore.get", "S3ModelStore.local_path", "S3ModelStore.put", "S3ModelStore._etag",
        "S3Location.list", "S3Location.read", "S3Location.exists", "S3Location.write_atomic",
        "SqsJobQueue.receive", "SqsJobQueue.ack", "SqsJobQueue.extend", "read_secret", "AsgFleet.complete_drain",
        # an offline job's items, made on its expand message (JobService.expand)
        "DynamoItemTable.put_many", "SqsJobQueue.send_many",
        "LogShipper._stream", "LogShipper.ship"},
}
# Local provisioning (the local stack over moto, `infaas` against an emulator): no deployed role runs it;
# the stack creates these resources itself.
PROVISIONING = {"create_table", "create_bucket", "create_lane"}
LAMBDA_PLUMBING = {"logs:CreateLogStream", "logs:PutLogEvents"}
VPC_PLUMBING = {"ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DeleteNetworkInterface",
                "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"}
PLUMBING = {"authorizer": LAMBDA_PLUMBING, "selector": LAMBDA_PLUMBING | VPC_PLUMBING, "inference": LAMBDA_PLUMBING,
            "frontend": LAMBDA_PLUMBING, "autoscaler": LAMBDA_PLUMBING, "worker": set()}


def _services_used() -> set[str]:
    found = set()
    for path in SOURCES:
        found |= set(re.findall(r"""(?:default_client|boto3\.client)\(\s*["']([a-z0-9-]+)["']""", path.read_text()))
    return found


def _operations(services: set[str]) -> dict[str, set[str]]:
    session = botocore.session.get_session()
    by_method: dict[str, set[str]] = {}
    for service in services:
        model = session.get_service_model(service)
        for op in model.operation_names:
            by_method.setdefault(xform_name(op), set()).add(f"{model.signing_name}:{op}")
    return by_method


def _is_client(receiver: ast.expr, services: set[str]) -> bool:
    name = receiver.attr if isinstance(receiver, ast.Attribute) else getattr(receiver, "id", "")
    return name.endswith("client") or name in services


def call_sites() -> list[tuple[str, str, str]]:
    """(file, qualified function name, IAM action) for every boto3 client call in SOURCES."""
    services = _services_used()
    assert services >= {"dynamodb", "s3", "sqs", "autoscaling", "secretsmanager", "lambda"}, services
    operations = _operations(services)
    sites: list[tuple[str, str, str]] = []

    class Visitor(ast.NodeVisitor):
        def __init__(self, path: Path) -> None:
            self.path, self.scope = path, []
            self.own = set(re.findall(r"""default_client\(\s*["']([a-z0-9-]+)["']""", path.read_text()))

        def _nest(self, node) -> None:
            self.scope.append(node.name)
            self.generic_visit(node)
            self.scope.pop()

        visit_ClassDef = visit_FunctionDef = visit_AsyncFunctionDef = _nest

        def visit_Call(self, node: ast.Call) -> None:
            fn = node.func
            if isinstance(fn, ast.Attribute) and _is_client(fn.value, services):
                method = fn.attr
                if method == "get_paginator":
                    method = node.args[0].value
                if method in CLIENT_METHODS:
                    actions = {f"{CLIENT_METHODS[method]}:{method}"}
                else:
                    actions = operations.get(method, set())
                if actions:
                    if len(actions) > 1:  # one name, several services: the module's own client decides
                        actions = {a for a in actions if a.split(":")[0] in self.own}
                    assert len(actions) == 1, (self.path, method, actions)
                    [action] = actions
                    service = action.split(":")[0]
                    action = ACTION_OF.get((service, method), action)
                    sites.append((str(self.path.relative_to(ROOT)), ".".join(self.scope), action))
            self.generic_visit(node)

    for path in SOURCES:
        Visitor(path).visit(ast.parse(path.read_text()))
    return sites


def worker_boot_actions(template: dict) -> set[str]:
    """``aws <service> <command>`` in the launch templates' user data and the bundle's scripts."""
    texts = [p.read_text() for p in WORKER_SCRIPTS]
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::EC2::LaunchTemplate":
            texts.append(repr(resource["Properties"]["LaunchTemplateData"].get("UserData")))
    actions = set()
    for text in texts:
        for service, command in re.findall(r"\baws\s+([a-z0-9-]+)\s+([a-z0-9-]+)", text):
            assert (service, command) in CLI_ACTION, f"`aws {service} {command}` has no IAM action in CLI_ACTION"
            actions.add(CLI_ACTION[(service, command)])
    return actions


def role_ids(synthesized) -> dict[str, str]:
    stack = synthesized.stack
    fns = stack.functions
    roles = {"authorizer": fns.authorizer.role, "selector": fns.selector.role, "frontend": fns.frontend.role,
             "autoscaler": fns.autoscaler.role, "worker": stack.fleets.role, "inference": stack.tier.role}
    return {name: stack.get_logical_id(role.node.default_child) for name, role in roles.items()}


def granted(template: dict, role_id: str) -> set[str]:
    statements = []
    for resource in template["Resources"].values():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in props.get("Roles", []):
            statements += props["PolicyDocument"]["Statement"]
    role = template["Resources"][role_id]["Properties"]
    managed = [str(m) for m in role.get("ManagedPolicyArns", [])]
    # the one managed policy: Session Manager's agent on the workers (its calls are the agent's, not ours)
    assert all("policy/AmazonSSMManagedInstanceCore" in m for m in managed), (role_id, managed)
    for policy in role.get("Policies", []):
        statements += policy["PolicyDocument"]["Statement"]
    actions = set()
    for statement in statements:
        assert statement["Effect"] == "Allow", statement
        action = statement["Action"]
        actions |= {action} if isinstance(action, str) else set(action)
    return actions


@pytest.fixture(scope="module")
def sites():
    return call_sites()


def test_every_call_site_is_run_by_a_role(sites):
    placed = set().union(*RUNS.values()) | PROVISIONING
    unplaced = sorted({f"{path}: {where} ({action})" for path, where, action in sites if where not in placed})
    assert not unplaced, "AWS calls no role is said to run (add them to RUNS or PROVISIONING):\n" + "\n".join(unplaced)
    known = {where for _, where, _ in sites}
    stale = sorted(placed - known)
    assert not stale, f"RUNS or PROVISIONING names functions that make no AWS call: {stale}"


def test_each_role_is_granted_exactly_what_its_calls_need(synthesized, sites):
    template = synthesized.template
    needed_by_site: dict[str, set[str]] = {}
    for _, where, action in sites:
        needed_by_site.setdefault(where, set()).add(action)
    problems = []
    for role, role_id in role_ids(synthesized).items():
        needs = set().union(*(needed_by_site[w] for w in RUNS[role]))
        if role == "worker":
            needs |= worker_boot_actions(template)
        has = granted(template, role_id)
        missing = sorted(a for a in needs if not any(fnmatch.fnmatchcase(a, g) for g in has))
        excess = sorted(has - needs - PLUMBING[role])
        if missing:
            problems.append(f"{role} ({role_id}) calls without a grant: {missing}")
        if excess:
            problems.append(f"{role} ({role_id}) is granted what no code of it uses: {excess}")
    assert not problems, "\n".join(problems)


def test_the_map_reads_the_calls_it_should(sites):
    """The scan itself: a few calls it must find, with the actions they need."""
    found = {(where, action) for _, where, action in sites}
    assert ("DynamoItemTable._put_if", "dynamodb:PutItem") in found
    assert ("S3ModelStore._etag", "s3:GetObject") in found
    assert ("S3ModelStore.list", "s3:ListBucket") in found
    assert ("start_upload", "s3:PutObject") in found
    assert ("AwsAutoscaler.build_jobs", "sqs:GetQueueAttributes") in found
    assert ("AsgFleet.complete_drain", "autoscaling:CompleteLifecycleAction") in found
    assert ("read_secret", "secretsmanager:GetSecretValue") in found
    assert ("AsgFleet.mark_unhealthy", "autoscaling:SetInstanceHealth") in found
    assert ("LogShipper.ship", "logs:PutLogEvents") in found
    assert ("DynamoItemTable.put_many", "dynamodb:BatchWriteItem") in found
    assert ("SqsJobQueue.send_many", "sqs:SendMessage") in found
    assert ("LambdaFunctionTier._invoke", "lambda:InvokeFunction") in found
    assert ("_load", "s3:GetObject") in found  # functions/inference: head_object and get_object


def test_only_the_workers_have_session_manager(synthesized):
    roles = role_ids(synthesized)
    for name, role_id in roles.items():
        managed = synthesized.template["Resources"][role_id]["Properties"].get("ManagedPolicyArns", [])
        assert bool(managed) == (name == "worker"), (name, managed)


def test_the_inference_functions_read_only_the_variants_and_the_selector_writes_one_item(synthesized):
    """Where the map checks actions, this checks resources: the tier's role reads ``variants/*`` of the model
    bucket and nothing else of it; the selector invokes exactly the tier's functions and writes only the
    policy-state item of the tier's demand."""
    template, stack = synthesized.template, synthesized.stack
    statements = []
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::IAM::Policy":
            statements += [(r["Ref"], s) for r in resource["Properties"]["Roles"]
                           for s in resource["Properties"]["PolicyDocument"]["Statement"]]
    roles = role_ids(synthesized)
    s3 = [s for role, s in statements if role == roles["inference"] and "s3:GetObject" in str(s["Action"])]
    assert len(s3) == 1 and "/variants/*" in str(s3[0]["Resource"]), s3
    invoke = [s for role, s in statements if role == roles["selector"] and "lambda:" in str(s["Action"])]
    fn_ids = {stack.get_logical_id(fn.node.default_child) for fn in stack.tier.functions.values()}
    assert len(invoke) == 1 and invoke[0]["Action"] == "lambda:InvokeFunction"
    assert {r["Fn::GetAtt"][0] for r in invoke[0]["Resource"]} == fn_ids  # no ":*" qualifier, no other function
    writes = [s for role, s in statements if role == roles["selector"] and s["Action"] == "dynamodb:PutItem"]
    assert len(writes) == 1
    assert writes[0]["Condition"] == {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": ["STATE#tier-demand"]}}
