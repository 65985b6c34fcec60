"""One synthesis of the CDK app for the whole session (about 15 s: jsii, the
constructs, cdk-nag), shared by every infrastructure test."""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Tests that run the CDK CLI itself (npm-installed by `make deploy-check` into .cdk-cli/) belong to
# `make deploy-check` (INFAAS_REQUIRE_CDK_CLI=1); `make test` needs no npm and does not collect them.
CDK_CLI_ONLY = ("test_the_deploy_line_synthesises_through_the_cdk_cli",)


def pytest_collection_modifyitems(config, items):
    if os.environ.get("INFAAS_REQUIRE_CDK_CLI") == "1":
        return
    kept, dropped = [], []
    for item in items:
        (dropped if item.originalname in CDK_CLI_ONLY else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@dataclass
class Synthesized:
    stack: Any
    template: dict[str, Any]
    template_path: Path
    outdir: Path
    validation_report: dict[str, Any]

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.template["Resources"].items() if v["Type"] == kind}

    def one(self, kind: str) -> dict[str, Any]:
        found = list(self.resources(kind).values())
        assert len(found) == 1, f"expected one {kind}, found {len(found)}"
        return found[0]


def load_cdk_app():
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    spec = importlib.util.spec_from_file_location("infaas_cdk_app", ROOT / "cdk" / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def build_app():
    """``cdk/app.py``'s ``build_app``, for tests that synthesise with their own context."""
    return load_cdk_app().build_app


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    for name in ("CDK_DEFAULT_ACCOUNT", "CDK_DEFAULT_REGION", "CDK_OUTDIR"):  # offline, environment-agnostic
        os.environ.pop(name, None)
    outdir = tmp_path_factory.mktemp("cdk.out")
    app, stack = load_cdk_app().build_app(outdir=str(outdir))
    app.synth()  # runs cdk-nag's AwsSolutions pack: an unacknowledged finding raises here
    template_path = outdir / f"{stack.stack_name}.template.json"
    return Synthesized(
        stack=stack,
        template=json.loads(template_path.read_text()),
        template_path=template_path,
        outdir=outdir,
        validation_report=json.loads((outdir / "validation-report.json").read_text()),
    )
