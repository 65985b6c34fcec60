"""``infaas register``'s signature flags: --signature JSON with --dim and --batch-axis merged in."""

from __future__ import annotations

import pytest

from infaas.cli import CliError, signature_arg


def test_flags_build_the_signature_override():
    assert signature_arg(None, None, None) is None
    assert signature_arg(None, ["H=32", "W=40"], ["state=1", "rate=none"]) == {
        "dims": {"H": 32, "W": 40}, "inputs": {"state": {"batch_axis": 1}, "rate": {"batch_axis": None}}}
    assert signature_arg('{"dims": {"T": 5}, "inputs": {"x": {"sizes": {"2": 4}}}}', ["seq=8"], ["x=1"]) == {
        "dims": {"T": 5, "seq": 8}, "inputs": {"x": {"sizes": {"2": 4}, "batch_axis": 1}}}


@pytest.mark.parametrize("text,dims,axes", [("{", None, None), ("[1]", None, None), (None, ["H"], None),
                                            (None, ["H=x"], None), (None, ["=3"], None), (None, None, ["state"]),
                                            (None, None, ["state=one"])])
def test_malformed_flags_are_one_clear_error(text, dims, axes):
    with pytest.raises(CliError):
        signature_arg(text, dims, axes)
