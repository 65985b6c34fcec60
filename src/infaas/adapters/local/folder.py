"""Model store in a folder: one file per key, written atomically."""

from __future__ import annotations

import os
import tempfile

from infaas.core.errors import InvalidInput, NotFound
from infaas.core.keys import check_key


class FolderModelStore:
    """``ModelStore`` on a local folder. ``local_path`` is the file itself."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        os.makedirs(self.root, exist_ok=True)

    def _path(self, key: str) -> str:
        path = os.path.join(self.root, *check_key(key).split("/"))
        # Belt and braces: the resolved path must stay inside the root.
        if os.path.commonpath([self.root, os.path.realpath(path)]) != os.path.realpath(self.root):
            raise InvalidInput(f"model store key {key!r} leaves the store", field="key")
        return path

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def get(self, key: str) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise NotFound(f"no model file {key!r}", field="key") from None

    def exists(self, key: str) -> bool:
        return os.path.isfile(self._path(key))

    def local_path(self, key: str) -> str:
        path = self._path(key)
        if not os.path.isfile(path):
            raise NotFound(f"no model file {key!r}", field="key")
        return path

    def delete(self, key: str) -> None:
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass

    def list(self, prefix: str) -> list[str]:
        keys = []
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.startswith(".tmp-"):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, name), self.root).replace(os.sep, "/")
                if rel.startswith(prefix):
                    keys.append(rel)
        return sorted(keys)
