"""cdk-nag's AwsSolutions pack and cfn-lint on the synthesised template (acceptance 2)."""

from __future__ import annotations

from pathlib import Path


def test_cdk_nag_passes_and_every_acknowledgement_has_a_reason(synthesized):
    (report,) = [r for r in synthesized.validation_report["pluginReports"] if r["pluginName"] == "AwsSolutions"]
    assert report["conclusion"] == "success"
    assert report["violations"] == []
    acknowledged = report["suppressedViolations"]
    assert acknowledged, "the report lists acknowledged findings"
    for finding in acknowledged:
        assert finding["acknowledgedId"].startswith("AwsSolutions::")
        assert len(finding["reason"].split()) >= 8, finding  # a written reason, not a placeholder


def test_cfn_lint_reports_no_errors(synthesized):
    """cfn-lint's own API (what the ``cfn-lint`` command runs), in this process."""
    from cfnlint.api import lint_file

    findings = lint_file(Path(synthesized.template_path))
    errors = [f"{m.rule.id} {m.path}: {m.message}" for m in findings if m.rule.severity == "error"]
    assert errors == []
    assert all(m.rule.id[0] in "WI" for m in findings)  # anything left is a warning or information
