"""The import contracts of ``pyproject.toml`` (``[tool.importlinter]``): the layers
of docs/architecture.md hold, and a wrong-way import breaks the build.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    return subprocess.run([str(LINT), "--no-cache", "--config", str(root / "pyproject.toml")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_source_tree_keeps_every_import_contract():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "3 kept, 0 broken" in result.stdout


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "src" / "infaas", tmp_path / "src" / "infaas",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize("module, planted, broken", [
    # a decision reaching up into the HTTP front end
    ("core/selection.py", "from infaas.api import app", "infaas.core is not allowed to import infaas.api"),
    # a use case calling an SDK directly
    ("app/offline.py", "import boto3", "infaas.app is not allowed to import boto3"),
    # one adapter leaning on another
    ("adapters/aws/s3.py", "from infaas.adapters.local import folder",
     "infaas.adapters.aws is not allowed to import infaas.adapters.local"),
    # the worker reaching into the API
    ("worker/replicas.py", "from infaas.api import deps", "infaas.worker is not allowed to import infaas.api"),
])
def test_a_planted_wrong_way_import_breaks_a_contract(tree: Path, module: str, planted: str, broken: str):
    path = tree / "src" / "infaas" / module
    path.write_text(path.read_text() + f"\n{planted}  # planted\n")
    result = lint(tree)
    assert result.returncode == 1, result.stdout[-3000:]
    assert broken in result.stdout, result.stdout[-3000:]
