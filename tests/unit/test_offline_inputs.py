"""Offline job inputs: an .npz is checked against its unpacked size, read from the archive's
directory, before anything is unpacked (a small file must not unpack to gigabytes on a worker)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fakes import npz_bomb

from infaas.app.offline import ITEM_MAX_BYTES, read_rows
from infaas.core.errors import InvalidInput


def test_an_npz_that_unpacks_past_the_limit_is_refused_unopened():
    blob = npz_bomb((ITEM_MAX_BYTES >> 20) + 16)  # 16 MiB past the limit
    assert len(blob) < 2 << 20  # small on disk
    with pytest.raises(InvalidInput) as err:
        read_rows("bomb.npz", blob)
    assert "unpacks to" in err.value.message and err.value.field == "input"


def test_an_ordinary_npz_is_read():
    buf = io.BytesIO()
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.savez_compressed(buf, inputs=x)
    np.testing.assert_array_equal(read_rows("rows.npz", buf.getvalue()), x)
