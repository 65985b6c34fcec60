"""Workers as cattle: what the template says about them (health, replacement, access, logs), and the
machine's boot itself -- the systemd units verified by ``systemd-analyze verify``, and ``install.sh`` run
against stubbed commands (each logs its arguments), on success and on failure."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "worker_ami" / "systemd"
INSTANCE = "i-0123456789abcdef0"


def _text(value) -> str:
    """A CloudFormation string (Fn::Join / Fn::Base64 / references as placeholders) as text."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(_text(v) for v in value)
    if isinstance(value, dict):
        if "Fn::Base64" in value:
            return _text(value["Fn::Base64"])
        if "Fn::Join" in value:
            sep, parts = value["Fn::Join"]
            return sep.join(_text(p) for p in parts)
        if "Ref" in value:
            return "{" + value["Ref"] + "}"
        if "Fn::GetAtt" in value:
            return "{" + ".".join(value["Fn::GetAtt"]) + "}"
    return "{?}"


def _user_data(synthesized) -> dict[str, str]:
    out = {}
    for lid, res in synthesized.resources("AWS::EC2::LaunchTemplate").items():
        out[lid] = _text(res["Properties"]["LaunchTemplateData"]["UserData"])
    return out


# -- the template ----------------------------------------------------------------------
def test_groups_replace_instances_when_the_template_changes(synthesized):
    groups = synthesized.resources("AWS::AutoScaling::AutoScalingGroup")
    assert groups
    for lid, group in groups.items():
        rolling = group.get("UpdatePolicy", {}).get("AutoScalingRollingUpdate")
        assert rolling, f"{lid}: no rolling update: running workers would keep the old bundle"
        assert int(rolling["MaxBatchSize"]) == 1
        assert int(rolling["MinInstancesInService"]) < int(group["Properties"]["MaxSize"])
        assert group["Properties"]["LaunchTemplate"]["Version"] == {
            "Fn::GetAtt": [group["Properties"]["LaunchTemplate"]["LaunchTemplateId"]["Ref"], "LatestVersionNumber"]}


def test_the_user_data_names_the_bundle_so_a_new_bundle_is_a_new_template_version(synthesized):
    """The bundle's asset key is its content hash: a new bundle changes the user data, the template gets a
    new version, and the rolling update above replaces the instances."""
    for lid, text in _user_data(synthesized).items():
        download = next(line for line in text.splitlines() if "aws s3 cp" in line)
        assert ".zip" in download and "{AssetParameters" not in download, download
        key = download.split("s3://", 1)[1].split("'", 1)[0].split("/", 1)[1]
        assert len(key.split(".")[0]) == 64, key  # sha256 of the bundle


def test_the_boot_names_its_region_and_fails_visibly(synthesized):
    for lid, text in _user_data(synthesized).items():
        lines = [line for line in text.splitlines() if line.strip()]
        assert lines[1] == "set -euo pipefail", lines[:3]  # before the download: a failed download stops the boot
        download = next(line for line in lines if "aws s3 cp" in line)
        assert "--region {AWS::Region}" in download, download
        install = next(line for line in lines if "install.sh" in line)
        assert "tail -n 50 /var/log/infaas-install.log" in install and "exit $rc" in install
        assert any(line.startswith("INFAAS_LOG_GROUP={") for line in lines)


def test_health_grace_is_one_number_for_the_groups_and_the_autoscaler(synthesized):
    from infaas.adapters.aws.fleet import HEALTH_GRACE_S, HEALTH_MISSED_S

    for group in synthesized.resources("AWS::AutoScaling::AutoScalingGroup").values():
        assert group["Properties"]["HealthCheckType"] == "EC2"
        assert int(group["Properties"]["HealthCheckGracePeriod"]) == HEALTH_GRACE_S
    fn = synthesized.stack.functions.autoscaler
    env = synthesized.template["Resources"][synthesized.stack.get_logical_id(fn.node.default_child)][
        "Properties"]["Environment"]["Variables"]
    assert float(env["INFAAS_HEALTH_GRACE_S"]) == HEALTH_GRACE_S
    assert float(env["INFAAS_HEALTH_MISSED_S"]) == HEALTH_MISSED_S


