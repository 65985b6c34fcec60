"""``infaas sim data fetch``: download the Proteus data set into a local cache.

The simulator replays the published variant profiles and request traces of the
Proteus artifact (ASPLOS 2024, GitHub repository ``UMass-LIDS/Proteus``). They
are not part of this repository: their licence permits use for comparison
purposes only. This module downloads the repository archive at a pinned commit,
takes the few files the simulator reads (``UPSTREAM``: upstream path -> path in
the data folder, the licence included as ``LICENSE.proteus``), checks each
against a pinned SHA-256 (``SHA256``) and installs them at once (a temporary
folder beside the destination, then a rename) into ``cache_dir()``:
``$XDG_CACHE_HOME/infaas/proteus``, by default ``~/.cache/infaas/proteus``.

Standard library only. The archive URL can point at a mirror or a local file
server (``--url`` or ``INFAAS_PROTEUS_URL``); the hashes keep it honest.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

REPOSITORY = "UMass-LIDS/Proteus"
# The commit of the artifact's final README ("set to appear in ASPLOS 2024"); it holds the
# profiles (profiling/), the allowed variants (traces/model_variants/) and the Twitter-derived
# traces (traces/twitter/asplos/<workload>/300/, the folders the artifact's configs/*/proteus.json
# replay). If it ever has to change, change it here, and SHA256 below if the files differ.
PROTEUS_COMMIT = "6967c9327e66f6d6fe94993dcaa7521efc2f72f5"
DEFAULT_URL = f"https://codeload.github.com/{REPOSITORY}/tar.gz/{PROTEUS_COMMIT}"
URL_ENV = "INFAAS_PROTEUS_URL"

FAMILIES = ("bert", "densenet", "efficientnet", "gpt2", "mobilenet", "resnest", "resnet", "t5", "yolo")
WORKLOADS = ("medium-normal_load", "zipf_exponential", "zipf_exponential_bursty")

# Upstream path (inside the archive's top folder) -> path in the data folder. The one place
# that knows the repository's layout.
UPSTREAM: dict[str, str] = {
    "LICENSE": "LICENSE.proteus",
    "profiling/aggregate_profiled.csv": "aggregate_profiled.csv",
    **{f"traces/model_variants/{f}": f"model_variants/{f}" for f in FAMILIES},
    **{f"traces/twitter/asplos/{w}/300/{f}.txt": f"traces/{w}/{f}.txt" for w in WORKLOADS for f in FAMILIES},
}

# SHA-256 of each file as published at PROTEUS_COMMIT, by path in the data folder.
SHA256: dict[str, str] = {
    "LICENSE.proteus": "ad8c9197ce2575d14f38b92ca3bf30fd7286f2d730d3ab9e2c6e2e2b368dbb06",
    "aggregate_profiled.csv": "ae7b8330a2cfe9ca87b7e2338f1dcb1e01581460a1dd9d97e0ee5999c2746e92",
    "model_variants/bert": "e127dda4feb21d64410e6008b9f6523eaebd18928a46bcc088eb8d3e1de52e45",
    "model_variants/densenet": "2e03ae303fb261ad18ed40457e8b3578d5f24a02796f796321dcb6c7b6ecfff6",
    "model_variants/efficientnet": "0226c1133af555ed1a2e01e6b7d7a80b9b2bda4c00f76735e6ce395251a110f7",
    "model_variants/gpt2": "31d998426252d336585b8d4a9d6df1e676924efe0e96c87fe0869b3942745094",
    "model_variants/mobilenet": "d8600531f690092b956e682aaf47902669485585f36e1f86851b7fe7a9b83d67",
    "model_variants/resnest": "f70f68c63df8a8d770e581c2bd5e304e5a038f103188f5091ec8fd01c20ec693",
    "model_variants/resnet": "b508b1e287c22d1299ee93a22f27cfdc4acc5d84b1ce77db54d0a2938ecd65d2",
    "model_variants/t5": "365e022c451077246b2214b223c214860b2812833258ec78ed7bf0813d15f9f7",
    "model_variants/yolo": "a47cfe67f842f63bbd3ad613285d4be61384adefef41e14d172f738387af17d5",
    "traces/medium-normal_load/bert.txt": "ef5a482fb9f9e4d4ffad128176a7b3b72a9ecc17f272ee0676b61e2d41748750",
    "traces/medium-normal_load/densenet.txt": "bbd0840dd56c0c1bba6ecc171c633293eef175f8660c2cd39a3e03977d476b40",
    "traces/medium-normal_load/efficientnet.txt": "51058dc5073c3ab207dc0ef7dcd474ec419293a597d749b58349da98c1a0deb8",
    "traces/medium-normal_load/gpt2.txt": "2630ec62fc5ccb802a0c3e43c1f1138b406bc6e15a61c99855ba86baae12efe5",
    "traces/medium-normal_load/mobilenet.txt": "bd2665ec841a0739eb32cba022c398ab9accd6f70dc3c60a895a2bd68e3968c9",
    "traces/medium-normal_load/resnest.txt": "4d31d909304bd916b7ac84e7bf161fb67f5de66c6a325a43cdc2f3c9ff5ddefc",
    "traces/medium-normal_load/resnet.txt": "e89a4ff193ad8b77f905ea977449156cc1796e5639020e3364793739629c9e95",
    "traces/medium-normal_load/t5.txt": "550e4d22ce18c66f59a4fbe0d4245af5d4650d3aa3b5d434ec70b17d23dccb71",
    "traces/medium-normal_load/yolo.txt": "8f94d522d78e275324f7a7e35e43ead0086d3f3212110cb68e8161ed76f96c0b",
    "traces/zipf_exponential/bert.txt": "38adb9b19d33c59207dad8855a5374d875ce5a93f2e40922c6a79267925d66fa",
    "traces/zipf_exponential/densenet.txt": "4341e532c3b3e9417fab5125389ab3339fc2c8a8f5f0a3fd606c8f362e965c65",
    "traces/zipf_exponential/efficientnet.txt": "462b94b8a0bab8989b028f3c8292ba964f235212101b3cc0fc8080a95c32c8e9",
    "traces/zipf_exponential/gpt2.txt": "b0772278bc8649c62c1eabd98a1785b51bf5539dbf385b0090d1c7813dfa36fb",
    "traces/zipf_exponential/mobilenet.txt": "a0df133a4e13e5c48f448b892beee3a7480596371de5aa773dfc19536782910b",
    "traces/zipf_exponential/resnest.txt": "2afd4f6d8f8b590a2b7aeff7925aab6abb13690e61529c350320b3fbcf46b576",
    "traces/zipf_exponential/resnet.txt": "0ca98ee0c331daf005f165386942b85b574ea16b316d2b45ec57cdb1d6293755",
    "traces/zipf_exponential/t5.txt": "b1b8272bcb682e70983f078486874cdde9da6ce2ff2a5ca8c8812713133c59f1",
    "traces/zipf_exponential/yolo.txt": "7e343609c29062d4468c08108903df86c0edcc692ead478591cfbd0683b4fbb4",
    "traces/zipf_exponential_bursty/bert.txt": "62ae91cfe743760a3cb8887ca12298e5073a0cf0ed4e3500c564f104e8f7c5b8",
    "traces/zipf_exponential_bursty/densenet.txt": "30f9ec1f509307c11a1b2faeadfcc27fbe8856fab6e78e6e84dfededab93f4c4",
    "traces/zipf_exponential_bursty/efficientnet.txt": "37a0b1d037a65c5b040f407d711f5e52cf61c2cbd6d01b079d691e842c3d5e52",
    "traces/zipf_exponential_bursty/gpt2.txt": "70c15c8e43b356c2896915768669a9b2c9241989b64bc2e52c90cfb7e10c36e7",
    "traces/zipf_exponential_bursty/mobilenet.txt": "d50764227a41538993b411cf9822edbd2a878a162191bf8b4e0187923ee11cd3",
    "traces/zipf_exponential_bursty/resnest.txt": "9e7becc15f21e92b5820128346cb93b016b5b6831a19de55a09d12171de4dd80",
    "traces/zipf_exponential_bursty/resnet.txt": "21129ab63e27ee647dff89e6243dda9f258680e7aea1753a3e8b00c58d56c968",
    "traces/zipf_exponential_bursty/t5.txt": "ae3bb8eace4f42f0cea5d67400603044dbb674c7e457924cf7bdd913781a2fee",
    "traces/zipf_exponential_bursty/yolo.txt": "6c97ecab5cef9a9996359d5225c45f2aad5d70972177b49906e864f211162d47",
}

MANIFEST = ".infaas-fetch.json"  # written beside the data: where it came from
CHUNK = 1 << 16
TIMEOUT_S = 60.0


class FetchError(Exception):
    """A one-line reason the data could not be fetched."""


@dataclass(frozen=True)
class FetchResult:
    dest: Path
    fetched: bool  # False: the cache already held verified files


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/infaas/proteus`` (``~/.cache/infaas/proteus`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "infaas" / "proteus"


def default_url() -> str:
    return os.environ.get(URL_ENV) or DEFAULT_URL


def has_data(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` looks like a Proteus data folder (profiles, variants and traces)."""
    p = Path(folder)
    return (p / "aggregate_profiled.csv").is_file() and (p / "model_variants").is_dir() and (p / "traces").is_dir()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def unverified(folder: str | os.PathLike, hashes: Mapping[str, str] | None = None) -> list[str]:
    """The files of ``hashes`` (default ``SHA256``) that ``folder`` lacks or holds with other contents."""
    root = Path(folder)
    hashes = SHA256 if hashes is None else hashes
    return [rel for rel, want in sorted(hashes.items())
            if not (root / rel).is_file() or _sha256(root / rel) != want]


