"""The error codec (``core/errors.py``): every error to an HTTP answer and back."""

from __future__ import annotations

import json

import pytest

from infaas.core import errors


def every_error_class():
    out, stack = [], [errors.InfaasError]
    while stack:
        cls = stack.pop()
        out.append(cls)
        stack.extend(cls.__subclasses__())
    return [c for c in out if c is not errors.HttpStatus]


@pytest.mark.parametrize("cls", every_error_class(), ids=lambda c: c.__name__)
def test_every_error_survives_the_round_trip(cls):
    exc = cls("it went wrong", field="inputs", best_accuracy=0.5)
    status, media, headers, body = errors.encode(exc)
    assert status == cls.status and media == b"application/json"
    doc = json.loads(body)
    # ``error`` is the message (the Open Inference Protocol's field, what its clients show), ``code`` the code
    assert doc == {"error": "it went wrong", "code": cls.code, "message": "it went wrong", "field": "inputs",
                   "details": {"best_accuracy": 0.5}}
    back = errors.decode(status, body)
    assert back.code == cls.code and back.status == cls.status
    assert (back.message, back.field, back.details) == ("it went wrong", "inputs", {"best_accuracy": 0.5})
    # the codes are unique, or decoding would pick the wrong class: only subclasses may share their parent's
    assert type(back) is cls or issubclass(cls, type(back))


@pytest.mark.parametrize("cls", [errors.Unavailable, errors.TooManyRequests])
def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one(cls):
    for seconds, header in ((0.01, b"1"), (1.0, b"1"), (1.2, b"2"), (30, b"30")):
        _, _, headers, _ = errors.encode(cls("later", retry_after_s=seconds))
        assert headers == [(b"retry-after", header)]
    assert errors.encode(errors.NotFound("x"))[2] == []


def test_internal_answers_say_nothing_of_the_exception():
    status, _, _, body = errors.internal()
    assert status == 500 and json.loads(body) == {"error": errors.INTERNAL_MESSAGE, "code": "internal",
                                                  "message": errors.INTERNAL_MESSAGE}


def test_too_large_names_the_body_and_the_limit():
    status, _, _, body = errors.too_large(1024)
    doc = json.loads(body)
    assert status == 413 and doc["field"] == "body" and "1024 bytes" in doc["message"]


@pytest.mark.parametrize("status, body", [(502, b"<html>bad gateway</html>"), (400, b"[1, 2]"), (503, b"")])
def test_a_body_that_is_not_ours_keeps_its_status(status, body):
    exc = errors.decode(status, body)
    assert exc.status == status and f"HTTP {status}" in exc.message


def test_an_unknown_code_is_an_http_error_with_its_status():
    exc = errors.decode(405, b'{"error": "no", "code": "method_not_allowed", "message": "no"}')
    assert isinstance(exc, errors.HttpStatus) and exc.status == 405 and exc.message == "no"


def test_an_error_body_of_the_protocol_alone_keeps_its_message():
    """``{"error": "<message>"}`` as an Open Inference Protocol server writes it, without our code."""
    exc = errors.decode(400, b'{"error": "unexpected input tensor"}')
    assert isinstance(exc, errors.HttpStatus) and exc.status == 400 and exc.message == "unexpected input tensor"


def test_a_workers_variant_fault_stays_the_variants_fault():
    """A worker that answers "this variant failed" (its replica process died or ran past its
    deadline) is up: the API must not take it for a failed worker and retry the query elsewhere."""
    from infaas.adapters.workerclient import worker_error
    from infaas.core import errors

    status, _, _, body = errors.encode(errors.VariantFault("variant v ran past its deadline", field="variant"))
    exc = worker_error("http://w", status, body)
    assert isinstance(exc, errors.VariantFault) and not isinstance(exc, errors.WorkerFault)
    assert "deadline" in exc.message
    status, _, _, body = errors.encode(errors.InfaasError("boom"))
    assert isinstance(worker_error("http://w", 502, body), errors.WorkerFault)
