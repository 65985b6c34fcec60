"""The local stack's worker credential and socket folder, kept in the data dir.

Every call from the API to a worker carries a credential the worker checks
(``adapters/workerclient.py``, ``worker/server.py``). Locally it is a random
secret in ``<data_dir>/worker.secret``, created once with mode 0600, so only
the user running the stack can read it; the workers' Unix sockets live in
``<data_dir>/sockets`` with mode 0700, so no other local user can connect to
them at all.
"""

from __future__ import annotations

import os
import secrets
import time

SECRET_FILE = "worker.secret"
SOCKET_DIR = "sockets"


def private_dir(path: str) -> str:
    """``path`` as a folder only its owner may enter (0700), created if needed."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def worker_secret(data_dir: str) -> str:
    """The stack's worker credential: read from the data dir, created (0600) on first use.
    Two processes creating it at once agree: the loser of ``O_EXCL`` reads the winner's."""
    private_dir(data_dir)
    path = os.path.join(data_dir, SECRET_FILE)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(100):  # the creator may not have written it yet
            with open(path) as f:
                value = f.read().strip()
            if value:
                return value
            time.sleep(0.01)
        raise RuntimeError(f"{path} is empty: delete it and start again")
    value = secrets.token_hex(32)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def socket_dir(data_dir: str) -> str:
    """Where this stack's workers put their Unix sockets (0700)."""
    return private_dir(os.path.join(data_dir, SOCKET_DIR))


def socket_path(directory: str, port: int) -> str:
    """The Unix socket of the worker whose HTTP port is ``port``."""
    return os.path.join(directory, f"worker-{port}.sock")
