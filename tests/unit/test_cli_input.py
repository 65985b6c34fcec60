"""The CLI's parts that need no server: the API address it defaults to, the query rows it reads
(every input form, cast to ``--dtype``), its one-line errors for bad rows, and its tables.

(With a server: tests/e2e/test_cli.py.)"""

from __future__ import annotations

import argparse
import json
import re

import numpy as np
import pytest

from infaas.cli import (
    CliError,
    cast_rows,
    default_url,
    main,
    parse_json_rows,
    query_rows,
    table,
)

README_EXAMPLE = "[[0, 0.1, ...64 values...]]"  # the README's query example, '...' and all


# --- the API address ----------------------------------------------------------------------------

def test_default_url_is_infaas_url_else_the_port_infaas_up_listens_on():
    assert default_url({}) == "http://127.0.0.1:8080"
    assert default_url({"INFAAS_PORT": "9123"}) == "http://127.0.0.1:9123"
    assert default_url({"INFAAS_PORT": "9123", "INFAAS_URL": "https://infaas.example:443"}) == "https://infaas.example:443"
    assert default_url({"INFAAS_URL": " ", "INFAAS_PORT": "9123"}) == "http://127.0.0.1:9123"  # blank is unset
    # the host `infaas up` listens on (INFAAS_HOST), loopback for a wildcard one
    assert default_url({"INFAAS_HOST": "0.0.0.0", "INFAAS_PORT": "9000"}) == "http://127.0.0.1:9000"
    assert default_url({"INFAAS_HOST": "10.1.2.3"}) == "http://10.1.2.3:8080"
    assert default_url({"INFAAS_HOST": "::1"}) == "http://[::1]:8080"


