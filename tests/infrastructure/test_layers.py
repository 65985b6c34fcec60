"""The docker-free layer build and Lambda's size limit.

The layer is built by ``layers/build.py`` (``make layers``); this module
builds it when it is missing or stale (a few seconds with pip's cache, pip
downloads from the package index otherwise) and then measures what Lambda
would unzip: each function's code plus its layer.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def layers():
    spec = importlib.util.spec_from_file_location("infaas_layers_build", ROOT / "layers" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build()
    module.build_inference()
    return module


def test_each_function_plus_its_layers_fits_lambdas_unzipped_limit(layers):
    sizes = layers.sizes()
    assert set(sizes) == {"frontend", "selector", "autoscaler", "inference"}
    for name, s in sizes.items():
        assert s["function"] > 0 and s["layers"] > 10_000_000, (name, s)
        assert s["total"] < 250 * 1000 * 1000, (name, s)


def test_the_layer_holds_binary_wheels_for_the_lambda_runtime(layers):
    python = layers.OUT / "python"
    manifest = json.loads((layers.OUT / "manifest.json").read_text())
    assert manifest["python"] == "3.12" and manifest["platform"] == "manylinux2014_x86_64"
    for package in ("numpy", "onnx", "fastapi", "pydantic_core", "mangum", "aws_lambda_powertools", "multipart",
                    "prometheus_client", "fastapi_offline"):
        assert (python / package).is_dir(), package
    extensions = list((python / "numpy").rglob("*.so"))
    assert extensions and all("cpython-312-x86_64-linux-gnu" in p.name for p in extensions
                              if "cpython" in p.name)
    assert not (python / "onnx" / "backend" / "test").exists()  # pruned: ~60 MB of sample models
    assert not (python / "boto3").exists()  # the runtime provides it
    if manifest["bytecode"]:  # compiled by Lambda's Python (layers/build.py: find_python), never by another
        compiled = list((python / "fastapi").rglob("*.pyc"))
        assert compiled and all(".cpython-312." in p.name for p in compiled)


def test_the_function_code_is_the_handler_folder_plus_the_package(synthesized):
    assets = [p for p in synthesized.outdir.iterdir() if p.is_dir() and p.name.startswith("asset.")]
    handlers = [p for p in assets if (p / "handler.py").is_file()]
    assert len(handlers) == 5  # frontend, selector, autoscaler, authorizer; inference (one asset, every size)
    for folder in handlers:
        assert (folder / "infaas" / "app" / "data.py").is_file()
        # bytecode of Lambda's Python only (none of this machine's interpreter, if it is another)
        assert all(".cpython-312." in p.name for p in folder.rglob("*.pyc")), folder


def test_the_inference_layer_holds_onnxruntime_and_numpy_for_the_lambda_runtime(layers):
    out = layers.INFERENCE_OUT
    python = out / "python"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["python"] == "3.12" and manifest["platform"] == "manylinux_2_28_x86_64"
    assert {p.name for p in python.iterdir() if p.is_dir() and not p.name.endswith((".dist-info", ".libs"))} \
        <= {"numpy", "onnxruntime", "bin"}  # nothing else: no sympy, protobuf or flatbuffers
    for package in ("numpy", "onnxruntime"):
        extensions = [p for p in (python / package).rglob("*.so") if "cpython" in p.name]
        assert extensions and all("cpython-312-x86_64-linux-gnu" in p.name for p in extensions), package
    assert not (python / "boto3").exists()


# Packages the product's virtualenv has but the Lambda layer leaves out (layers/requirements.txt).
NOT_ON_LAMBDA = ("uvicorn", "httpx", "onnxruntime", "torch", "onnx2torch")


@pytest.mark.parametrize("function", ["frontend", "selector", "autoscaler", "authorizer"])
def test_each_handler_imports_without_the_packages_the_layer_leaves_out(function, tmp_path):
    """A module-level import of uvicorn (say) in code the functions reach would pass every
    in-process test here and fail on Lambda at the first invocation."""
    import os
    import subprocess
    import sys

    code = (
        "import sys\n"
        f"for m in {NOT_ON_LAMBDA!r}: sys.modules[m] = None\n"
        f"sys.path.insert(0, {str(ROOT / 'functions' / function)!r})\n"
        "import handler\n"
        "assert callable(handler.handler)\n"
    )
    env = dict(os.environ, INFAAS_BACKEND="aws", INFAAS_FLEET_GROUPS='{"cpu": "infaas-cpu"}',
               INFAAS_TABLE="t-metadata", INFAAS_BUCKET="t-models", INFAAS_QUEUE_PREFIX="t-",
               INFAAS_MODEL_CACHE_DIR=str(tmp_path), AWS_DEFAULT_REGION="us-east-1",
               AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")  # clients are made, never called
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
