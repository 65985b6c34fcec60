"""The README's command blocks, run as written against a fresh `infaas up`: "Using it" and
"Prepare your model", line by line, each exiting 0 (``.venv/bin/`` is this interpreter's
folder; ``model.onnx`` and ``val.npz`` are a digits classifier and its validation file made
here; the key the README's ``tenants create`` prints is the one the next lines use)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time

import httpx
import pytest

from infaas.adapters.local.processes import free_port
from infaas.cli import digits

pytestmark = pytest.mark.e2e

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)


def block(heading: str) -> list[str]:
    """The commands of the first ```sh block under ``heading``: continuation lines joined,
    comments dropped, a multi-line quoted argument kept whole."""
    text = open(os.path.join(ROOT, "README.md")).read()
    body = text.split(f"\n{heading}\n", 1)[1]
    code = body.split("```sh\n", 1)[1].split("\n```", 1)[0]
    code = code.replace("\\\n", " ")
    out, pending = [], ""
    for line in code.splitlines():
        pending = f"{pending}\n{line}" if pending else line
        try:
            words = shlex.split(pending, comments=True)
        except ValueError:  # an open quote: the argument goes on on the next line
            continue
        if words:
            out.append(pending)
        pending = ""
    return out


def run(line: str, env: dict, cwd) -> subprocess.CompletedProcess:
    line = line.replace(".venv/bin/", BIN + "/")
    return subprocess.run(["bash", "-c", line], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def wait_ready(port: int, up: subprocess.Popen, timeout_s: float = 90.0) -> None:
    """Until ``infaas up`` on ``port`` answers ready; fails with its output if it exits first."""
    deadline = time.time() + timeout_s
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if up.poll() is not None:
            pytest.fail(f"infaas up exited {up.returncode}: {up.stdout.read().decode() if up.stdout else ''}")
        assert time.time() < deadline, "infaas up is not ready"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def readme_stack(tmp_path_factory):
    work = tmp_path_factory.mktemp("readme")
    data = digits.split()
    [trained] = digits.train(str(work), ["logistic-regression"], data)
    os.replace(trained.path, work / "model.onnx")
    (work / "val.npz").write_bytes(digits.validation_npz(data))
    port = free_port()
    env = {**os.environ, "INFAAS_PORT": str(port), "INFAAS_DATA_DIR": str(work / "data"), "INFAAS_WORKERS": "1"}
    env.pop("INFAAS_URL", None)
    env.pop("INFAAS_API_KEY", None)
    lines = block("## Using it")
    assert lines[0].startswith(".venv/bin/infaas up")
    up = subprocess.Popen(["bash", "-c", "exec " + lines[0].split("#")[0].replace(".venv/bin/", BIN + "/")], env=env,
                          cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_ready(port, up)
        yield work, env, lines[1:]
    finally:
        up.terminate()
        up.wait(30)


def test_the_using_it_block_runs_as_written(readme_stack):
    work, env, lines = readme_stack
    ran = []
    for line in lines:
        if line.startswith("export INFAAS_API_KEY"):
            continue  # the key the previous line printed is exported below
        if "infaas workers" in line:  # "(an admin key)": an operator's
            admin = run(".venv/bin/infaas tenants create ops --scopes admin", env, work)
            proc = run(line, {**env, "INFAAS_API_KEY": re.search(r"infaas_\S+", admin.stdout).group(0)}, work)
        else:
            proc = run(line, env, work)
        assert proc.returncode == 0, f"{line}\n{proc.stdout}\n{proc.stderr}"
        if "tenants create" in line:
            env["INFAAS_API_KEY"] = re.search(r"infaas_\S+", proc.stdout).group(0)
        ran.append(line.split()[1] if len(line.split()) > 1 else line)
    assert len(ran) >= 10
    left = [f for _, _, fs in os.walk(os.path.join(work, "data", "models")) for f in fs if "my-model" in f]
    assert left == []  # `models delete` at the end removed every file of the model


def test_the_prepare_your_model_block_runs_as_written(readme_stack):
    work, env, _ = readme_stack
    key = run(".venv/bin/infaas tenants create recipes --scopes query,register", env, work)
    env = {**env, "INFAAS_API_KEY": re.search(r"infaas_\S+", key.stdout).group(0)}
    if not (work / "model.onnx").exists():
        pytest.fail("the Using it block deleted the model file")
    if not (work / "examples").exists():  # the README's paths are from the repository root
        os.symlink(os.path.join(ROOT, "examples"), work / "examples")
    for line in block("## Prepare your model"):
        proc = run(line, env, work)
        assert proc.returncode == 0, f"{line}\n{proc.stdout}\n{proc.stderr}"
    status = httpx.get(f"http://127.0.0.1:{env['INFAAS_PORT']}/v1/models/torch-digits",
                       headers={"authorization": f"Bearer {env['INFAAS_API_KEY']}"}).json()
    assert status["status"] == "ready" and status["measured_accuracy"] > 0.9


def test_register_wait_names_each_failed_variant_and_exits_non_zero(tmp_path):
    """Profiling with a 64 MiB address-space limit: every variant fails; --wait says which and why."""
    data = digits.split()
    [trained] = digits.train(str(tmp_path), ["logistic-regression"], data)
    port = free_port()
    env = {**os.environ, "INFAAS_PORT": str(port), "INFAAS_DATA_DIR": str(tmp_path / "data"), "INFAAS_WORKERS": "1",
           "INFAAS_AUTH": "off", "INFAAS_PROFILE_MEMORY_BYTES": str(64 << 20)}
    env.pop("INFAAS_URL", None)
    up = subprocess.Popen([f"{BIN}/infaas", "up"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(port, up)
        proc = run(f".venv/bin/infaas register {trained.path} --name doomed --task t/x --accuracy 0.9 --wait", env,
                   tmp_path)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "all done:" in proc.stdout and "failed" in proc.stdout
        assert "failed: doomed:onnx-fp32:cpu:b32: profiling" in proc.stderr
        assert "infaas models doomed --logs" in proc.stderr
        logs = run(".venv/bin/infaas models doomed --logs", env, tmp_path)
        assert logs.returncode == 0 and "== doomed:onnx-fp32:cpu:b32: failed" in logs.stdout
        assert "output of the failed step" in logs.stdout  # the profiler's whole stderr, not a summary
    finally:
        up.terminate()
        up.wait(30)
