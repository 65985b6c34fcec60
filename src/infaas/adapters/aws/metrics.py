"""CloudWatch metrics: the ``Metrics`` port in two forms.

* ``EmfMetrics`` writes each value as one line of CloudWatch *embedded metric
  format* (EMF) to a stream. Inside Lambda, stdout goes to CloudWatch Logs,
  which extracts the metric: no API call, no latency on the request path. The
  Lambda functions use Powertools' ``Metrics`` (the same format); this class
  serves code outside a handler (and anything that logs to CloudWatch Logs
  through an agent).
* ``CloudWatchMetrics`` buffers values and sends them with ``PutMetricData``
  (up to 1000 per call), for processes whose stdout is not a CloudWatch log
  stream: worker machines, scripts. ``flush`` sends what is buffered; it also
  happens when the buffer is full.

Both take the unit as CloudWatch spells it (``Milliseconds``, ``Count``,
``Percent``, ``Bytes``, ``Seconds``, ``None``...) and refuse any other, so a
typo does not silently create a unit-less series.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import IO, Any, Callable, Mapping

from infaas.adapters.aws._sdk import default_client, sdk_errors
from infaas.core.errors import InvalidInput

UNITS = frozenset(
    {
        "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes", "Terabytes",
        "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count", "Bytes/Second",
        "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second", "Bits/Second",
        "Kilobits/Second", "Megabits/Second", "Gigabits/Second", "Terabits/Second", "Count/Second", "None",
    }
)
MAX_DIMENSIONS = 30  # CloudWatch's limit per metric
PUT_BATCH = 1000  # PutMetricData's limit per call

# The metric names this deployment publishes (dashboard and alarms use them).
NAMESPACE = "Infaas"
QUERY_LATENCY = "QueryLatency"  # Milliseconds, per Hardware; selector
QUERIES = "Queries"  # Count, per Hardware; selector
WORKER_FAULTS = "WorkerFaults"  # Count; selector (a query retried elsewhere)
REJECTED = "Rejected"  # Count; selector (no feasible variant, bad input)
DESIRED_WORKERS = "DesiredWorkers"  # Count, per Hardware; autoscaler


def _check(name: str, value: float, unit: str, dimensions: Mapping[str, str] | None) -> dict[str, str]:
    if not name or not isinstance(name, str):
        raise InvalidInput("metric name must be a non-empty string", field="name")
    if unit not in UNITS:
        raise InvalidInput(f"unit {unit!r} is not a CloudWatch unit", field="unit")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value in (float("inf"), float("-inf")):
        raise InvalidInput(f"metric {name}: value must be a finite number, got {value!r}", field="value")
    dims = {str(k): str(v) for k, v in (dimensions or {}).items()}
    if len(dims) > MAX_DIMENSIONS:
        raise InvalidInput(f"metric {name}: at most {MAX_DIMENSIONS} dimensions", field="dimensions")
    return dims


class EmfMetrics:
    """``Metrics`` as embedded-metric-format log lines (one per value)."""

    def __init__(
        self,
        namespace: str = NAMESPACE,
        *,
        default_dimensions: Mapping[str, str] | None = None,
        stream: IO[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.namespace = namespace
        self.default_dimensions = dict(default_dimensions or {})
        self.stream = stream
        self.clock = clock
        self._lock = threading.Lock()

    def put(self, name: str, value: float, *, unit: str = "None", dimensions: Mapping[str, str] | None = None) -> None:
        dims = {**self.default_dimensions, **_check(name, value, unit, dimensions)}
        doc: dict[str, Any] = {
            "_aws": {
                "Timestamp": int(self.clock() * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": self.namespace,
                        "Dimensions": [sorted(dims)],
                        "Metrics": [{"Name": name, "Unit": unit}],
                    }
                ],
            },
            **dims,
            name: float(value),
        }
        line = json.dumps(doc, separators=(",", ":")) + "\n"
        stream = self.stream or sys.stdout
        with self._lock:
            stream.write(line)
            stream.flush()


class CloudWatchMetrics:
    """``Metrics`` sent with ``PutMetricData``, buffered up to ``batch`` values."""

    def __init__(
        self,
        namespace: str = NAMESPACE,
        client: Any = None,
        *,
        default_dimensions: Mapping[str, str] | None = None,
        batch: int = 100,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 1 <= batch <= PUT_BATCH:
            raise InvalidInput(f"batch must be between 1 and {PUT_BATCH}", field="batch")
        self.namespace = namespace
        self.client = client if client is not None else default_client("cloudwatch")
        self.default_dimensions = dict(default_dimensions or {})
        self.batch = batch
        self.clock = clock
        self._buffer: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def put(self, name: str, value: float, *, unit: str = "None", dimensions: Mapping[str, str] | None = None) -> None:
        dims = {**self.default_dimensions, **_check(name, value, unit, dimensions)}
        datum = {
            "MetricName": name,
            "Value": float(value),
            "Unit": unit,
            "Timestamp": self.clock(),
            "Dimensions": [{"Name": k, "Value": v} for k, v in sorted(dims.items())],
        }
        with self._lock:
            self._buffer.append(datum)
            full = len(self._buffer) >= self.batch
        if full:
            self.flush()

    def flush(self) -> int:
        """Send everything buffered; returns how many values were sent."""
        with self._lock:
            pending, self._buffer = self._buffer, []
        for start in range(0, len(pending), PUT_BATCH):
            with sdk_errors(f"publishing metrics to {self.namespace}"):
                self.client.put_metric_data(Namespace=self.namespace, MetricData=pending[start : start + PUT_BATCH])
        return len(pending)
