"""A Lambda fidelity harness: the functions as deployed, behind API Gateway's rules, on moto.

What runs, and how it differs from calling a handler in the test's own process:

* **The artefacts as built.** The layer comes from ``layers/build.py`` (the same pip
  ``--platform`` install, pruning and bytecode as ``make layers``), built into a cache folder
  named after its content (``INFAAS_LAMBDA_LAYER_CACHE``, else under the temporary folder),
  so a session builds it at most once and later sessions reuse it. Each function's code is
  ``cdk/infaas_cdk/artifacts.stage_function``'s output: exactly the folder the stack uploads.
* **Lambda's interpreter, and only those files.** Each function runs in a child process of
  Lambda's Python version (3.12; ``layers/build.py: find_python``) started with ``-I -S -B``:
  its ``sys.path`` holds the function folder, the layer, the runtime's boto3/botocore (Lambda
  provides those; they are taken from this virtualenv, pure Python) and the standard library,
  nothing from the test's site-packages; no bytecode is written, as on Lambda's read-only disks.
  Where no 3.12 interpreter exists the harness uses this one with a layer built for its version
  (``LambdaAssets.python_version`` says which ran).
* **Frozen between invocations.** A function's process runs only while an invocation is in
  flight: it is stopped with SIGSTOP as soon as it answers and continued with SIGCONT for the
  next, so a thread it started (a background refresh, a connection pool's keep-alive) makes no
  progress in between, as in a frozen execution environment. One invocation at a time per
  process, as Lambda does; a timed-out invocation loses its environment (the process is killed
  and the next invocation starts cold).
* **API Gateway's REST proxy rules** (``ApiGateway``): the stack's routes; a request body is
  base64 in the event exactly when its ``Content-Type`` is one of the API's binary media types
  (read from ``cdk/infaas_cdk/api.py``), else passed as text; a base64 answer is turned back into
  bytes only when the request's first ``Accept`` type is a binary media type, else the client
  gets the base64 text; 10 MB request limit (413), Lambda's 6 MB invocation payload limits
  (413 in, 502 out), 29 s integration timeout (504) counted from the request's arrival and
  including a cold start; a function error or a malformed answer is a 502.
* ``HttpFront``: API Gateway as a loopback HTTP server (127.0.0.1), for clients that speak HTTP
  (``tritonclient``).

The caller's identity, on either of the stack's two APIs (``cdk/infaas_cdk/api.py``):

* the IAM API (an ``ApiGateway`` without an authorizer): what IAM authorisation establishes
  (``requestContext.identity.userArn``); the harness is told whose request it is;
* the API-key API (``ApiGateway(authorizer=...)``): API Gateway's REQUEST authorizer rules -- no
  ``Authorization`` header is a 401 without a call; otherwise the authorizer function (itself run
  as deployed) gets the REQUEST event with the method's ARN; ``Unauthorized`` raised is a 401, any
  other failure a 500; its policy is evaluated against the method's ARN (an explicit Deny wins, no
  Allow is a 403); its answer is cached per header value for the result TTL (``AUTHORIZER_TTL_S``
  unless told otherwise) and reused for every method; the integration gets its context as
  ``requestContext.authorizer`` and no IAM identity.
"""

from __future__ import annotations

import ast
import base64
import fnmatch
import http.server
import json
import os
import select
import signal
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = Path(__file__).with_name("lambda_bootstrap.py")
REGION, ACCOUNT = "us-east-1", "123456789012"

API_TIMEOUT_S = 29.0  # API Gateway's integration timeout (a product rule: the functions' timeout too)
API_MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway REST request payload
LAMBDA_MAX_REQUEST_BYTES = 6 * 1024 * 1024  # synchronous invocation payload (the event as JSON)
LAMBDA_MAX_RESPONSE_BYTES = 6 * 1024 * 1024 + 100
# boto3 and what it needs: provided by Lambda's Python runtime (/var/runtime), not by the layer
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six.py")


