"""Tenants on AWS: the local stack's bearer keys through the REQUEST authorizer, beside IAM.

Keys are made by ``infaas tenants create`` against the deployment's table (INFAAS_BACKEND=aws,
moto); the authorizer handler checks them as API Gateway calls it; the frontend handler builds the
caller from what API Gateway passes on (``requestContext.authorizer``, or the IAM principal) and
enforces each route's scope exactly as locally. (The same through the built artefacts, API
Gateway's authorizer cache and ``tritonclient``: ``test_lambda_harness.py``.)"""

from __future__ import annotations

import json

import pytest
from aws_support import ACCOUNT, LambdaContext, json_body, load_function, rest_event

from infaas.app import identity
from infaas.core.errors import InvalidInput

METHOD_ARN = f"arn:aws:execute-api:us-east-1:{ACCOUNT}:abc123/api/GET/v1/models"


@pytest.fixture(scope="module")
def store(deployment):
    from infaas.wiring.aws import key_store

    return key_store(client=deployment.client("dynamodb"))


@pytest.fixture(scope="module")
def authorizer(deployment):
    return load_function("authorizer")


@pytest.fixture(scope="module")
def frontend(deployment):
    return load_function("frontend")


def _cli_key(capsys, tenant: str, scopes: str) -> str:
    from infaas.cli import main

    capsys.readouterr()
    assert main(["tenants", "create", tenant, "--scopes", scopes]) == 0
    return capsys.readouterr().out.strip().splitlines()[-1]


def _authorize(authorizer, header: str | None, method_arn: str = METHOD_ARN):
    headers = {"Host": "abc123.execute-api.us-east-1.amazonaws.com"}
    if header is not None:
        headers["authorization"] = header  # any case: API Gateway passes it as the client sent it
    event = {"type": "REQUEST", "methodArn": method_arn, "resource": "/v1/{proxy+}", "path": "/v1/models",
             "httpMethod": "GET", "headers": headers, "requestContext": {"stage": "api", "apiId": "abc123"}}
    return authorizer.handler(event, LambdaContext())


def _as_key(event: dict, answer: dict) -> dict:
    """What API Gateway passes to the integration after the authorizer allowed the request."""
    event["requestContext"]["identity"]["userArn"] = None
    event["requestContext"]["authorizer"] = {**answer["context"], "principalId": answer["principalId"],
                                             "integrationLatency": 12}
    return event


def test_keys_made_by_the_cli_are_in_the_deployments_table(store, capsys):
    key = _cli_key(capsys, "team-a", "query,register")
    key_id = key.split("_")[1]
    record = store.get_key(key_id)
    assert record["tenant"] == "team-a" and record["scopes"] == ["query", "register"]
    assert key.split("_", 2)[2] not in json.dumps(record)  # the secret is not stored, only its digest
    from infaas.cli import main

    capsys.readouterr()
    assert main(["tenants", "list", "team-a", "--json"]) == 0
    assert [k["key_id"] for k in json.loads(capsys.readouterr().out)["keys"]] == [key_id]


def test_the_authorizer_allows_a_valid_key_for_the_whole_stage_with_its_tenant_and_scopes(authorizer, capsys):
    key = _cli_key(capsys, "team-b", "query")
    answer = _authorize(authorizer, f"Bearer {key}")
    assert answer["principalId"] == "team-b"
    assert answer["context"] == {"tenant": "team-b", "scopes": "query", "key_id": key.split("_")[1]}
    (statement,) = answer["policyDocument"]["Statement"]
    # cached per header for every method the key calls: the stage, not the one method
    assert statement == {"Action": "execute-api:Invoke", "Effect": "Allow",
                         "Resource": f"arn:aws:execute-api:us-east-1:{ACCOUNT}:abc123/api/*"}