@pytest.mark.parametrize("raw", ["http", "0", "70000"])
def test_a_bad_infaas_port_is_one_line_naming_the_variable(raw, monkeypatch, capsys):
    monkeypatch.delenv("INFAAS_URL", raising=False)
    monkeypatch.setenv("INFAAS_PORT", raw)
    assert main(["models"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: INFAAS_PORT='{raw}'"), err


def test_an_address_without_a_scheme_is_refused_in_one_line(capsys):
    assert main(["--url", "localhost:8080", "models"]) == 1
    assert capsys.readouterr().err == ("error: the API address 'localhost:8080' (--url or INFAAS_URL) must start "
                                       "with http:// or https://\n")


# --- --json ---------------------------------------------------------------------------------------

def test_the_readme_json_example_fails_in_one_line_saying_what_is_wrong(capsys):
    with pytest.raises(CliError) as err:
        parse_json_rows(README_EXAMPLE)
    assert str(err.value) == ("--json: not valid JSON at char 10 ('...64 values...]]'): Expecting value ('...' is "
                              "not a value); give the full rows, e.g. --json '[[0.0, 0.1]]'")
    # and so does the command, before it sends anything
    assert main(["--url", "http://127.0.0.1:9", "query", "--task", "classification/digits", "--json", README_EXAMPLE]) == 1
    out = capsys.readouterr()
    assert out.out == "" and out.err == f"error: {err.value}\n"


@pytest.mark.parametrize(("text", "says"), [
    ("[[1, 2], [3]]", "--json: the rows differ in shape (lengths [1, 2])"),
    ('[["a", "b"]]', "--json: the rows must hold only numbers (or true/false), not strings"),
    ("[[1, null]]", "--json: the rows must hold only numbers (or true/false), not null or nested values"),
    ('{"inputs": [[1]]}', "--json: expected a non-empty array of rows, got dict"),
    ("[]", "--json: expected a non-empty array of rows, got list"),
    ("[[0.5, 1", "--json: not valid JSON at char 8"),
])
def test_bad_json_rows_say_what_is_wrong(text, says):
    with pytest.raises(CliError, match=re.escape(says)):
        parse_json_rows(text)


def test_multi_line_json_rows_parse():
    assert parse_json_rows("[[\n  0, 0.5,\n  1, 0\n]]").tolist() == [[0.0, 0.5, 1.0, 0.0]]


# --- --dtype for every input form ----------------------------------------------------------------

def _args(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"input": None, "json": None, "dtype": None, **kw})


def test_dtype_is_honoured_for_json_npy_and_npz(tmp_path):
    rows = np.array([[0.0, 0.25], [1.0, 2.0]])  # float64, as numpy writes by default
    np.save(tmp_path / "x.npy", rows)
    np.savez(tmp_path / "v.npz", inputs=rows, labels=np.array([0, 1]))  # a validation file works as input too
    np.savez(tmp_path / "one.npz", anything=rows)
    for args in (_args(json=json.dumps(rows.tolist())), _args(input=str(tmp_path / "x.npy")),
                 _args(input=str(tmp_path / "v.npz")), _args(input=str(tmp_path / "one.npz"))):
        for dtype in ("float32", "float16", "float64"):
            x = query_rows(argparse.Namespace(**{**vars(args), "dtype": dtype}))
            assert x.dtype == np.dtype(dtype) and x.tolist() == rows.tolist(), (args, dtype)
    # without --dtype: float32 for --json (as ever), the file's own type for files
    assert query_rows(_args(json="[[1, 2]]")).dtype == np.float32
    assert query_rows(_args(input=str(tmp_path / "x.npy"))).dtype == np.float64
    ints = np.array([[1, 2]], dtype=np.int64)
    np.save(tmp_path / "i.npy", ints)
    assert query_rows(_args(input=str(tmp_path / "i.npy"))).dtype == np.int64
    assert query_rows(_args(input=str(tmp_path / "i.npy"), dtype="int32")).dtype == np.int32
    assert query_rows(_args(json="[[1, 2]]", dtype="int64")).tolist() == [[1, 2]]


@pytest.mark.parametrize(("rows", "dtype", "says"), [
    (np.array([[0.5, 1.0]]), "int64", "cannot cast float64 values to int64 without changing them: 0.5 is not a whole number"),
    (np.array([[np.nan]]), "int32", "cannot cast float64 values to int32 without changing them: nan is not a whole number"),
    (np.array([[300]]), "uint8", "cannot cast int64 values to uint8 without changing them: 300 is out of range for uint8"),
    (np.array([[-1]]), "uint8", "-1 is out of range for uint8"),
    (np.array([[2]]), "bool", "2 is out of range for bool"),
    (np.array([[1e300]]), "float32", "cannot cast float64 values to float32: 1e+300 is too large for float32"),
    (np.array([[1 + 2j]]), "float32", "cannot cast complex128 values to float32: they have imaginary parts"),
    (np.array([["a"]]), "float32", "cannot cast <U1 values to float32: they are not numbers"),
])
def test_a_cast_that_would_change_a_value_is_refused(rows, dtype, says):
    with pytest.raises(CliError, match=re.escape(says)):
        cast_rows(rows, dtype, "--input x.npy")


def test_exact_casts_pass():
    assert cast_rows(np.array([[1.0, 0.0, 255.0]]), "uint8", "--json").tolist() == [[1, 0, 255]]
    assert cast_rows(np.array([[1, 0]]), "bool", "--json").tolist() == [[True, False]]
    assert cast_rows(np.array([[0.1]]), "float32", "--json").dtype == np.float32  # rounding to float32 is the point


@pytest.mark.parametrize(("dtype", "says"), [
    ("float99", "--dtype 'float99': not a numpy dtype"),
    ("str", "--dtype 'str': the API takes bool, float16"),
    ("complex64", "--dtype 'complex64': the API takes"),
])
def test_an_unknown_dtype_is_named(dtype, says):
    with pytest.raises(CliError, match=re.escape(says)):
        cast_rows(np.zeros((1, 2)), dtype, "--json")


def test_file_problems_are_named(tmp_path):
    np.savez(tmp_path / "two.npz", a=np.zeros(2), b=np.zeros(2))
    with pytest.raises(CliError, match=re.escape("an .npz needs an array named 'inputs' (or just one array); it holds ['a', 'b']")):
        query_rows(_args(input=str(tmp_path / "two.npz")))
    (tmp_path / "t.npy").write_text("not numpy")
    with pytest.raises(CliError, match=re.escape(f"--input {tmp_path / 't.npy'}: not an .npy or .npz array file")):
        query_rows(_args(input=str(tmp_path / "t.npy")))
    np.save(tmp_path / "s.npy", np.array([["a"]]))
    with pytest.raises(CliError, match=re.escape("<U1 values are not a tensor type the API takes")):
        query_rows(_args(input=str(tmp_path / "s.npy")))


# --- tables -----------------------------------------------------------------------------------------

def test_table_aligns_text_left_and_numbers_right_without_trailing_spaces():
    lines = table(["name", "status", "accuracy", "note"],
                  [["logistic-regression", "ready", "0.9611", ""], ["mlp", "building", None, "x"]], right=(2,))
    assert lines == [
        "name                 status    accuracy  note",
        "logistic-regression  ready       0.9611",
        "mlp                  building         -  x",
    ]


# --- models delete --------------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "says"), [
    (["models", "delete"], "error: name one model to delete: infaas models delete NAME\n"),
    (["models", "a", "b"], "error: unexpected 'b': infaas models [NAME | delete NAME] [--json]\n"),
])
def test_models_delete_needs_one_name(argv, says, capsys):
    assert main(["--url", "http://127.0.0.1:9", *argv]) == 1
    assert capsys.readouterr().err == says
