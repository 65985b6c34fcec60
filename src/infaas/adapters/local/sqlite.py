"""SQLite adapters: the item table behind the metadata store, and the job queue.

One database file, WAL mode (readers never block the single writer, which
is what many worker processes heartbeating at once need), a schema version in
``PRAGMA user_version``, and a busy timeout so that concurrent writers wait
instead of failing. A lock that outlives the timeout becomes ``Unavailable``
(503 with Retry-After), never a half-written record: every write is one
transaction.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from typing import Any, Callable, Mapping

from infaas.core.errors import ConditionFailed, InfaasError, Unavailable
from infaas.core.ports import Item

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    pk TEXT NOT NULL,
    sk TEXT NOT NULL,
    gsi1pk TEXT,
    gsi1sk TEXT,
    version INTEGER NOT NULL,
    expires_at REAL,
    body TEXT NOT NULL,
    PRIMARY KEY (pk, sk)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS items_gsi1 ON items (gsi1pk, gsi1sk);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    lane TEXT NOT NULL,
    body TEXT NOT NULL,
    visible_at REAL NOT NULL,
    receives INTEGER NOT NULL DEFAULT 0,
    receipt TEXT,
    sent_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_lane ON jobs (lane, visible_at);
"""


class SqliteDatabase:
    """One SQLite file shared by the item table and the job queue of a process."""

    def __init__(self, path: str, *, busy_timeout_s: float = 5.0, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._migrate()

    def connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout_s, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def _migrate(self) -> None:
        conn = self.connection()
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise InfaasError(
                f"database {self.path} has schema version {version}, newer than this code's {SCHEMA_VERSION}"
            )
        if version < SCHEMA_VERSION:
            with self.transaction() as c:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        c.execute(statement)
                c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def transaction(self) -> "_Transaction":
        return _Transaction(self.connection())


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; a lock held past the timeout is a 503."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise Unavailable(f"metadata store busy: {exc}", retry_after_s=1.0) from exc
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
                return
            except sqlite3.OperationalError as err:
                self.conn.execute("ROLLBACK")
                raise Unavailable(f"metadata store busy: {err}", retry_after_s=1.0) from err
        self.conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.OperationalError):
            raise Unavailable(f"metadata store unavailable: {exc}", retry_after_s=1.0) from exc


def _row_to_item(row: tuple) -> Item:
    pk, sk, gsi1pk, gsi1sk, version, expires_at, body = row
    item: Item = {"pk": pk, "sk": sk, "version": version, "body": json.loads(body)}
    if gsi1pk is not None:
        item["gsi1pk"], item["gsi1sk"] = gsi1pk, gsi1sk
    if expires_at is not None:
        item["expires_at"] = expires_at
    return item


_COLUMNS = "pk, sk, gsi1pk, gsi1sk, version, expires_at, body"


