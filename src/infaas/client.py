"""A small Python client for the HTTP API (used by the CLI, the demo and tests)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import quote

import httpx
import numpy as np

from infaas.core.oip import BINARY_HEADER, oip_datatype
from infaas.core.tensors import (
    OIP_TO_NUMPY,
    deserialize_strings,
    is_string,
    serialize_strings,
)


class ApiError(Exception):
    """An error answer: ``status``, and ``body`` with ``error`` (the message), ``code``, ``field``."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        code = body.get("code")
        super().__init__(f"{status}{' ' + code if code else ''}: {body.get('message') or body.get('error')}")
        self.status = status
        self.body = body
        self.code = code


def _segment(text: str) -> str:
    """One path segment: a name with '/', '?' or '#' must not reach another route."""
    return quote(text, safe="")


class Client:
    def __init__(self, url: str = "http://127.0.0.1:8080", *, timeout_s: float = 30.0, api_key: str | None = None,
                 http: httpx.Client | None = None) -> None:
        """``http``: an httpx client to send through instead of one to ``url`` (e.g. an
        in-process ASGI app's test client); the key is added to its headers."""
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._input_names: dict[str, tuple[str, ...]] = {}  # model name -> its input names (metadata)
        if http is not None:
            http.headers.update(headers)
            self.http = http
        else:
            self.http = httpx.Client(base_url=url, timeout=timeout_s, headers=headers)

    def close(self) -> None:
        self.http.close()

    def _check(self, resp: httpx.Response) -> Any:
        if resp.status_code >= 400:
            try:
                body = resp.json()
            except ValueError:
                body = {"error": resp.text[:200], "code": "http", "message": resp.text[:200]}
            raise ApiError(resp.status_code, body)
        return resp.json() if resp.content else None

    # -- control plane ------------------------------------------------------
    def register(self, path: str, *, name: str, task: str, accuracy: float, validation: str | None = None,
                 visibility: str = "private", signature: dict | str | None = None) -> dict[str, Any]:
        """Register a model; ``signature`` overrides what is inferred of its signature (docs/models.md)."""
        files = {"file": (name + ".onnx", Path(path).read_bytes(), "application/octet-stream")}
        if validation:
            files["validation"] = ("validation.npz", Path(validation).read_bytes(), "application/octet-stream")
        data = {"name": name, "task": task, "accuracy": str(accuracy), "visibility": visibility}
        if signature is not None:
            data["signature"] = signature if isinstance(signature, str) else json.dumps(signature)
        return self._check(self.http.post("/v1/models", data=data, files=files))

    def models(self) -> list[dict[str, Any]]:
        return self._check(self.http.get("/v1/models"))["models"]

    def model(self, name: str) -> dict[str, Any]:
        return self._check(self.http.get(f"/v1/models/{_segment(name)}"))

    def model_logs(self, name: str) -> dict[str, Any]:
        return self._check(self.http.get(f"/v1/models/{_segment(name)}/logs"))

    def delete_model(self, name: str) -> None:
        """Delete an architecture this tenant owns, with its variants (204; 404 or 403 otherwise)."""
        self._check(self.http.delete(f"/v1/models/{_segment(name)}"))

    def tasks(self) -> list[dict[str, Any]]:
        return self._check(self.http.get("/v1/tasks"))["tasks"]

    def workers(self) -> list[dict[str, Any]]:
        return self._check(self.http.get("/v1/workers"))["workers"]

    def events(self, since: float = 0.0) -> list[dict[str, Any]]:
        return self._check(self.http.get("/v1/events", params={"since": since}))["events"]

    def wait_ready(self, names: list[str], *, timeout_s: float = 600.0,
                   progress: Callable[[dict[str, dict]], None] | None = None) -> dict[str, dict]:
        """Poll until every named architecture is ready (or failed); returns their status."""
        deadline = time.time() + timeout_s
        while True:
            status = {n: self.model(n) for n in names}
            if progress:
                progress(status)
            if all(s["status"] in ("ready", "failed") for s in status.values()):
                return status
            if time.time() > deadline:
                raise TimeoutError(f"variants not ready after {timeout_s:g} s")
            time.sleep(0.5)

    # -- offline jobs -------------------------------------------------------------
    def submit_job(self, **job: Any) -> dict[str, Any]:
        return self._check(self.http.post("/v1/jobs", json=job))

    def jobs(self) -> list[dict[str, Any]]:
        """This tenant's jobs as submitted (``job`` adds their progress and state)."""
        return self._check(self.http.get("/v1/jobs"))["jobs"]

    def job(self, job_id: str) -> dict[str, Any]:
        return self._check(self.http.get(f"/v1/jobs/{_segment(job_id)}"))

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self._check(self.http.post(f"/v1/jobs/{_segment(job_id)}/cancel"))

    def wait_job(self, job_id: str, *, timeout_s: float = 3600.0,
                 progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        deadline = time.time() + timeout_s
        while True:
            status = self.job(job_id)
            if progress:
                progress(status)
            if status["state"] != "running":
                return status
            if time.time() > deadline:
                raise TimeoutError(f"job {job_id} not finished after {timeout_s:g} s")
            time.sleep(0.5)

    # -- data plane -----------------------------------------------------------
    def input_names(self, name: str) -> tuple[str, ...]:
        """The input names of a variant, architecture or task (its OIP metadata), asked once per name."""
        names = self._input_names.get(name)
        if names is None:
            meta = self._check(self.http.get(f"/v2/models/{_oip_name(name)}"))
            names = self._input_names[name] = tuple(t["name"] for t in meta["inputs"])
        return names

    def infer(self, inputs: np.ndarray | Mapping[str, np.ndarray], *, task: str | None = None,
              architecture: str | None = None, variant: str | None = None, min_accuracy: float | None = None,
              latency_ms: float | None = None,
              max_cost: float | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Model-less query through the OIP binary extension; returns (outputs, decision), the
        decision with the answer's ``latency_ms`` (measured in the service) and ``objective_met``.

        ``inputs``: one array for a single-input model (sent under the model's input name, read
        from its metadata once), or ``{name: array}``. Strings (numpy ``str`` or ``object`` arrays
        of ``str``) travel as ``BYTES`` and come back as ``object`` arrays of ``str``."""
        name = variant or architecture or task
        if sum(x is not None for x in (task, architecture, variant)) != 1:
            raise ValueError("name exactly one of task, architecture, variant")
        params = {k: v for k, v in (("min_accuracy", min_accuracy), ("latency_ms", latency_ms), ("max_cost", max_cost)) if v is not None}
        if not isinstance(inputs, Mapping):
            names = self.input_names(name)
            if len(names) != 1:
                raise ValueError(f"{name} takes {len(names)} inputs {list(names)}: pass them as a dict")
            inputs = {names[0]: inputs}
        tensors, chunks = [], []
        for input_name, value in inputs.items():
            arr = np.asarray(value)
            raw = serialize_strings(arr) if is_string(arr.dtype) else np.ascontiguousarray(arr).tobytes()
            tensors.append({"name": input_name, "shape": list(arr.shape), "datatype": oip_datatype(arr.dtype),
                            "parameters": {"binary_data_size": len(raw)}})
            chunks.append(raw)
        header = {"inputs": tensors, "parameters": {**params, "binary_data_output": True}}
        head = json.dumps(header).encode()
        resp = self.http.post(f"/v2/models/{_oip_name(name)}/infer", content=head + b"".join(chunks),
                              headers={BINARY_HEADER: str(len(head)), "content-type": "application/octet-stream"})
        if resp.status_code >= 400:
            self._check(resp)
        n = int(resp.headers[BINARY_HEADER])
        doc = json.loads(resp.content[:n])
        offset, outputs = n, {}
        for o in doc["outputs"]:
            size = o["parameters"]["binary_data_size"]
            count = 1
            for d in o["shape"]:
                count *= d
            if o["datatype"] == "BYTES":
                arr = deserialize_strings(resp.content, count, offset, offset + size, f"output {o['name']!r}")
            else:
                arr = np.frombuffer(resp.content, dtype=OIP_TO_NUMPY[o["datatype"]], count=count, offset=offset)
            outputs[o["name"]] = arr.reshape(o["shape"])
            offset += size
        params = doc["parameters"]
        # the decision, and how it went: the time measured in the service and whether it met the objective
        return outputs, {**params["decision"], "latency_ms": params.get("latency_ms"),
                         "objective_met": params.get("objective_met")}


def _oip_name(name: str) -> str:
    """A model name in an OIP path: a task keeps its '/', nothing else may reach another route."""
    return quote(name, safe="/:")
