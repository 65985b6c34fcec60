"""Registration is honest: a repeated name with other metadata is a 409 naming the field,
validation labels that cannot be compared with the model's outputs are a 400 at upload,
declared and measured accuracy stand side by side (with a warning past the margin), and
every variant's full build log can be read back."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from fakes import npz_bomb
from stack_support import ARCHITECTURES, READY_TIMEOUT_S, Stack

from infaas.app.build import BuildLog
from infaas.app.control import ACCURACY_MARGIN
from infaas.cli import digits
from infaas.core.errors import ProfilingFailed

ARCH = ARCHITECTURES[0]


def upload(stack: Stack, name: str, *, task: str = digits.TASK, accuracy: float, visibility: str = "private",
           validation: bytes | None = None):
    with open(stack.paths[ARCH], "rb") as f:
        files = {"file": ("model.onnx", f.read(), "application/octet-stream")}
    if validation is not None:
        files["validation"] = ("validation.npz", validation, "application/octet-stream")
    return stack.http.post("/v1/models", files=files,
                           data={"name": name, "task": task, "accuracy": str(accuracy), "visibility": visibility})


def npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_the_same_registration_again_is_answered_with_what_is_stored(stack: Stack):
    declared = stack.client.model(ARCH)["declared_accuracy"]
    resp = upload(stack, ARCH, accuracy=declared)
    assert resp.status_code == 200, resp.text
    assert resp.json()["name"] == ARCH


@pytest.mark.parametrize(("change", "field"), [({"accuracy": 0.5}, "accuracy"),
                                               ({"task": "classification/other"}, "task"),
                                               ({"visibility": "shared"}, "visibility")])
def test_a_repeated_name_with_other_metadata_is_a_409_naming_the_field(stack: Stack, change, field):
    kept = stack.client.model(ARCH)
    args = {"accuracy": kept["declared_accuracy"], "task": kept["task"], "visibility": kept["visibility"], **change}
    resp = upload(stack, ARCH, **args)
    assert resp.status_code == 409, resp.text
    body = resp.json()
    assert body["field"] == field and "delete it first" in body["message"]
    after = stack.client.model(ARCH)  # nothing was changed silently
    assert (after["declared_accuracy"], after["task"], after["visibility"]) == (
        kept["declared_accuracy"], kept["task"], kept["visibility"])


@pytest.mark.parametrize(("labels", "words"), [
    (lambda y: np.array([f"class-{int(v)}" for v in y]), "strings"),
    (lambda y: y.astype(np.float32) + 0.5, "not whole numbers"),
])
def test_validation_labels_that_cannot_be_compared_are_a_400_at_upload(stack: Stack, labels, words):
    x, y = stack.data.x_test[:20], stack.data.y_test[:20]
    resp = upload(stack, "labels-test", accuracy=0.9, validation=npz(inputs=x, labels=labels(y)))
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["field"] == "validation" and words in body["message"] and "class indices" in body["message"]
    assert stack.http.get("/v1/models/labels-test").status_code == 404  # nothing half-registered


def test_declared_and_measured_accuracy_stand_side_by_side(stack: Stack):
    honest = stack.client.model(ARCH)
    assert honest["measured_accuracy"] is not None  # registered with validation data
    for v in honest["variants"]:
        if v["status"] == "ready":
            assert v["accuracy_measured"] is True and v["accuracy_source"] == "measured"
    # the same file declared 30 points too good: the measured figure is shown, with a warning
    resp = upload(stack, "overclaimed", accuracy=min(1.0, honest["measured_accuracy"] + 0.3),
                  validation=open(stack.validation_path, "rb").read())
    assert resp.status_code == 201, resp.text
    deadline = time.time() + READY_TIMEOUT_S
    while (m := stack.client.model("overclaimed"))["status"] == "building" or m["measured_accuracy"] is None:
        assert time.time() < deadline, m
        time.sleep(0.5)
    assert abs(m["measured_accuracy"] - m["declared_accuracy"]) > ACCURACY_MARGIN
    assert m["accuracy_note"].startswith("warning: measured") and "routed on the measured figure" in m["accuracy_note"]
    stack.http.delete("/v1/models/overclaimed")


def test_without_validation_data_every_figure_says_it_was_not_measured(stack: Stack):
    resp = upload(stack, "unmeasured", accuracy=0.9)
    assert resp.status_code == 201, resp.text
    deadline = time.time() + READY_TIMEOUT_S
    while (m := stack.client.model("unmeasured"))["status"] == "building":
        assert time.time() < deadline, m
        time.sleep(0.5)
    assert m["measured_accuracy"] is None and m["accuracy_note"].startswith("not measured")
    ready = [v for v in m["variants"] if v["status"] == "ready"]
    assert ready and all(v["accuracy_source"] == "declared (not measured)" and v["accuracy"] == 0.9 for v in ready)
    stack.http.delete("/v1/models/unmeasured")


def test_every_variant_has_its_full_build_log(stack: Stack):
    body = stack.http.get(f"/v1/models/{ARCH}/logs").json()
    assert body["name"] == ARCH and body["variants"]
    for vid, entry in body["variants"].items():
        log = entry["log"]
        assert log is not None, vid
        assert f"building {vid}" in log
        if entry["status"] == "ready":
            assert "latency p50 / p99 ms by batch" in log and "measured" in log and log.rstrip().endswith("ready")
        else:
            assert entry["message"] and entry["message"][:60] in log
    assert stack.http.get("/v1/models/no-such-model/logs").status_code == 404


def test_a_build_log_keeps_the_whole_error_behind_the_summary():
    log = BuildLog(clock=lambda: 0.0)
    try:
        try:
            raise RuntimeError("the library's own words " + "x" * 500)
        except RuntimeError as inner:
            err = ProfilingFailed(f"profiling failed: {str(inner)[:40]}")
            err.log = "Traceback ...\nMemoryError: line 2 of the child's stderr"
            raise err from None
    except ProfilingFailed as exc:
        log.error(exc)
    text = log.text().decode()
    assert "x" * 500 in text  # the full cause, not the 40-character summary
    assert "line 2 of the child's stderr" in text


def test_an_output_without_a_protocol_datatype_is_refused_at_registration_naming_it(stack: Stack):
    """String outputs are served (as BYTES, tests/api/test_oip_conformance.py); an output whose type the
    Open Inference Protocol has no datatype for (here bfloat16) is refused at upload, named."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Cast", ["X"], ["half"], to=TensorProto.BFLOAT16)], "g",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 64])],
                              [helper.make_tensor_value_info("half", TensorProto.BFLOAT16, ["N", 64])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    resp = stack.http.post("/v1/models", files={"file": ("m.onnx", model.SerializeToString(), "application/octet-stream")},
                           data={"name": "bf16-output", "task": digits.TASK, "accuracy": "0.9"})
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["field"] == "file" and "output 'half' (bfloat16)" in body["error"] and "BYTES" in body["error"]
    assert body["details"] == {"output": ["half"]}
    assert stack.http.get("/v1/models/bf16-output").status_code == 404


def test_a_small_npz_that_unpacks_to_gigabytes_is_refused_before_unpacking(stack: Stack):
    blob = npz_bomb(320)  # 320 MiB of zeros, about 0.3 MB packed
    assert len(blob) < 2 << 20
    resp = upload(stack, "npz-bomb", accuracy=0.9, validation=blob)
    assert resp.status_code == 400, resp.text
    assert resp.json()["field"] == "validation" and "unpacks to" in resp.json()["message"]
    assert stack.http.get("/v2/health/ready").status_code == 200


def test_delete_removes_every_artefact_of_the_model(stack: Stack):
    import os

    resp = upload(stack, "short-lived", accuracy=0.9, validation=open(stack.validation_path, "rb").read())
    assert resp.status_code == 201, resp.text
    deadline = time.time() + READY_TIMEOUT_S
    while stack.client.model("short-lived")["status"] == "building":
        assert time.time() < deadline
        time.sleep(0.3)
    models_dir = os.path.join(stack.data_dir, "models")
    files = lambda: [os.path.join(d, f) for d, _, fs in os.walk(models_dir) for f in fs if "short-lived" in d + f]  # noqa: E731
    assert any(f.endswith(".validation.npz") for f in files()) and any(f.endswith(".log") for f in files())
    assert stack.http.delete("/v1/models/short-lived").status_code == 204
    assert files() == []


def test_without_labels_a_reduced_precision_variant_is_rated_by_its_agreement(stack: Stack):
    with open(stack.paths["mlp-32"], "rb") as f:
        resp = stack.http.post("/v1/models", files={"file": ("m.onnx", f.read(), "application/octet-stream")},
                               data={"name": "mlp-unlabelled", "task": digits.TASK, "accuracy": "0.95"})
    assert resp.status_code == 201, resp.text
    deadline = time.time() + READY_TIMEOUT_S
    while (m := stack.client.model("mlp-unlabelled"))["status"] == "building":
        assert time.time() < deadline, m
        time.sleep(0.3)
    by_format = {v["format"]: v for v in m["variants"] if v["status"] == "ready"}
    assert by_format["fp32"]["agreement"] == 1.0 and by_format["fp32"]["accuracy"] == 0.95
    int8 = by_format["int8"]
    assert 0.5 < int8["agreement"] <= 1.0  # measured against the registered model on sample inputs
    assert int8["accuracy"] == round(0.95 - (1 - int8["agreement"]), 6)  # never more than the original
    if int8["agreement"] < 1.0:
        assert int8["accuracy_source"].startswith("estimated")
    logs = stack.http.get("/v1/models/mlp-unlabelled/logs").json()["variants"][int8["id"]]["log"]
    assert "agreement" in logs
    stack.http.delete("/v1/models/mlp-unlabelled")
