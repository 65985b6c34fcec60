"""The CloudWatch metrics this deployment publishes, and the one way they are written.

The Lambda functions write each metric as one line in CloudWatch's embedded metric format
(EMF) on stdout (``emf``): no API call on the request path, and exactly the dimensions in
``DIMENSIONS`` -- the ones the CDK stack's alarms and dashboard read (``cdk/infaas_cdk``;
a test checks every alarm reads a series written here). Powertools' ``Metrics`` is not
used for this: it adds a ``service`` dimension to every metric, and an alarm on
``{Hardware}`` would then read a series nobody writes.
"""

from __future__ import annotations

import json
import sys
import time

NAMESPACE = "Infaas"
QUERY_LATENCY = "QueryLatency"  # Milliseconds, per Hardware; selector
QUERIES = "Queries"  # Count, per Hardware; selector
WORKER_FAULTS = "WorkerFaults"  # Count; selector (a query retried elsewhere)
REJECTED = "Rejected"  # Count, per Reason; selector (no feasible variant, bad input)
DESIRED_WORKERS = "DesiredWorkers"  # Count, per Hardware; autoscaler
UNHEALTHY_WORKERS = "UnhealthyWorkers"  # Count; autoscaler (instances marked unhealthy this period)
# the serverless tier (functions/inference), as the selector invoked it
FUNCTION_INVOCATIONS = "FunctionInvocations"  # Count, per Variant; answered invocations
FUNCTION_COLD_STARTS = "FunctionColdStarts"  # Count, per Variant; of those, the function loaded the model
FUNCTION_DURATION = "FunctionDuration"  # Milliseconds, per Variant; the invocation's round trip from the selector
FUNCTION_ERRORS = "FunctionErrors"  # Count; the function failed or refused (alarmed)
FUNCTION_THROTTLES = "FunctionThrottles"  # Count; no concurrency left, the query went to a machine or was refused (alarmed)

UNITS = {QUERY_LATENCY: "Milliseconds", QUERIES: "Count", WORKER_FAULTS: "Count", REJECTED: "Count",
         DESIRED_WORKERS: "Count", UNHEALTHY_WORKERS: "Count", FUNCTION_INVOCATIONS: "Count",
         FUNCTION_COLD_STARTS: "Count", FUNCTION_DURATION: "Milliseconds", FUNCTION_ERRORS: "Count",
         FUNCTION_THROTTLES: "Count"}
DIMENSIONS: dict[str, tuple[str, ...]] = {QUERY_LATENCY: ("Hardware",), QUERIES: ("Hardware",), WORKER_FAULTS: (),
                                          REJECTED: ("Reason",), DESIRED_WORKERS: ("Hardware",),
                                          UNHEALTHY_WORKERS: (), FUNCTION_INVOCATIONS: ("Variant",),
                                          FUNCTION_COLD_STARTS: ("Variant",), FUNCTION_DURATION: ("Variant",),
                                          FUNCTION_ERRORS: (), FUNCTION_THROTTLES: ()}


def emf(name: str, value: float, out=None, **dimensions: str) -> str:
    """Write one metric as an EMF line (and return it); ``dimensions`` must be the metric's own."""
    if tuple(sorted(dimensions)) != tuple(sorted(DIMENSIONS[name])):
        raise ValueError(f"{name} is published with dimensions {DIMENSIONS[name]}, not {tuple(dimensions)}")
    line = json.dumps({
        "_aws": {"Timestamp": int(time.time() * 1000), "CloudWatchMetrics": [
            {"Namespace": NAMESPACE, "Dimensions": [list(DIMENSIONS[name])], "Metrics": [{"Name": name, "Unit": UNITS[name]}]}]},
        name: value, **dimensions,
    })
    print(line, file=out or sys.stdout, flush=True)
    return line
