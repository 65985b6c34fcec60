"""The ``infaas`` command as a person runs it: a child process against a real local stack on
127.0.0.1 (the session's ``stack``, tests/e2e/conftest.py), or against no stack at all.

Every failure is one ``error:`` line and exit status 1; listings are aligned tables, or the API's
JSON with ``--json``."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
from stack_support import ARCHITECTURES, Stack

from infaas.adapters.local.processes import free_port
from infaas.cli import digits
from infaas.local.launcher import StackProcess

pytestmark = pytest.mark.e2e

README_EXAMPLE = ["query", "--task", "classification/digits", "--min-accuracy", "0.97", "--latency-ms", "5",
                  "--json", "[[0, 0.1, ...64 values...]]"]
README_OBJECTIVE = ["--min-accuracy", "0.97", "--latency-ms", "5"]
UNREACHABLE = "error: cannot reach the INFaaS API at {url}: start it with 'infaas up' or set INFAAS_URL\n"


def cli(*argv: str, url: str | None = None, key: str | None = None, env: dict[str, str] | None = None,
        timeout_s: float = 120.0) -> subprocess.CompletedProcess:
    """``python -m infaas.cli ARGV`` with no INFAAS_* variable of this process, only those given."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("INFAAS_")}
    extra = {"INFAAS_URL": url, "INFAAS_API_KEY": key, **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "infaas.cli", *argv], env={**base, **{k: v for k, v in extra.items() if v}},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:  # e.g. an `infaas up` that should have refused to start: it and its workers go
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"infaas {' '.join(argv)} still running after {timeout_s:g} s:\n{out}\n{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run_ok(stack: Stack | StackProcess, *argv: str) -> str:
    """The output of a command that must succeed, sent with the stack's admin key."""
    proc = stack.process if isinstance(stack, Stack) else stack
    r = cli(*argv, url=proc.url, key=proc.api_key)
    assert r.returncode == 0 and r.stderr == "", (argv, r.stdout, r.stderr)
    return r.stdout


def one_error_line(r: subprocess.CompletedProcess) -> str:
    """The single ``error:`` line of a failed command (exit status 1, nothing else on stderr, no traceback)."""
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    return r.stderr


def table_rows(text: str) -> list[dict[str, str]]:
    """An aligned table as dicts; checks that every column is aligned (left: same start, right: same end)."""
    lines = text.rstrip("\n").split("\n")
    spans = [[m.span() for m in re.finditer(r"\S+(?: \S+)*", line)] for line in lines]  # cells: 2+ spaces apart
    width = len(spans[0])
    assert all(0 < len(s) <= width for s in spans), f"ragged table:\n{text}"  # only trailing cells may be empty
    for i in range(width):
        col = [s[i] for s in spans if len(s) > i]
        assert len({a for a, _ in col}) == 1 or len({b for _, b in col}) == 1, f"column {i} not aligned:\n{text}"
    assert all(line == line.rstrip() for line in lines)
    cells = [[line[a:b] for a, b in s] for line, s in zip(lines, spans)]
    return [dict(zip(cells[0], row + [""] * (width - len(row)))) for row in cells[1:]]


# --- 1. no server, and error answers: one line ----------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["models"], ["models", "mlp-32"], ["models", "delete", "mlp-32"], ["workers"], ["tasks"], ["events"],
    ["jobs", "list"], ["jobs", "status", "abc"], ["jobs", "submit", "--input", "in", "--output", "out", "--task", "t"],
    ["query", "--task", "classification/digits", "--json", "[[0.0, 0.1]]"],
], ids=" ".join)
def test_every_command_without_a_server_says_so_in_one_line(argv):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    r = cli(*argv, url=url)
    assert one_error_line(r) == UNREACHABLE.format(url=url)


