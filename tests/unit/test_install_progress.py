"""The install step's progress filter (tools/install_progress.py, used by `make`): pip's
output in, one line per package out, everything kept in the log."""

from __future__ import annotations

import importlib.util
import io
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_filter(monkeypatch, capsys, text: str, log) -> str:
    spec = importlib.util.spec_from_file_location("install_progress", os.path.join(ROOT, "tools", "install_progress.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "LOG", str(log))
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    assert module.main() == 0
    return capsys.readouterr().out

PIP_OUTPUT = """Obtaining file:///src
Collecting numpy>=1.24 (from infaas==0.1.0)
  Downloading numpy-2.1.0-cp311-cp311-manylinux_2_17_x86_64.whl (16.3 MB)
Collecting fastapi>=0.110 (from infaas==0.1.0)
  Downloading fastapi-0.115.0-py3-none-any.whl (94 kB)
Installing collected packages: numpy, fastapi, infaas
Successfully installed fastapi-0.115.0 infaas-0.1.0 numpy-2.1.0
"""


def test_each_package_shows_as_it_comes_and_the_log_keeps_everything(tmp_path, monkeypatch, capsys):
    log = tmp_path / "install.log"
    out = run_filter(monkeypatch, capsys, PIP_OUTPUT, log)
    assert "[  1] numpy>=1.24" in out.splitlines()[0] and "[  2] fastapi>=0.110" in out
    assert "downloading numpy-2.1.0" in out and "fastapi-0.115.0-py3" not in out  # big downloads only
    assert "installing 3 packages" in out and "done: 3 packages installed" in out
    assert log.read_text() == PIP_OUTPUT


def test_a_pip_error_is_shown(tmp_path, monkeypatch, capsys):
    text = "Collecting nosuchpkg\nERROR: No matching distribution found for nosuchpkg\n"
    assert "ERROR: No matching distribution found for nosuchpkg" in run_filter(monkeypatch, capsys, text, tmp_path / "l")
