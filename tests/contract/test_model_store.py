"""Contract of ``ModelStore`` (see ``infaas.core.ports``), run against every implementation."""

from __future__ import annotations

import os

import pytest

from infaas.core.errors import InvalidInput, NotFound
from infaas.core.ports import ModelStore

VARIANT_KEY = "variants/mlp-64/mlp-64:onnx-int8:cpu:b32/model.onnx"


def test_implements_the_protocol(model_store):
    assert isinstance(model_store, ModelStore)


def test_put_get_exists(model_store):
    data = bytes(range(256)) * 10
    assert not model_store.exists("models/local/mlp-64/model.onnx")
    model_store.put("models/local/mlp-64/model.onnx", data)
    assert model_store.exists("models/local/mlp-64/model.onnx")
    assert model_store.get("models/local/mlp-64/model.onnx") == data


def test_keys_with_colons_like_variant_ids(model_store):
    model_store.put(VARIANT_KEY, b"int8 model")
    assert model_store.get(VARIANT_KEY) == b"int8 model"
    assert model_store.list("variants/mlp-64/") == [VARIANT_KEY]


def test_empty_file_round_trips(model_store):
    model_store.put("models/empty.bin", b"")
    assert model_store.exists("models/empty.bin")
    assert model_store.get("models/empty.bin") == b""


def test_get_of_a_missing_key_is_not_found(model_store):
    with pytest.raises(NotFound) as err:
        model_store.get("models/ghost/model.onnx")
    assert err.value.status == 404


def test_local_path_holds_the_file(model_store):
    model_store.put("models/m/model.onnx", b"onnx bytes")
    path = model_store.local_path("models/m/model.onnx")
    assert os.path.isfile(path)
    with open(path, "rb") as f:
        assert f.read() == b"onnx bytes"


def test_local_path_of_a_missing_key_is_not_found(model_store):
    with pytest.raises(NotFound):
        model_store.local_path("models/ghost/model.onnx")


def test_delete(model_store):
    model_store.put("models/a/model.onnx", b"a")
    model_store.put("models/b/model.onnx", b"b")
    model_store.delete("models/a/model.onnx")
    assert not model_store.exists("models/a/model.onnx")
    with pytest.raises(NotFound):
        model_store.get("models/a/model.onnx")
    assert model_store.get("models/b/model.onnx") == b"b"
    model_store.delete("models/a/model.onnx")  # already gone: fine


def test_list_by_prefix_sorted(model_store):
    keys = [
        "models/local/b/model.onnx",
        "models/local/a/model.onnx",
        "models/local/a/validation.npz",
        "models/other/a/model.onnx",
        "variants/a/v1/model.onnx",
    ]
    for k in keys:
        model_store.put(k, k.encode())

    assert model_store.list("models/local/") == [
        "models/local/a/model.onnx",
        "models/local/a/validation.npz",
        "models/local/b/model.onnx",
    ]
    assert model_store.list("models/local/a/") == ["models/local/a/model.onnx", "models/local/a/validation.npz"]
    assert model_store.list("") == sorted(keys)
    assert model_store.list("nothing/") == []


def test_overwrite_replaces_the_whole_file(model_store):
    key = "models/m/model.onnx"
    model_store.put(key, b"x" * 100_000)
    model_store.put(key, b"short")
    assert model_store.get(key) == b"short"
    # No temporary or partial files are left behind or listed.
    assert model_store.list("") == [key]


def test_overwrite_is_atomic_for_a_reader_that_already_opened_the_file(model_store):
    key = "models/m/model.onnx"
    model_store.put(key, b"old" * 1000)
    with open(model_store.local_path(key), "rb") as reader:
        model_store.put(key, b"new" * 2000)
        # The reader sees the whole old file, never a mix or a truncation.
        assert reader.read() == b"old" * 1000
    assert model_store.get(key) == b"new" * 2000


@pytest.mark.parametrize(
    "key",
    ["../x", "/abs", "/etc/passwd", "a//b", "", "a/../b", "a/..", "..", ".", "a/./b", "a/", ".hidden/x", "a\\..\\b", "a/b c"],
)
def test_unsafe_keys_are_invalid_input(model_store, key):
    with pytest.raises(InvalidInput):
        model_store.put(key, b"data")
    with pytest.raises(InvalidInput):
        model_store.get(key)
    with pytest.raises(InvalidInput):
        model_store.exists(key)
    with pytest.raises(InvalidInput):
        model_store.local_path(key)
    with pytest.raises(InvalidInput):
        model_store.delete(key)


def test_an_unsafe_put_writes_nothing_anywhere(model_store, tmp_path):
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(InvalidInput):
        model_store.put("../escaped", b"data")
    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert not (tmp_path / "escaped").exists()
