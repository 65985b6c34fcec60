"""Pieces of the data path: the efficient batch size, the decision as JSON,
batch frames without copies, the finite check."""

from __future__ import annotations

import numpy as np

from infaas.api.data import decision_dict
from infaas.core import tensors
from infaas.core.batching import efficient_batch
from infaas.core.domain import Decision, Profile, Variant
from infaas.core.inputs import _finite


def _variant(latency: dict[int, float], max_batch: int = 32) -> Variant:
    profile = Profile(hardware="cpu", latency_ms={b: (ms, ms * 1.1) for b, ms in latency.items()}, load_ms=10.0,
                      peak_memory_bytes=1 << 20)
    return Variant(architecture="a", format="fp32", runtime="onnxruntime", hardware="cpu", max_batch=max_batch,
                   task="t/x", tenant="local", status="ready", profile=profile, accuracy=0.9)


def test_a_compute_bound_model_batches_little():
    # ~7 ms a row whatever the batch (per row: 7.6, 6.95, 6.83, 6.98, 7.67, 7.45): past batch 4,
    # where a row costs least, a larger batch only makes rows wait
    v = _variant({1: 7.6, 2: 13.9, 4: 27.3, 8: 55.8, 16: 122.7, 32: 238.3})
    assert efficient_batch(v) == 4 == v.batch_cap
    assert efficient_batch(v, slack=0.1) == 2  # within a tenth of the best already at 2


def test_a_tiny_model_batches_up_to_its_max():
    v = _variant({1: 0.014, 2: 0.0146, 4: 0.016, 8: 0.021, 16: 0.030, 32: 0.048})
    assert efficient_batch(v) == 32
    assert efficient_batch(_variant({1: 0.014, 2: 0.0146, 4: 0.016, 8: 0.021, 16: 0.030, 32: 0.048}, max_batch=8)) == 8


def test_decision_dict_is_the_decisions_own_dict():
    d = Decision(variant="v", worker="w", worker_url="http://w", batch=4, predicted_latency_ms=1.5, cost_per_query=1e-9,
                 accuracy=0.9, loaded=True, reason="because", fallback_workers=(("x", "http://x"),))
    assert decision_dict(d) == d.to_dict()
    assert list(decision_dict(d)) == list(d.to_dict())


def test_batch_frame_is_the_concatenation():
    feeds = [{"a": np.full((i + 1, 3), i, np.float32), "b": np.arange(i + 1, dtype=np.int64)} for i in range(4)]
    parts = tensors.encode_batch_parts(feeds)
    got = tensors.decode(b"".join(bytes(p) for p in parts))
    for k in ("a", "b"):
        np.testing.assert_array_equal(got[k], np.concatenate([f[k] for f in feeds]))
    # shapes that differ past the first dimension need a copy (and may not join at all)
    assert tensors.encode_batch_parts([{"a": np.zeros((1, 3), np.float32)}, {"a": np.zeros((1, 4), np.float32)}]) is None
    assert tensors.encode_batch_parts([{"a": np.zeros((1, 3), np.float32)}, {"a": np.zeros((1, 3), np.float64)}]) is None


def test_finite():
    assert _finite(np.array([1.0, -2.0], np.float32))
    for bad in ([1.0, np.nan], [np.inf, 0.0], [-np.inf], [np.nan, np.inf]):
        assert not _finite(np.array(bad, np.float32))
    assert not _finite(np.array([1 + 1j, complex(np.nan, 0)]))
