"""One structured logger for every process: JSON lines with the fields Powertools'
``Logger`` writes on Lambda, plus the request id of the query being handled.

``configure(service)`` is called once by each front end (`infaas up`, a
worker, the drain watcher); the Lambda functions use Powertools itself, whose
lines have the same keys. Each line::

    {"timestamp": "...", "level": "WARNING", "service": "worker", "logger": "infaas.worker",
     "location": "answer_infer:297", "message": "...", "request_id": "...", "exception": "..."}

Request ids: the API takes a caller's ``x-request-id`` (up to 64 letters,
digits, ``-``, ``_`` or ``.``) or makes one, answers it in ``x-request-id``, and
the worker client sends it to the worker, which logs under it. When queries are
joined into one worker call, the call carries the id of the query that sent it.

Fields given as ``extra=`` become keys of the line, as Powertools does. The API writes one
access line per request (``access``) on the logger ``infaas.access``::

    {..., "logger": "infaas.access", "message": "POST /v1/infer 200 0.84 ms", "method": "POST",
     "path": "/v1/infer", "route": "/v1/infer", "status": 200, "duration_ms": 0.84, "tenant": "local",
     "request_id": "..."}

(``INFAAS_ACCESS_LOG=off`` turns them off, as does ``INFAAS_LOG_LEVEL=WARNING`` with everything else at INFO;
each costs the API about 10 µs of CPU, a tenth of a small query's.)
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import secrets
import sys
import time
from contextvars import ContextVar

REQUEST_ID: ContextVar[str | None] = ContextVar("infaas_request_id", default=None)
HEADER = b"x-request-id"
_SAFE = re.compile(rb"[A-Za-z0-9._-]{1,64}")
ACCESS = logging.getLogger("infaas.access")
# attributes every LogRecord has: anything else on a record came from ``extra=`` and is a field of the line
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}
_ENCODE = json.JSONEncoder(default=str).encode  # json.dumps(doc, default=str), without a new encoder per line
_second: list = [None, ""]  # the last whole second formatted, and its text (every line needs one)


def request_id_from(value: bytes | str | None) -> str:
    """The caller's id when it is safe to log and echo, else a new one."""
    if isinstance(value, str):
        value = value.encode("utf-8", "replace")
    if value is not None and _SAFE.fullmatch(value):
        return value.decode("ascii")
    return f"{_PREFIX}{next(_COUNT):012x}"


# New ids: 32 hex digits like a uuid4's, a random prefix per process and a counter (a uuid4 per
# request reads os.urandom: 5 % of the API's CPU at 5,000 requests a second).
_PREFIX = secrets.token_hex(10)
_COUNT = itertools.count()


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        cached = _second
        if cached[0] != second:
            cached = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
            _second[:] = cached
        doc = {
            "timestamp": f"{cached[1]}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "location": f"{record.funcName}:{record.lineno}",
            "message": record.getMessage(),
        }
        rid = REQUEST_ID.get()
        if rid is not None:
            doc["request_id"] = rid
        for k, v in record.__dict__.items():
            if k not in _STANDARD:
                doc[k] = v
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return _ENCODE(doc)


def configure(service: str, level: int | str | None = None, stream=None) -> None:
    """JSON lines on stderr for this process (``INFAAS_LOG_LEVEL``, default INFO; the API's
    access lines unless ``INFAAS_ACCESS_LOG=off``)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or os.environ.get("INFAAS_LOG_LEVEL", "INFO").upper())
    ACCESS.setLevel(logging.WARNING if os.environ.get("INFAAS_ACCESS_LOG", "on").lower() == "off" else logging.NOTSET)


def access(method: str, path: str, route: str, status: int, duration_ms: float, tenant: str | None,
           request_id: str) -> None:
    """One access line: what was asked, how it ended, how long it took, for whom. (Made and handed
    to the logger here, without ``Logger.info``'s search of the stack for the caller: every request
    writes one.)"""
    if ACCESS.isEnabledFor(logging.INFO):
        duration_ms = round(duration_ms, 3)
        ACCESS.handle(ACCESS.makeRecord(
            ACCESS.name, logging.INFO, __file__, 0, "%s %s %d %.3f ms", (method, path, status, duration_ms), None,
            "access", {"method": method, "path": path, "route": route, "status": status, "duration_ms": duration_ms,
                       "tenant": tenant, "request_id": request_id}))
