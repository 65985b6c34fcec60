"""The ``infaas`` command: up, register, models, workers, query, jobs, events, tenants, demo, sim.

The top layer: it may import every other package.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np


def _client(args):
    from infaas.client import Client

    return Client(args.url, api_key=args.api_key)


def cmd_up(args) -> int:
    from infaas.core.settings import Settings
    from infaas.local.stack import run

    run(Settings.from_env(data_dir=args.data_dir, port=args.port, workers=args.workers))
    return 0


def cmd_register(args) -> int:
    client = _client(args)
    status = client.register(args.file, name=args.name, task=args.task, accuracy=args.accuracy,
                             validation=args.validation, visibility="shared" if args.shared else "private")
    print(f"registered {status['name']} for {status['task']}: {len(status['variants'])} variant(s) to build")
    if args.wait:
        final = client.wait_ready([args.name], progress=_progress_printer())
        print()
        _print_variants(final[args.name]["variants"])
        return 0 if final[args.name]["status"] == "ready" else 1
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
            doing = "all built and profiled"
        else:
            doing = "waiting for a worker of the right hardware type"
        line = f"  [{done}/{len(variants)} variants done] {doing}"
        if line != last[0]:
            print(line, flush=True)
            last[0] = line

    return show


def _print_variants(variants: list[dict]) -> None:
    print(f"  {'variant':42} {'status':9} {'accuracy':>8} {'p99 b1 ms':>10} {'p99 b32 ms':>11} {'load ms':>8}")
    for v in variants:
        p = v.get("profile") or {}
        lat = p.get("latency_ms", {})
        b1 = lat.get("1", [None, None])[1]
        b32 = lat.get("32", [None, None])[1]
        acc = v.get("accuracy")
        fmt = lambda x, d=3: f"{x:.{d}f}" if isinstance(x, (int, float)) else "-"
        print(f"  {v['id']:42} {v['status']:9} {fmt(acc, 4):>8} {fmt(b1):>10} {fmt(b32):>11} {fmt(p.get('load_ms'), 1):>8}"
              + (f"  ({v['message']})" if v.get("message") else ""))


def cmd_models(args) -> int:
    client = _client(args)
    if args.name:
        status = client.model(args.name)
        print(f"{status['name']} ({status['task']}, {status['visibility']}): {status['status']}")
        _print_variants(status["variants"])
    else:
        for m in client.models():
            print(f"{m['name']:24} {m['task']:28} {m['status']:9} declared accuracy {m['declared_accuracy']}")
    return 0


def cmd_workers(args) -> int:
    for w in _client(args).workers():
        reps = ", ".join(f"{r['variant_id']} (q={r['queued_rows']})" for r in w["replicas"]) or "no replicas"
        print(f"{w['id']:12} {w['hardware']:6} {w['state']:9} {w['url']:28} {reps}")
    return 0


def cmd_events(args) -> int:
    import time as _time

    for e in _client(args).events():
        when = _time.strftime("%H:%M:%S", _time.localtime(e["at"]))
        print(f"{when} {e['kind']:8} {e['reason']}")
        if args.verbose:
            print("         " + json.dumps(e["data"], sort_keys=True))
    return 0


def _job_line(s: dict) -> str:
    eta = f", about {s['eta_s']:.0f} s left" if s.get("eta_s") else ""
    return f"job {s['id']} {s['state']}: {s['done']} done, {s['failed']} failed, {s['left']} left of {s['items']} items{eta}"


def cmd_jobs(args) -> int:
    client = _client(args)
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


def cmd_query(args) -> int:
    if args.input:
        x = np.load(args.input)
    else:
        x = np.asarray(json.loads(args.json), dtype=args.dtype)
    outputs, decision = _client(args).infer(
        x, task=args.task, architecture=args.architecture, variant=args.variant,
        min_accuracy=args.min_accuracy, latency_ms=args.latency_ms, max_cost=args.max_cost,
    )
    print(json.dumps({"outputs": {k: v.tolist() for k, v in outputs.items()}, "decision": decision}, indent=2))
    return 0


def _local_store(args):
    from infaas.core.settings import Settings
    from infaas.wiring.local import LocalAdapters

    return LocalAdapters(Settings.from_env(data_dir=args.data_dir)).store


def cmd_tenants(args) -> int:
    """Keys are managed on the machine that holds the metadata store, not over HTTP."""
    from infaas.app import identity

    store = _local_store(args)
    if args.action == "create":
        key_id, key = identity.create_key(store, args.tenant, identity.parse_scopes(args.scopes))
        print(f"created key {key_id} for tenant {args.tenant} with scopes {args.scopes}")
        print("the key is shown only this once; keep it secret:")
        print(key)
    elif args.action == "list":
        for k in store.keys(args.tenant):
            state = "revoked" if k.get("revoked") else "active"
            print(f"{k['key_id']}  {k['tenant']:20} {','.join(k['scopes']):24} {state}")
    elif args.action == "revoke":
        identity.revoke_key(store, args.key_id)
        print(f"revoked key {args.key_id}")
    return 0


def cmd_demo(args) -> int:
    from infaas.cli.demo import main as demo_main

    return demo_main(workers=args.workers)


def cmd_sim(args) -> int:
    """``infaas sim compare``: replay recorded traces against a simulated cluster, once per policy."""
    from infaas.sim.cli import compare_main

    return compare_main(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="infaas", description="Model-less inference serving.")
    p.add_argument("--url", default=os.environ.get("INFAAS_URL", "http://127.0.0.1:8080"), help="API address (env INFAAS_URL)")
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
    reg.add_argument("--wait", action="store_true", help="show progress until its variants are ready")
    reg.set_defaults(func=cmd_register)

    models = sub.add_parser("models", help="list architectures, or show one with its variants")
    models.add_argument("name", nargs="?")
    models.set_defaults(func=cmd_models)

    workers = sub.add_parser("workers", help="list live workers and their replicas")
    workers.set_defaults(func=cmd_workers)

    jobs = sub.add_parser("jobs", help="offline (batch) jobs: submit, status, wait, cancel")
    jsub = jobs.add_subparsers(dest="action", required=True)
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
    ev.set_defaults(func=cmd_events)

    q = sub.add_parser("query", help="send one query")
    target = q.add_mutually_exclusive_group(required=True)
    target.add_argument("--task")
    target.add_argument("--architecture")
    target.add_argument("--variant")
    data = q.add_mutually_exclusive_group(required=True)
    data.add_argument("--input", help=".npy file of input rows")
    data.add_argument("--json", help="rows as JSON, e.g. '[[0.1, 0.2, ...]]'")
    q.add_argument("--dtype", default="float32")
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
    rev = ten_sub.add_parser("revoke", help="revoke a key by id")
    rev.add_argument("key_id")
    for sp in (create, lst, rev):
        sp.add_argument("--data-dir", default=None, help="the stack's data dir (default .infaas-data)")
    ten.set_defaults(func=cmd_tenants)

    demo = sub.add_parser("demo", help="train digits classifiers, register them, query under three objectives")
    demo.add_argument("--workers", type=int, default=2)
    demo.set_defaults(func=cmd_demo)

    sim = sub.add_parser("sim", help="trace-driven simulator: compare serving policies (docs/evaluation.md)")
    sim_sub = sim.add_subparsers(dest="action", required=True)
    cmp_ = sim_sub.add_parser("compare", help="replay a workload once per policy and write the report")
    which = cmp_.add_mutually_exclusive_group(required=True)
    which.add_argument("--workload", help="a folder under <data>/traces, e.g. zipf_exponential")
    which.add_argument("--all", action="store_true", help="every workload under <data>/traces")
    cmp_.add_argument("--mode", choices=("cloud", "fixed", "both"), default="both",
                      help="cloud: autoscaling with prices; fixed: the Proteus 40-device set-up (default both)")
    cmp_.add_argument("--fixed-cluster", action="store_true", help="same as --mode fixed")
    cmp_.add_argument("--seed", type=int, default=0)
    cmp_.add_argument("--duration", type=float, default=None, help="replay only the first this many seconds")
    cmp_.add_argument("--policies", default=None, help="comma-separated subset (default: all of the mode)")
    cmp_.add_argument("--data", default=None, help="the Proteus data folder (default ../shared/data/proteus)")
    cmp_.add_argument("--doc", default="docs/evaluation.md", help="report page to update")
    cmp_.add_argument("--img", default="docs/img", help="folder for the plots")
    cmp_.add_argument("--no-report", action="store_true", help="print the table only")
    sim.set_defaults(func=cmd_sim)
    return p


def main(argv: list[str] | None = None) -> int:
    from infaas.client import ApiError
    from infaas.core.errors import InfaasError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except InfaasError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
