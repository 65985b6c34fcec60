"""Quality without labels (``runtime.profile.agreement``, ``app.build.estimated_accuracy``)."""

from __future__ import annotations

import numpy as np

from infaas.app.build import estimated_accuracy
from infaas.runtime.profile import agreement


def test_a_classifier_is_compared_by_its_predicted_class():
    ref = {"scores": np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]], np.float32)}
    got = {"scores": np.array([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.1, 0.9]], np.float32)}  # row 3 flips
    value, how = agreement(ref, got)
    assert value == 0.75 and how.startswith("top-1")


def test_any_other_model_is_compared_row_by_row_within_one_percent():
    ref = {"embedding": np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]], np.float32)[..., None]}
    got = {"embedding": np.array([[1.005, 2.0, 3.0], [1.0, 1.05, 1.0]], np.float32)[..., None]}  # row 2: 5 % off
    value, how = agreement(ref, got)
    assert value == 0.5 and "1 %" in how


def test_the_estimate_is_the_declared_accuracy_less_the_disagreement():
    assert estimated_accuracy(0.95, 0.97) == 0.92
    assert estimated_accuracy(0.95, 1.0) == 0.95
    assert estimated_accuracy(0.95, None) == 0.95  # nothing to go on: the declared figure, said so
    assert estimated_accuracy(0.2, 0.5) == 0.0
