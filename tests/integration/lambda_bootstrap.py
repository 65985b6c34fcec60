"""The Lambda runtime loop of the fidelity harness (``lambda_harness.py``), run by Lambda's Python.

Started as ``python -I -S -B lambda_bootstrap.py TASK LAYER RUNTIME HANDLER IN OUT`` with nothing on
``sys.path`` but the function's own folder (``/var/task``), the layer (``/opt/python``), the
runtime's own packages (boto3 and botocore, as Lambda provides them) and the standard library:
no site-packages, no bytecode written (Lambda's file systems are read-only).

Init: imports the handler module and reports how long that took (Lambda's *Init Duration*, less
the runtime's own start) and which top-level modules it loaded. Then one invocation per request
read from the pipe ``IN``, one answer written to the pipe ``OUT``, each a line of JSON. The harness stops this process
(SIGSTOP) whenever no invocation is in flight, as Lambda freezes an idle execution environment:
threads started by the handler make no progress between invocations. Everything the handler
prints goes to stdout/stderr, which the harness keeps as the function's log (CloudWatch Logs).
"""

import importlib
import json
import os
import sys
import time
import traceback

T0 = time.perf_counter()
TASK, LAYER, RUNTIME, HANDLER, FD_IN, FD_OUT = sys.argv[1:7]
STDLIB = [p for p in sys.path if p and "site-packages" not in p and not p.endswith(".py")
          and os.path.dirname(os.path.abspath(__file__)) != p]
sys.path[:] = [TASK, LAYER, RUNTIME, *STDLIB]

requests = os.fdopen(int(FD_IN), "r", encoding="utf-8")
answers = os.fdopen(int(FD_OUT), "w", encoding="utf-8")


def _send(doc) -> None:
    answers.write(json.dumps(doc) + "\n")
    answers.flush()


class Context:
    """What the Lambda runtime passes as ``context``."""

    def __init__(self, request: dict) -> None:
        self.function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = int(os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"])
        self.invoked_function_arn = request["function_arn"]
        self.aws_request_id = request["request_id"]
        self.log_group_name = os.environ["AWS_LAMBDA_LOG_GROUP_NAME"]
        self.log_stream_name = os.environ["AWS_LAMBDA_LOG_STREAM_NAME"]
        self.identity = self.client_context = None
        self._deadline = time.time() + request["timeout_ms"] / 1000.0

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.time()) * 1000))


module_name, _, function_name = HANDLER.rpartition(".")
try:
    module = importlib.import_module(module_name)
    handler = getattr(module, function_name)
except BaseException as exc:  # noqa: BLE001 - Lambda reports an init error and stops
    _send({"init_error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()})
    sys.exit(1)
init_s = time.perf_counter() - T0
_send({"init_s": init_s, "modules": sorted({m.split(".")[0] for m in sys.modules}),
       "infaas_modules": sorted(m for m in sys.modules if m.startswith("infaas")),
       "path": sys.path})

for line in requests:
    request = json.loads(line)
    try:
        result = handler(request["event"], Context(request))
        _send({"result": result})
    except Exception as exc:  # noqa: BLE001 - an unhandled error is the invocation's answer
        _send({"error": {"errorType": type(exc).__name__, "errorMessage": str(exc),
                         "stackTrace": traceback.format_exc().splitlines()}})
    sys.stdout.flush()
    sys.stderr.flush()
