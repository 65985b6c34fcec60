"""Offline jobs' inputs and outputs in a folder under the offline root (``app.offline.Location``)."""

from __future__ import annotations

import os
import tempfile

from infaas.core.errors import Forbidden, InvalidInput


class FolderLocation:
    """A folder in a tenant's offline area (``wiring.open_location``); names are file names in it
    (no sub-paths). Symbolic links are never followed: the folder's real path must lie in the
    area, and a linked file is neither listed nor opened."""

    def __init__(self, root: str, path: str) -> None:
        os.makedirs(root, mode=0o700, exist_ok=True)
        root = os.path.realpath(root)
        full = os.path.realpath(path if os.path.isabs(path) else os.path.join(root, path))
        if os.path.commonpath([root, full]) != root:
            raise Forbidden(f"location {path!r} is outside your offline area {root!r}", field="location")
        self.root, self.path, self.uri = root, full, full

    def list(self) -> list[str]:
        if not os.path.isdir(self.path):
            raise InvalidInput(f"input location {self.uri!r} is not a folder", field="input")
        with os.scandir(self.path) as entries:
            return sorted(e.name for e in entries if e.is_file(follow_symlinks=False))

    def _file(self, name: str) -> str:
        if "/" in name or name.startswith(".") or not name:
            raise InvalidInput(f"bad file name {name!r}", field="input")
        return os.path.join(self.path, name)

    def read(self, name: str) -> bytes:
        try:
            fd = os.open(self._file(name), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:  # ELOOP: a symbolic link
            raise InvalidInput(f"cannot read {name!r}: {exc.strerror}", field="input") from None
        with os.fdopen(fd, "rb") as f:
            return f.read()

    def exists(self, name: str) -> bool:
        path = self._file(name)
        return os.path.isfile(path) and not os.path.islink(path)

    def write_atomic(self, name: str, data: bytes) -> None:
        os.makedirs(self.path, mode=0o700, exist_ok=True)
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
