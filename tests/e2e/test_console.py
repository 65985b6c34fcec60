"""The console (``GET /console``) in a real headless browser: Chromium from Debian's packages
(``.ci/run`` installs it when missing) loads the page from a running stack, its script polls
``/v1/console`` and draws the models with their variants and profiles, the workers and their
replicas, the objective rates and the last decisions with their reasons.

Two stacks: one of its own with ``INFAAS_AUTH=off`` (the page just works), with one model
registered and queried here; and the e2e session's stack, with keys on, where the page loads
without a key and asks for one. A screenshot of the first goes to ``$INFAAS_TEST_ARTEFACTS``
(else this test's temporary folder); its path is printed.
"""

from __future__ import annotations

import html
import os
import shutil
import subprocess
import time

import httpx
import pytest
from stack_support import READY_TIMEOUT_S, Stack

from infaas.cli import digits
from infaas.client import Client
from infaas.local.launcher import StackProcess

pytestmark = pytest.mark.e2e

ARCH = "logistic-regression"
BROWSER_TIMEOUT_S = 120.0


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed, and the console's tests need a real browser: "
                    "apt-get update && apt-get install -y chromium (.ci/run does this when it is missing)")
    return path


def browse(url: str, profile: str, *extra: str) -> subprocess.CompletedProcess:
    """Chromium headless on ``url``: ``--virtual-time-budget`` lets the page's script poll and draw first."""
    cmd = [chromium(), "--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage", "--no-first-run",
           "--hide-scrollbars", f"--user-data-dir={profile}", "--virtual-time-budget=5000", *extra, url]
    done = subprocess.run(cmd, capture_output=True, timeout=BROWSER_TIMEOUT_S)
    assert done.returncode == 0, (cmd, done.returncode, done.stderr.decode(errors="replace")[-3000:])
    return done


def dump_dom(url: str, profile: str) -> str:
    return browse(url, profile, "--dump-dom").stdout.decode("utf-8", errors="replace")


@pytest.fixture(scope="module")
def open_stack(tmp_path_factory: pytest.TempPathFactory):
    """``infaas up`` with keys off, one worker, one model registered and queried (answers and a refusal)."""
    workdir = str(tmp_path_factory.mktemp("console-work"))
    proc = StackProcess(workers=1, data_dir=str(tmp_path_factory.mktemp("console-data")),
                        env={"INFAAS_AUTH": "off"}, log_path=os.path.join(workdir, "stack.log"))
    proc.start(timeout_s=90.0)
    client = None
    try:
        data = digits.split()
        (trained,) = digits.train(os.path.join(workdir, "models"), names=[ARCH], data=data)
        client = Client(proc.url, timeout_s=30.0)  # no key: keys are off
        client.register(trained.path, name=ARCH, task=digits.TASK, accuracy=round(trained.val_accuracy, 4))
        status = client.wait_ready([ARCH], timeout_s=READY_TIMEOUT_S)
        assert status[ARCH]["status"] == "ready", f"{status}\n{proc.log_tail(80)}"
        answers = []
        deadline = time.time() + 30.0
        with httpx.Client(base_url=proc.url, timeout=30.0) as http:
            while len(answers) < 6:
                objective = {"latency_ms": 10_000.0} if len(answers) % 2 else {}
                r = http.post("/v1/infer", json={"architecture": ARCH, "objective": objective,
                                                 "inputs": data.x_test[: 1 + len(answers)].tolist()})
                if r.status_code == 200:
                    answers.append(r.json())
                else:  # the API's view of the catalogue refreshes every few hundred ms
                    assert time.time() < deadline, (r.status_code, r.text, proc.log_tail(80))
                    time.sleep(0.2)
            refused = http.post("/v1/infer", json={"architecture": ARCH, "objective": {"latency_ms": 1e-6},
                                                   "inputs": data.x_test[:1].tolist()})
            assert refused.status_code == 422
            workers = http.get("/v1/workers").json()["workers"]
        yield {"url": proc.url, "answers": answers, "refused": refused.json(), "workers": workers,
               "variants": [v["id"] for v in status[ARCH]["variants"] if v["status"] == "ready"], "proc": proc}
    finally:
        if client is not None:
            client.close()
        proc.stop()


def test_console_shows_models_workers_and_decisions(open_stack, tmp_path):
    url = open_stack["url"] + "/console"
    dom = dump_dom(url, str(tmp_path / "profile"))
    assert "INFaaS console" in dom
    assert ARCH in dom and digits.TASK in dom
    for variant in open_stack["variants"]:  # every ready variant, in its model's table and plot legend
        assert variant in dom, variant
    assert "<svg" in dom and "<polyline" in dom and "batch size" in dom  # the profile plot
    assert any(w["id"] in dom for w in open_stack["workers"]), [w["id"] for w in open_stack["workers"]]
    decision = open_stack["answers"][-1]["decision"]
    assert html.escape(decision["reason"], quote=False) in dom, decision["reason"]
    assert html.escape(open_stack["refused"]["message"], quote=False) in dom  # a refusal, with its reason
    assert "Objective met, by task" in dom and "100.0 %" in dom  # the generous objectives were all met
    assert "API key needed" not in dom and "auth off" in dom

    folder = os.environ.get("INFAAS_TEST_ARTEFACTS") or str(tmp_path)
    os.makedirs(folder, exist_ok=True)
    shot = os.path.join(folder, "console.png")
    if os.path.exists(shot):
        os.remove(shot)
    browse(url, str(tmp_path / "profile-shot"), f"--screenshot={shot}", "--window-size=1280,900")
    assert os.path.getsize(shot) > 10_000, shot
    with open(shot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    print(f"\nconsole screenshot: {shot}")


def test_console_assets_are_served_by_the_service(open_stack):
    with httpx.Client(base_url=open_stack["url"], timeout=10.0) as http:
        page = http.get("/console")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert "http://" not in page.text and "https://" not in page.text  # no CDN
        script = http.get("/console/console.js")
        assert script.status_code == 200 and "v1/console" in script.text
        state = http.get("/v1/console").json()
        assert state["auth"] == "off" and state["admin"] is True
        assert [m["name"] for m in state["models"]] == [ARCH]
        assert state["workers"] and state["decisions"] and state["objectives"][0]["task"] == digits.TASK


def test_with_keys_on_the_page_loads_and_asks_for_one(stack: Stack, tmp_path):
    """The e2e session's stack has keys on: the page itself needs none, its data does."""
    page = httpx.get(stack.url + "/console", timeout=10.0)
    assert page.status_code == 200
    assert httpx.get(stack.url + "/v1/console", timeout=10.0).status_code == 401
    dom = dump_dom(stack.url + "/console", str(tmp_path / "profile"))
    assert "API key needed" in dom
    assert 'id="keybox" class="show"' in dom and 'type="password"' in dom
    assert "logistic-regression" not in dom  # nothing of the tenant's without its key
    with_key = httpx.get(stack.url + "/v1/console", headers={"authorization": f"Bearer {stack.process.api_key}"},
                         timeout=10.0)
    assert with_key.status_code == 200 and {m["name"] for m in with_key.json()["models"]} >= {"logistic-regression"}
