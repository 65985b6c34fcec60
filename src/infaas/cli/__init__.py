"""The ``infaas`` command: up, register, models, workers, tasks, query, jobs, events, tenants, demo, sim, replay.

The top layer: it may import every other package.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

API_KEY_HINT = "the CLI sends the key given by --api-key or INFAAS_API_KEY (create one with 'infaas tenants create')"


class CliError(Exception):
    """A mistake in the command line or its input files: printed as one ``error:`` line, exit 1."""


def default_url(env=None) -> str:
    """Where the API is: ``INFAAS_URL`` if set, else the address `infaas up` listens on with the same
    settings: ``http://<INFAAS_HOST>:<INFAAS_PORT>`` (127.0.0.1 and 8080 by default, 127.0.0.1 for a
    wildcard host), read with the readers of ``infaas.core.settings``."""
    from infaas.core.settings import Settings, env_int, env_str

    env = os.environ if env is None else env
    url = env_str(env, "INFAAS_URL")
    if url:
        return url
    host = env_str(env, "INFAAS_HOST", Settings.host)
    if host in ("0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{env_int(env, 'INFAAS_PORT', Settings.port, low=1, high=65535)}"


def _client(args):
    from infaas.client import Client

    args.url = args.url or default_url()
    if not args.url.startswith(("http://", "https://")):
        raise CliError(f"the API address {args.url!r} (--url or INFAAS_URL) must start with http:// or https://")
    return Client(args.url, api_key=args.api_key)


def one_line(text) -> str:
    return " ".join(str(text).split())


def api_error_line(exc, api_key: str | None = None) -> str:
    """An error answer of the API as one line: status, error code, message (and, for a 401 sent without
    a key, how to send one)."""
    body = exc.body if isinstance(exc.body, dict) else {}
    code, message = body.get("code"), body.get("message") or body.get("error")
    line = f"{exc.status}" + (f" {code}" if code else "") + (f": {one_line(message)}" if message else "")
    if exc.status == 401 and not api_key:
        line += f"; {API_KEY_HINT}"
    return line


def table(headers: list[str], rows: list[list], right: tuple[int, ...] = ()) -> list[str]:
    """Plain-text aligned columns, two spaces apart: numbers (the ``right`` columns) to the right,
    text to the left; no trailing spaces."""
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
            for r in cells]


def _print_table(headers: list[str], rows: list[list], right: tuple[int, ...] = (), indent: str = "") -> None:
    for line in table(headers, rows, right):
        print(indent + line)


def _print_json(doc) -> None:
    """``--json``: the API's answer as it came, for scripts."""
    print(json.dumps(doc, indent=2))


def _num(x, digits: int = 3) -> str | None:
    return f"{x:.{digits}f}" if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _when(t) -> str | None:
    import time as _time

    return _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(t)) if isinstance(t, (int, float)) and t else None


def cmd_up(args) -> int:
    from infaas.core.settings import Settings
    from infaas.local.stack import StartError, run

    try:
        run(Settings.from_env(data_dir=args.data_dir, port=args.port, workers=args.workers))
    except StartError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1
    return 0


def signature_arg(text: str | None, dims: list[str] | None, axes: list[str] | None) -> dict | None:
    """``--signature JSON`` with ``--dim NAME=SIZE`` and ``--batch-axis INPUT=AXIS|none`` merged in."""
    sig: dict = {}
    if text:
        try:
            sig = json.loads(text)
        except ValueError as exc:
            raise CliError(f"--signature is not valid JSON: {exc}") from None
        if not isinstance(sig, dict):
            raise CliError("--signature must be a JSON object with 'dims', 'inputs' and/or 'outputs'")
    for item in dims or ():
        name, sep, size = item.partition("=")
        if not sep or not name or not size.isdigit():
            raise CliError(f"--dim takes NAME=SIZE (a dimension name of the graph and a whole number), got {item!r}")
        sig.setdefault("dims", {})[name] = int(size)
    for item in axes or ():
        name, sep, axis = item.partition("=")
        if not sep or not name or not (axis.isdigit() or axis.lower() == "none"):
            raise CliError(f"--batch-axis takes INPUT=AXIS or INPUT=none, got {item!r}")
        sig.setdefault("inputs", {}).setdefault(name, {})["batch_axis"] = None if axis.lower() == "none" else int(axis)
    return sig or None


