"""Prepare a PyTorch model for INFaaS.

    pip install -e '.[pytorch]'        # torch and onnxscript (torch.onnx.export needs it)
    python examples/prepare/pytorch_model.py OUT_DIR

Trains a small network on scikit-learn's bundled digits data (stand-in for
yours) and exports it with ``torch.onnx.export`` with the **batch axis
dynamic** (a model exported for batch 1 only could not be batched), then
writes:

    OUT_DIR/torch-digits.onnx             the model to register
    OUT_DIR/torch-digits-validation.npz   inputs + integer labels: accuracy is measured, not declared
    OUT_DIR/torch-digits-sample.npy       a few rows to query with
    OUT_DIR/torch-digits-expected.npy     PyTorch's own scores for those rows
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def main(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0)
    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    for _ in range(150):  # full-batch training: a second or two on a CPU
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    model.eval()

    path = os.path.join(out, "torch-digits.onnx")
    batch = torch.export.Dim("batch")
    torch.onnx.export(model, (torch.from_numpy(x_test[:2]),), path, input_names=["input"], output_names=["scores"],
                      dynamic_shapes={"x": {0: batch}}, dynamo=True,
                      external_data=False)  # one file, the weights inside: the service takes one file
    with torch.no_grad():
        expected = model(torch.from_numpy(x_test[:8])).numpy()
        accuracy = (model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean()
    np.savez(os.path.join(out, "torch-digits-validation.npz"), inputs=x_test, labels=y_test.astype(np.int64))
    np.save(os.path.join(out, "torch-digits-sample.npy"), x_test[:8])
    np.save(os.path.join(out, "torch-digits-expected.npy"), expected)
    print(f"wrote {path}; accuracy on the held-out rows {accuracy:.4f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
