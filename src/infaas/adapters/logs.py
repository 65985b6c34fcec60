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
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
import uuid
from contextvars import ContextVar

REQUEST_ID: ContextVar[str | None] = ContextVar("infaas_request_id", default=None)
HEADER = b"x-request-id"
_SAFE = re.compile(rb"[A-Za-z0-9._-]{1,64}")


def request_id_from(value: bytes | str | None) -> str:
    """The caller's id when it is safe to log and echo, else a new one."""
    if isinstance(value, str):
        value = value.encode("utf-8", "replace")
    if value is not None and _SAFE.fullmatch(value):
        return value.decode("ascii")
    return uuid.uuid4().hex


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "location": f"{record.funcName}:{record.lineno}",
            "message": record.getMessage(),
        }
        rid = REQUEST_ID.get()
        if rid is not None:
            doc["request_id"] = rid
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure(service: str, level: int | str | None = None, stream=None) -> None:
    """JSON lines on stderr for this process (``INFAAS_LOG_LEVEL``, default INFO)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or os.environ.get("INFAAS_LOG_LEVEL", "INFO").upper())