def test_workers_have_session_manager_and_a_log_group_they_reach(synthesized):
    stack = synthesized.stack
    role = synthesized.template["Resources"][stack.get_logical_id(stack.fleets.role.node.default_child)]
    assert any("AmazonSSMManagedInstanceCore" in json.dumps(m) for m in role["Properties"]["ManagedPolicyArns"])
    group_id = stack.get_logical_id(stack.fleets.log_group.node.default_child)
    log_group = synthesized.template["Resources"][group_id]
    assert log_group["Properties"]["RetentionInDays"] == 30
    endpoints = {_text(e["Properties"]["ServiceName"]).rsplit(".", 1)[-1]
                 for e in synthesized.resources("AWS::EC2::VPCEndpoint").values()
                 if e["Properties"].get("VpcEndpointType") == "Interface"}
    assert {"logs", "ssm", "ssmmessages", "ec2messages", "autoscaling", "sqs", "secretsmanager"} <= endpoints
    for text in _user_data(synthesized).values():
        assert f"INFAAS_LOG_GROUP={{{group_id}}}" in text


def test_an_alarm_says_when_workers_keep_being_replaced(synthesized):
    alarms = [a["Properties"] for a in synthesized.resources("AWS::CloudWatch::Alarm").values()]
    (alarm,) = [a for a in alarms if a.get("MetricName") == "UnhealthyWorkers"]
    assert alarm["Namespace"] == "Infaas" and alarm["Threshold"] >= 1


# -- the systemd units -------------------------------------------------------------------
def _installed_units(tmp_path: Path) -> Path:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    os.symlink(sys.executable, venv / "bin" / "python")
    units = tmp_path / "units"
    units.mkdir()
    for unit in UNITS.glob("*.service"):
        (units / unit.name).write_text(unit.read_text().replace("@VENV@", str(venv)))
    return units