class SqliteItemTable:
    """``ItemTable`` on SQLite. Expired items are invisible, as with DynamoDB TTL
    (DynamoDB deletes them lazily; here reads filter them and writes replace them)."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    def _live(self) -> tuple[str, float]:
        return "(expires_at IS NULL OR expires_at > ?)", self.db.clock()

    def get(self, pk: str, sk: str) -> Item | None:
        cond, now = self._live()
        row = self._read(f"SELECT {_COLUMNS} FROM items WHERE pk=? AND sk=? AND {cond}", (pk, sk, now)).fetchone()
        return _row_to_item(row) if row else None

    def put(self, item: Mapping[str, Any], *, expect_version: int | None = None) -> Item:
        body = json.dumps(item.get("body", {}), separators=(",", ":"), allow_nan=False)
        with self.db.transaction() as c:
            cond, now = self._live()
            row = c.execute(f"SELECT version FROM items WHERE pk=? AND sk=? AND {cond}", (item["pk"], item["sk"], now)).fetchone()
            current = row[0] if row else 0
            if expect_version is not None and current != expect_version:
                raise ConditionFailed(
                    f"item {item['pk']}/{item['sk']} is at version {current}, expected {expect_version}",
                    current_version=current,
                )
            version = current + 1
            c.execute(
                f"INSERT OR REPLACE INTO items ({_COLUMNS}) VALUES (?,?,?,?,?,?,?)",
                (item["pk"], item["sk"], item.get("gsi1pk"), item.get("gsi1sk"), version, item.get("expires_at"), body),
            )
        stored = dict(item)
        stored["version"] = version
        return stored

    def delete(self, pk: str, sk: str, *, expect_version: int | None = None) -> None:
        with self.db.transaction() as c:
            if expect_version is not None:
                row = c.execute("SELECT version FROM items WHERE pk=? AND sk=?", (pk, sk)).fetchone()
                if (row[0] if row else 0) != expect_version:
                    raise ConditionFailed(f"item {pk}/{sk} changed", current_version=row[0] if row else 0)
            c.execute("DELETE FROM items WHERE pk=? AND sk=?", (pk, sk))

    def query(self, pk: str, sk_prefix: str = "") -> list[Item]:
        cond, now = self._live()
        rows = self._read(
            f"SELECT {_COLUMNS} FROM items WHERE pk=? AND sk >= ? AND sk < ? AND {cond} ORDER BY sk",
            (pk, sk_prefix, sk_prefix + "\U0010ffff", now),
        )
        return [_row_to_item(r) for r in rows]

    def query_index(self, gsi1pk: str, sk_prefix: str = "") -> list[Item]:
        cond, now = self._live()
        rows = self._read(
            f"SELECT {_COLUMNS} FROM items WHERE gsi1pk=? AND gsi1sk >= ? AND gsi1sk < ? AND {cond} ORDER BY gsi1sk",
            (gsi1pk, sk_prefix, sk_prefix + "\U0010ffff", now),
        )
        return [_row_to_item(r) for r in rows]

    def _read(self, sql: str, args: tuple) -> sqlite3.Cursor:
        try:
            return self.db.connection().execute(sql, args)
        except sqlite3.OperationalError as exc:
            raise Unavailable(f"metadata store unavailable: {exc}", retry_after_s=1.0) from exc


class SqliteJobQueue:
    """``JobQueue`` on SQLite, with SQS semantics: visibility timeout, receive
    count, and a dead-letter lane after ``max_receives`` deliveries."""

    def __init__(self, db: SqliteDatabase, *, max_receives: int = 3) -> None:
        self.db = db
        self.max_receives = max_receives

    def send(self, lane: str, body: Mapping[str, Any]) -> str:
        job_id = uuid.uuid4().hex
        now = self.db.clock()
        with self.db.transaction() as c:
            c.execute(
                "INSERT INTO jobs (id, lane, body, visible_at, sent_at) VALUES (?,?,?,?,?)",
                (job_id, lane, json.dumps(dict(body)), now, now),
            )
        return job_id

    def receive(self, lane: str, *, visibility_s: float = 60.0) -> tuple[str, dict[str, Any]] | None:
        now = self.db.clock()
        with self.db.transaction() as c:
            while True:
                row = c.execute(
                    "SELECT id, body, receives FROM jobs WHERE lane=? AND visible_at<=? ORDER BY sent_at LIMIT 1",
                    (lane, now),
                ).fetchone()
                if row is None:
                    return None
                job_id, body, receives = row
                if receives >= self.max_receives:
                    c.execute("UPDATE jobs SET lane=?, receives=0 WHERE id=?", (f"{lane}-dlq", job_id))
                    continue
                receipt = f"{job_id}.{receives + 1}"
                c.execute(
                    "UPDATE jobs SET visible_at=?, receives=receives+1, receipt=? WHERE id=?",
                    (now + visibility_s, receipt, job_id),
                )
                return receipt, json.loads(body)

    def ack(self, lane: str, receipt: str) -> None:
        with self.db.transaction() as c:
            c.execute("DELETE FROM jobs WHERE lane=? AND receipt=?", (lane, receipt))

    def extend(self, lane: str, receipt: str, visibility_s: float) -> bool:
        with self.db.transaction() as c:
            cur = c.execute("UPDATE jobs SET visible_at=? WHERE lane=? AND receipt=?",
                            (self.db.clock() + visibility_s, lane, receipt))
            return cur.rowcount > 0

    def depth(self, lane: str) -> int:
        (n,) = self.db.connection().execute("SELECT COUNT(*) FROM jobs WHERE lane=?", (lane,)).fetchone()
        return int(n)
