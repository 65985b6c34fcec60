"""The CDK app: ``cdk synth`` / ``cdk deploy`` run this, and so does ``make synth``.

Run directly (``python cdk/app.py``), the app reads ``cdk.json``'s context
itself -- feature flags included -- because only the ``cdk`` CLI passes it
otherwise (without the flags an Auto Scaling group would come out as a
deprecated launch configuration). Context given to the CLI (``-c key=value``)
takes precedence over this file's.

cdk-nag's AwsSolutions pack runs on every synthesis; an unacknowledged
finding fails it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Mapping

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk  # noqa: E402
from cdk_nag import AwsSolutionsChecks  # noqa: E402
from infaas_cdk.config import DeployConfig, load_cdk_json_context  # noqa: E402
from infaas_cdk.stack import InfaasStack  # noqa: E402


def build_app(context: Mapping[str, Any] | None = None, outdir: str | None = None,
              nag: bool = True) -> tuple[cdk.App, InfaasStack]:
    values = {**load_cdk_json_context(), **(context or {})}
    outdir = outdir or os.environ.get("CDK_OUTDIR") or str(Path(__file__).resolve().parents[1] / "cdk.out")
    app = cdk.App(context=values, outdir=outdir)
    config = DeployConfig.from_context(app.node.try_get_context)
    region = config.region or os.environ.get("CDK_DEFAULT_REGION")
    env = cdk.Environment(account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=region) if region else None
    stack = InfaasStack(app, app.node.try_get_context("infaas:stack_name") or "Infaas", config=config, env=env)
    if nag:
        cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app, stack


if __name__ == "__main__":
    app, _ = build_app()
    app.synth()
