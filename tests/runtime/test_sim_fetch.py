"""``infaas sim data fetch`` against a tar.gz served from 127.0.0.1 (built here from small
generated files, never the real data set), and where the simulator then finds its data."""

from __future__ import annotations

import functools
import hashlib
import io
import socket
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import proteus_data
import pytest

from infaas.cli import main
from infaas.sim import data, fetch

TOP = "Proteus-0123456789ab"  # codeload archives hold one top folder, <repo>-<commit>
# A few files in the upstream layout (the real mapping is fetch.UPSTREAM; same shape).
CONTENTS = {
    "LICENSE": b"Permission is hereby granted to use this software for comparison purposes only.\n",
    "profiling/aggregate_profiled.csv": b"Model,Accel,Trials,batchsize\nresnet18_v1,onnxruntime_cpu,1000,1\n",
    "traces/model_variants/resnet": b"resnet18_v1,89.5\nresnet50_v1,100",
    "traces/twitter/asplos/zipf_exponential/300/resnet.txt": b"144,1,300\n249,1,300\n",
}
FILES = {
    "LICENSE": "LICENSE.proteus",
    "profiling/aggregate_profiled.csv": "aggregate_profiled.csv",
    "traces/model_variants/resnet": "model_variants/resnet",
    "traces/twitter/asplos/zipf_exponential/300/resnet.txt": "traces/zipf_exponential/resnet.txt",
}
HASHES = {FILES[k]: hashlib.sha256(v).hexdigest() for k, v in CONTENTS.items()}


def make_archive(path: Path, contents: dict[str, bytes], *, top: str = TOP, extra=()) -> Path:
    """A tar.gz like GitHub's: every file under ``top/``; ``extra``: raw (TarInfo, bytes | None) members."""
    with tarfile.open(path, "w:gz") as tar:
        for name, body in {"run.py": b"print('not wanted')\n", **contents}.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        for info, body in extra:
            tar.addfile(info, io.BytesIO(body) if body is not None else None)
    return path


