"""Connection limits for the API's and the workers' HTTP servers (uvicorn + httptools).

uvicorn bounds nothing a client can hold open without sending a request: a connection that
sends half a header, or nothing at all, keeps its file descriptor until the client goes. Twenty
thousand such connections take every descriptor and every new client fails. ``ConnectionGuard``
adds three rules to uvicorn's httptools protocol:

- **a bound on open connections** (``INFAAS_MAX_CONNECTIONS``). A connection beyond it first
  pushes out the oldest one that has not finished its request header, then the oldest idle
  keep-alive one, then the one whose body has been arriving longest; only when every open
  connection has a whole request in the service's hands is the newcomer answered ``503`` with
  ``Retry-After`` at once and closed. So connections that send nothing, or drip a body, cannot
  keep out clients that send whole requests.
- **a header deadline** (``INFAAS_HEADER_TIMEOUT_S``): the whole request header, from the
  connection (or the end of the previous answer on a kept-alive one) to its last byte, within
  this time, or ``408`` and close. Dripping one byte at a time does not extend it.
- **a body idle limit** (``INFAAS_BODY_TIMEOUT_S``): while a request body is arriving, no gap
  between its pieces longer than this, or the connection is closed (the handler sees the
  client gone).

Every refusal, push-out and timeout is counted (``counts``, read by GET /metrics) and logged,
at most one line per ``LOG_EVERY_S`` per server with the counts since the previous line.
"""

from __future__ import annotations

import logging
import resource
from collections import OrderedDict

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("infaas.http")

LOG_EVERY_S = 5.0
DESCRIPTOR_RESERVE = 64  # descriptors kept for everything that is not a client connection

_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
         b"connection: close\r\ncontent-length: %d\r\n\r\n%s")
_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: %d\r\n\r\n%s")


def _answer(template: bytes, message: str, code: str) -> bytes:
    body = ('{"error":"%s","message":"%s"}' % (code, message)).encode()
    return template % (len(body), body)


class ConnectionGuard:
    """The limits and counts of one HTTP server; ``protocol()`` is the class to give uvicorn
    (``uvicorn.Config(http=guard.protocol())``)."""

    def __init__(self, name: str, max_connections: int, header_timeout_s: float, body_timeout_s: float) -> None:
        self.name = name
        self.max_connections = max(1, min(max_connections, usable_descriptors()))
        self.header_timeout_s = header_timeout_s
        self.body_timeout_s = body_timeout_s
        self.open = 0
        # connections without a complete request header, and idle kept-alive ones: oldest first
        self.waiting: OrderedDict = OrderedDict()
        self.idle: OrderedDict = OrderedDict()
        self.receiving: OrderedDict = OrderedDict()  # a request header in, its body still arriving
        self.counts = {"refused": 0, "pushed_out": 0, "header_timeout": 0, "body_timeout": 0}
        self._logged = dict(self.counts)
        self._log_pending = False
        self._busy = _answer(_BUSY, f"this server holds its limit of {self.max_connections} open connections, "
                             "each with a request in progress; retry shortly", "overloaded")
        self._late = _answer(_TIMEOUT, f"the request header did not arrive within {header_timeout_s:g} s",
                             "request_timeout")

    def count(self, what: str, loop) -> None:
        self.counts[what] += 1
        if not self._log_pending:
            self._log_pending = True
            loop.call_later(LOG_EVERY_S, self._log)

    def _log(self) -> None:
        self._log_pending = False
        since = {k: v - self._logged[k] for k, v in self.counts.items() if v != self._logged[k]}
        self._logged = dict(self.counts)
        if since:
            log.warning("%s connections at the limit of %d: %s in the last %g s (%d open now)", self.name,
                        self.max_connections, ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in since.items()),
                        LOG_EVERY_S, self.open)

    def make_room(self, newcomer) -> bool:
        """Close the oldest connection that has not sent a request header, else the oldest idle
        one, else the one whose body has been arriving longest; False when every open connection
        has a whole request in the service's hands."""
        for queue in (self.waiting, self.idle, self.receiving):
            for conn in queue:
                if conn is not newcomer:
                    conn.shed()
                    self.count("pushed_out", newcomer.loop)
                    return True
        return False

    def protocol(self) -> type:
        guard = self

        class GuardedProtocol(HttpToolsProtocol):
            _deadline = None

            def connection_made(self, transport) -> None:
                super().connection_made(transport)
                guard.open += 1
                if guard.open > guard.max_connections and not guard.make_room(self):
                    guard.count("refused", self.loop)
                    transport.write(guard._busy)
                    transport.close()
                    return
                self._await_header()

            def connection_lost(self, exc) -> None:
                guard.open -= 1
                self._settle()
                guard.idle.pop(self, None)
                guard.receiving.pop(self, None)
                super().connection_lost(exc)

            def data_received(self, data: bytes) -> None:
                if self in guard.idle:  # the next request on a kept-alive connection starts
                    del guard.idle[self]
                    self._await_header()
                elif self._deadline is not None and self not in guard.waiting:  # more of a body
                    self._deadline.cancel()
                    self._deadline = self.loop.call_later(guard.body_timeout_s, self._body_late)
                super().data_received(data)

            def on_headers_complete(self) -> None:
                self._settle()
                self._deadline = self.loop.call_later(guard.body_timeout_s, self._body_late)
                guard.receiving[self] = None
                super().on_headers_complete()

            def on_message_complete(self) -> None:
                self._settle()
                guard.receiving.pop(self, None)
                super().on_message_complete()

            def on_response_complete(self) -> None:
                super().on_response_complete()
                if not self.transport.is_closing() and not self.pipeline:
                    guard.idle[self] = None

            def shed(self) -> None:
                self._settle()
                guard.idle.pop(self, None)
                guard.receiving.pop(self, None)
                self.transport.close()

            def _await_header(self) -> None:
                self._settle()
                guard.waiting[self] = None
                self._deadline = self.loop.call_later(guard.header_timeout_s, self._header_late)

            def _settle(self) -> None:
                guard.waiting.pop(self, None)
                if self._deadline is not None:
                    self._deadline.cancel()
                    self._deadline = None

            def _header_late(self) -> None:
                self._deadline = None
                guard.waiting.pop(self, None)
                if not self.transport.is_closing():
                    guard.count("header_timeout", self.loop)
                    self.transport.write(guard._late)
                    self.transport.close()

            def _body_late(self) -> None:
                self._deadline = None
                if not self.transport.is_closing():
                    guard.count("body_timeout", self.loop)
                    self.transport.close()

        return GuardedProtocol


def usable_descriptors() -> int:
    """Raise this process's open-file limit to its hard limit and return how many client
    connections fit under it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 16)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return max(1, soft - DESCRIPTOR_RESERVE)


def from_settings(name: str, settings) -> ConnectionGuard:
    return ConnectionGuard(name, settings.max_connections, settings.header_timeout_s, settings.body_timeout_s)