def cmd_register(args) -> int:
    client = _client(args)
    signature = signature_arg(args.signature, args.dim, args.batch_axis)
    status = client.register(args.file, name=args.name, task=args.task, accuracy=args.accuracy,
                             validation=args.validation, visibility="shared" if args.shared else "private",
                             signature=signature)
    print(f"registered {status['name']} for {status['task']}: {len(status['variants'])} variant(s) to build")
    sig = status.get("signature") or {}
    if sig:
        print(f"signature: {sig.get('batching_reason', '')}")
    if args.wait:
        final = client.wait_ready([args.name], progress=_progress_printer())
        print()
        _print_variants(final[args.name]["variants"])
        failed = [v for v in final[args.name]["variants"] if v["status"] == "failed"]
        for v in failed:
            print(f"failed: {v['id']}: {one_line(v.get('message') or 'no reason given')}", file=sys.stderr)
        if failed:
            print(f"{len(failed)} variant(s) failed; the full build logs: infaas models {args.name} --logs",
                  file=sys.stderr)
        return 0 if final[args.name]["status"] == "ready" and not failed else 1
    return 0


def _progress_printer():
    last = [""]

    def show(status: dict) -> None:
        variants = [v for s in status.values() for v in s["variants"]]
        done = sum(v["status"] in ("ready", "failed", "skipped") for v in variants)
        busy = [f"{v['id']} {v['status']}" for v in variants if v["status"] in ("building", "profiling")]
        if busy:
            doing = ", ".join(busy)
        elif done == len(variants):
            counts = {k: sum(v["status"] == k for v in variants) for k in ("ready", "skipped", "failed")}
            doing = "all done: " + ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        else:
            doing = "waiting for a worker of the right hardware type"
        line = f"  [{done}/{len(variants)} variants done] {doing}"
        if line != last[0]:
            print(line, flush=True)
            last[0] = line

    return show


def _print_variants(variants: list[dict]) -> None:
    rows = []
    for v in variants:
        p = v.get("profile") or {}
        lat = p.get("latency_ms", {})
        source = None if v.get("accuracy") is None else "measured" if v.get("accuracy_measured") else "declared"
        rows.append([v["id"], v["status"], _num(v.get("accuracy"), 4), source, _num(lat.get("1", [None, None])[1]),
                     _num(lat.get("32", [None, None])[1]), _num(p.get("load_ms"), 1), one_line(v.get("message") or "")])
    _print_table(["variant", "status", "accuracy", "source", "p99 b1 ms", "p99 b32 ms", "load ms", "message"], rows,
                 right=(2, 4, 5, 6), indent="  ")


def _tensors(specs: list[dict]) -> str:
    return ", ".join(f"{t['name']} {t['dtype']} {t['shape']}" for t in specs)


