"""Prepare a scikit-learn classifier for INFaaS.

    python examples/prepare/sklearn_model.py OUT_DIR

Trains a small classifier on scikit-learn's bundled digits data (stand-in for
yours), converts it with skl2onnx with **zipmap off** (the default zipmap
output is a list of dicts, which is not a tensor and cannot be served), and
writes:

    OUT_DIR/sklearn-digits.onnx             the model to register
    OUT_DIR/sklearn-digits-validation.npz   inputs + integer labels: accuracy is measured, not declared
    OUT_DIR/sklearn-digits-sample.npy       a few rows to query with
    OUT_DIR/sklearn-digits-expected.npy     scikit-learn's own predictions for those rows
"""

from __future__ import annotations

import os
import sys

import numpy as np
from skl2onnx import to_onnx
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split


def main(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)  # ONNX models take float32
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0)
    model = LogisticRegression(max_iter=1000).fit(x_train, y_train)

    # zipmap off: the probabilities come out as an [N, classes] tensor, not a list of dicts
    onx = to_onnx(model, x_train[:1], options={id(model): {"zipmap": False}}, target_opset=17)
    with open(os.path.join(out, "sklearn-digits.onnx"), "wb") as f:
        f.write(onx.SerializeToString())
    # labels are class indices (integers), compared with the model's integer label output
    np.savez(os.path.join(out, "sklearn-digits-validation.npz"), inputs=x_test, labels=y_test.astype(np.int64))
    np.save(os.path.join(out, "sklearn-digits-sample.npy"), x_test[:8])
    np.save(os.path.join(out, "sklearn-digits-expected.npy"), model.predict(x_test[:8]))
    print(f"wrote {out}/sklearn-digits.onnx; accuracy on the held-out rows {model.score(x_test, y_test):.4f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
