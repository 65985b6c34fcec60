"""The model signature (``core.signature``): what is inferred from the graph's shapes and names,
what an override changes, what is refused, and how a query's inputs are checked against it."""

from __future__ import annotations

import numpy as np
import pytest

from infaas.core.domain import TensorSpec
from infaas.core.errors import InvalidInput
from infaas.core.inputs import validate_inputs
from infaas.core.signature import describe, joinable, representative, settle


def spec(name: str, dtype: str, *dims) -> TensorSpec:
    """A graph value as ``runtime.validate`` reads it: ints fixed, strings named, None unnamed."""
    shape = tuple(d if isinstance(d, int) else -1 for d in dims)
    symbols = tuple(d if isinstance(d, str) else "" for d in dims)
    return TensorSpec(name, dtype, shape, symbols=symbols if any(symbols) else ())


def test_a_shared_batch_name_gives_each_input_its_axis_and_the_rest_are_per_request():
    sig = settle([spec("audio", "float32", "N", 160), spec("rate", "int64", 1), spec("state", "float32", 2, "N", 16)],
                 [spec("out", "float32", "N", 16), spec("state_out", "float32", 2, "N", 16)])
    assert [s.batch for s in sig.inputs] == [0, None, 1]
    assert [s.batch_axis for s in sig.outputs] == [0, 1]
    assert not joinable(sig.inputs, sig.outputs)
    assert any("'N' is named as a batch" in n for n in sig.notes)


def test_unnamed_dynamic_axis_0_is_the_batch_as_before_and_such_a_model_is_joined():
    sig = settle([spec("X", "float32", None, 64)], [spec("label", "int64", None), spec("p", "float32", None, 10)])
    assert sig.inputs[0].batch == 0 and sig.inputs[0].sizes == (1, 64)
    assert joinable(sig.inputs, sig.outputs)
    assert describe(sig.inputs, sig.outputs)["batching"] == "joined"


def test_a_name_at_axis_0_of_every_input_is_the_batch_even_when_not_named_like_one():
    sig = settle([spec("a", "float32", "s0", 4), spec("b", "float32", "s0", 2)], [spec("y", "float32", "s0", 4)])
    assert [s.batch for s in sig.inputs] == [0, 0] and joinable(sig.inputs, sig.outputs)
    assert any("dim 0 is symbolic 's0'" in n for n in sig.notes)


def test_a_dynamic_dimension_besides_the_batch_needs_a_size_and_the_refusal_names_input_and_fix():
    with pytest.raises(InvalidInput) as info:
        settle([spec("ids", "int64", "batch", "seq"), spec("mask", "int64", "batch", "seq")],
               [spec("logits", "float32", "batch", 3)])
    assert info.value.field == "signature" and info.value.details["input"] == "ids"
    assert "--dim seq=SIZE" in info.value.message and '"dims": {"seq": SIZE}' in info.value.message
    sig = settle([spec("ids", "int64", "batch", "seq"), spec("mask", "int64", "batch", "seq")],
                 [spec("logits", "float32", "batch", 3)], {"dims": {"seq": 16}})
    assert [s.sizes for s in sig.inputs] == [(1, 16), (1, 16)]
    assert representative(sig.inputs[0], 4) == (4, 16)
    assert not joinable(sig.inputs, sig.outputs)


def test_an_unnamed_dynamic_dimension_is_sized_by_input_and_axis_or_by_the_validation_file():
    with pytest.raises(InvalidInput) as info:
        settle([spec("image", "float32", None, 3, None, None)], [spec("y", "float32", None, 4)])
    assert '"sizes": {"2": SIZE}' in info.value.message
    sig = settle([spec("image", "float32", None, 3, None, None)], [spec("y", "float32", None, 4)],
                 {"inputs": {"image": {"sizes": {"2": 40, "3": 30}}}})
    assert sig.inputs[0].sizes == (1, 3, 40, 30)
    from_file = settle([spec("image", "float32", "N", 3, "H", "W")], [spec("y", "float32", "N", 4)], hint=(10, 3, 24, 20))
    assert from_file.inputs[0].sizes == (1, 3, 24, 20)
    assert any("validation file" in n for n in from_file.notes)


def test_an_override_sets_a_batch_axis_or_makes_an_input_per_request():
    sig = settle([spec("x", "float32", "T", "B", 8)], [spec("y", "float32", "T", "B", 8)],
                 {"inputs": {"x": {"batch_axis": 1}}, "dims": {"T": 5}})
    assert sig.inputs[0].batch == 1 and sig.inputs[0].sizes == (5, 1, 8)
    sig = settle([spec("x", "float32", "N", 4), spec("k", "int64", "N")], [spec("y", "float32", "N", 4)],
                 {"inputs": {"k": {"batch_axis": None}}, "dims": {"N": 1}})
    assert sig.inputs[1].batch is None