def cmd_models(args) -> int:
    words = args.words
    if words and words[0] == "delete":
        if len(words) != 2:
            raise CliError("name one model to delete: infaas models delete NAME")
        return _delete_model(args, words[1])
    if len(words) > 1:
        raise CliError(f"unexpected {' '.join(words[1:])!r}: infaas models [NAME | delete NAME] [--json]")
    client = _client(args)
    if words and args.logs:
        logs = client.model_logs(words[0])
        if args.json:
            _print_json(logs)
            return 0
        for vid, entry in logs["variants"].items():
            print(f"== {vid}: {entry['status']}")
            print((entry.get("log") or "(no build log yet)").rstrip())
        return 0
    if words:
        status = client.model(words[0])
        if args.json:
            _print_json(status)
            return 0
        print(f"{status['name']} ({status['task']}, {status['visibility']}, owner {status.get('tenant', '-')}): "
              f"{status['status']}")
        measured = _num(status.get("measured_accuracy"), 4) or "not measured"
        print(f"accuracy: declared {_num(status.get('declared_accuracy'), 4)}, measured {measured}"
              + (f" ({status['accuracy_note']})" if status.get("accuracy_note") else ""))
        print(f"inputs: {_tensors(status.get('inputs', []))}")
        print(f"outputs: {_tensors(status.get('outputs', []))}")
        _print_variants(status["variants"])
        return 0
    models = client.models()
    if args.json:
        _print_json({"models": models})
    elif not models:
        print("no models yet: register one with 'infaas register'")
    else:
        _print_table(["name", "task", "status", "visibility", "declared", "measured"],
                     [[m["name"], m["task"], m["status"], m.get("visibility"), _num(m.get("declared_accuracy"), 4),
                       _num(m.get("measured_accuracy"), 4)] for m in models], right=(4, 5))
    return 0


def _delete_model(args, name: str) -> int:
    client = _client(args)
    status = client.model(name)  # a missing or foreign model fails here with the API's own 404
    client.delete_model(name)
    if args.json:
        _print_json({"deleted": name, "variants": [v["id"] for v in status["variants"]]})
    else:
        print(f"deleted model {name} ({status['task']}) and its {len(status['variants'])} variant(s)")
    return 0


def cmd_workers(args) -> int:
    workers = _client(args).workers()
    if args.json:
        _print_json({"workers": workers})
    elif not workers:
        print("no live workers")
    else:
        rows = []
        for w in workers:
            reps = ", ".join(f"{r['variant_id']} (q={r['queued_rows']})" for r in w["replicas"]) or "-"
            mem = f"{w.get('memory_used_bytes', 0) / 2**20:.0f}/{w.get('memory_budget_bytes', 0) / 2**20:.0f}"
            rows.append([w["id"], w["hardware"], w["state"], w["url"], mem, reps])
        _print_table(["id", "hardware", "state", "url", "memory MiB", "replicas (queued rows)"], rows, right=(4,))
    return 0


def cmd_tasks(args) -> int:
    tasks = _client(args).tasks()
    if args.json:
        _print_json({"tasks": tasks})
    elif not tasks:
        print("no tasks yet: a task appears with its first registered model")
    else:
        _print_table(["task", "architectures", "inputs"],
                     [[t["task"], ", ".join(t["architectures"]), _tensors(t.get("inputs", []))] for t in tasks])
    return 0


def cmd_events(args) -> int:
    import time as _time

    events = _client(args).events()
    if args.json:
        _print_json({"events": events})
    elif not events:
        print("no autoscaling events yet")
    else:
        headers = ["time", "kind", "reason"] + (["inputs"] if args.verbose else [])
        rows = [[_time.strftime("%H:%M:%S", _time.localtime(e["at"])), e["kind"], one_line(e["reason"])]
                + ([json.dumps(e["data"], sort_keys=True)] if args.verbose else []) for e in events]
        _print_table(headers, rows)
    return 0


def _job_line(s: dict) -> str:
    eta = f", about {s['eta_s']:.0f} s left" if s.get("eta_s") else ""
    return f"job {s['id']} {s['state']}: {s['done']} done, {s['failed']} failed, {s['left']} left of {s['items']} items{eta}"


