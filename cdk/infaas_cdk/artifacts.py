"""What the stack ships, located (and staged) at synth time, without Docker.

* Function code: ``functions/<name>/`` plus the ``infaas`` package, copied to
  ``build/functions/<name>/`` on every synth (well under a megabyte), with
  bytecode compiled by Lambda's Python when one is at hand (``layers/build.py``:
  ``find_python``), since ``/var/task`` is read-only and sources without
  ``.pyc`` are compiled again on every cold start.
* The dependencies layer: ``build/layers/deps/`` from ``make layers``
  (``layers/build.py``), and the serverless tier's (onnxruntime, numpy):
  ``build/layers/inference/``, from the same command.
* Worker bundles: ``build/worker/<hardware>/`` from ``python worker_ami/build_bundle.py``
  (``worker_ami/build_bundle.py``): the install script, the systemd units and
  a wheelhouse, downloaded to the instance at boot.

A fresh clone has no layer and no bundle yet; synthesis still works (tests and
``make synth`` need nothing downloaded) with placeholder folders and a
warning. ``-c infaas:require_artifacts=true`` -- the README's deploy command --
turns a missing artifact into an error instead, so nothing half-built is ever
deployed.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from .config import ROOT

BUILD = ROOT / "build"
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")


class MissingArtifact(RuntimeError):
    pass


def layer_build():
    """``layers/build.py`` as a module (its interpreter lookup and bytecode step)."""
    spec = importlib.util.spec_from_file_location("infaas_layers_build", ROOT / "layers" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stage_function(name: str, out: Path | None = None) -> Path:
    """``build/functions/<name>`` (or ``out``): the handler's folder and the ``infaas`` package, with
    bytecode of Lambda's Python version when an interpreter of it is found (none of this machine's)."""
    out = Path(out) if out is not None else BUILD / "functions" / name
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(ROOT / "functions" / name, out, ignore=_IGNORE)
    shutil.copytree(ROOT / "src" / "infaas", out / "infaas", ignore=_IGNORE)
    build = layer_build()
    python = build.find_python(build.PYTHON_VERSION)
    if python is not None:
        build.compile_bytecode(out, python)
    return out


def _placeholder(name: str, note: str) -> Path:
    folder = BUILD / "placeholder" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "NOT_BUILT.txt").write_text(note + "\n")
    return folder


def layer_dir(require: bool) -> tuple[Path, bool]:
    """The built layer folder (with ``python/`` inside), or a placeholder."""
    built = BUILD / "layers" / "deps"
    if (built / "python").is_dir() and (built / "manifest.json").is_file():
        return built, True
    note = "The Lambda dependencies layer is not built: run `make layers` before `cdk deploy`."
    if require:
        raise MissingArtifact(note)
    folder = _placeholder("layer", note)
    (folder / "python").mkdir(exist_ok=True)
    return folder, False


def inference_layer_dir(require: bool) -> tuple[Path, bool]:
    """The serverless tier's layer (onnxruntime, numpy: ``build/layers/inference``), or a placeholder."""
    built = BUILD / "layers" / "inference"
    if (built / "python").is_dir() and (built / "manifest.json").is_file():
        return built, True
    note = "The inference function's layer is not built: run `make layers` before `cdk deploy`."
    if require:
        raise MissingArtifact(note)
    folder = _placeholder("inference-layer", note)
    (folder / "python").mkdir(exist_ok=True)
    return folder, False


def worker_bundle(hardware: str, require: bool) -> tuple[Path, bool]:
    """``build/worker/<hardware>`` (install script, units, wheelhouse), or a
    placeholder whose install script stops with a message."""
    built = BUILD / "worker" / hardware
    if (built / "wheelhouse").is_dir() and (built / "install.sh").is_file():
        return built, True
    note = f"The {hardware} worker bundle is not built: run `python worker_ami/build_bundle.py` before `cdk deploy`."
    if require:
        raise MissingArtifact(note)
    folder = _placeholder(f"worker-{hardware}", note)
    (folder / "install.sh").write_text(f"#!/bin/bash\necho '{note}' >&2\nexit 1\n")
    return folder, False
