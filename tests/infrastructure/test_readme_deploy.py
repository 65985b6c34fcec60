"""The README's "Deploy on AWS" block, as far as it goes without an AWS account.

Every line up to the account is run as written: ``make synth`` (into a temporary ``CDK_OUTDIR``),
``make layers``, and the extras' install with the CPU worker bundle (``pip download`` from the
package index, about 80 MB, cached by pip after the first run). ``cdk bootstrap`` and
``cdk deploy`` need an account; what ``cdk deploy`` synthesises first is checked instead: the app
with the deploy line's own ``-c`` context, ``require_artifacts`` included, so a missing layer or
bundle, a context key the app does not know, or an unacknowledged cdk-nag finding fails here.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = os.path.dirname(sys.executable)


def deploy_block() -> list[str]:
    text = (ROOT / "README.md").read_text()
    body = text.split("\n## Deploy on AWS\n", 1)[1]
    code = body.split("```sh\n", 1)[1].split("\n```", 1)[0].replace("\\\n", " ")
    return [line for line in code.splitlines() if shlex.split(line, comments=True)]


def run(line: str, env: dict) -> subprocess.CompletedProcess:
    line = line.replace(".venv/bin/", BIN + "/")
    return subprocess.run(["bash", "-c", line], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """Each offline line of the block, run in order (their order matters: the deploy needs the
    layer and the bundle)."""
    lines = deploy_block()
    outdir = tmp_path_factory.mktemp("readme-cdk.out")
    env = {k: v for k, v in os.environ.items() if k not in ("CDK_DEFAULT_ACCOUNT", "CDK_DEFAULT_REGION")}
    env.update(CDK_OUTDIR=str(outdir), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
               JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION="20")
    out = {}
    for line in lines:
        if "cdk bootstrap" in line or line.startswith("cdk deploy"):
            continue  # an AWS account's: see test_the_deploy_lines_context_synthesises_with_every_artifact
        proc = run(line, env)
        assert proc.returncode == 0, f"{line}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        out[line.split("#")[0].strip()] = proc
    return lines, outdir, out


def test_every_offline_line_of_the_deploy_block_runs_as_written(ran):
    lines, outdir, out = ran
    assert [line for line in out if line.startswith("make synth")], lines
    assert (outdir / "Infaas.template.json").is_file()  # make synth wrote the template where it was told
    assert json.loads((outdir / "Infaas.template.json").read_text())["Resources"]
    assert (ROOT / "build" / "layers" / "deps" / "manifest.json").is_file()  # make layers
    bundle = ROOT / "build" / "worker" / "cpu"
    wheels = [p.name for p in (bundle / "wheelhouse").iterdir()]
    assert (bundle / "install.sh").is_file()
    assert any(w.startswith("infaas-") for w in wheels) and any(w.startswith("onnxruntime-") for w in wheels)
    assert all(w.endswith(".whl") for w in wheels)


@pytest.mark.parametrize("elsewhere", [{}, {"infaas:region": "eu-west-1", "infaas:stack_name": "InfaasTwo"}],
                         ids=["as-written", "another-region-and-stack"])
def test_the_deploy_lines_context_synthesises_with_every_artifact(ran, build_app, tmp_path, elsewhere):
    """``cdk deploy``'s own ``-c`` values, ``require_artifacts=true`` among them: with the layer
    and the CPU bundle built by the lines before, synthesis (cdk-nag included) passes, as written
    and in another region under another stack name."""
    lines, _, _ = ran
    [deploy] = [line for line in lines if line.startswith("cdk deploy")]
    words = shlex.split(deploy, comments=True)
    context = dict(words[i + 1].split("=", 1) for i, w in enumerate(words) if w == "-c")
    assert context["infaas:require_artifacts"] == "true" and context["infaas:region"] == "us-east-1"
    context.update(elsewhere)
    app, stack = build_app(context=context, outdir=str(tmp_path))
    assert stack.stack_name == context.get("infaas:stack_name", "Infaas")
    app.synth()
    template = json.loads((tmp_path / f"{stack.stack_name}.template.json").read_text())
    groups = [v["Properties"] for v in template["Resources"].values() if v["Type"] == "AWS::AutoScaling::AutoScalingGroup"]
    assert sorted(g["MaxSize"] for g in groups) == sorted(
        [context["infaas:cpu:max"], context["infaas:gpu:max"], context["infaas:inferentia:max"]])


def test_a_fleet_that_may_start_machines_needs_its_bundle(ran, build_app, tmp_path, monkeypatch):
    """The block builds no GPU bundle: raising the GPU fleet's max is refused at synthesis. (A build
    folder of the block's artifacts only, whatever else this checkout has built.)"""
    lines, _, _ = ran
    [deploy] = [line for line in lines if line.startswith("cdk deploy")]
    words = shlex.split(deploy, comments=True)
    context = dict(words[i + 1].split("=", 1) for i, w in enumerate(words) if w == "-c")
    build = tmp_path / "build"
    (build / "worker").mkdir(parents=True)
    (build / "layers").symlink_to(ROOT / "build" / "layers")
    (build / "worker" / "cpu").symlink_to(ROOT / "build" / "worker" / "cpu")
    monkeypatch.setattr(sys.modules["infaas_cdk.artifacts"], "BUILD", build)
    build_app(context=context, outdir=str(tmp_path / "ok"))  # as written: the CPU bundle is enough
    with pytest.raises(Exception, match="gpu worker bundle is not built"):
        build_app(context={**context, "infaas:gpu:max": "2"}, outdir=str(tmp_path / "refused"))