def cmd_jobs(args) -> int:
    client = _client(args)
    if args.action == "list":
        jobs = client.jobs()
        if args.json:
            _print_json({"jobs": jobs})
        elif not jobs:
            print("no jobs yet: submit one with 'infaas jobs submit'")
        else:
            rows = []
            for j in jobs:
                s = client.job(j["id"])  # the list holds jobs as submitted; their state is per job
                rows.append([s["id"], s["state"], s["done"], s["failed"], s["left"], s["items"], s.get("rows"),
                             s.get("variant"), _when(s.get("created_at"))])
            _print_table(["id", "state", "done", "failed", "left", "items", "rows", "variant", "submitted"], rows,
                         right=(2, 3, 4, 5, 6))
        return 0
    if args.action == "submit":
        target = {k: getattr(args, k) for k in ("task", "architecture", "variant") if getattr(args, k)}
        objective = {k: v for k, v in (("min_accuracy", args.min_accuracy), ("max_cost", args.max_cost)) if v is not None}
        s = client.submit_job(input=args.input, output=args.output, objective=objective, deadline_s=args.deadline_s, **target)
        print(f"submitted job {s['id']}: {s['items']} items ({s['rows']} rows) on {s['variant']}")
        print(s["id"] if args.quiet else f"follow it with: infaas jobs wait {s['id']}")
        return 0
    if args.action == "status":
        s = client.job(args.job_id)
        print(_job_line(s))
        for f in s["failures"]:
            print(f"  failed: {f['name']}: {f['error']}")
        return 0
    if args.action == "cancel":
        print(_job_line(client.cancel_job(args.job_id)))
        return 0
    width = 40

    def bar(s: dict) -> None:
        total = max(s["items"], 1)
        filled = int(width * (s["done"] + s["failed"]) / total)
        print(f"\r[{'#' * filled}{'.' * (width - filled)}] {_job_line(s)}", end="", flush=True)

    s = client.wait_job(args.job_id, progress=bar)
    print()
    for f in s["failures"]:
        print(f"  failed: {f['name']}: {f['error']}")
    return 0 if s["state"] == "done" else 1


JSON_EXAMPLE = "--json '[[0.0, 0.1]]'"


def parse_json_rows(text: str) -> np.ndarray:
    """``--json``: the rows as a JSON array of arrays of numbers; every mistake is one line saying what is wrong."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        near = text[exc.pos:exc.pos + 20]
        what = " ('...' is not a value)" if "..." in text else ""
        raise CliError(f"--json: not valid JSON at char {exc.pos} ({near!r}): {exc.msg}{what}; give the full rows, "
                       f"e.g. {JSON_EXAMPLE}") from None
    if not isinstance(doc, list) or not doc:
        raise CliError(f"--json: expected a non-empty array of rows, got {type(doc).__name__}; e.g. {JSON_EXAMPLE}")
    try:
        x = np.asarray(doc)
    except ValueError:
        lengths = sorted({len(r) if isinstance(r, list) else 1 for r in doc})
        raise CliError(f"--json: the rows differ in shape (lengths {lengths}); every row needs the same number of values"
                       ) from None
    if x.dtype.kind not in "biuf":
        what = "strings" if x.dtype.kind in "US" else "null or nested values"
        raise CliError(f"--json: the rows must hold only numbers (or true/false), not {what}; e.g. {JSON_EXAMPLE}")
    return x


def load_rows(path: str) -> np.ndarray:
    """``--input``: an ``.npy`` array, or an ``.npz`` with an array ``inputs`` (as the validation files) or just one array."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise CliError(f"--input {path}: not an .npy or .npz array file ({one_line(exc)})") from None
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:
        names = list(loaded.files)
        if "inputs" in names:
            return loaded["inputs"]
        if len(names) == 1:
            return loaded[names[0]]
    raise CliError(f"--input {path}: an .npz needs an array named 'inputs' (or just one array); it holds {names}")


