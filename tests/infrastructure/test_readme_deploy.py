"""The README's "Deploy on AWS" block, as far as it goes without an AWS account.

Every line up to the account is run as written: ``make synth`` (into a temporary ``CDK_OUTDIR``),
``make layers``, and the extras' install with the CPU worker bundle (``pip download`` from the
package index, about 80 MB, cached by pip after the first run). ``cdk bootstrap`` and
``cdk deploy`` need an account; what ``cdk deploy`` synthesises first is checked instead: the app
with the deploy line's own ``-c`` context, ``require_artifacts`` included, so a missing layer or
bundle, a context key the app does not know, or an unacknowledged cdk-nag finding fails here.

That synthesis runs twice: in this process (``build_app``), and through the CDK CLI itself --
``cdk synth`` with the deploy line's words and ``cdk.json``'s app command, as ``cdk deploy`` would
run it -- from ``.cdk-cli/`` (``make deploy-check`` installs it there with npm and sets
``INFAAS_REQUIRE_CDK_CLI=1``; ``make test``, which needs no npm, does not collect the CLI runs:
``conftest.py`` ``CDK_CLI_ONLY``).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "cdk"))
from infaas_cdk.stack import name_prefix  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BIN = os.path.dirname(sys.executable)
CDK_CLI = ROOT / ".cdk-cli" / "node_modules" / ".bin" / "cdk"
HARDWARE = ("cpu", "gpu", "inferentia")


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
    check_deployed_template(template, json.loads((tmp_path / "manifest.json").read_text()),
                            json.loads((tmp_path / "validation-report.json").read_text()), context, stack.stack_name)


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


def deploy_words(lines: list[str]) -> list[str]:
    [deploy] = [line for line in lines if line.startswith("cdk deploy")]
    return shlex.split(deploy, comments=True)


def check_deployed_template(template: dict, manifest: dict, report: dict, context: dict, stack_name: str) -> None:
    """What the deploy line's synthesis must hold: a group per fleet that may start machines, with the
    line's max (a fleet whose max is 0 is absent or never starts one), every resource name from the stack's
    name, the stack bound to the line's region, and cdk-nag without an unacknowledged finding."""
    resources = template["Resources"]
    groups = {v["Properties"]["AutoScalingGroupName"]: v["Properties"] for v in resources.values()
              if v["Type"] == "AWS::AutoScaling::AutoScalingGroup"}
    prefix = name_prefix(stack_name)
    for hw in HARDWARE:
        most = context[f"infaas:{hw}:max"]
        group = groups.pop(f"{prefix}-workers-{hw}", None)
        if int(most) > 0:
            assert group is not None and group["MaxSize"] == most, (hw, sorted(groups))
        else:
            assert group is None or group["MaxSize"] == "0", (hw, group)
    assert not groups, f"groups not named from the stack name {stack_name!r}: {sorted(groups)}"
    named = {
        "AWS::SQS::Queue": "QueueName", "AWS::CloudWatch::Alarm": "AlarmName",
        "AWS::CloudWatch::Dashboard": "DashboardName", "AWS::ApiGateway::RestApi": "Name",
    }
    for resource in resources.values():
        key = named.get(resource["Type"])
        name = resource.get("Properties", {}).get(key) if key else None
        if isinstance(name, str):
            assert name.startswith(prefix), (resource["Type"], name, prefix)
    [artifact] = [a for a in manifest["artifacts"].values() if a.get("type") == "aws:cloudformation:stack"]
    assert artifact["environment"].endswith("/" + context["infaas:region"]), artifact["environment"]
    [nag] = [p for p in report["pluginReports"] if p["pluginName"] == "AwsSolutions"]
    assert nag["conclusion"] == "success" and not nag["violations"], nag["violations"]


@pytest.fixture(scope="module")
def cdk_cli():
    if not CDK_CLI.is_file():
        pytest.fail(f"the CDK CLI is not installed in {CDK_CLI.relative_to(ROOT)} (make deploy-check installs it)")
    return CDK_CLI


@pytest.mark.parametrize("elsewhere", [{}, {"infaas:region": "eu-west-1", "infaas:stack_name": "InfaasTwo"}],
                         ids=["as-written", "another-region-and-stack"])
def test_the_deploy_line_synthesises_through_the_cdk_cli(ran, cdk_cli, tmp_path, elsewhere):
    """``cdk synth`` run by the CDK CLI with every ``-c`` of the README's deploy line (``deploy`` becomes
    ``synth``; nothing else of the line changes) and ``cdk.json``'s app command, after the lines before it
    built the layer and the CPU bundle; as written, and with another region and stack name given the same way."""
    lines, _, _ = ran
    words = deploy_words(lines)
    assert words[:2] == ["cdk", "deploy"], words
    flags = list(words[2:])
    for key, value in elsewhere.items():  # replace a flag the line gives, add one it does not
        given = [i for i, w in enumerate(flags) if w == "-c" and flags[i + 1].startswith(key + "=")]
        if given:
            flags[given[0] + 1] = f"{key}={value}"
        else:
            flags += ["-c", f"{key}={value}"]
    context = {**dict(flags[i + 1].split("=", 1) for i, w in enumerate(flags) if w == "-c")}
    stack_name = context.get("infaas:stack_name", "Infaas")
    app_command = json.loads((ROOT / "cdk.json").read_text())["app"]
    outdir = tmp_path / "cdk.out"
    env = {k: v for k, v in os.environ.items() if k not in ("CDK_DEFAULT_ACCOUNT", "CDK_DEFAULT_REGION", "CDK_OUTDIR")}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # the README's `source .venv/bin/activate`
               AWS_EC2_METADATA_DISABLED="true", CDK_DISABLE_CLI_TELEMETRY="true",
               JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION="20")
    command = [str(cdk_cli), "synth", *flags, "--app", app_command, "--output", str(outdir),
               "--no-notices", "--no-version-reporting", "--quiet"]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{shlex.join(command)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    template = json.loads((outdir / f"{stack_name}.template.json").read_text())
    manifest = json.loads((outdir / "manifest.json").read_text())
    report = json.loads((outdir / "validation-report.json").read_text())
    check_deployed_template(template, manifest, report, context, stack_name)