def test_systemd_units_verify(tmp_path):
    assert shutil.which("systemd-analyze"), "systemd-analyze is needed to verify the units"
    units = _installed_units(tmp_path)
    names = sorted(str(p) for p in units.glob("*.service"))
    assert {Path(n).name for n in names} == {"infaas-worker.service", "infaas-drain.service", "infaas-logs.service"}
    done = subprocess.run(["systemd-analyze", "verify", *names], capture_output=True, text=True,
                          env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"}, cwd=units)
    problems = [line for line in (done.stdout + done.stderr).splitlines()
                if str(units) in line or "infaas" in line]
    assert done.returncode == 0 and not problems, done.stdout + done.stderr


def _unit(name: str) -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current = None
    for line in (UNITS / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        assert current is not None and key not in current, (name, line)
        current[key] = value
    return sections


def test_the_drain_watcher_completes_the_lifecycle_action_once():
    """It exits 0 once done and is not started again; failures restart it a bounded number of times."""
    unit = _unit("infaas-drain.service")
    assert unit["Service"]["Restart"] == "on-failure"
    assert int(unit["Unit"]["StartLimitBurst"]) >= 1 and int(unit["Unit"]["StartLimitIntervalSec"]) > 0
    for name in ("infaas-worker.service", "infaas-drain.service", "infaas-logs.service"):
        u = _unit(name)
        assert u["Service"]["EnvironmentFile"] == "/etc/infaas/worker.env"
        assert u["Service"]["ExecStart"].startswith("@VENV@/bin/python -m infaas.")
        assert u["Install"]["WantedBy"] == "multi-user.target"


# -- install.sh against stubbed commands ---------------------------------------------------
STUB = """#!/bin/bash
echo "$(basename "$0") $*" >> "$CALLS"
"""
STUBS = {
    "aws": STUB,
    "systemctl": STUB,
    "dnf": STUB,
    "useradd": STUB,
    "usermod": STUB,
    "chown": STUB,
    "id": STUB + "exit 1\n",  # no infaas user yet
    "getent": STUB + "exit 2\n",
    "curl": STUB + """case "$*" in
  *api/token*) echo token ;;
  *instance-id) echo %s ;;
  *local-ipv4) echo 10.0.0.5 ;;
  *) exit 22 ;;
esac
""" % INSTANCE,
    # `python3.12 -m venv DIR`: a venv whose pip logs its arguments (and fails when FAIL_PIP is set)
    "python3.12": STUB + """if [ "$1 $2" = "-m venv" ]; then
  mkdir -p "$3/bin"
  printf '#!/bin/bash\\necho "pip $*" >> "$CALLS"\\n[ -z "${FAIL_PIP:-}" ] || exit 3\\n' > "$3/bin/pip"
  chmod +x "$3/bin/pip"
  printf '#!/bin/bash\necho "python $*" >> "$CALLS"\necho /site/nvidia/cublas/lib:/site/tensorrt_libs\n' > "$3/bin/python"
  chmod +x "$3/bin/python"
fi
""",
}


@pytest.fixture
def machine(tmp_path):
    """A bundle, a root folder with the user data's worker.env, and a PATH of stubs before the real one."""
    bundle = tmp_path / "bundle"
    (bundle / "wheelhouse").mkdir(parents=True)
    shutil.copy(ROOT / "worker_ami" / "install.sh", bundle / "install.sh")
    shutil.copytree(UNITS, bundle / "systemd")
    root = tmp_path / "root"
    (root / "etc" / "infaas").mkdir(parents=True)
    (root / "etc" / "infaas" / "worker.env").write_text(
        "AWS_REGION=eu-west-3\nINFAAS_GROUP=s-workers-cpu\nINFAAS_LOG_GROUP=s-WorkerLogs\nINFAAS_HARDWARE=cpu\n")
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for name, body in STUBS.items():
        (stubs / name).write_text(body)
        (stubs / name).chmod((stubs / name).stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls.log"
    env = {"PATH": f"{stubs}:{os.environ['PATH']}", "CALLS": str(calls), "INFAAS_ROOT": str(root),
           "HOME": str(tmp_path)}

    class Machine:
        def install(self, hw="cpu", **extra):
            done = subprocess.run(["bash", str(bundle / "install.sh"), hw], env={**env, **extra},
                                  capture_output=True, text=True, timeout=60)
            self.calls = calls.read_text().splitlines() if calls.exists() else []
            self.log = (root / "var" / "log" / "infaas-install.log").read_text()
            return done

    m = Machine()
    m.root, m.bundle = root, bundle
    return m


def test_install_sets_up_the_worker_and_ships_its_log(machine):
    done = machine.install("cpu")
    assert done.returncode == 0, machine.log
    venv = f"{machine.root}/opt/infaas/venv"
    calls = machine.calls
    assert f"python3.12 -m venv {venv}" in calls
    assert f"pip install --no-index --find-links {machine.bundle}/wheelhouse infaas[aws]" in calls
    assert "useradd --system --home-dir /var/lib/infaas --shell /usr/sbin/nologin infaas" in calls
    assert calls[-4:-2] == ["systemctl daemon-reload",
                            "systemctl enable --now infaas-worker.service infaas-drain.service infaas-logs.service"]
    stream = f"--region eu-west-3 --log-group-name s-WorkerLogs --log-stream-name {INSTANCE}/install"
    assert calls[-2] == f"aws logs create-log-stream {stream}"
    assert calls[-1].startswith(f"aws logs put-log-events {stream} --log-events file://")
    assert not any("set-instance-health" in c for c in calls)
    env = (machine.root / "etc" / "infaas" / "worker.env").read_text()
    assert f"INFAAS_WORKER_ID={INSTANCE}" in env and "INFAAS_HOST=10.0.0.5" in env
    for unit in ("infaas-worker", "infaas-drain", "infaas-logs"):
        text = (machine.root / "etc" / "systemd" / "system" / f"{unit}.service").read_text()
        assert "@VENV@" not in text and f"ExecStart={venv}/bin/python -m infaas." in text
    events = json.loads((machine.root / "var" / "log" / "infaas-install.events.json").read_text())
    assert any("install: done" in e["message"] for e in events)


def test_a_failed_install_is_logged_shipped_and_marks_the_instance_unhealthy(machine):
    done = machine.install("cpu", FAIL_PIP="1")
    assert done.returncode == 3
    assert "infaas install FAILED (exit 3) at install.sh line" in machine.log and "pip\" install" in machine.log
    calls = machine.calls
    assert not any(c.startswith("systemctl") for c in calls)  # nothing started
    assert calls[-1] == (f"aws autoscaling set-instance-health --region eu-west-3 --instance-id {INSTANCE} "
                         "--health-status Unhealthy --no-should-respect-grace-period")
    assert calls[-2].startswith("aws logs put-log-events --region eu-west-3 --log-group-name s-WorkerLogs "
                                f"--log-stream-name {INSTANCE}/install --log-events file://")
    events = json.loads((machine.root / "var" / "log" / "infaas-install.events.json").read_text())
    assert any("FAILED" in e["message"] for e in events)


def test_an_install_without_a_wheelhouse_or_of_an_unknown_type_fails_the_same_way(machine):
    shutil.rmtree(machine.bundle / "wheelhouse")
    assert machine.install("cpu").returncode != 0
    assert "no wheelhouse" in machine.log and machine.calls[-1].startswith("aws autoscaling set-instance-health")
    (machine.bundle / "wheelhouse").mkdir()
    assert machine.install("tpu").returncode != 0
    assert "unknown hardware type tpu" in machine.log
    assert machine.calls[-1].startswith("aws autoscaling set-instance-health")


def test_the_gpu_install_puts_cuda_12_from_its_packages_on_the_library_path(machine):
    assert machine.install("gpu").returncode == 0, machine.log
    venv = f"{machine.root}/opt/infaas/venv"
    wheels = f"{machine.bundle}/wheelhouse"
    assert "pip uninstall -y onnxruntime" in machine.calls
    assert (f"pip install --no-index --find-links {wheels} onnxruntime-gpu[cuda,cudnn] tensorrt-cu12-libs>=10,<11"
            in machine.calls)
    assert any(c.startswith("python -c import glob, os, site, tensorrt_libs") for c in machine.calls), venv
    env = (machine.root / "etc" / "infaas" / "worker.env").read_text()
    assert "LD_LIBRARY_PATH=/site/nvidia/cublas/lib:/site/tensorrt_libs" in env


def test_the_inferentia_install_changes_nothing_of_the_neuron_venv(machine):
    """Its packages are constraints of the install; onnx2torch comes without dependencies (no PyPI torch)."""
    for version in ("2.5", "2.7"):
        venv = machine.root / "opt" / f"aws_neuronx_venv_pytorch_{version}"
        (venv / "bin").mkdir(parents=True)
        (venv / "bin" / "pip").write_text('#!/bin/bash\necho "pip $*" >> "$CALLS"\n')
        (venv / "bin" / "pip").chmod(0o755)
    assert machine.install("inferentia").returncode == 0, machine.log
    wheels, constraints = f"{machine.bundle}/wheelhouse", f"{machine.bundle}/neuron-constraints.txt"
    pips = [c for c in machine.calls if c.startswith("pip ")]
    assert pips == ["pip freeze --exclude-editable",
                    f"pip install --no-index --find-links {wheels} -c {constraints} infaas[aws]",
                    f"pip install --no-index --find-links {wheels} --no-deps onnx2torch>=1.5.15"]
    unit = (machine.root / "etc" / "systemd" / "system" / "infaas-worker.service").read_text()
    assert f"{machine.root}/opt/aws_neuronx_venv_pytorch_2.7/bin/python" in unit  # the newest