class _Handler(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """Serves ``tmp_path/www`` on 127.0.0.1; ``.hits`` counts GET requests."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    www = tmp_path / "www"
    www.mkdir()
    hits = []

    class Counting(_Handler):
        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Counting, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.www, httpd.hits = www, hits
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _fetch(dest: Path, url: str, **kw):
    err = io.StringIO()
    res = fetch.fetch(dest, url, files=FILES, hashes=HASHES, err=err, **kw)
    return res, err.getvalue()


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_fetch_installs_the_files_in_the_simulator_layout_with_the_licence(server, tmp_path):
    make_archive(server.www / "p.tar.gz", CONTENTS)
    dest = tmp_path / "cache" / "proteus"
    res, err = _fetch(dest, f"{server.url}/p.tar.gz")
    assert res.fetched and res.dest == dest
    for upstream, local in FILES.items():
        assert (dest / local).read_bytes() == CONTENTS[upstream]
    assert (dest / "LICENSE.proteus").read_bytes().startswith(b"Permission is hereby granted")
    assert not (dest / "run.py").exists() and not (dest / "profiling").exists()  # only what the simulator reads
    assert fetch.has_data(dest) and fetch.unverified(dest, HASHES) == []
    assert f"downloading {server.url}/p.tar.gz" in err and " / " in err and "done" in err  # bytes / total
    assert _leftovers(dest.parent) == []  # the temporary folder is gone


def test_a_tampered_file_fails_naming_it_and_installs_nothing(server, tmp_path):
    make_archive(server.www / "p.tar.gz", {**CONTENTS, "traces/model_variants/resnet": b"resnet18_v1,100\n"})
    dest = tmp_path / "cache" / "proteus"
    with pytest.raises(fetch.FetchError, match=r"hash mismatch for model_variants/resnet \(archive member "
                                               r"traces/model_variants/resnet\)") as exc:
        _fetch(dest, f"{server.url}/p.tar.gz")
    assert "\n" not in str(exc.value)
    assert not dest.exists() and _leftovers(dest.parent) == []


def test_a_failed_fetch_leaves_a_good_cache_as_it_was(server, tmp_path):
    make_archive(server.www / "good.tar.gz", CONTENTS)
    make_archive(server.www / "bad.tar.gz", {**CONTENTS, "LICENSE": b"other terms\n"})
    dest = tmp_path / "cache" / "proteus"
    _fetch(dest, f"{server.url}/good.tar.gz")
    with pytest.raises(fetch.FetchError, match="hash mismatch for LICENSE.proteus"):
        _fetch(dest, f"{server.url}/bad.tar.gz", force=True)
    assert fetch.unverified(dest, HASHES) == [] and _leftovers(dest.parent) == []


def test_a_folder_of_other_files_is_never_replaced(server, tmp_path):
    make_archive(server.www / "p.tar.gz", CONTENTS)
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "notes.txt").write_text("keep me\n")
    with pytest.raises(fetch.FetchError, match="is not a Proteus data folder"):
        _fetch(dest, f"{server.url}/p.tar.gz", force=True)
    assert (dest / "notes.txt").read_text() == "keep me\n" and server.hits == []


def test_an_archive_missing_a_file_is_refused(server, tmp_path):
    make_archive(server.www / "p.tar.gz", {k: v for k, v in CONTENTS.items() if k != "LICENSE"})
    dest = tmp_path / "cache" / "proteus"
    with pytest.raises(fetch.FetchError, match=r"lacks LICENSE \(wanted for LICENSE.proteus\)"):
        _fetch(dest, f"{server.url}/p.tar.gz")
    assert not dest.exists()


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", body: bytes | None = b"x\n"):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    info.size = len(body) if body is not None and kind == tarfile.REGTYPE else 0
    return info, body if kind == tarfile.REGTYPE else None


@pytest.mark.parametrize("extra, reason", [
    (_member(f"{TOP}/../evil"), "unsafe member path"),
    (_member("../evil"), "unsafe member path"),
    (_member("/etc/evil"), "unsafe member path"),
    (_member(f"{TOP}/docs", tarfile.SYMTYPE, "../../../etc"), "points at"),
    (_member(f"{TOP}/traces/model_variants/resnet", tarfile.SYMTYPE, "../../LICENSE"), "link member"),
    (_member(f"{TOP}/traces/model_variants/resnet", tarfile.LNKTYPE, f"{TOP}/LICENSE"), "link member"),
], ids=["dotdot-inside", "dotdot", "absolute", "symlink-out", "symlink-at-wanted-path", "hardlink-at-wanted-path"])
def test_unsafe_members_are_refused(server, tmp_path, extra, reason):
    make_archive(server.www / "p.tar.gz", CONTENTS, extra=[extra])
    dest = tmp_path / "cache" / "proteus"
    with pytest.raises(fetch.FetchError, match=f"refusing the archive: .*{reason}"):
        _fetch(dest, f"{server.url}/p.tar.gz")
    assert not dest.exists() and not (tmp_path / "evil").exists() and _leftovers(dest.parent) == []


def test_a_second_fetch_is_a_no_op_unless_forced(server, tmp_path, monkeypatch, capsys):
    make_archive(server.www / "p.tar.gz", CONTENTS)
    monkeypatch.setattr(fetch, "UPSTREAM", FILES)
    monkeypatch.setattr(fetch, "SHA256", HASHES)
    monkeypatch.setenv("INFAAS_PROTEUS_URL", f"{server.url}/p.tar.gz")  # the mirror variable
    dest = tmp_path / "cache" / "proteus"
    assert main(["sim", "data", "fetch", "--dest", str(dest)]) == 0
    assert "installed in" in capsys.readouterr().out and len(server.hits) == 1
    assert main(["sim", "data", "fetch", "--dest", str(dest)]) == 0
    out = capsys.readouterr().out
    assert "already holds the verified Proteus data" in out and "comparison purposes only" in out
    assert len(server.hits) == 1  # nothing downloaded
    assert main(["sim", "data", "fetch", "--dest", str(dest), "--force"]) == 0
    assert len(server.hits) == 2 and fetch.unverified(dest, HASHES) == []


def test_a_changed_cache_file_is_fetched_again(server, tmp_path):
    make_archive(server.www / "p.tar.gz", CONTENTS)
    dest = tmp_path / "cache" / "proteus"
    _fetch(dest, f"{server.url}/p.tar.gz")
    (dest / "model_variants" / "resnet").write_text("edited\n")
    res, _ = _fetch(dest, f"{server.url}/p.tar.gz")
    assert res.fetched and len(server.hits) == 2 and fetch.unverified(dest, HASHES) == []


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/proteus.tar.gz"  # nothing listens there now


def test_a_dead_url_gives_one_line_naming_it_and_the_ways_out(tmp_path, capsys, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    url, dest = _dead_url(), tmp_path / "cache" / "proteus"
    assert main(["sim", "data", "fetch", "--url", url, "--dest", str(dest)]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert f"cannot download {url}" in errors[0] and "--url" in errors[0] and "--data" in errors[0]
    assert not dest.exists() and _leftovers(dest.parent) == []


def test_a_missing_archive_names_the_http_error(server, tmp_path):
    with pytest.raises(fetch.FetchError, match=r"cannot download .*/nothing.tar.gz: HTTP Error 404"):
        _fetch(tmp_path / "cache" / "proteus", f"{server.url}/nothing.tar.gz")


# -- where the simulator looks ------------------------------------------------------------------------
@pytest.fixture
def no_data(tmp_path, monkeypatch):
    """No data anywhere: an empty XDG cache, no INFAAS_PROTEUS_DIR, no legacy copy beside the checkout."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("INFAAS_PROTEUS_DIR", raising=False)
    monkeypatch.setattr(data, "DEFAULT_DATA_DIR", None)
    monkeypatch.setattr(data, "LEGACY_DATA_DIR", tmp_path / "legacy" / "data" / "proteus")
    return tmp_path


def test_without_data_the_error_says_to_fetch(no_data):
    with pytest.raises(FileNotFoundError, match="run `infaas sim data fetch`"):
        data.data_dir()
    assert main(["sim", "compare", "--workload", "zipf_exponential", "--no-report"]) == 1


def test_resolution_order_data_then_env_then_cache_then_legacy(no_data, monkeypatch):
    cache = fetch.cache_dir()
    assert cache == no_data / "xdg" / "infaas" / "proteus"
    legacy = proteus_data.write(data.LEGACY_DATA_DIR)
    assert data.data_dir() == legacy.resolve()
    proteus_data.write(cache)
    assert data.data_dir() == cache.resolve()  # the cache before the legacy copy
    env = proteus_data.write(no_data / "env")
    monkeypatch.setenv("INFAAS_PROTEUS_DIR", str(env))
    assert data.data_dir() == env.resolve()
    assert data.data_dir(no_data / "explicit") == (no_data / "explicit").resolve()  # --data


def test_the_simulator_reads_what_fetch_installed(no_data, server):
    src = proteus_data.write(no_data / "src")
    local = {p.relative_to(src).as_posix(): p.read_bytes() for p in sorted(src.rglob("*")) if p.is_file()}
    upstream = {"LICENSE": "LICENSE.proteus", "profiling/aggregate_profiled.csv": "aggregate_profiled.csv"}
    for rel in local:
        if rel.startswith("model_variants/"):
            upstream[f"traces/{rel}"] = rel
        elif rel.startswith("traces/"):
            _, workload, name = rel.split("/")
            upstream[f"traces/twitter/asplos/{workload}/300/{name}"] = rel
    local["LICENSE.proteus"] = CONTENTS["LICENSE"]
    make_archive(server.www / "p.tar.gz", {up: local[rel] for up, rel in upstream.items()})
    res = fetch.fetch(None, f"{server.url}/p.tar.gz", files=upstream,
                      hashes={rel: hashlib.sha256(body).hexdigest() for rel, body in local.items()}, err=io.StringIO())
    assert res.dest == fetch.cache_dir() and data.data_dir() == res.dest.resolve()
    w = data.proteus_workload(proteus_data.WORKLOAD)
    assert len(w) == proteus_data.trace_length(src) and len(data.proteus_variants()) > 0
