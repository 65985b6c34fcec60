"""Docker-free build of the Lambda layer with the functions' dependencies.

``pip install --platform manylinux2014_x86_64 --implementation cp
--python-version 3.12 --only-binary=:all: --target build/layers/deps/python``
fetches the wheels Lambda's ``python3.12`` x86_64 runtime needs, whatever
this machine runs (no compiler, no container: only binary wheels are taken).
Then files no function uses are pruned: the ONNX package's backend test data
(~60 MB of sample models), test suites, caches and headers. The layer's
unzipped size plus each function's must stay under Lambda's 250 MB; ``python
layers/build.py --check`` prints the sizes and fails above the limit.

Bytecode: Lambda's ``/opt`` is read-only, so a layer without ``.pyc`` files
is compiled again on every cold start (about a second more for the
frontend). When an interpreter of the runtime's version is at hand
(``python3.12`` on ``PATH``, ``INFAAS_LAMBDA_PYTHON``, or a pyenv version),
the layer is compiled with it (``unchecked-hash`` ``.pyc`` files, used without
looking at the sources' dates); the manifest says whether it was.

The build is skipped when ``build/layers/deps/manifest.json`` records the same
requirements, platform and Python version (``--force`` rebuilds).

The serverless tier's inference function (``functions/inference``) has a layer of its own,
``build/layers/inference`` (``build_inference``): onnxruntime and numpy from
``layers/requirements-inference.txt``, without their other dependencies (onnxruntime's Python
package imports numpy only), for ``manylinux_2_28_x86_64`` (onnxruntime publishes no older
tag for cp312; Lambda's python3.12 runs on Amazon Linux 2023, glibc 2.34). ``make layers``
builds both.

Usage: ``make layers`` (or ``python layers/build.py [--force] [--check]``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "layers" / "requirements.txt"
OUT = ROOT / "build" / "layers" / "deps"
FUNCTIONS = ("frontend", "selector", "autoscaler")
INFERENCE_REQUIREMENTS = ROOT / "layers" / "requirements-inference.txt"
INFERENCE_OUT = ROOT / "build" / "layers" / "inference"
INFERENCE_PLATFORM = "manylinux_2_28_x86_64"  # onnxruntime's cp312 wheels; Lambda's AL2023 has glibc 2.34

PYTHON_VERSION = "3.12"  # the functions' runtime (cdk/infaas_cdk/config.py: LAMBDA_RUNTIME)
PLATFORM = "manylinux2014_x86_64"
LAMBDA_UNZIPPED_LIMIT_BYTES = 250 * 1000 * 1000  # function code plus all its layers, unzipped

# Paths (relative to python/) that no function imports, removed after install.
PRUNE = ("onnx/backend/test", "onnx/test", "numpy/tests", "numpy/f2py", "numpy/_core/tests", "onnx/include")
PRUNE_NAMES = ("__pycache__", "tests")
PRUNE_SUFFIXES = (".pyi", ".pyx", ".pxd", ".h", ".hpp", ".c", ".cc", ".cpp")


def find_python(version: str = PYTHON_VERSION) -> str | None:
    """An interpreter of ``version`` (Lambda's runtime): ``INFAAS_LAMBDA_PYTHON``, ``python<version>`` on
    ``PATH``, a pyenv version, or this one if it is that version; None when there is none."""
    candidates = [os.environ.get("INFAAS_LAMBDA_PYTHON"), shutil.which(f"python{version}")]
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    if pyenv.is_dir():
        candidates += [str(p / "bin" / f"python{version}") for p in sorted(pyenv.glob(f"{version}.*"), reverse=True)]
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        candidates.append(sys.executable)
    for path in candidates:
        if not path or not os.access(path, os.X_OK):
            continue
        found = subprocess.run([path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True, check=False).stdout.strip()
        if found == version:
            return path
    return None


def compile_bytecode(folder: Path, python: str) -> None:
    """``.pyc`` files beside the sources, made by ``python`` (the runtime's version), checked by hash and
    never against the sources' dates (a deployment package keeps no meaningful dates)."""
    subprocess.run([python, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash",
                    str(folder)], check=True, stdout=subprocess.DEVNULL)


def _fingerprint(python_version: str = PYTHON_VERSION, bytecode: bool = True, requirements: Path = REQUIREMENTS,
                 platform: str = PLATFORM) -> str:
    text = (requirements.read_text() + platform + python_version + repr(PRUNE) + repr(PRUNE_NAMES)
            + ("bytecode" if bytecode else ""))
    return hashlib.sha256(text.encode()).hexdigest()


def is_current(out: Path = OUT, python_version: str = PYTHON_VERSION, requirements: Path = REQUIREMENTS,
               platform: str = PLATFORM) -> bool:
    manifest = out / "manifest.json"
    if not manifest.is_file() or not (out / "python").is_dir():
        return False
    recorded = json.loads(manifest.read_text())
    return recorded.get("fingerprint") == _fingerprint(python_version, bool(recorded.get("bytecode")), requirements,
                                                       platform)


def build(force: bool = False, out: Path = OUT, python_version: str = PYTHON_VERSION, *,
          requirements: Path = REQUIREMENTS, platform: str = PLATFORM, deps: bool = True) -> Path:
    """Build the layer folder (``build/layers/deps``, with ``python/`` inside) unless current.
    ``out`` and ``python_version`` serve tests that need a layer of their own (another interpreter);
    ``requirements``, ``platform`` and ``deps`` another layer (``build_inference``)."""
    out = Path(out)
    python = find_python(python_version)
    if not force and is_current(out, python_version, requirements, platform) and (
            python is None or json.loads((out / "manifest.json").read_text()).get("bytecode")):
        return out
    staging = out.with_name(out.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    target = staging / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
         "--platform", platform, "--implementation", "cp", "--python-version", python_version,
         "--only-binary=:all:", *([] if deps else ["--no-deps"]), "--target", str(target), "-r", str(requirements)],
        check=True,
    )
    prune(target)
    if python is not None:
        compile_bytecode(target, python)
    (staging / "manifest.json").write_text(json.dumps(
        {"fingerprint": _fingerprint(python_version, python is not None, requirements, platform), "platform": platform,
         "python": python_version, "bytecode": python is not None, "requirements": requirements.name,
         "unzipped_bytes": folder_bytes(staging / "python")}, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out


def build_inference(force: bool = False, out: Path = INFERENCE_OUT, python_version: str = PYTHON_VERSION) -> Path:
    """The inference function's layer (``build/layers/inference``): onnxruntime and numpy only."""
    return build(force, out, python_version, requirements=INFERENCE_REQUIREMENTS, platform=INFERENCE_PLATFORM,
                 deps=False)


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
    out = {name: {"function": function_bytes(name), "layers": layer, "total": function_bytes(name) + layer}
           for name in FUNCTIONS}
    if (INFERENCE_OUT / "python").is_dir():
        inference = folder_bytes(INFERENCE_OUT / "python")
        out["inference"] = {"function": function_bytes("inference"), "layers": inference,
                            "total": function_bytes("inference") + inference}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if the layer is current")
    parser.add_argument("--check", action="store_true", help="print unzipped sizes; fail above Lambda's limit")
    args = parser.parse_args(argv)
    out = build(force=args.force)
    build_inference(force=args.force)
    bytecode = json.loads((out / "manifest.json").read_text()).get("bytecode")
    print(f"layer: {out / 'python'} ({'with' if bytecode else 'WITHOUT'} bytecode: "
          f"{'compiled by python' + PYTHON_VERSION if bytecode else 'no python' + PYTHON_VERSION + ' found'})")
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
