"""Contract suites run every test body against every implementation of a port.

Each port has a dict of factories keyed by implementation name; the fixture is
parametrised over the dict's keys. A factory takes an ``Env`` (a private
``tmp_path``, the test's ``FakeClock``, and an ``ExitStack`` for anything that
must be undone afterwards) and returns a ready implementation.

To add the AWS adapters, add entries such as::

    ITEM_TABLES["dynamodb"] = lambda env: _dynamodb_table(env)  # enters moto's mock_aws() on env.stack

and every test body runs against them unchanged. A factory whose service keeps
its own time can follow the fake clock through ``env.clock.on_advance``.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from fakes import FakeClock

from infaas.adapters.local.folder import FolderModelStore
from infaas.adapters.local.sqlite import SqliteDatabase, SqliteItemTable, SqliteJobQueue
from infaas.app.store import MetadataStore
from infaas.core.ports import Fleet, ItemTable, JobQueue, ModelStore

# Deliveries before a job moves to '<lane>-dlq'; every queue factory honours it.
MAX_RECEIVES = 3


@dataclass
class Env:
    tmp_path: Path
    clock: FakeClock
    stack: ExitStack


Factory = Callable[[Env], Any]


def _sqlite_db(env: Env) -> SqliteDatabase:
    return SqliteDatabase(str(env.tmp_path / "metadata.db"), clock=env.clock)


ITEM_TABLES: dict[str, Factory] = {
    "sqlite": lambda env: SqliteItemTable(_sqlite_db(env)),
}
MODEL_STORES: dict[str, Factory] = {
    "folder": lambda env: FolderModelStore(str(env.tmp_path / "models")),
}
JOB_QUEUES: dict[str, Factory] = {
    "sqlite": lambda env: SqliteJobQueue(_sqlite_db(env), max_receives=MAX_RECEIVES),
}


# -- AWS adapters on moto --------------------------------------------------------
#
# Each factory enters moto's ``mock_aws()`` on the test's ExitStack, so every
# AWS call of that test stays in memory (no network) and the mock ends with it.

AWS_REGION = "us-east-1"
_aws_sessions: list[Any] = []  # one boto3 session for the run: it caches the service models


def _aws_client(env: Env, service: str) -> Any:
    import boto3
    from moto import mock_aws

    # Fake credentials so that nothing can ever sign a request with real ones.
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": AWS_REGION,
    }.items():
        os.environ.setdefault(name, value)
    env.stack.enter_context(mock_aws())
    if not _aws_sessions:
        _aws_sessions.append(boto3.session.Session(region_name=AWS_REGION))
    return _aws_sessions[0].client(service, region_name=AWS_REGION)


def _dynamodb_table(env: Env) -> Any:
    from infaas.adapters.aws.dynamodb import DynamoItemTable, create_table

    client = _aws_client(env, "dynamodb")
    create_table(client, "infaas-test")
    return DynamoItemTable("infaas-test", client=client, clock=env.clock)


def _s3_store(env: Env) -> Any:
    from infaas.adapters.aws.s3 import S3ModelStore, create_bucket

    client = _aws_client(env, "s3")
    create_bucket(client, "infaas-test-models")
    return S3ModelStore("infaas-test-models", client=client, cache_dir=str(env.tmp_path / "s3-cache"))


def _follow_fake_clock_in_moto_sqs(env: Env) -> None:
    """moto's SQS reads the wall clock (``unix_time``/``unix_time_millis`` in
    ``moto.sqs.models``) for visibility timeouts; point both at the test's
    FakeClock for the duration of the test, so ``clock.advance(31)`` makes a
    message visible again without sleeping."""
    from unittest import mock

    import moto.sqs.models as sqs_models

    real_unix_time = sqs_models.unix_time

    def unix_time(dt: Any = None) -> float:
        return env.clock() if dt is None else real_unix_time(dt)

    def unix_time_millis(dt: Any = None) -> float:
        return unix_time(dt) * 1000.0

    env.stack.enter_context(mock.patch.object(sqs_models, "unix_time", unix_time))
    env.stack.enter_context(mock.patch.object(sqs_models, "unix_time_millis", unix_time_millis))


def _sqs_queue(env: Env) -> Any:
    from infaas.adapters.aws.sqs import SqsJobQueue, create_lane

    client = _aws_client(env, "sqs")
    _follow_fake_clock_in_moto_sqs(env)
    urls: dict[str, str] = {}
    for lane in ("build-cpu", "build-gpu"):  # the lanes the contract suite uses
        urls.update(create_lane(client, lane, MAX_RECEIVES))
    return SqsJobQueue(urls, client=client, max_receives=MAX_RECEIVES)


ITEM_TABLES["dynamodb"] = _dynamodb_table
MODEL_STORES["s3"] = _s3_store
JOB_QUEUES["sqs"] = _sqs_queue


# -- the Fleet port: worker processes here, Auto Scaling groups on AWS --------------------
@dataclass
class FleetUnderTest:
    fleet: Fleet
    members: Callable[[str], list[str]]  # hardware type -> ids of the workers the fleet holds now


def _process_fleet(env: Env) -> FleetUnderTest:
    from infaas.adapters.local.processes import WorkerProcesses
    from infaas.core.settings import Settings

    fleet = WorkerProcesses(Settings(data_dir=str(env.tmp_path / "data"), host="127.0.0.1"))
    env.stack.callback(fleet.stop_all)
    fleet.set_desired("cpu", 1)
    return FleetUnderTest(fleet, lambda hw: sorted(w for w in fleet.procs if fleet.hardware[w] == hw))


def _asg_fleet(env: Env) -> FleetUnderTest:
    from infaas.adapters.aws.fleet import AsgFleet

    ec2, autoscaling = _aws_client(env, "ec2"), _aws_client(env, "autoscaling")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    ec2.create_launch_template(LaunchTemplateName="infaas-cpu",
                               LaunchTemplateData={"ImageId": image, "InstanceType": "t3.micro"})
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="infaas-workers-cpu", MinSize=0, MaxSize=4, DesiredCapacity=1,
        LaunchTemplate={"LaunchTemplateName": "infaas-cpu", "Version": "$Latest"}, AvailabilityZones=["us-east-1a"])
    fleet = AsgFleet({"cpu": "infaas-workers-cpu"}, client=autoscaling)
    return FleetUnderTest(fleet, lambda hw: sorted(fleet.states()[hw].in_service))


FLEETS: dict[str, Factory] = {"processes": _process_fleet, "asg": _asg_fleet}


def _build(factories: dict[str, Factory], name: str, tmp_path: Path, clock: FakeClock) -> Iterator[Any]:
    with ExitStack() as stack:
        yield factories[name](Env(tmp_path / name, clock, stack))


@pytest.fixture(params=sorted(ITEM_TABLES))
def item_table(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[ItemTable]:
    (tmp_path / request.param).mkdir()
    yield from _build(ITEM_TABLES, request.param, tmp_path, clock)


@pytest.fixture
def metadata_store(item_table: ItemTable, clock: FakeClock) -> MetadataStore:
    return MetadataStore(item_table, clock=clock)


@pytest.fixture(params=sorted(MODEL_STORES))
def model_store(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[ModelStore]:
    (tmp_path / request.param).mkdir()
    yield from _build(MODEL_STORES, request.param, tmp_path, clock)


@pytest.fixture
def max_receives() -> int:
    """Deliveries each ``job_queue`` allows before it dead-letters a message."""
    return MAX_RECEIVES


@pytest.fixture(params=sorted(JOB_QUEUES))
def job_queue(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[JobQueue]:
    (tmp_path / request.param).mkdir()
    yield from _build(JOB_QUEUES, request.param, tmp_path, clock)


@pytest.fixture(params=sorted(FLEETS))
def fleet(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[FleetUnderTest]:
    (tmp_path / request.param).mkdir()
    yield from _build(FLEETS, request.param, tmp_path, clock)
