"""Helpers for the integration suites: load a Lambda handler, build its events."""

from __future__ import annotations

import base64
import importlib.util
import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
ACCOUNT = "123456789012"


# where ``model_files`` (conftest) puts the inference function's models in the model bucket
MODEL_KEY = "variants/lr/0123456789abcdef/lr_ort-fp32_lambda_b8.onnx"
OTHER_MODEL_KEY = "variants/lr/0123456789abcdef/lr_ort-int8_lambda_b8.onnx"


def load_function(name: str, module_name: str | None = None):
    """Import ``functions/<name>/handler.py`` as Lambda does (its folder on
    ``sys.path``), under a module name of its own so handlers do not clash."""
    folder = ROOT / "functions" / name
    spec = importlib.util.spec_from_file_location(module_name or f"fn_{name}_{uuid.uuid4().hex[:6]}", folder / "handler.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(folder))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
    return module


@dataclass
class LambdaContext:
    """What the Lambda runtime passes as ``context`` (the fields handlers read)."""

    function_name: str = "infaas-test"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:infaas-test"
    aws_request_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


def rest_event(method: str, path: str, *, body: bytes | str | None = None, headers: dict[str, str] | None = None,
               query: dict[str, str] | None = None, resource: str | None = None,
               path_parameters: dict[str, str] | None = None) -> dict[str, Any]:
    """An API Gateway REST (v1) proxy event, as the IAM-authorised stage sends it."""
    headers = {"host": "abc123.execute-api.us-east-1.amazonaws.com", **(headers or {})}
    binary = isinstance(body, bytes)
    return {
        "resource": resource or path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
        "pathParameters": path_parameters,
        "stageVariables": None,
        "requestContext": {
            "accountId": ACCOUNT,
            "apiId": "abc123",
            "resourcePath": resource or path,
            "httpMethod": method,
            "path": f"/api{path}",
            "stage": "api",
            "protocol": "HTTP/1.1",
            "requestId": str(uuid.uuid4()),
            "identity": {
                "sourceIp": "127.0.0.1",
                "userArn": f"arn:aws:iam::{ACCOUNT}:user/tester",
                "caller": "AIDATESTER",
                "accessKey": "AKIATESTER",
            },
        },
        "body": base64.b64encode(body).decode() if binary else body,
        "isBase64Encoded": binary,
    }


def json_body(response: dict[str, Any]) -> Any:
    raw = response["body"]
    if response.get("isBase64Encoded"):
        raw = base64.b64decode(raw)
    return json.loads(raw)


def start_worker(env: dict[str, str], data_dir: Path, worker_id: str, port: int | None = None):
    """``python -m infaas.worker`` on loopback, configured as a worker machine is
    (``/etc/infaas/worker.env``), against the moto server; ``proc.log_path`` is its log."""
    import os
    import subprocess

    from infaas.adapters.local.processes import free_port

    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    full = {**os.environ, **env, "INFAAS_HOST": "127.0.0.1", "INFAAS_DATA_DIR": str(data_dir),
            "INFAAS_MODEL_CACHE_DIR": str(data_dir / "cache"), "INFAAS_HEARTBEAT_S": "0.5",
            "INFAAS_QUEUE_WAIT_S": "1", "OMP_NUM_THREADS": "1"}
    log = open(data_dir / "worker.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "infaas.worker", "--hardware", "cpu", "--port", str(port),
                             "--worker-id", worker_id], env=full, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    proc.log_path = data_dir / "worker.log"
    proc.port = port
    return proc


def stop_worker(proc) -> None:
    import signal
    import subprocess

    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tail(path: Path, n: int = 40) -> str:
    return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
