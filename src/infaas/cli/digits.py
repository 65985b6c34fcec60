"""A family of real classifiers on scikit-learn's bundled digits data set.

Used by the demo, the tests and the benchmarks: trains in seconds, offline,
and converts to ONNX with skl2onnx (predictions agree with scikit-learn).
Needs the ``demo`` extra (scikit-learn, skl2onnx).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np

TASK = "classification/digits"


@dataclass(frozen=True)
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass(frozen=True)
class Trained:
    name: str
    path: str
    model: object
    val_accuracy: float


def split(seed: int = 0) -> Split:
    """60% train, 20% validation (sent at registration), 20% test (queried)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_tr, x_rest, y_tr, y_rest = train_test_split(x, y, test_size=0.4, random_state=seed, stratify=y)
    x_val, x_te, y_val, y_te = train_test_split(x_rest, y_rest, test_size=0.5, random_state=seed, stratify=y_rest)
    return Split(x_tr, y_tr.astype(np.int64), x_val, y_val.astype(np.int64), x_te, y_te.astype(np.int64))


def family() -> dict[str, object]:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    return {
        "logistic-regression": LogisticRegression(max_iter=2000),
        "mlp-32": MLPClassifier((32,), max_iter=1000, random_state=0),
        "mlp-512-256": MLPClassifier((512, 256), max_iter=300, random_state=0),
        "random-forest-200": RandomForestClassifier(200, random_state=0),
    }


def to_onnx_bytes(model, sample: np.ndarray) -> bytes:
    from skl2onnx import to_onnx

    onx = to_onnx(model, sample[:1], options={id(model): {"zipmap": False}})
    return onx.SerializeToString()


def train(out_dir: str, names: list[str] | None = None, data: Split | None = None) -> list[Trained]:
    """Train (a subset of) the family and write ``<name>.onnx`` files to ``out_dir``."""
    import warnings

    data = data or split()
    os.makedirs(out_dir, exist_ok=True)
    out = []
    for name, model in family().items():
        if names and name not in names:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(data.x_train, data.y_train)
        path = os.path.join(out_dir, f"{name}.onnx")
        with open(path, "wb") as f:
            f.write(to_onnx_bytes(model, data.x_train))
        out.append(Trained(name, path, model, float((model.predict(data.x_val) == data.y_val).mean())))
    return out


def validation_npz(data: Split) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, inputs=data.x_val, labels=data.y_val)
    return buf.getvalue()
