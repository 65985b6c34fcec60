"""The README's "Prepare your model" recipes, end to end: each script in
``examples/prepare`` runs as the README says, its model is registered, built,
queried through the service, and the answers equal the framework's own."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from stack_support import READY_TIMEOUT_S, Stack

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PREPARE = os.path.join(ROOT, "examples", "prepare")


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, os.path.join(PREPARE, script), *args], capture_output=True, text=True,
                          timeout=300)
    return proc


def serve(stack: Stack, name: str, path: str, validation: str | None, accuracy: float) -> dict:
    stack.client.register(path, name=name, task=f"recipes/{name}", accuracy=accuracy, validation=validation)
    status = stack.client.wait_ready([name], timeout_s=READY_TIMEOUT_S)[name]
    assert status["status"] == "ready", status
    return status


def test_the_readme_names_each_recipe():
    readme = open(os.path.join(ROOT, "README.md")).read()
    section = readme.split("## Prepare your model", 1)[1].split("\n## ", 1)[0]
    for script in ("sklearn_model.py", "pytorch_model.py", "onnx_file.py"):
        assert f"examples/prepare/{script}" in section
    assert "zipmap" in section and ".[pytorch]" in section


def test_scikit_learn_recipe(stack: Stack, tmp_path):
    proc = run("sklearn_model.py", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    status = serve(stack, "sklearn-digits", str(tmp_path / "sklearn-digits.onnx"),
                   str(tmp_path / "sklearn-digits-validation.npz"), 0.96)
    assert status["measured_accuracy"] > 0.9  # measured on the validation file, integer labels
    x, want = np.load(tmp_path / "sklearn-digits-sample.npy"), np.load(tmp_path / "sklearn-digits-expected.npy")
    outputs, decision = stack.client.infer(x, architecture="sklearn-digits")
    assert decision["variant"].startswith("sklearn-digits:")
    np.testing.assert_array_equal(outputs["label"], want)  # scikit-learn's own predictions


def test_pytorch_recipe(stack: Stack, tmp_path):
    proc = run("pytorch_model.py", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    status = serve(stack, "torch-digits", str(tmp_path / "torch-digits.onnx"),
                   str(tmp_path / "torch-digits-validation.npz"), 0.97)
    assert status["measured_accuracy"] > 0.9
    x, want = np.load(tmp_path / "torch-digits-sample.npy"), np.load(tmp_path / "torch-digits-expected.npy")
    outputs, decision = stack.client.infer(x, variant=next(v["id"] for v in status["variants"]
                                                            if v["status"] == "ready" and v["format"] == "fp32"))
    np.testing.assert_allclose(outputs["scores"], want, rtol=1e-4, atol=1e-5)  # PyTorch's own scores


def test_existing_onnx_file_recipe(stack: Stack, tmp_path):
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    model = LogisticRegression(max_iter=500).fit(x, y)
    fixed = tmp_path / "fixed.onnx"  # someone else's file, exported for batch 1 only
    fixed.write_bytes(convert_sklearn(model, initial_types=[("input", FloatTensorType([1, 64]))],
                                      options={id(model): {"zipmap": False}}, target_opset=17).SerializeToString())
    proc = run("onnx_file.py", str(fixed))
    assert proc.returncode == 1 and "axis 0 is fixed" in proc.stdout  # says what is wrong ...
    freed = tmp_path / "freed.onnx"
    proc = run("onnx_file.py", str(fixed), str(freed))
    assert proc.returncode == 0 and "a batch of 2 runs" in proc.stdout, proc.stdout + proc.stderr  # ... and fixes it
    serve(stack, "onnx-file", str(freed), None, 0.95)
    session = ort.InferenceSession(str(fixed), providers=["CPUExecutionProvider"])
    rows = x[:6]
    want = np.concatenate([session.run(None, {"input": rows[i:i + 1]})[1] for i in range(len(rows))])
    outputs, _ = stack.client.infer(rows, architecture="onnx-file")
    np.testing.assert_allclose(outputs["probabilities"], want, rtol=1e-5, atol=1e-6)  # the original file's answers


def test_a_zipmap_file_is_refused_with_the_fix(stack: Stack, tmp_path):
    x, y = load_digits(return_X_y=True)
    model = LogisticRegression(max_iter=200).fit((x / 16.0).astype(np.float32), y)
    path = tmp_path / "zipmap.onnx"
    path.write_bytes(convert_sklearn(model, initial_types=[("input", FloatTensorType([None, 64]))],
                                     target_opset=17).SerializeToString())
    proc = run("onnx_file.py", str(path))
    assert proc.returncode == 1 and "zipmap" in proc.stdout
    with open(path, "rb") as f:
        resp = stack.http.post("/v1/models", files={"file": ("m.onnx", f.read(), "application/octet-stream")},
                               data={"name": "zipmap", "task": "recipes/zipmap", "accuracy": "0.9"})
    assert resp.status_code == 400 and re.search(r"zipmap.*False", resp.json()["message"]), resp.text


@pytest.mark.parametrize("script", ["sklearn_model.py", "pytorch_model.py", "onnx_file.py"])
def test_each_recipe_says_how_to_run_it(script):
    text = open(os.path.join(PREPARE, script)).read()
    assert f"python examples/prepare/{script}" in text