def test_the_authorizer_refuses_missing_malformed_unknown_wrong_and_revoked_keys(authorizer, store, capsys):
    key = _cli_key(capsys, "team-c", "query")
    key_id, secret = key.split("_")[1], key.split("_", 2)[2]
    other = _cli_key(capsys, "team-c", "query")
    wrong_secret = f"infaas_{key_id}_{other.split('_', 2)[2]}"
    unknown_id = f"infaas_{'0' * 16}_{secret}"
    for header in (None, "", key, f"Basic {key}", "Bearer infaas_nothex_" + secret, wrong_secret, unknown_id):
        with pytest.raises(Exception, match="^Unauthorized$"):
            _authorize(authorizer, header)
    assert _authorize(authorizer, f"bearer {key}")["context"]["tenant"] == "team-c"
    identity.revoke_key(store, key_id)
    with pytest.raises(Exception, match="^Unauthorized$"):
        _authorize(authorizer, f"Bearer {key}")
    with pytest.raises(ValueError):
        _authorize(authorizer, f"Bearer {other}", method_arn="not-an-arn")


def test_a_key_tenant_can_never_be_an_iam_tenant(store):
    for tenant in ("iam:123456789012:user/alice", "iam:123456789012:root", "user/alice"):
        with pytest.raises(InvalidInput):
            identity.create_key(store, tenant, ("query",))


def test_the_app_enforces_each_routes_scope_from_the_authorizers_context(authorizer, frontend, capsys):
    query_only = _cli_key(capsys, "team-d", "query")
    admin = _cli_key(capsys, "ops", "admin")

    def call(key: str, method: str, path: str, **kw):
        event = rest_event(method, path, resource="/v1/{proxy+}", path_parameters={"proxy": path[4:]},
                           headers={"authorization": f"Bearer {key}"}, **kw)
        return frontend.handler(_as_key(event, _authorize(authorizer, f"Bearer {key}")), LambdaContext())

    assert call(query_only, "GET", "/v1/models")["statusCode"] == 200
    refused = call(query_only, "GET", "/v1/workers")
    assert refused["statusCode"] == 403 and json_body(refused)["field"] == "authorization"
    assert "admin" in json_body(refused)["message"]
    denied = call(query_only, "DELETE", "/v1/models/anything")
    assert denied["statusCode"] == 403 and "register" in json_body(denied)["message"]
    assert call(admin, "GET", "/v1/workers")["statusCode"] == 200


def test_a_bearer_key_the_client_sent_is_not_an_identity_without_the_authorizer(frontend, capsys):
    """Only API Gateway's context counts: the same valid key in the header, with no authorizer
    context and no IAM principal on the event, is no caller at all."""
    key = _cli_key(capsys, "team-e", "query,register,admin")
    event = rest_event("GET", "/v1/workers", resource="/v1/{proxy+}", path_parameters={"proxy": "workers"},
                       headers={"authorization": f"Bearer {key}"})
    event["requestContext"]["identity"]["userArn"] = None
    assert frontend.handler(event, LambdaContext())["statusCode"] == 401
    forged = rest_event("GET", "/v1/workers", resource="/v1/{proxy+}", path_parameters={"proxy": "workers"},
                        headers={"authorization": "aws-key team-e admin 0123456789abcdef"})
    forged["requestContext"]["identity"]["userArn"] = None
    assert frontend.handler(forged, LambdaContext())["statusCode"] == 401


def test_an_iam_caller_keeps_working_as_its_own_tenant(frontend):
    r = frontend.handler(rest_event("GET", "/v1/workers", resource="/v1/{proxy+}",
                                    path_parameters={"proxy": "workers"}), LambdaContext())
    assert r["statusCode"] == 200  # every scope: IAM policies decide which methods an IAM caller may call


def test_a_store_failure_is_not_an_unauthorized_key(deployment, monkeypatch, capsys):
    """The table does not answer (here: it does not exist): the authorizer fails, which API Gateway
    answers with 500 and does not cache, instead of telling a valid key it is unknown."""
    from infaas.core.errors import InfaasError

    key = _cli_key(capsys, "team-f", "query")
    monkeypatch.setenv("INFAAS_TABLE", f"{deployment.prefix}-no-such-table")
    broken = load_function("authorizer")
    with pytest.raises(InfaasError) as failed:
        _authorize(broken, f"Bearer {key}")
    assert str(failed.value) != "Unauthorized" and failed.value.details.get("aws_code") == "ResourceNotFoundException"
