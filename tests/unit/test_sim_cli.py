"""``infaas sim compare`` end to end on a few seconds of a trace in the Proteus layout."""

from __future__ import annotations

from infaas.cli import main

# ``proteus_dir`` (tests/conftest.py): a small data set in the Proteus layout, written by the test.


def test_compare_prints_a_row_per_policy_and_the_lower_bound(proteus_dir, capsys):
    assert main(["sim", "compare", "--workload", "zipf_exponential", "--duration", "8", "--mode", "cloud",
                 "--policies", "ours,clipper,static", "--no-report"]) == 0
    out = capsys.readouterr().out
    for name in ("ours", "clipper", "static", "lower bound"):
        assert name in out


def test_compare_writes_the_report_block_and_plots(proteus_dir, tmp_path, capsys):
    doc, img = tmp_path / "evaluation.md", tmp_path / "img"
    doc.write_text("# Evaluation\n\nprose kept as it is\n")
    args = ["sim", "compare", "--workload", "zipf_exponential", "--duration", "8", "--fixed-cluster",
            "--policies", "ours,clipper-smallest", "--doc", str(doc), "--img", str(img)]
    assert main(args) == 0
    assert main(args) == 0  # a second run replaces its block instead of adding one
    text = doc.read_text()
    assert text.startswith("# Evaluation\n\nprose kept as it is\n")
    assert text.count("<!-- sim:zipf_exponential:fixed -->") == 1 and "| ours |" in text
    assert "INFaaS, published reference" in text
    assert (img / "sim-zipf_exponential-fixed.png").stat().st_size > 0
