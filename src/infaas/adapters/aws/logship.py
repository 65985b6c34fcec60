"""On a worker machine: the systemd journal of the infaas units, shipped to CloudWatch Logs.

The workers run in subnets with no route to the internet and no agent image
of their own, so the shipper is part of the worker's package: ``python -m
infaas.adapters.aws.logship`` (the unit ``infaas-logs.service``) reads the
journal entries of the worker, the drain watcher and itself since the last
cursor (``journalctl -o json --after-cursor``), and puts them into the stack's
worker log group (``INFAAS_LOG_GROUP``), one log stream per instance
(``<instance id>``), every few seconds, through the VPC's Logs endpoint. The
install script ships its own log (stream ``<instance id>/install``) with the
AWS CLI, so a machine whose install failed has its reason there too.

The cursor of the last entry shipped is written to a file only once the
entries are in CloudWatch: a failed put or a restart of the unit ships them
again (duplicates, never gaps).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from botocore.exceptions import ClientError

from infaas.adapters import logs
from infaas.adapters.aws._sdk import default_client, error_code, sdk_errors, translate
from infaas.adapters.aws.fleet import imds_get

log = logging.getLogger("infaas.logship")

UNITS = ("infaas-worker.service", "infaas-drain.service", "infaas-logs.service")
MAX_EVENTS = 1_000  # per PutLogEvents (the API allows 10,000 and 1 MiB)
MAX_BYTES = 900_000  # per PutLogEvents, with each event's 26 bytes of overhead counted
MAX_MESSAGE = 200_000  # characters of one event kept (the API allows 256 KiB)


def events(lines: Iterable[str]) -> list[dict[str, Any]]:
    """CloudWatch log events from ``journalctl -o json`` lines (a line that is not an entry is skipped)."""
    out = []
    for line in lines:
        try:
            entry = json.loads(line)
            micros = int(entry["__REALTIME_TIMESTAMP"])
        except (ValueError, KeyError, TypeError):
            continue
        message = entry.get("MESSAGE", "")
        if isinstance(message, list):  # journald gives bytes that are not UTF-8 as a list of numbers
            message = bytes(message).decode("utf-8", "replace")
        unit = entry.get("_SYSTEMD_UNIT") or entry.get("SYSLOG_IDENTIFIER") or "?"
        out.append({"timestamp": micros // 1000, "message": f"{unit}: {message}"[:MAX_MESSAGE]})
    return out


def batches(items: list[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
    """``items`` in chronological order, cut to the limits of one ``PutLogEvents``."""
    batch: list[dict[str, Any]] = []
    size = 0
    for event in sorted(items, key=lambda e: e["timestamp"]):
        cost = len(event["message"].encode()) + 26
        if batch and (len(batch) >= MAX_EVENTS or size + cost > MAX_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(event)
        size += cost
    if batch:
        yield batch


@dataclass
class LogShipper:
    group: str
    stream: str
    client: Any = None
    _created: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.client is None:
            self.client = default_client("logs")

    def _stream(self) -> None:
        if self._created:
            return
        try:
            self.client.create_log_stream(logGroupName=self.group, logStreamName=self.stream)
        except ClientError as exc:
            if error_code(exc) != "ResourceAlreadyExistsException":
                raise translate(exc, f"creating log stream {self.stream}") from exc
        self._created = True

    def ship(self, items: list[dict[str, Any]]) -> int:
        """Put ``items`` into the stream; returns how many were put."""
        if not items:
            return 0
        self._stream()
        for batch in batches(items):
            with sdk_errors(f"shipping {len(batch)} log events to {self.group}"):
                self.client.put_log_events(logGroupName=self.group, logStreamName=self.stream, logEvents=batch)
        return len(items)


def read_journal(cursor: str | None, units: Iterable[str] = UNITS,
                 run: Callable[..., Any] = subprocess.run) -> list[str]:
    """The journal entries of ``units`` after ``cursor`` (all of them without one), as JSON lines."""
    args = ["journalctl", "--no-pager", "-o", "json"] + ([f"--after-cursor={cursor}"] if cursor else [])
    for unit in units:
        args += ["-u", unit]
    done = run(args, capture_output=True, text=True, timeout=60, check=False)
    return done.stdout.splitlines()


def last_cursor(lines: list[str]) -> str | None:
    for line in reversed(lines):
        try:
            return str(json.loads(line)["__CURSOR"])
        except (ValueError, KeyError, TypeError):
            continue
    return None


def ship_round(shipper: LogShipper, cursor_file: str, run: Callable[..., Any] = subprocess.run) -> int:
    """One round: the entries after the saved cursor shipped, then the cursor saved."""
    try:
        with open(cursor_file) as f:
            cursor = f.read().strip() or None
    except FileNotFoundError:
        cursor = None
    lines = read_journal(cursor, run=run)
    n = shipper.ship(events(lines))
    new = last_cursor(lines)
    if new:
        os.makedirs(os.path.dirname(cursor_file) or ".", exist_ok=True)
        with open(cursor_file + ".tmp", "w") as f:
            f.write(new)
        os.replace(cursor_file + ".tmp", cursor_file)
    return n


def main(argv: list[str] | None = None, *, sleep: Callable[[float], None] = time.sleep,
         rounds: int | None = None, run: Callable[..., Any] = subprocess.run) -> None:
    parser = argparse.ArgumentParser(prog="python -m infaas.adapters.aws.logship")
    parser.add_argument("--group", default=os.environ.get("INFAAS_LOG_GROUP", ""),
                        help="the log group (default: INFAAS_LOG_GROUP)")
    parser.add_argument("--stream", default=os.environ.get("INFAAS_WORKER_ID") or None,
                        help="the log stream (default: INFAAS_WORKER_ID, the instance's id)")
    parser.add_argument("--cursor-file", default="/var/lib/infaas-logs/cursor")
    parser.add_argument("--every-s", type=float, default=5.0)
    args = parser.parse_args(argv)
    logs.configure("log-shipper")
    stream = args.stream or imds_get("instance-id")
    if not args.group or not stream:
        parser.error("needs --group (or INFAAS_LOG_GROUP) and --stream (or instance metadata)")
    shipper = LogShipper(args.group, stream)
    n = 0
    while rounds is None or n < rounds:
        n += 1
        try:
            ship_round(shipper, args.cursor_file, run)
        except Exception:  # noqa: BLE001 -- a failed round is retried next round; the entries stay in the journal
            log.exception("shipping the journal failed; trying again")
        sleep(args.every_s)


if __name__ == "__main__":
    main()