def test_register_without_a_server_says_so_in_one_line(stack: Stack):
    url = f"http://127.0.0.1:{free_port()}"
    r = cli("register", stack.paths["mlp-32"], "--name", "x", "--task", "t/x", "--accuracy", "0.9", url=url)
    assert one_error_line(r) == UNREACHABLE.format(url=url)


def test_an_error_answer_is_one_line_with_status_and_message(stack: Stack):
    r = cli("models", "no-such-model", url=stack.url, key=stack.process.api_key)
    assert one_error_line(r) == "error: 404 not_found: no architecture named 'no-such-model'\n"
    r = cli("models", url=stack.url)  # no key
    assert one_error_line(r) == ("error: 401 unauthenticated: missing, unknown or revoked API key; send 'Authorization: "
                                 "Bearer <key>'; the CLI sends the key given by --api-key or INFAAS_API_KEY (create one "
                                 "with 'infaas tenants create')\n")


# --- 2. and 4. `infaas up` refuses a busy port and a data dir in use, at once, in one line ------------

def test_up_on_a_busy_port_fails_at_once_naming_the_port(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = cli("up", "--port", str(port), "--workers", "1", "--data-dir", str(tmp_path / "data"), timeout_s=60)
    assert "is up" not in r.stdout
    assert one_error_line(r) == (f"error: port {port} on 127.0.0.1 is already in use (another 'infaas up' or another "
                                 "program); choose another port with --port N or INFAAS_PORT=N\n")
    # the same through INFAAS_PORT
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = cli("up", "--workers", "1", "--data-dir", str(tmp_path / "data"), env={"INFAAS_PORT": str(port)}, timeout_s=60)
    assert "is up" not in r.stdout and f"port {port} on 127.0.0.1 is already in use" in one_error_line(r)


def test_a_second_up_on_a_data_dir_fails_at_once_naming_the_dir_and_the_pid(tmp_path):
    data_dir = str(tmp_path / "data")
    with StackProcess(workers=1, data_dir=data_dir, log_path=str(tmp_path / "first.log")) as first:
        r = cli("up", "--port", str(free_port()), "--workers", "1", "--data-dir", data_dir, timeout_s=60)
        assert "is up" not in r.stdout
        assert one_error_line(r) == (f"error: the data dir {data_dir} is in use by another 'infaas up' (pid "
                                     f"{first.proc.pid}); stop that one, or give this one its own with --data-dir or "
                                     "INFAAS_DATA_DIR\n")
        # the first one is untouched: one worker, its own
        assert [w["id"] for w in table_rows(run_ok(first, "workers"))] == ["cpu-1"]


# --- 3. the address comes from INFAAS_PORT when INFAAS_URL is unset ---------------------------------

def test_the_default_address_follows_infaas_port(stack: Stack):
    port = stack.url.rsplit(":", 1)[1]
    r = cli("tasks", key=stack.process.api_key, env={"INFAAS_PORT": port})
    assert r.returncode == 0, r.stderr
    assert digits.TASK in {t["task"] for t in table_rows(r.stdout)}
    url = f"http://127.0.0.1:{free_port()}"
    r = cli("tasks", env={"INFAAS_PORT": url.rsplit(":", 1)[1]})
    assert one_error_line(r) == UNREACHABLE.format(url=url)


# --- 5. and 6. models delete, jobs list, tasks; tables and --json -----------------------------------

def test_models_list_and_show_are_tables_with_json_for_scripts(stack: Stack):
    rows = {m["name"]: m for m in table_rows(run_ok(stack, "models"))}
    for name in ARCHITECTURES:
        assert rows[name]["task"] == digits.TASK and rows[name]["status"] == "ready"
    assert json.loads(run_ok(stack, "models", "--json")) == {"models": stack.client.models()}

    out = run_ok(stack, "models", "mlp-32")
    head, variants = out.split("\n  variant", 1)
    assert head.startswith(f"mlp-32 ({digits.TASK}, private, owner local): ready")
    assert "inputs: X float32 [-1, 64]" in head
    listed = table_rows("\n".join(line[2:] for line in ("  variant" + variants).splitlines()))
    assert {v["variant"] for v in listed} == {v["id"] for v in stack.client.model("mlp-32")["variants"]}
    assert json.loads(run_ok(stack, "models", "mlp-32", "--json"))["variants"] == stack.client.model("mlp-32")["variants"]


def test_models_delete_deletes_and_says_so(stack: Stack):
    name = "cli-delete-me"
    out = run_ok(stack, "register", stack.paths["logistic-regression"], "--name", name, "--task", "classification/cli-delete",
                 "--accuracy", "0.9", "--wait")
    assert out.startswith(f"registered {name} for classification/cli-delete")
    variants = len(stack.client.model(name)["variants"])
    assert run_ok(stack, "models", "delete", name) == f"deleted model {name} (classification/cli-delete) and its {variants} variant(s)\n"
    assert name not in {m["name"] for m in table_rows(run_ok(stack, "models"))}
    r = cli("models", "delete", name, url=stack.url, key=stack.process.api_key)
    assert one_error_line(r) == f"error: 404 not_found: no architecture named '{name}'\n"


def test_tasks_table_and_json(stack: Stack):
    rows = {t["task"]: t for t in table_rows(run_ok(stack, "tasks"))}
    assert set(rows[digits.TASK]["architectures"].split(", ")) >= set(ARCHITECTURES)
    assert rows[digits.TASK]["inputs"] == "X float32 [-1, 64]"
    assert json.loads(run_ok(stack, "tasks", "--json")) == stack.http.get("/v1/tasks").json()


def test_jobs_list_table_and_json(stack: Stack):
    folder = os.path.join(stack.data_dir, "offline", "local", "cli-jobs-in")  # the tenant's offline root
    os.makedirs(folder, exist_ok=True)
    np.save(os.path.join(folder, "rows.npy"), stack.data.x_test[:4])
    out = run_ok(stack, "jobs", "submit", "--input", "cli-jobs-in", "--output", "cli-jobs-out",
                 "--architecture", "mlp-32", "-q")
    job_id = out.strip().splitlines()[-1]
    run_ok(stack, "jobs", "wait", job_id)
    rows = {j["id"]: j for j in table_rows(run_ok(stack, "jobs", "list"))}
    assert rows[job_id]["state"] == "done" and rows[job_id]["done"] == "1" and rows[job_id]["rows"] == "4"
    assert rows[job_id]["variant"].startswith("mlp-32:")
    assert json.loads(run_ok(stack, "jobs", "list", "--json")) == stack.http.get("/v1/jobs").json()


def test_workers_events_and_tenants_are_tables_with_json(stack: Stack):
    workers = table_rows(run_ok(stack, "workers"))
    api = stack.http.get("/v1/workers").json()
    assert sorted(w["id"] for w in workers) == sorted(w["id"] for w in api["workers"])
    assert {w["state"] for w in workers} == {"up"}
    assert set(json.loads(run_ok(stack, "workers", "--json"))) == {"workers"}

    out = run_ok(stack, "events")
    assert out == "no autoscaling events yet\n" or list(table_rows(out)[0]) == ["time", "kind", "reason"]
    assert isinstance(json.loads(run_ok(stack, "events", "--json"))["events"], list)

    keys = table_rows(run_ok(stack, "tenants", "list", "--data-dir", stack.data_dir))
    assert {"local"} <= {k["tenant"] for k in keys} and {k["state"] for k in keys} <= {"active", "revoked"}
    listed = json.loads(run_ok(stack, "tenants", "list", "--data-dir", stack.data_dir, "--json"))["keys"]
    assert sorted(k["key_id"] for k in listed) == sorted(k["key id"] for k in keys)
    assert all("sha256" not in k for k in listed)  # never the secret's digest


# --- 7. --dtype for every input form ------------------------------------------------------------------

def test_query_casts_npy_and_npz_rows_to_dtype(stack: Stack, tmp_path):
    x = stack.data.x_test[:5].astype(np.float64)  # what numpy writes unless told otherwise; the model takes float32
    np.save(tmp_path / "rows.npy", x)
    np.savez(tmp_path / "rows.npz", inputs=x)
    expected = stack.expected("mlp-32", x.astype(np.float32)).tolist()
    for path in ("rows.npy", "rows.npz"):
        out = run_ok(stack, "query", "--architecture", "mlp-32", "--input", str(tmp_path / path), "--dtype", "float32")
        assert json.loads(out)["outputs"]["label"] == expected, path
    r = cli("query", "--architecture", "mlp-32", "--input", str(tmp_path / "rows.npy"), url=stack.url,
            key=stack.process.api_key)  # without --dtype the file's float64 goes as it is: the API says what it takes
    assert one_error_line(r) == ("error: 400 invalid_input: input 'X' has dtype float64, the model takes float32 "
                                 "(cast the rows with --dtype)\n")
    r = cli("query", "--architecture", "mlp-32", "--input", str(tmp_path / "rows.npy"), "--dtype", "int64",
            url=stack.url, key=stack.process.api_key)
    assert "cannot cast float64 values to int64 without changing them" in one_error_line(r)


# --- 8. the README's query example, and the lines recommended instead ----------------------------------

def test_the_readme_json_example_says_what_is_wrong_in_one_line(stack: Stack):
    r = cli(*README_EXAMPLE, url=stack.url, key=stack.process.api_key)
    assert one_error_line(r) == ("error: --json: not valid JSON at char 10 ('...64 values...]]'): Expecting value "
                                 "('...' is not a value); give the full rows, e.g. --json '[[0.0, 0.1]]'\n")


DIGIT_ZERO = """[[
  0, 0, 0.3125, 0.8125, 0.5625, 0.0625, 0, 0,
  0, 0, 0.8125, 0.9375, 0.625, 0.9375, 0.3125, 0,
  0, 0.1875, 0.9375, 0.125, 0, 0.6875, 0.5, 0,
  0, 0.25, 0.75, 0, 0, 0.5, 0.5, 0,
  0, 0.3125, 0.5, 0, 0, 0.5625, 0.5, 0,
  0, 0.25, 0.6875, 0, 0.0625, 0.75, 0.4375, 0,
  0, 0.125, 0.875, 0.3125, 0.625, 0.75, 0, 0,
  0, 0, 0.375, 0.8125, 0.625, 0, 0, 0
]]"""  # load_digits().data[0] / 16: an 8x8 image of a 0, as recommended for the README


def _answer_matches_sklearn(stack: Stack, out: str, x: np.ndarray) -> None:
    answer = json.loads(out)
    architecture = answer["decision"]["variant"].split(":")[0]
    assert answer["outputs"]["label"] == stack.expected(architecture, x).tolist()


def test_the_recommended_readme_query_lines_run(stack: Stack, tmp_path):
    from sklearn.datasets import load_digits

    x = (load_digits().data[:5] / 16).astype(np.float32)
    assert json.loads(DIGIT_ZERO) == x[:1].tolist()
    out = run_ok(stack, "query", "--task", "classification/digits", *README_OBJECTIVE, "--json", DIGIT_ZERO)
    _answer_matches_sklearn(stack, out, x[:1])
    make_npy = ("from sklearn.datasets import load_digits; import numpy as np; "
                "np.save('digits.npy', (load_digits().data[:5] / 16).astype(np.float32))")
    subprocess.run([sys.executable, "-c", make_npy], cwd=tmp_path, check=True)
    out = run_ok(stack, "query", "--task", "classification/digits", *README_OBJECTIVE, "--input", str(tmp_path / "digits.npy"))
    _answer_matches_sklearn(stack, out, x)
