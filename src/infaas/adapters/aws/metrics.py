"""The CloudWatch metric names this deployment publishes.

The Lambda functions publish them with Powertools' ``Metrics`` (embedded
metric format on stdout: no API call on the request path); the CDK stack's
dashboard and alarms (``cdk/infaas_cdk``) spell out the same names.
"""

NAMESPACE = "Infaas"
QUERY_LATENCY = "QueryLatency"  # Milliseconds, per Hardware; selector
QUERIES = "Queries"  # Count, per Hardware; selector
WORKER_FAULTS = "WorkerFaults"  # Count; selector (a query retried elsewhere)
REJECTED = "Rejected"  # Count; selector (no feasible variant, bad input)
DESIRED_WORKERS = "DesiredWorkers"  # Count, per Hardware; autoscaler