def cast_rows(x: np.ndarray, dtype: str | None, source: str) -> np.ndarray:
    """Rows as ``dtype`` (None: as they are), refusing a cast that would change a value: a fraction,
    NaN or out-of-range number to an integer type, a complex number, an overflow to infinity."""
    from infaas.core.tensors import NUMPY_TO_OIP

    takes = ", ".join(sorted(NUMPY_TO_OIP))
    if dtype is not None:
        try:
            want = np.dtype(dtype)
        except TypeError:
            raise CliError(f"--dtype {dtype!r}: not a numpy dtype; one of {takes}") from None
        if want.name not in NUMPY_TO_OIP:
            raise CliError(f"--dtype {dtype!r}: the API takes {takes}")
    else:
        if x.dtype.name not in NUMPY_TO_OIP:
            raise CliError(f"{source}: {x.dtype} values are not a tensor type the API takes ({takes}); cast them with --dtype")
        return x
    if x.dtype == want:
        return x
    cannot = f"{source}: cannot cast {x.dtype} values to {want.name}"
    if x.dtype.kind not in "biufc":
        raise CliError(f"{cannot}: they are not numbers")
    if x.dtype.kind == "c" and want.kind != "c":
        if np.any(x.imag != 0):
            raise CliError(f"{cannot}: they have imaginary parts")
        x = x.real
    with np.errstate(all="ignore"):
        y = x.astype(want)
        if want.kind in "biu":
            if x.dtype.kind == "f":
                bad = ~np.isfinite(x) | (x != np.round(x))
                if bad.any():
                    raise CliError(f"{cannot} without changing them: {x[bad].flat[0].item()!r} is not a whole number")
            changed = y.astype(x.dtype) != x
            if changed.any():
                raise CliError(f"{cannot} without changing them: {x[changed].flat[0].item()!r} is out of range for {want.name}")
        elif want.kind == "f":
            overflow = np.isfinite(x) & ~np.isfinite(y)
            if overflow.any():
                raise CliError(f"{cannot}: {x[overflow].flat[0].item()!r} is too large for {want.name}")
    return y


def query_rows(args) -> np.ndarray:
    """The rows of ``infaas query``, from any input form, cast to ``--dtype`` (float32 for --json by default)."""
    if args.input:
        return cast_rows(load_rows(args.input), args.dtype, f"--input {args.input}")
    return cast_rows(parse_json_rows(args.json), args.dtype or "float32", "--json")


def cmd_query(args) -> int:
    from infaas.client import ApiError

    x = query_rows(args)
    try:
        outputs, decision = _client(args).infer(
            x, task=args.task, architecture=args.architecture, variant=args.variant,
            min_accuracy=args.min_accuracy, latency_ms=args.latency_ms, max_cost=args.max_cost,
        )
    except ApiError as exc:
        if isinstance(exc.body, dict) and exc.body.get("field") == "datatype" and exc.body.get("message"):
            exc.body = {**exc.body, "message": f"{exc.body['message']} (cast the rows with --dtype)"}
        raise
    print(json.dumps({"outputs": {k: v.tolist() for k, v in outputs.items()}, "decision": decision}, indent=2))
    return 0


def _local_store(args):
    from infaas.core.settings import Settings
    from infaas.wiring.local import LocalAdapters

    return LocalAdapters(Settings.from_env(data_dir=args.data_dir)).store


def _key_store(args):
    """Where ``infaas tenants`` keeps keys: the local stack's store, or with INFAAS_BACKEND=aws the
    deployment's table (INFAAS_TABLE, the stack's TableName output), read by its authorizer."""
    import os

    if os.environ.get("INFAAS_BACKEND", "").strip().lower() == "aws":
        from infaas.wiring.aws import key_store

        return key_store()
    return _local_store(args)


def cmd_tenants(args) -> int:
    """Keys are managed with access to the metadata store (this machine's, or the AWS table), not over HTTP."""
    from infaas.app import identity

    store = _key_store(args)
    if args.action == "create":
        key_id, key = identity.create_key(store, args.tenant, identity.parse_scopes(args.scopes))
        print(f"created key {key_id} for tenant {args.tenant} with scopes {args.scopes}")
        print("the key is shown only this once; keep it secret:")
        print(key)
    elif args.action == "list":
        # never the secret's digest: ids, tenants, scopes, state
        keys = [{"key_id": k["key_id"], "tenant": k["tenant"], "scopes": list(k["scopes"]),
                 "revoked": bool(k.get("revoked")), "created_at": k.get("created_at")} for k in store.keys(args.tenant)]
        if args.json:
            _print_json({"keys": keys})
        elif not keys:
            print("no keys" + (f" for tenant {args.tenant}" if args.tenant else "")
                  + ": create one with 'infaas tenants create TENANT'")
        else:
            _print_table(["key id", "tenant", "scopes", "state", "created"],
                         [[k["key_id"], k["tenant"], ",".join(k["scopes"]), "revoked" if k["revoked"] else "active",
                           _when(k["created_at"])] for k in keys])
    elif args.action == "revoke":
        identity.revoke_key(store, args.key_id)
        print(f"revoked key {args.key_id}")
    return 0