def _api_constant(name: str) -> Any:
    """A constant of ``cdk/infaas_cdk/api.py``, read without importing the CDK."""
    tree = ast.parse((ROOT / "cdk" / "infaas_cdk" / "api.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"cdk/infaas_cdk/api.py declares no {name}")


def binary_media_types() -> list[str]:
    """``BINARY_MEDIA_TYPES`` of ``cdk/infaas_cdk/api.py``."""
    return list(_api_constant("BINARY_MEDIA_TYPES"))


def authorizer_ttl_s() -> float:
    """``AUTHORIZER_TTL_S`` of ``cdk/infaas_cdk/api.py``: how long API Gateway reuses an authorizer's answer."""
    return float(_api_constant("AUTHORIZER_TTL_S"))


# The stack's routes (cdk/infaas_cdk/api.py): (method or ANY, resource, function)
ROUTES = (
    ("POST", "/v1/infer", "selector"),
    ("ANY", "/v1/{proxy+}", "frontend"),
    ("ANY", "/v2", "selector"),
    ("ANY", "/v2/{proxy+}", "selector"),
    ("GET", "/openapi.json", "frontend"),
)


def _load_module(name: str, path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class LambdaAssets:
    python: str
    python_version: str
    layer: Path  # the layer's python/ folder (/opt/python)
    runtime: Path  # boto3 and botocore (/var/runtime)
    functions: dict[str, Path]  # name -> staged code (/var/task)
    bytecode: bool
    build_s: float


def build_assets(workdir: Path, names=("frontend", "selector", "autoscaler", "authorizer")) -> LambdaAssets:
    """The layer (cached by content) and the staged functions, ready to run."""
    t0 = time.perf_counter()
    build = _load_module("infaas_layers_build_harness", ROOT / "layers" / "build.py")
    version = build.PYTHON_VERSION
    python = build.find_python(version)
    if python is None:  # no interpreter of Lambda's version here: this one, with a layer built for it
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        python = sys.executable
    cache = Path(os.environ.get("INFAAS_LAMBDA_LAYER_CACHE") or Path(tempfile.gettempdir()) / "infaas-lambda-layers")
    out = cache / f"py{version}-{build._fingerprint(version, True)[:16]}"
    build.build(out=out, python_version=version)
    sys.path.insert(0, str(ROOT / "cdk"))
    try:
        from infaas_cdk.artifacts import stage_function
    finally:
        sys.path.remove(str(ROOT / "cdk"))
    functions = {name: stage_function(name, workdir / "functions" / name) for name in names}
    runtime = workdir / "runtime"
    runtime.mkdir(parents=True, exist_ok=True)
    import boto3

    site = Path(boto3.__file__).resolve().parents[1]
    for name in RUNTIME_PACKAGES:
        link = runtime / name
        if not link.exists():
            link.symlink_to(site / name)
    manifest = json.loads((out / "manifest.json").read_text())
    return LambdaAssets(python, version, out / "python", runtime, functions, bool(manifest.get("bytecode")),
                        time.perf_counter() - t0)


@dataclass
class Invocation:
    result: Any = None
    error: dict | None = None
    timed_out: bool = False
    cold: bool = False
    init_s: float | None = None
    duration_s: float = 0.0


class LambdaFunction:
    """One function's execution environment: a process of Lambda's Python, frozen when idle."""

    def __init__(self, name: str, assets: LambdaAssets, env: Mapping[str, str], log_path: Path, *,
                 timeout_s: float = API_TIMEOUT_S, memory_mb: int = 1024, handler: str = "handler.handler") -> None:
        self.name, self.assets, self.timeout_s, self.memory_mb, self.handler = name, assets, timeout_s, memory_mb, handler
        self.env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "LAMBDA_TASK_ROOT": str(assets.functions[name]),
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
            "AWS_LAMBDA_FUNCTION_NAME": f"infaas-{name}",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/infaas-{name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": "harness",
            "POWERTOOLS_SERVICE_NAME": f"infaas-{name}",
            **env,
        }
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.lock = threading.Lock()
        self.cold_starts: list[dict] = []  # one record per init: init_s, modules
        self._to: int | None = None
        self._from: int | None = None
        self._buffer = b""

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:infaas-{self.name}"

    def _start(self, deadline: float) -> dict | None:
        req_r, req_w = os.pipe()
        ans_r, ans_w = os.pipe()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [self.assets.python, "-I", "-S", "-B", str(BOOTSTRAP), str(self.assets.functions[self.name]),
             str(self.assets.layer), str(self.assets.runtime), self.handler, str(req_r), str(ans_w)],
            env=self.env, cwd=str(self.assets.functions[self.name]), stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, pass_fds=(req_r, ans_w),
        )
        log.close()
        os.close(req_r)
        os.close(ans_w)
        self._to, self._from, self._buffer = req_w, ans_r, b""
        init = self._read(deadline)
        if init is None or "init_error" in init:
            self.kill()
            return init
        self.cold_starts.append(init)
        return init

    def _read(self, deadline: float) -> dict | None:
        """One line from the function, or None at the deadline (or if it died)."""
        while b"\n" not in self._buffer:
            left = deadline - time.time()
            if left <= 0:
                return None
            ready, _, _ = select.select([self._from], [], [], left)
            if not ready:
                return None
            chunk = os.read(self._from, 1 << 20)
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def invoke(self, event: Any, *, deadline: float | None = None) -> Invocation:
        """One synchronous invocation; ``deadline`` (time.time()) defaults to the function's timeout."""
        with self.lock:
            started = time.time()
            deadline = min(deadline or started + self.timeout_s, started + self.timeout_s)
            out = Invocation()
            if self.proc is None or self.proc.poll() is not None:
                init = self._start(deadline)
                if init is None or "init_error" in init:
                    return Invocation(error={"errorType": "Runtime.InitError", "errorMessage": str(init)},
                                      timed_out=init is None, cold=True, duration_s=time.time() - started)
                out.cold, out.init_s = True, init["init_s"]
            else:
                os.kill(self.proc.pid, signal.SIGCONT)
            request = {"event": event, "request_id": str(uuid.uuid4()), "function_arn": self.arn,
                       "timeout_ms": int((deadline - time.time()) * 1000)}
            os.write(self._to, (json.dumps(request) + "\n").encode())
            answer = self._read(deadline)
            out.duration_s = time.time() - started
            if answer is None:  # timed out (or crashed): Lambda discards the environment
                out.timed_out = self.proc.poll() is None
                out.error = {"errorType": "Sandbox.Timedout" if out.timed_out else "Runtime.ExitError",
                             "errorMessage": f"Task timed out after {self.timeout_s:.2f} seconds"
                             if out.timed_out else "the runtime exited"}
                self.kill()
                return out
            os.kill(self.proc.pid, signal.SIGSTOP)  # frozen until the next invocation
            out.result, out.error = answer.get("result"), answer.get("error")
            return out

    def kill(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None
        for fd in (self._to, self._from):
            if fd is not None:
                os.close(fd)
        self._to = self._from = None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _media(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def _matches(media: str, patterns: list[str]) -> bool:
    for p in patterns:
        p = p.lower()
        if p == "*/*" or p == media or (p.endswith("/*") and media.startswith(p[:-1])):
            return True
    return False


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    invocation: Invocation | None = None

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def json(self) -> Any:
        return json.loads(self.body)


def _gateway_error(status: int, message: str) -> Response:
    return Response(status, [("Content-Type", "application/json"), ("x-amzn-ErrorType", message)],
                    json.dumps({"message": message}).encode())


@dataclass
class ApiGateway:
    """The REST API's proxy integrations in front of the functions (module docstring)."""

    functions: Mapping[str, LambdaFunction]
    caller_arn: str = f"arn:aws:iam::{ACCOUNT}:user/tester"
    binary_types: list[str] = field(default_factory=binary_media_types)
    stage: str = "api"
    api_id: str = "harness01"
    authorizer: LambdaFunction | None = None  # the API-key API's REQUEST authorizer; None: the IAM API
    authorizer_ttl_s: float = field(default_factory=authorizer_ttl_s)
    authorizer_calls: int = 0
    _auth_cache: dict = field(default_factory=dict, repr=False)  # Authorization value -> (until, answer)

    def method_arn(self, method: str, path: str) -> str:
        return f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{self.api_id}/{self.stage}/{method}{path}"

    def _authorize(self, method: str, path: str, resource: str, headers: list[tuple[str, str]], query: str,
                   path_parameters: dict | None, deadline: float) -> tuple[dict | None, Response | None]:
        """API Gateway's REQUEST authorizer with the ``Authorization`` header as identity source:
        (the authorizer's answer, None) or (None, the gateway's answer)."""
        token = next((v for k, v in headers if k.lower() == "authorization"), None)
        if not token:
            return None, _gateway_error(401, "Unauthorized")
        arn = self.method_arn(method, path)
        now = time.time()
        hit = self._auth_cache.get(token)
        if hit is not None and now < hit[0]:
            answer = hit[1]
        else:
            event = self.event(method, path, headers, b"", query, resource, path_parameters)
            event = {"type": "REQUEST", "methodArn": arn, **{k: v for k, v in event.items()
                                                               if k not in ("body", "isBase64Encoded")}}
            self.authorizer_calls += 1
            invocation = self.authorizer.invoke(event, deadline=deadline)
            if invocation.error is not None and invocation.error.get("errorMessage") == "Unauthorized":
                return None, _gateway_error(401, "Unauthorized")
            answer = invocation.result
            if invocation.error is not None or not isinstance(answer, dict) or "policyDocument" not in answer \
                    or "principalId" not in answer:
                return None, Response(500, [("Content-Type", "application/json"),
                                            ("x-amzn-ErrorType", "AuthorizerConfigurationException")],
                                      b'{"message": null}', invocation)
            if self.authorizer_ttl_s > 0:
                self._auth_cache[token] = (now + self.authorizer_ttl_s, answer)
        if not _policy_allows(answer["policyDocument"], arn):
            return None, Response(403, [("Content-Type", "application/json"), ("x-amzn-ErrorType", "AccessDeniedException")],
                                  b'{"Message":"User is not authorized to access this resource"}')
        return answer, None

    def route(self, method: str, path: str) -> tuple[str, str, dict | None] | None:
        for verb, resource, function in ROUTES:
            if verb not in ("ANY", method):
                continue
            if resource.endswith("/{proxy+}"):
                base = resource[: -len("/{proxy+}")]
                if path.startswith(base + "/") and len(path) > len(base) + 1:
                    return function, resource, {"proxy": path[len(base) + 1:]}
            elif path == resource:
                return function, resource, None
        return None

    def event(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes, query: str,
              resource: str, path_parameters: dict | None, authorized: dict | None = None) -> dict:
        single: dict[str, str] = {}
        multi: dict[str, list[str]] = {}
        for k, v in headers:
            single[k] = v
            multi.setdefault(k, []).append(v)
        params: dict[str, list[str]] = {}
        from urllib.parse import parse_qsl

        for k, v in parse_qsl(query, keep_blank_values=True):
            params.setdefault(k, []).append(v)
        content_type = next((v for k, v in headers if k.lower() == "content-type"), None)
        binary = bool(body) and _matches(_media(content_type), self.binary_types)
        if not body:
            text = None
        elif binary:
            text = base64.b64encode(body).decode()
        else:
            text = body.decode("utf-8", errors="replace")  # API Gateway passes a text body as text
        return {
            "resource": resource,
            "path": path,
            "httpMethod": method,
            "headers": single or None,
            "multiValueHeaders": multi or None,
            "queryStringParameters": {k: v[-1] for k, v in params.items()} or None,
            "multiValueQueryStringParameters": params or None,
            "pathParameters": path_parameters,
            "stageVariables": None,
            "requestContext": {
                "accountId": ACCOUNT, "apiId": self.api_id, "resourcePath": resource, "httpMethod": method,
                "path": f"/{self.stage}{path}", "stage": self.stage, "protocol": "HTTP/1.1",
                "requestId": str(uuid.uuid4()), "requestTimeEpoch": int(time.time() * 1000),
                "identity": {"sourceIp": "127.0.0.1", "userAgent": single.get("User-Agent"),
                             **({} if self.authorizer is not None else {
                                 "userArn": self.caller_arn, "caller": "AIDAHARNESS", "accessKey": "AKIAHARNESS",
                                 "user": "AIDAHARNESS"})},
                "domainName": f"{self.api_id}.execute-api.{REGION}.amazonaws.com",
                **({} if authorized is None else {"authorizer": {
                    **(authorized.get("context") or {}), "principalId": authorized["principalId"],
                    "integrationLatency": 0}}),
            },
            "body": text,
            "isBase64Encoded": binary,
        }

    def request(self, method: str, path: str, *, headers: list[tuple[str, str]] | Mapping[str, str] | None = None,
                body: bytes = b"", query: str = "") -> Response:
        received = time.time()
        headers = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
        if len(body) > API_MAX_BODY_BYTES:
            return _gateway_error(413, "Request Too Long")
        found = self.route(method, path)
        if found is None:
            return _gateway_error(403, "Missing Authentication Token")
        name, resource, path_parameters = found
        headers = [(k, v) for k, v in headers if k.lower() not in ("connection", "keep-alive", "transfer-encoding")]
        headers += [("X-Forwarded-For", "127.0.0.1"), ("X-Forwarded-Proto", "https"), ("X-Forwarded-Port", "443")]
        authorized = None
        if self.authorizer is not None:
            authorized, refused = self._authorize(method, path, resource, headers, query, path_parameters,
                                                  received + API_TIMEOUT_S)
            if refused is not None:
                return refused
        event = self.event(method, path, headers, body, query, resource, path_parameters, authorized)
        if len(json.dumps(event)) > LAMBDA_MAX_REQUEST_BYTES:
            return _gateway_error(413, "Request Entity Too Large")
        invocation = self.functions[name].invoke(event, deadline=received + API_TIMEOUT_S)
        if invocation.timed_out or time.time() - received > API_TIMEOUT_S:
            return Response(504, [("Content-Type", "application/json")],
                            json.dumps({"message": "Endpoint request timed out"}).encode(), invocation)
        result = invocation.result
        if invocation.error is not None or not isinstance(result, dict) or "statusCode" not in result \
                or len(json.dumps(result)) > LAMBDA_MAX_RESPONSE_BYTES:
            return Response(502, [("Content-Type", "application/json")],
                            json.dumps({"message": "Internal server error"}).encode(), invocation)
        out_headers = [(k, str(v)) for k, v in (result.get("headers") or {}).items()]
        for k, values in (result.get("multiValueHeaders") or {}).items():
            out_headers = [(h, v) for h, v in out_headers if h.lower() != k.lower()] + [(k, str(v)) for v in values]
        payload = result.get("body") or ""
        accept = next((v for k, v in headers if k.lower() == "accept"), None)
        first_accept = _media((accept or "").split(",", 1)[0])
        if result.get("isBase64Encoded") and _matches(first_accept, self.binary_types):
            data = base64.b64decode(payload)
        else:  # text, or base64 the client did not ask for as binary: passed on as it is
            data = payload.encode() if isinstance(payload, str) else bytes(payload)
        out_headers = [(k, v) for k, v in out_headers if k.lower() != "content-length"]
        return Response(int(result["statusCode"]), out_headers, data, invocation)


def _policy_allows(policy: dict, arn: str) -> bool:
    """IAM evaluation of an authorizer's policy for one method ARN: an explicit Deny wins, then any Allow."""
    allowed = False
    for statement in policy.get("Statement") or []:
        actions = statement.get("Action")
        actions = [actions] if isinstance(actions, str) else list(actions or [])
        if not any(fnmatch.fnmatchcase("execute-api:Invoke", a) for a in actions):
            continue
        resources = statement.get("Resource")
        resources = [resources] if isinstance(resources, str) else list(resources or [])
        if any(fnmatch.fnmatchcase(arn, r.replace("[", "[[]")) for r in resources):
            if statement.get("Effect") == "Deny":
                return False
            allowed = allowed or statement.get("Effect") == "Allow"
    return allowed


class HttpFront:
    """``ApiGateway`` as an HTTP server on 127.0.0.1 (one thread per connection, HTTP/1.1 keep-alive)."""

    def __init__(self, gateway: ApiGateway) -> None:
        self.gateway = gateway
        front = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path, _, query = self.path.partition("?")
                r = front.gateway.request(self.command, path, headers=list(self.headers.items()), body=body, query=query)
                self.send_response(r.status)
                for k, v in r.headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(r.body)))
                self.end_headers()
                self.wfile.write(r.body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _any

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host}:{port}"

    def __enter__(self) -> "HttpFront":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def build_inference_assets(workdir: Path) -> LambdaAssets:
    """The serverless tier's inference function as deployed: its own layer (onnxruntime and numpy,
    ``layers/build.py build_inference``, cached by content like the functions' layer) and its staged code."""
    t0 = time.perf_counter()
    build = _load_module("infaas_layers_build_harness", ROOT / "layers" / "build.py")
    version = build.PYTHON_VERSION
    python = build.find_python(version)
    if python is None:  # no interpreter of Lambda's version here: this one, with a layer built for it
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        python = sys.executable
    cache = Path(os.environ.get("INFAAS_LAMBDA_LAYER_CACHE") or Path(tempfile.gettempdir()) / "infaas-lambda-layers")
    fingerprint = build._fingerprint(version, True, build.INFERENCE_REQUIREMENTS, build.INFERENCE_PLATFORM)
    out = cache / f"inference-py{version}-{fingerprint[:16]}"
    build.build_inference(out=out, python_version=version)
    sys.path.insert(0, str(ROOT / "cdk"))
    try:
        from infaas_cdk.artifacts import stage_function
    finally:
        sys.path.remove(str(ROOT / "cdk"))
    function = stage_function("inference", workdir / "functions" / "inference")
    runtime = workdir / "runtime"
    runtime.mkdir(parents=True, exist_ok=True)
    import boto3

    site = Path(boto3.__file__).resolve().parents[1]
    for name in RUNTIME_PACKAGES:
        link = runtime / name
        if not link.exists():
            link.symlink_to(site / name)
    manifest = json.loads((out / "manifest.json").read_text())
    return LambdaAssets(python, version, out / "python", runtime, {"inference": function},
                        bool(manifest.get("bytecode")), time.perf_counter() - t0)


class LambdaService:
    """Lambda's Invoke API (``POST /2015-03-31/functions/{name}/invocations``) on 127.0.0.1, in front of
    ``LambdaFunction`` environments: what a boto3 Lambda client pointed at it (``AWS_ENDPOINT_URL_LAMBDA``)
    reaches. ``RequestResponse`` only. Each function has one execution environment, so its reserved
    concurrency is 1: an invocation that finds it busy is throttled (429 ``TooManyRequestsException``),
    as Lambda throttles past a function's concurrency. A function that raised answers 200 with
    ``X-Amz-Function-Error: Unhandled``; an unknown name is 404 ``ResourceNotFoundException``; an event
    over 6 MB is 413 ``RequestTooLargeException``. Every invocation is kept in ``calls`` (name, event,
    ``Invocation``) for the test to read what the function reported."""

    def __init__(self, functions: Mapping[str, LambdaFunction]) -> None:
        self.functions = dict(functions)  # function name (as the caller names it) -> its environment
        self.calls: list[tuple[str, Any, Invocation]] = []
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, status: int, body: bytes, headers: Mapping[str, str] = {}) -> None:
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", "x-amzn-RequestId": str(uuid.uuid4()),
                             **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _error(self, status: int, kind: str, message: str) -> None:
                self._send(status, json.dumps({"Type": "User", "message": message}).encode(),
                           {"x-amzn-ErrorType": kind})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = self.path.split("?", 1)[0].strip("/").split("/")
                if len(parts) != 4 or parts[:2] != ["2015-03-31", "functions"] or parts[3] != "invocations":
                    return self._error(404, "UnknownOperationException", f"no such operation: {self.path}")
                from urllib.parse import unquote

                name = unquote(parts[2]).rsplit(":function:", 1)[-1]
                fn = service.functions.get(name)
                if fn is None:
                    return self._error(404, "ResourceNotFoundException", f"Function not found: {name}")
                kind = self.headers.get("X-Amz-Invocation-Type") or "RequestResponse"
                if kind != "RequestResponse":
                    return self._error(400, "InvalidParameterValueException", f"only RequestResponse here, not {kind}")
                if len(body) > LAMBDA_MAX_REQUEST_BYTES:
                    return self._error(413, "RequestTooLargeException", "Request must be smaller than 6291456 bytes")
                if fn.lock.locked():
                    return self._error(429, "TooManyRequestsException", "Rate Exceeded.")
                event = json.loads(body) if body else {}
                invocation = fn.invoke(event)
                service.calls.append((name, event, invocation))
                if invocation.error is not None:
                    return self._send(200, json.dumps(invocation.error).encode(),
                                      {"X-Amz-Function-Error": "Unhandled", "X-Amz-Executed-Version": "$LATEST"})
                payload = json.dumps(invocation.result).encode()
                if len(payload) > LAMBDA_MAX_RESPONSE_BYTES:
                    return self._send(200, json.dumps({"errorType": "Function.ResponseSizeTooLarge",
                                                       "errorMessage": "Response payload size exceeded"}).encode(),
                                      {"X-Amz-Function-Error": "Unhandled"})
                self._send(200, payload, {"X-Amz-Executed-Version": "$LATEST"})

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "LambdaService":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
