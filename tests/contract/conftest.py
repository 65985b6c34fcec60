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

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from fakes import FakeClock
from infaas.adapters.local.folder import FolderModelStore
from infaas.adapters.local.sqlite import SqliteDatabase, SqliteItemTable, SqliteJobQueue
from infaas.ports import ItemTable, JobQueue, ModelStore
from infaas.store import MetadataStore

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