def cmd_demo(args) -> int:
    from infaas.cli.demo import main as demo_main

    return demo_main(workers=args.workers)


def cmd_sim(args) -> int:
    """``infaas sim compare``: replay recorded traces against a simulated cluster, once per policy;
    ``infaas sim static-split``: the best fixed split of the Proteus cluster in hindsight;
    ``infaas sim data fetch``: download the Proteus data set it replays."""
    if args.action == "data":
        from infaas.sim.fetch import fetch_main

        return fetch_main(args)
    if args.action == "static-split":
        from infaas.sim.cli import static_split_main

        return static_split_main(args)
    from infaas.sim.cli import compare_main

    return compare_main(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="infaas", description="Model-less inference serving.")
    p.add_argument("--url", default=None, help="API address (default: env INFAAS_URL, else "
                   "http://127.0.0.1:$INFAAS_PORT, port 8080 when unset)")
    p.add_argument("--api-key", default=os.environ.get("INFAAS_API_KEY"), help="API key (env INFAAS_API_KEY)")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the local stack and keep it running")
    up.add_argument("--port", type=int, default=None)
    up.add_argument("--workers", type=int, default=None, help="cpu worker processes (default 2)")
    up.add_argument("--data-dir", default=None, help="where metadata and model files live (default .infaas-data)")
    up.set_defaults(func=cmd_up)

    reg = sub.add_parser("register", help="register an ONNX model")
    reg.add_argument("file")
    reg.add_argument("--name", required=True)
    reg.add_argument("--task", required=True, help="kind/dataset, e.g. classification/digits")
    reg.add_argument("--accuracy", type=float, required=True)
    reg.add_argument("--validation", help=".npz with 'inputs' and 'labels' to measure accuracy per variant")
    reg.add_argument("--shared", action="store_true", help="let every tenant query it")
    reg.add_argument("--dim", action="append", metavar="NAME=SIZE",
                     help="representative size of a dynamic dimension the graph names (repeatable), e.g. --dim seq=128")
    reg.add_argument("--batch-axis", action="append", metavar="INPUT=AXIS|none",
                     help="the axis of INPUT that carries a request's rows, or none for a per-request value (repeatable)")
    reg.add_argument("--signature", help="the signature override as JSON (docs/models.md); --dim and --batch-axis add to it")
    reg.add_argument("--wait", action="store_true", help="show progress until its variants are ready")
    reg.set_defaults(func=cmd_register)

    models = sub.add_parser("models", help="list architectures, show one with its variants, or delete one",
                            usage="infaas models [NAME [--logs] | delete NAME] [--json]")
    models.add_argument("words", nargs="*", metavar="NAME | delete NAME",
                        help="an architecture to show; 'delete NAME' deletes one you own, with its variants")
    models.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    models.add_argument("--logs", action="store_true", help="with NAME: each variant's full build and profiling log")
    models.set_defaults(func=cmd_models)

    workers = sub.add_parser("workers", help="list live workers and their replicas (admin key)")
    workers.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    workers.set_defaults(func=cmd_workers)

    tasks = sub.add_parser("tasks", help="list tasks, their architectures and input spec")
    tasks.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    tasks.set_defaults(func=cmd_tasks)

    jobs = sub.add_parser("jobs", help="offline (batch) jobs: submit, list, status, wait, cancel")
    jsub = jobs.add_subparsers(dest="action", required=True)
    jlist = jsub.add_parser("list", help="your jobs with their state")
    jlist.add_argument("--json", action="store_true", help="print the API's JSON (jobs as submitted) instead of a table")
    submit = jsub.add_parser("submit", help="submit a job; prints its id at once")
    submit.add_argument("--input", required=True, help="folder under the offline root, or s3://bucket/prefix")
    submit.add_argument("--output", required=True, help="folder under the offline root, or s3://bucket/prefix")
    jt = submit.add_mutually_exclusive_group(required=True)
    jt.add_argument("--task")
    jt.add_argument("--architecture")
    jt.add_argument("--variant")
    submit.add_argument("--min-accuracy", type=float)
    submit.add_argument("--max-cost", type=float, help="dollars per row")
    submit.add_argument("--deadline-s", type=float)
    submit.add_argument("-q", "--quiet", action="store_true", help="print only the job id on the last line")
    for name in ("status", "wait", "cancel"):
        jsub.add_parser(name).add_argument("job_id")
    jobs.set_defaults(func=cmd_jobs)

    ev = sub.add_parser("events", help="autoscaling decisions and their reasons (admin key)")
    ev.add_argument("-v", "--verbose", action="store_true", help="also print each decision's inputs")
    ev.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    ev.set_defaults(func=cmd_events)

    q = sub.add_parser("query", help="send one query")
    target = q.add_mutually_exclusive_group(required=True)
    target.add_argument("--task")
    target.add_argument("--architecture")
    target.add_argument("--variant")
    data = q.add_mutually_exclusive_group(required=True)
    data.add_argument("--input", help=".npy file of input rows, or .npz with an array 'inputs'")
    data.add_argument("--json", help="rows as a JSON array of arrays, every value written out, e.g. '[[0.0, 0.1]]'")
    q.add_argument("--dtype", default=None, help="cast the rows to this type, whatever the input form (default: "
                   "float32 for --json, the file's own type for --input); a cast that would change a value is refused")
    q.add_argument("--min-accuracy", type=float)
    q.add_argument("--latency-ms", type=float)
    q.add_argument("--max-cost", type=float)
    q.set_defaults(func=cmd_query)

    ten = sub.add_parser("tenants", help="create, list and revoke API keys (on the machine holding the store)")
    ten_sub = ten.add_subparsers(dest="action", required=True)
    create = ten_sub.add_parser("create", help="create a key for a tenant; prints it once")
    create.add_argument("tenant")
    create.add_argument("--scopes", default="query,register", help="comma-separated: query, register, admin")
    lst = ten_sub.add_parser("list", help="list keys (ids, tenants, scopes; never secrets)")
    lst.add_argument("tenant", nargs="?")
    lst.add_argument("--json", action="store_true", help="print JSON instead of a table")
    rev = ten_sub.add_parser("revoke", help="revoke a key by id")
    rev.add_argument("key_id")
    for sp in (create, lst, rev):
        sp.add_argument("--data-dir", default=None, help="the stack's data dir (default .infaas-data)")
    ten.set_defaults(func=cmd_tenants)

    demo = sub.add_parser("demo", help="train digits classifiers, register them, query under three objectives")
    demo.add_argument("--workers", type=int, default=2)
    demo.set_defaults(func=cmd_demo)

    from infaas.cli.replay import add_parser as add_replay

    add_replay(sub)

    sim = sub.add_parser("sim", help="trace-driven simulator: compare serving policies (docs/evaluation.md)")
    sim_sub = sim.add_subparsers(dest="action", required=True)
    cmp_ = sim_sub.add_parser("compare", help="replay a workload once per policy and write the report")
    which = cmp_.add_mutually_exclusive_group(required=True)
    which.add_argument("--workload", help="a folder under <data>/traces, e.g. zipf_exponential, or <name>-cv<c>: its "
                       "per-second totals re-timed into sub-second bursts with gamma gaps of coefficient of variation c")
    which.add_argument("--all", action="store_true", help="every workload under <data>/traces")
    cmp_.add_argument("--mode", choices=("cloud", "fixed", "both"), default="both",
                      help="cloud: autoscaling with prices; fixed: the Proteus 40-device set-up (default both)")
    cmp_.add_argument("--fixed-cluster", action="store_true", help="same as --mode fixed")
    cmp_.add_argument("--seed", type=int, default=0)
    cmp_.add_argument("--duration", type=float, default=None, help="replay only the first this many seconds")
    cmp_.add_argument("--burst-cv", default=None, metavar="C[,C...]",
                      help="also run each workload re-timed into sub-second bursts at these gap CVs, e.g. 8,12,15")
    cmp_.add_argument("--policies", default=None, help="comma-separated subset (default: all of the mode)")
    cmp_.add_argument("--data", default=None, help="the Proteus data folder (default: INFAAS_PROTEUS_DIR, else the "
                      "`infaas sim data fetch` cache, else ../shared/data/proteus)")
    cmp_.add_argument("--doc", default="docs/evaluation.md", help="report page to update")
    cmp_.add_argument("--img", default="docs/img", help="folder for the plots")
    cmp_.add_argument("--no-report", action="store_true", help="print the table only")
    cmp_.add_argument("--no-plots", action="store_true", help="write the report's tables without plots")
    split = sim_sub.add_parser("static-split", help="the fixed cluster's best split among the tasks, chosen in "
                               "hindsight for a workload (a yardstick for the policies; needs the sim extra)")
    split.add_argument("--workload", required=True, help="as for compare, e.g. zipf_exponential_bursty-cv12")
    split.add_argument("--min-accuracy", type=float, required=True, metavar="A",
                       help="effective accuracy (0-100) the split must reach on the rows it answers in time")
    split.add_argument("--busy-above", type=float, default=None, metavar="R",
                       help="model only the seconds with more than R arrivals (the busy phases of a swinging load)")
    split.add_argument("--replay", action="store_true",
                       help="then run the split, pinned, through the simulator with the product's selector and batcher")
    split.add_argument("--seed", type=int, default=0, help="the burst workloads' and the replay's seed (default 0)")
    split.add_argument("--data", default=None, help="the Proteus data folder (as for compare)")
    dat = sim_sub.add_parser("data", help="the Proteus data set the simulator replays")
    fetch = dat.add_subparsers(dest="data_action", required=True).add_parser(
        "fetch", help="download the Proteus profiles and traces (pinned, SHA-256 checked) into a local cache")
    fetch.add_argument("--url", dest="source_url", default=None, metavar="URL",
                       help="archive to download (default: env INFAAS_PROTEUS_URL, else GitHub at the pinned commit)")
    fetch.add_argument("--dest", default=None, metavar="DIR", help="folder to install into (default $XDG_CACHE_HOME/infaas/proteus, "
                       "~/.cache/infaas/proteus)")
    fetch.add_argument("--force", action="store_true", help="download again even if the folder holds verified data")
    sim.set_defaults(func=cmd_sim)
    return p


def main(argv: list[str] | None = None) -> int:
    """Every failure the user can act on is one ``error:`` line on stderr and exit status 1."""
    import httpx

    from infaas.client import ApiError
    from infaas.core.errors import InfaasError

    args = build_parser().parse_args(argv)

    def fail(message) -> int:
        print(f"error: {one_line(message)}", file=sys.stderr)
        return 1

    def url() -> str:  # set by _client before any request
        return getattr(args, "url", None) or "its address"

    try:
        return args.func(args)
    except ApiError as exc:
        return fail(api_error_line(exc, args.api_key))
    except (httpx.ConnectError, httpx.ConnectTimeout):
        return fail(f"cannot reach the INFaaS API at {url()}: start it with 'infaas up' or set INFAAS_URL")
    except httpx.TimeoutException:
        return fail(f"the INFaaS API at {url()} did not answer in time")
    except httpx.TransportError as exc:
        return fail(f"the connection to the INFaaS API at {url()} failed: {exc or type(exc).__name__}")
    except CliError as exc:
        return fail(exc)
    except InfaasError as exc:
        return fail(exc.message)
    except BrokenPipeError:  # the reader went away (`infaas models | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (OSError, ValueError) as exc:
        return fail(exc)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