def _size(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"


def _download(url: str, to: IO[bytes], err: IO[str]) -> int:
    hint = (f"use --url URL (or {URL_ENV}) to name a mirror of the archive, or pass a copy you already "
            f"have with `infaas sim compare --data DIR` (or INFAAS_PROTEUS_DIR)")
    print(f"downloading {url}", file=err, flush=True)
    done, last = 0, 0.0
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            total = int(resp.headers.get("Content-Length") or 0)
            while block := resp.read(CHUNK):
                to.write(block)
                done += len(block)
                if time.monotonic() - last > 0.2:
                    last = time.monotonic()
                    print(f"\r  {_size(done)}" + (f" / {_size(total)}" if total else ""), end="", file=err, flush=True)
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        if done:
            print(file=err)
        reason = exc if isinstance(exc, urllib.error.HTTPError) else (getattr(exc, "reason", None) or exc)
        raise FetchError(f"cannot download {url}: {reason}; {hint}") from None
    print(f"\r  {_size(done)}" + (f" / {_size(total)}" if total else "") + " done", file=err, flush=True)
    if total and done != total:
        raise FetchError(f"cannot download {url}: got {done} of {total} bytes; {hint}")
    return done


def _unsafe(path: str) -> bool:
    p = PurePosixPath(path.replace("\\", "/"))
    return p.is_absolute() or (len(path) > 1 and path[1] == ":") or ".." in p.parts


def _member_path(m: tarfile.TarInfo) -> str | None:
    """The member's path below the archive's top folder (``None`` for the top folder itself).

    Refuses the whole archive for a member named with an absolute path or ``..``, or a link
    pointing at one: no repository archive holds them. Other links are never extracted."""
    if _unsafe(m.name):
        raise FetchError(f"refusing the archive: unsafe member path {m.name!r}")
    if (m.issym() or m.islnk()) and _unsafe(m.linkname):
        raise FetchError(f"refusing the archive: link member {m.name!r} points at {m.linkname!r}")
    parts = PurePosixPath(m.name.replace("\\", "/")).parts[1:]  # codeload: one top folder, <repo>-<commit>/
    return "/".join(parts) if parts else None


def _extract(archive: Path, into: Path, files: Mapping[str, str], hashes: Mapping[str, str], url: str) -> None:
    found: set[str] = set()
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for m in tar:
                rel = _member_path(m)
                if rel is None or rel not in files:
                    continue
                if not m.isfile():
                    kind = "link" if (m.issym() or m.islnk()) else "non-file"
                    raise FetchError(f"refusing the archive: {kind} member {m.name!r} where {rel} should be a file")
                local = files[rel]
                want = hashes.get(local)
                if want is None:
                    raise FetchError(f"no pinned SHA-256 for {local}")
                src = tar.extractfile(m)
                assert src is not None  # a regular file
                out = into / local
                out.parent.mkdir(parents=True, exist_ok=True)
                h = hashlib.sha256()
                with src, open(out, "wb") as f:
                    while block := src.read(CHUNK):
                        h.update(block)
                        f.write(block)
                if h.hexdigest() != want:
                    raise FetchError(f"hash mismatch for {local} (archive member {rel}): SHA-256 {h.hexdigest()}, "
                                     f"pinned {want}; nothing was installed")
                found.add(rel)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise FetchError(f"cannot read the archive from {url} as tar.gz: {exc}") from None
    missing = [rel for rel in files if rel not in found]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise FetchError(f"the archive from {url} lacks {missing[0]}{more} (wanted for {files[missing[0]]}); "
                         f"is it the {REPOSITORY} repository at {PROTEUS_COMMIT[:12]}?")


def _replaceable(folder: Path) -> bool:
    """An empty folder, or one a fetch filled before (never a folder of the user's own)."""
    return folder.is_dir() and (not any(folder.iterdir()) or (folder / MANIFEST).is_file() or has_data(folder))


def fetch(dest: str | os.PathLike | None = None, url: str | None = None, *, force: bool = False,
          files: Mapping[str, str] | None = None, hashes: Mapping[str, str] | None = None,
          err: IO[str] | None = None) -> FetchResult:
    """Download, verify and install the data set into ``dest`` (default ``cache_dir()``).

    A no-op when ``dest`` already holds every file of ``hashes`` unchanged, unless ``force``.
    ``files`` (upstream path -> path in the folder) and ``hashes`` (path in the folder -> SHA-256)
    default to ``UPSTREAM`` and ``SHA256``. Raises :class:`FetchError` (a one-line message) and
    leaves ``dest`` as it was on any failure.
    """
    files = UPSTREAM if files is None else files
    hashes = SHA256 if hashes is None else hashes
    err = err or sys.stderr
    target = Path(dest).expanduser() if dest else cache_dir()
    url = url or default_url()
    if not force and target.is_dir() and not unverified(target, hashes):
        return FetchResult(target, fetched=False)
    if (target.exists() or target.is_symlink()) and not _replaceable(target):
        raise FetchError(f"{target} exists and is not a Proteus data folder; name a new or empty folder with --dest")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-fetch-", dir=target.parent))
    try:
        archive = work / "archive.tar.gz"
        with open(archive, "wb") as f:
            _download(url, f, err)
        staged = work / "data"
        staged.mkdir()
        _extract(archive, staged, files, hashes, url)
        (staged / MANIFEST).write_text(json.dumps({"url": url, "repository": REPOSITORY, "commit": PROTEUS_COMMIT,
                                                   "files": {v: k for k, v in files.items()}}, indent=1) + "\n")
        old = work / "old"
        had = target.exists() or target.is_symlink()
        if had:
            os.replace(target, old)
        try:
            os.replace(staged, target)
        except OSError:
            if had:
                os.replace(old, target)
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return FetchResult(target, fetched=True)


def fetch_main(args) -> int:
    """``infaas sim data fetch [--url URL] [--dest DIR] [--force]`` (wired in ``infaas.cli``)."""
    try:
        res = fetch(args.dest, args.source_url, force=args.force)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not res.fetched:
        print(f"{res.dest} already holds the verified Proteus data; nothing to do (--force fetches it again)")
    else:
        print(f"Proteus data ({REPOSITORY} at {PROTEUS_COMMIT[:12]}) installed in {res.dest}")
    print(f"licence: {res.dest / 'LICENSE.proteus'} (use for comparison purposes only)")
    return 0
