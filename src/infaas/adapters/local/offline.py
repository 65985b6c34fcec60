"""Offline jobs' inputs and outputs in a folder under the offline root (``app.offline.Location``)."""

from __future__ import annotations

import os
import tempfile

from infaas.core.errors import InvalidInput


class FolderLocation:
    """A folder under the offline root; names are file names in it (no sub-paths)."""

    def __init__(self, root: str, path: str) -> None:
        root = os.path.realpath(root)
        full = os.path.realpath(path if os.path.isabs(path) else os.path.join(root, path))
        if os.path.commonpath([root, full]) != root:
            raise InvalidInput(f"location {path!r} is outside the offline root {root!r}", field="location")
        self.root, self.path, self.uri = root, full, full

    def list(self) -> list[str]:
        if not os.path.isdir(self.path):
            raise InvalidInput(f"input location {self.uri!r} is not a folder", field="input")
        return sorted(n for n in os.listdir(self.path) if os.path.isfile(os.path.join(self.path, n)))

    def _file(self, name: str) -> str:
        if "/" in name or name.startswith(".") or not name:
            raise InvalidInput(f"bad file name {name!r}", field="input")
        return os.path.join(self.path, name)

    def read(self, name: str) -> bytes:
        with open(self._file(name), "rb") as f:
            return f.read()

    def exists(self, name: str) -> bool:
        return os.path.isfile(self._file(name))

    def write_atomic(self, name: str, data: bytes) -> None:
        os.makedirs(self.path, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._file(name))
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