@pytest.mark.parametrize("override,field", [
    ("[1]", "signature"),
    ("{", "signature"),
    ({"dims": {"Q": 3}}, "signature.dims"),
    ({"dims": {"T": -1}}, "signature.dims.T"),
    ({"dims": {"T": 1.5}}, "signature.dims.T"),
    ({"inputs": {"x": {"batch_axis": 5}}}, "signature.inputs.x.batch_axis"),
    ({"inputs": {"x": {"batch_axis": 2}}}, "signature.inputs.x.batch_axis"),  # fixed at 8
    ({"inputs": {"x": {"sizes": {"2": 4}}}}, "signature.inputs.x.sizes"),  # fixed at 8
    ({"inputs": {"x": {"sizes": {"one": 4}}}}, "signature.inputs.x.sizes"),
    ({"inputs": {"x": {"colour": 1}}}, "signature.inputs.x"),
    ({"outputs": {"z": {"batch_axis": 0}}}, "signature.outputs.z"),
    ({"shapes": {}}, "signature"),
])
def test_a_bad_override_is_a_400_naming_the_field(override, field):
    with pytest.raises(InvalidInput) as info:
        settle([spec("x", "float32", "T", "N", 8)], [spec("y", "float32", "T", "N", 8)], override)
    assert info.value.field == field, info.value.message


def test_sizes_that_would_make_profiling_allocate_too_much_are_refused():
    with pytest.raises(InvalidInput) as info:
        settle([spec("x", "float32", "N", "H", "W")], [spec("y", "float32", "N")], {"dims": {"H": 100_000, "W": 100_000}})
    assert info.value.details["input"] == "x"


def test_a_batch_name_on_two_axes_of_one_input_is_refused_unless_the_override_says_which():
    with pytest.raises(InvalidInput) as info:
        settle([spec("pair", "float32", "N", "N")], [spec("y", "float32", "N")])
    assert info.value.details["input"] == "pair" and '"batch_axis": 0' in info.value.message
    assert settle([spec("pair", "float32", "N", "N")], [spec("y", "float32", "N")],
                  {"inputs": {"pair": {"batch_axis": 0, "sizes": {"1": 4}}}}).inputs[0].sizes == (1, 4)


# ----------------------------------------------------------------------------- queries against it
def _stream():
    return settle([spec("audio", "float32", "N", 4), spec("rate", "int64", 1), spec("state", "float32", 2, "N", 3)],
                  [spec("out", "float32", "N", 3)]).inputs


def test_rows_are_counted_on_each_inputs_batch_axis_and_a_per_request_value_has_none():
    feed = {"audio": np.zeros((5, 4), np.float32), "rate": np.array([16000]), "state": np.zeros((2, 5, 3), np.float32)}
    _, rows = validate_inputs(feed, _stream(), 100)
    assert rows == 5
    bad = dict(feed, state=np.zeros((2, 4, 3), np.float32))
    with pytest.raises(InvalidInput) as info:
        validate_inputs(bad, _stream(), 100)
    assert "'state'" in info.value.message and "axis 1" in info.value.message
    with pytest.raises(InvalidInput):  # the per-request value keeps its fixed shape
        validate_inputs(dict(feed, rate=np.array([1, 2])), _stream(), 100)


def test_one_dimension_name_takes_one_size_across_inputs():
    specs = settle([spec("ids", "int64", "batch", "seq"), spec("mask", "int64", "batch", "seq")],
                   [spec("y", "float32", "batch", 2)], {"dims": {"seq": 8}}).inputs
    validate_inputs({"ids": np.zeros((2, 5), np.int64), "mask": np.ones((2, 5), np.int64)}, specs, 10)
    with pytest.raises(InvalidInput) as info:
        validate_inputs({"ids": np.zeros((2, 5), np.int64), "mask": np.ones((2, 6), np.int64)}, specs, 10)
    assert "'seq'" in info.value.message and info.value.field == "shape"


def test_records_from_before_signatures_read_as_batched_on_axis_0():
    old = TensorSpec.from_dict({"name": "x", "dtype": "float32", "shape": [-1, 4]})
    assert old.batch == 0 and representative(old, 3) == (3, 4)
    new = TensorSpec.from_dict(TensorSpec("s", "float32", (2, -1), 1, (2, 1), ("", "N")).to_record())
    assert new.batch == 1 and new.symbols == ("", "N") and new.to_dict() == {"name": "s", "dtype": "float32",
                                                                             "shape": [2, -1]}
