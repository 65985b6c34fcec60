"""Offline jobs' inputs and outputs in a folder under the offline root (``app.offline.Location``)."""

from __future__ import annotations

import errno
import os
import secrets
from contextlib import contextmanager

from infaas.core.errors import Forbidden, InvalidInput

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class FolderLocation:
    """A folder in a tenant's offline area (``wiring.open_location``); names are file names in it
    (no sub-paths).

    Symbolic links are never followed, at any step and at any time: every operation opens the area
    and then each folder of the path with ``O_NOFOLLOW`` relative to the one before (``openat``),
    and reads, writes and renames relative to the folder it opened. A folder swapped for a link
    while a job runs is an error, never a way into another tenant's area. The location is named by
    its path inside the area (``uri``), so no message shows where the area is on the server."""

    def __init__(self, root: str, path: str) -> None:
        os.makedirs(root, mode=0o700, exist_ok=True)
        root = os.path.realpath(root)  # the service's own setting: trusted up to here
        if "\0" in path:
            raise InvalidInput("location holds a NUL character", field="location")
        rel = path
        if os.path.isabs(path):
            norm = os.path.normpath(path)
            if os.path.commonpath([root, norm]) != root:
                raise Forbidden(f"location {path!r} is outside your offline area", field="location")
            rel = os.path.relpath(norm, root)
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise Forbidden(f"location {path!r} leaves your offline area ('..')", field="location")
        self.root, self.parts = root, parts
        self.uri = "/".join(parts) or "."
        here = root
        for part in parts:  # refused at once where the path goes through a link now (every use checks again)
            here = os.path.join(here, part)
            if os.path.islink(here):
                raise Forbidden(f"location {path!r} goes through a link; links are not followed", field="location")
            if not os.path.isdir(here):
                break

    @contextmanager
    def _folder(self, *, create: bool = False, field: str = "input"):
        """A file descriptor of the folder, opened from the area one name at a time without
        following a link (``create``: missing folders are made, 0700)."""
        try:
            fd = os.open(self.root, _DIR)
        except OSError as exc:
            raise InvalidInput(f"your offline area cannot be opened: {exc.strerror}", field=field) from None
        try:
            for part in self.parts:
                try:
                    nxt = os.open(part, _DIR, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise InvalidInput(f"location {self.uri!r} is not a folder", field=field) from None
                    try:
                        os.mkdir(part, 0o700, dir_fd=fd)
                    except FileExistsError:
                        pass
                    nxt = os.open(part, _DIR, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise InvalidInput(f"location {self.uri!r} is not a folder ({part!r} is a link or a file: "
                                           "links are not followed)", field=field) from None
                    raise InvalidInput(f"location {self.uri!r} cannot be opened: {exc.strerror}", field=field) from None
                os.close(fd)
                fd = nxt
            yield fd
        finally:
            os.close(fd)

    def list(self) -> list[str]:
        with self._folder() as fd:
            with os.scandir(fd) as entries:
                return sorted(e.name for e in entries if e.is_file(follow_symlinks=False))

    @staticmethod
    def _name(name: str) -> str:
        if not name or "/" in name or "\0" in name or name.startswith("."):
            raise InvalidInput(f"bad file name {name!r}", field="input")
        return name

    def read(self, name: str) -> bytes:
        with self._folder() as folder:
            try:
                fd = os.open(self._name(name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
            except OSError as exc:  # ELOOP: a symbolic link
                raise InvalidInput(f"cannot read {name!r} in {self.uri!r}: {exc.strerror}", field="input") from None
            with os.fdopen(fd, "rb") as f:
                return f.read()

    def exists(self, name: str) -> bool:
        try:
            with self._folder(field="output") as folder:
                st = os.stat(self._name(name), dir_fd=folder, follow_symlinks=False)
        except (InvalidInput, OSError):
            return False
        return (st.st_mode & 0o170000) == 0o100000  # a regular file, not a link

    def write_atomic(self, name: str, data: bytes) -> None:
        name = self._name(name)
        with self._folder(create=True, field="output") as folder:
            tmp = f".tmp-{secrets.token_hex(8)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=folder)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
            except BaseException:
                try:
                    os.unlink(tmp, dir_fd=folder)
                except OSError:
                    pass
                raise
