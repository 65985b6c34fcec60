"""Offline job inputs: an .npz is checked against its unpacked size, read from the archive's
directory, before anything is unpacked (a small file must not unpack to gigabytes on a worker)."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from infaas.app.offline import ITEM_MAX_BYTES, read_rows
from infaas.core.errors import InvalidInput


def test_an_npz_that_unpacks_past_the_limit_is_refused_unopened():
    buf = io.BytesIO()
    rows = (ITEM_MAX_BYTES + (16 << 20)) // 256  # 16 MiB past the limit, float32 rows of 64
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open("inputs.npy", "w", force_zip64=True) as f:
            header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 1), np.float32))
            header["shape"] = (rows, 64)
            np.lib.format.write_array_header_1_0(f, header)
            chunk = bytes(1 << 20)
            for _ in range(rows * 256 // (1 << 20) + 1):
                f.write(chunk)
    blob = buf.getvalue()
    assert len(blob) < 2 << 20  # small on disk
    with pytest.raises(InvalidInput) as err:
        read_rows("bomb.npz", blob)
    assert "unpacks to" in err.value.message and err.value.field == "input"


def test_an_ordinary_npz_is_read():
    buf = io.BytesIO()
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.savez_compressed(buf, inputs=x)
    np.testing.assert_array_equal(read_rows("rows.npz", buf.getvalue()), x)
