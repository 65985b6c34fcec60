"""Build the worker bundles the stack ships to worker machines: ``build/worker/<hardware>/``.

A bundle is what a worker machine installs at boot, with no internet access
(the VPC has no NAT): ``install.sh``, the systemd units, and a wheelhouse with
the ``infaas`` wheel and every dependency as binary wheels for Linux x86_64,
CPython 3.12 (the Python of all three images). For ``gpu`` the wheelhouse
also holds ``onnxruntime-gpu``, which ``install.sh`` swaps in for the CPU
``onnxruntime``. Neuron packages are *not* in it: they come with the Neuron
DLAMI from the Neuron repository (``torch-neuronx`` on PyPI is a placeholder).

No Docker: ``pip wheel`` builds the project's own wheel, ``pip download
--platform ... --only-binary=:all:`` fetches the rest for the target machine.
The GPU wheelhouse is large (onnxruntime-gpu alone is ~300 MB); build only
the types you deploy: ``python worker_ami/build_bundle.py cpu``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "worker"
PYTHON_VERSION = "3.12"
# Amazon Linux 2023 has glibc 2.34 and Ubuntu 24.04 2.39: wheels up to manylinux_2_34 run on both.
PLATFORMS = ("manylinux_2_34_x86_64", "manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux2014_x86_64")
# What each hardware type's executors need beyond the core (docs/hardware.md): the CUDA
# build of onnxruntime and the TensorRT 10 libraries its TensorRT provider loads; onnx2torch
# for Inferentia2 variants converted from ONNX (torch-neuronx itself is on the Neuron image).
# The GPU image's default CUDA can be newer than the CUDA 12 onnxruntime-gpu is built for: the CUDA 12
# runtime, cuBLAS, cuFFT, cuRAND and cuDNN 9 come as pip packages (the [cuda,cudnn] extras), and install.sh
# puts their folders on the library path. For Inferentia, onnx2torch comes without its dependencies: torch
# is the Neuron venv's own (PyPI's would be CUDA torch, gigabytes, and would replace Neuron's).
EXTRA = {"cpu": [], "gpu": ["onnxruntime-gpu[cuda,cudnn]", "tensorrt-cu12-libs>=10,<11"], "inferentia": []}
NO_DEPS = {"cpu": [], "gpu": [], "inferentia": ["onnx2torch>=1.5.15"]}


def requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return list(project["dependencies"]) + list(project["optional-dependencies"]["aws"])


def build(hardware: str) -> Path:
    out = OUT / hardware
    shutil.rmtree(out, ignore_errors=True)
    wheels = out / "wheelhouse"
    wheels.mkdir(parents=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels), str(ROOT)], check=True)
    platform_args = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run([*pip, "download", "--quiet", "--only-binary=:all:", *platform_args, "--implementation", "cp",
                    "--python-version", PYTHON_VERSION, "--dest", str(wheels), *requirements(), *EXTRA[hardware]],
                   check=True)
    if NO_DEPS[hardware]:
        subprocess.run([*pip, "download", "--quiet", "--no-deps", "--only-binary=:all:", *platform_args,
                        "--implementation", "cp", "--python-version", PYTHON_VERSION, "--dest", str(wheels),
                        *NO_DEPS[hardware]], check=True)
    shutil.copy2(ROOT / "worker_ami" / "install.sh", out / "install.sh")
    shutil.copytree(ROOT / "worker_ami" / "systemd", out / "systemd")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("hardware", nargs="*", default=list(EXTRA), choices=list(EXTRA))
    args = parser.parse_args(argv)
    for hw in args.hardware:
        out = build(hw)
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        print(f"{hw}: {out} ({size / 1e6:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
