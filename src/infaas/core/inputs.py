"""A query's input tensors checked against the variant's input specs: names, dtypes, shapes, finite values, rows."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from infaas.core import tensors
from infaas.core.domain import (
    TensorSpec,
)
from infaas.core.errors import InvalidInput, PayloadTooLarge


def _finite(a: np.ndarray) -> bool:
    """No NaN and no infinity: NaN propagates through min and max, an infinity is one
    of them; two reductions without the temporary array of ``np.isfinite(a).all()``."""
    if a.dtype.kind == "c":
        return bool(np.isfinite(a).all())
    return bool(np.isfinite(a.min()) and np.isfinite(a.max()))


def validate_inputs(arrays: Mapping[str, np.ndarray], specs: tuple[TensorSpec, ...], max_rows: int) -> tuple[dict[str, np.ndarray], int]:
    """Check names, dtypes, shapes and values against the model's input spec: every input by its
    name, no other (a name the model does not take is refused, naming it). Returns the feed and
    its row count.
    """
    if len(specs) == 1 and len(arrays) == 1 and specs[0].name in arrays:
        pass  # the common case, without building the name set
    else:
        names = [s.name for s in specs]
        for i, n in enumerate(arrays):
            if n not in names:
                raise InvalidInput(f"{n!r} is not an input of this model; it takes {names}", field=f"inputs[{i}].name")
        if len(arrays) != len(specs):
            raise InvalidInput(f"expected {len(specs)} input tensor(s) {names}, got {len(arrays)}", field="inputs")
    feed, rows, sized = {}, None, {}
    for spec in specs:
        if spec.name not in arrays:
            raise InvalidInput(f"missing input tensor {spec.name!r}", field="inputs")
        a = arrays[spec.name]
        if tensors.dtype_name(a.dtype) != spec.dtype:
            raise InvalidInput(f"input {spec.name!r} has dtype {a.dtype.name}, the model takes {spec.dtype}", field="datatype")
        axis = spec.batch
        if a.ndim != len(spec.shape) or any(d > 0 and d != s and i != axis for i, (d, s) in enumerate(zip(spec.shape, a.shape))):
            where = f" (axis {axis} carries the rows)" if axis not in (None, 0) else ""
            raise InvalidInput(
                f"input {spec.name!r} has shape {list(a.shape)}, the model takes {list(spec.shape)} (-1 = any){where}",
                field="shape")
        if axis is not None and spec.shape[axis] > 0 and a.shape[axis] != spec.shape[axis]:
            raise InvalidInput(f"input {spec.name!r} must have exactly {spec.shape[axis]} rows", field="shape")
        for i, sym in enumerate(spec.symbols):  # one dimension name, one size across the inputs
            if sym and spec.shape[i] <= 0:
                seen = sized.setdefault(sym, (a.shape[i], spec.name, i))
                if seen[0] != a.shape[i]:
                    raise InvalidInput(f"input {spec.name!r} has {a.shape[i]} on axis {i} ({sym!r}), input {seen[1]!r} "
                                       f"has {seen[0]} on axis {seen[2]}; the model takes one size for {sym!r}",
                                       field="shape")
        if a.dtype.kind in "fc" and a.size and not _finite(a):
            raise InvalidInput(f"input {spec.name!r} contains NaN or infinity", field="inputs")
        feed[spec.name] = a
        if axis is None:
            continue  # a per-request value: no rows of its own
        n = a.shape[axis]
        if rows is not None and n != rows:
            raise InvalidInput(f"all inputs must have the same number of rows (input {spec.name!r} has {n} on "
                               f"its batch axis {axis}, the others {rows})", field="shape")
        rows = n
    if rows is None:
        rows = 1  # no input carries rows: the request is one
    if not rows:
        raise InvalidInput("inputs have no rows", field="shape")
    if rows > max_rows:
        raise PayloadTooLarge(f"{rows} rows in one request; the limit is {max_rows}", field="inputs")
    return feed, rows
