"""A briefly unavailable store answers 503 with Retry-After, never a half-written record."""

from __future__ import annotations

import sqlite3

import pytest

from infaas.adapters.local.sqlite import SqliteDatabase, SqliteItemTable
from infaas.api.app import error_response
from infaas.core.errors import Unavailable


def test_a_locked_database_is_unavailable_and_nothing_is_half_written(tmp_path):
    path = str(tmp_path / "m.sqlite3")
    table = SqliteItemTable(SqliteDatabase(path, busy_timeout_s=0.05))
    table.put({"pk": "A", "sk": "1", "body": {"v": 1}})
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    with pytest.raises(Unavailable) as err:
        table.put({"pk": "A", "sk": "1", "body": {"v": 2}})
    other.execute("ROLLBACK")
    other.close()
    item = table.get("A", "1")
    assert item["body"] == {"v": 1} and item["version"] == 1  # the old record, whole
    response = error_response(err.value)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert table.put({"pk": "A", "sk": "1", "body": {"v": 2}})["version"] == 2  # and it recovers
