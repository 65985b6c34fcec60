"""Docker-free build of the Lambda layer with the functions' dependencies.

``pip install --platform manylinux2014_x86_64 --implementation cp
--python-version 3.12 --only-binary=:all: --target build/layers/deps/python``
fetches the wheels Lambda's ``python3.12`` x86_64 runtime needs, whatever
this machine runs (no compiler, no container: only binary wheels are taken).
Then files no function uses are pruned: the ONNX package's backend test data
(~60 MB of sample models), test suites, caches and headers. The layer's
unzipped size plus each function's must stay under Lambda's 250 MB; ``python
layers/build.py --check`` prints the sizes and fails above the limit.

The build is skipped when ``build/layers/deps/manifest.json`` records the same
requirements, platform and Python version (``--force`` rebuilds).

Usage: ``make layers`` (or ``python layers/build.py [--force] [--check]``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "layers" / "requirements.txt"
OUT = ROOT / "build" / "layers" / "deps"
FUNCTIONS = ("frontend", "selector", "autoscaler")

PYTHON_VERSION = "3.12"  # the functions' runtime (cdk/infaas_cdk/config.py: LAMBDA_RUNTIME)
PLATFORM = "manylinux2014_x86_64"
LAMBDA_UNZIPPED_LIMIT_BYTES = 250 * 1000 * 1000  # function code plus all its layers, unzipped

# Paths (relative to python/) that no function imports, removed after install.
PRUNE = ("onnx/backend/test", "onnx/test", "numpy/tests", "numpy/f2py", "numpy/_core/tests", "onnx/include")
PRUNE_NAMES = ("__pycache__", "tests")
PRUNE_SUFFIXES = (".pyi", ".pyx", ".pxd", ".h", ".hpp", ".c", ".cc", ".cpp")


def _fingerprint() -> str:
    text = REQUIREMENTS.read_text() + PLATFORM + PYTHON_VERSION + repr(PRUNE) + repr(PRUNE_NAMES)
    return hashlib.sha256(text.encode()).hexdigest()


def is_current() -> bool:
    manifest = OUT / "manifest.json"
    if not manifest.is_file() or not (OUT / "python").is_dir():
        return False
    return json.loads(manifest.read_text()).get("fingerprint") == _fingerprint()


def build(force: bool = False) -> Path:
    """Build the layer folder (``build/layers/deps``, with ``python/`` inside) unless current."""
    if not force and is_current():
        return OUT
    staging = OUT.with_name("deps.staging")
    shutil.rmtree(staging, ignore_errors=True)
    target = staging / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
         "--platform", PLATFORM, "--implementation", "cp", "--python-version", PYTHON_VERSION,
         "--only-binary=:all:", "--target", str(target), "-r", str(REQUIREMENTS)],
        check=True,
    )
    prune(target)
    (staging / "manifest.json").write_text(json.dumps(
        {"fingerprint": _fingerprint(), "platform": PLATFORM, "python": PYTHON_VERSION,
         "unzipped_bytes": folder_bytes(staging / "python")}, indent=2))
    shutil.rmtree(OUT, ignore_errors=True)
    staging.rename(OUT)
    return OUT


def prune(target: Path) -> None:
    for rel in PRUNE:
        shutil.rmtree(target / rel, ignore_errors=True)
    for path in sorted(target.rglob("*"), reverse=True):
        if path.is_dir() and path.name in PRUNE_NAMES:
            shutil.rmtree(path, ignore_errors=True)
        elif path.is_file() and path.suffix in PRUNE_SUFFIXES:
            path.unlink()


def folder_bytes(folder: Path) -> int:
    """Unzipped size as Lambda counts it: the bytes of every file."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file() and not p.is_symlink())


def function_bytes(name: str) -> int:
    """A function's own code: its folder plus the ``infaas`` package the stack bundles with it."""
    code = folder_bytes(ROOT / "functions" / name) + folder_bytes(ROOT / "src" / "infaas")
    caches = sum(folder_bytes(p) for p in (ROOT / "functions" / name).rglob("__pycache__"))
    caches += sum(folder_bytes(p) for p in (ROOT / "src" / "infaas").rglob("__pycache__"))
    return code - caches


def sizes() -> dict[str, dict[str, int]]:
    layer = folder_bytes(OUT / "python")
    return {name: {"function": function_bytes(name), "layers": layer, "total": function_bytes(name) + layer}
            for name in FUNCTIONS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if the layer is current")
    parser.add_argument("--check", action="store_true", help="print unzipped sizes; fail above Lambda's limit")
    args = parser.parse_args(argv)
    out = build(force=args.force)
    print(f"layer: {out / 'python'}")
    if args.check:
        ok = True
        for name, s in sizes().items():
            fits = s["total"] < LAMBDA_UNZIPPED_LIMIT_BYTES
            ok &= fits
            print(f"{name:11} function {s['function'] / 1e6:6.1f} MB + layers {s['layers'] / 1e6:6.1f} MB "
                  f"= {s['total'] / 1e6:6.1f} MB unzipped (limit {LAMBDA_UNZIPPED_LIMIT_BYTES / 1e6:.0f} MB) "
                  f"{'ok' if fits else 'TOO LARGE'}")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
