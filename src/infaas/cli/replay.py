"""``infaas replay``: a trace sent to a running stack, and the same trace through the simulator.

The trace is one of the simulator's (a Proteus workload, ``--workload``, or a CSV of the product's
own, ``--trace``), read with ``infaas.sim.data``'s loaders, time-scaled to what the machine can
carry (``--rate`` rows/s on average, or ``--scale`` times the trace's rate), cut to ``--duration``
seconds and ``--max-queries`` queries (``infaas.sim.live.scale``), its model families mapped onto
the stack's tasks (``--task``, default the digits task; ``--register-digits`` trains and registers
the digits classifiers first), each query carrying the trace's latency objective and its tenant's
accuracy floor (``sim.live.tenant_floors``).

Queries go open-loop at their (scaled) arrival times, concurrently (asyncio and httpx, at most
``--max-in-flight`` at once: a query due while that many are out is counted as not sent), each
with a ``--timeout-s`` limit. Inputs are rows of the digits test split. The report counts every
query once: answered, refused (by status and code), timed out, failed, not sent; among the
answered ones, the objective misses measured at this client (the edge) and as the service
itself measured them (``objective_met``, ``latency_ms``); the workers' machine time over the run
and its price. Then the same plan through the simulator with the variants the stack measured
(their profiles on this machine, ``GET /v1/models/<name>``) on the stack's worker count, and the
two compared: within a factor of 2 or 2 percentage points, whichever is larger, on the misses the
service measured (from the query's arrival at the API to its answer: what the simulator models).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
from dataclasses import dataclass, field

import numpy as np

# Statuses of a query that did not get an answer from the service.
TIMEOUT, FAILED, NOT_SENT = "timeout", "failed", "not_sent"


@dataclass
class Outcome:
    """One query: its status (HTTP status, or TIMEOUT / FAILED / NOT_SENT) and, when answered, how."""

    status: int | str = NOT_SENT
    code: str | None = None
    edge_ms: float = math.nan  # from the request leaving this client to the whole answer back
    lag_ms: float = 0.0  # how late it left against its scheduled time
    service_ms: float = math.nan
    objective_met: bool | None = None
    variant: str | None = None
    accuracy: float | None = None


@dataclass
class Plan:
    """What is sent: per query its arrival (ms from the start), task, objective and floor."""

    workload: object  # infaas.sim.data.Workload
    floors: list = field(default_factory=list)  # per tenant index: min_accuracy or None

    def body(self, i: int, row: list[float], if_late: str | None) -> bytes:
        w = self.workload
        objective: dict = {"latency_ms": float(w.latency_ms[i])}
        floor = self.floors[int(w.tenant[i])]
        if floor is not None:
            objective["min_accuracy"] = floor
        if if_late:
            objective["if_late"] = if_late
        return json.dumps({"task": w.tasks[int(w.task[i])], "objective": objective, "inputs": [row]}).encode()


# -- sending -------------------------------------------------------------------------------------------
async def send(plan: Plan, url: str, api_key: str | None, rows: np.ndarray, *, max_in_flight: int = 256,
               timeout_s: float = 10.0, if_late: str | None = None, progress=None, progress_s: float = 5.0,
               start_delay_s: float = 0.2) -> tuple[list[Outcome], float]:
    """Send every query of ``plan`` open-loop at its arrival time; returns the outcomes (one per
    query, in plan order) and the wall time from the first due query to the last answer."""
    import httpx

    w = plan.workload
    n = len(w)
    out = [Outcome() for _ in range(n)]
    arrival_s = (w.arrival_ms / 1000.0).tolist()
    row_list = [r.tolist() for r in rows]
    headers = {"content-type": "application/json"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    loop = asyncio.get_running_loop()
    in_flight = 0
    done = 0

    async def one(i: int, due: float, http) -> None:
        nonlocal in_flight, done
        o = out[i]
        body = plan.body(i, row_list[i % len(row_list)], if_late)
        t0 = loop.time()
        o.lag_ms = max(0.0, (t0 - due) * 1000.0)
        try:
            r = await http.post("/v1/infer", content=body, headers=headers)
            o.edge_ms = (loop.time() - t0) * 1000.0
            o.status = r.status_code
            doc = r.json() if r.content else {}
            if r.status_code == 200:
                o.service_ms = float(doc.get("latency_ms", math.nan))
                o.objective_met = doc.get("objective_met")
                d = doc.get("decision") or {}
                o.variant, o.accuracy = d.get("variant"), d.get("accuracy")
            else:
                o.code = doc.get("code") if isinstance(doc, dict) else None
        except httpx.TimeoutException:
            o.status = TIMEOUT
        except (httpx.TransportError, ValueError) as exc:
            o.status, o.code = FAILED, type(exc).__name__
        finally:
            in_flight -= 1
            done += 1

    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as http:
        t_start = loop.time() + start_delay_s
        next_report = t_start + progress_s
        pending = []
        for i in range(n):
            due = t_start + arrival_s[i]
            now = loop.time()
            if due > now:
                await asyncio.sleep(due - now)
            elif i % 64 == 0:
                await asyncio.sleep(0)  # let answers in when running behind
            if progress and loop.time() >= next_report:
                progress(loop.time() - t_start, i, done, in_flight, out)
                next_report += progress_s
            if in_flight >= max_in_flight:
                continue  # open loop: not sent, counted as such
            in_flight += 1
            pending.append(asyncio.create_task(one(i, due, http)))
        while pending and in_flight:
            await asyncio.sleep(min(progress_s, 0.1))
            if progress and loop.time() >= next_report:
                progress(loop.time() - t_start, n, done, in_flight, out)
                next_report += progress_s
        await asyncio.gather(*pending)
        wall = loop.time() - t_start
    return out, wall


# -- the report ----------------------------------------------------------------------------------------
def _pct(values, q) -> float | None:
    v = [x for x in values if x is not None and not math.isnan(x)]
    return round(float(np.percentile(v, q)), 3) if v else None


def _below(floor: float | None, accuracy: float | None) -> bool:
    return floor is not None and (accuracy is None or accuracy < floor - 1e-9)


def summarise(plan: Plan, out: list[Outcome]) -> dict:
    """Counts that add up: every query is answered, refused, timed out, failed or not sent."""
    w = plan.workload
    answered = [k for k, o in enumerate(out) if o.status == 200]
    refused: dict[str, int] = {}
    for o in out:
        if isinstance(o.status, int) and o.status != 200:
            key = f"{o.status}" + (f" {o.code}" if o.code else "")
            refused[key] = refused.get(key, 0) + 1
    late = {k: bool(out[k].edge_ms > w.latency_ms[k]) for k in answered}
    low = {k: _below(plan.floors[int(w.tenant[k])], out[k].accuracy) for k in answered}
    late_edge = sum(late.values())
    late_service = sum(1 for k in answered if out[k].objective_met is False)
    below_floor = sum(low.values())
    variants: dict[str, int] = {}
    for k in answered:
        variants[out[k].variant or "?"] = variants.get(out[k].variant or "?", 0) + 1
    n_ans = len(answered)
    edge = [out[k].edge_ms for k in answered]
    service = [out[k].service_ms for k in answered]
    n = len(out)
    return {
        "queries": n,
        "sent": sum(1 for o in out if o.status != NOT_SENT),
        "answered": n_ans,
        "refused": sum(refused.values()),
        "refused_by_status": dict(sorted(refused.items())),
        "timed_out": sum(1 for o in out if o.status == TIMEOUT),
        "failed": sum(1 for o in out if o.status == FAILED),
        "not_sent": sum(1 for o in out if o.status == NOT_SENT),
        "late_at_edge": late_edge,
        "late_at_edge_rate": late_edge / n_ans if n_ans else 0.0,
        "late_in_service": late_service,
        "late_in_service_rate": late_service / n_ans if n_ans else 0.0,
        "below_accuracy_floor": below_floor,
        "violations": n - n_ans + sum(1 for k in answered if late[k] or low[k]),
        "edge_ms": {"p50": _pct(edge, 50), "p99": _pct(edge, 99), "max": _pct(edge, 100)},
        "service_ms": {"p50": _pct(service, 50), "p99": _pct(service, 99), "max": _pct(service, 100)},
        "send_lag_ms": {"p50": _pct([o.lag_ms for o in out if o.status != NOT_SENT], 50),
                        "p99": _pct([o.lag_ms for o in out if o.status != NOT_SENT], 99)},
        "variants": dict(sorted(variants.items(), key=lambda kv: -kv[1])),
    }


def simulated_summary(res, sim) -> dict:
    """The simulator's figures in the live report's terms."""
    a = sim.arrays()
    lat = a["finish_ms"] - a["arrival_ms"]
    done = ~np.isnan(a["finish_ms"])
    late = int((done & (lat > a["objective_ms"] + 1e-9)).sum())
    n_done = int(done.sum())
    return {
        "queries": res.requests, "answered": n_done, "refused": res.refused,
        "late": late, "late_rate": late / n_done if n_done else 0.0,
        "violations": res.violations, "violation_rate": res.violation_rate,
        "accuracy_violations": res.accuracy_violations,
        "latency_ms": {"p50": _pct(lat[done].tolist(), 50), "p99": _pct(lat[done].tolist(), 99),
                       "max": _pct(lat[done].tolist(), 100)},
        "machine_seconds": res.machine_seconds, "cost": res.cost, "loads": res.loads,
    }


def agree(live: float, simulated: float) -> bool:
    """Within a factor of 2 or 2 percentage points, whichever is larger."""
    if abs(live - simulated) <= 0.02:
        return True
    lo, hi = sorted((live, simulated))
    return lo > 0 and hi / lo <= 2.0


def differing_terms(live: dict, simulated: dict) -> list[str]:
    """What the two latencies hold that the other does not, in figures."""
    terms = []
    e50, s50, m50 = live["edge_ms"]["p50"], live["service_ms"]["p50"], simulated["latency_ms"]["p50"]
    e99, s99, m99 = live["edge_ms"]["p99"], live["service_ms"]["p99"], simulated["latency_ms"]["p99"]
    if None not in (e50, s50):
        terms.append(f"client and HTTP (edge minus service): p50 {e50 - s50:.2f} ms, p99 {e99 - s99:.2f} ms -- not simulated")
    if None not in (s50, m50):
        terms.append(f"service (API, hop, queue, batch, compute) against simulated (queue, batch, compute): p50 "
                     f"{s50:.2f} vs {m50:.2f} ms, p99 {s99:.2f} vs {m99:.2f} ms -- the API and the hop are not simulated")
    if live["refused"] != simulated["refused"]:
        terms.append(f"refused: {live['refused']} live, {simulated['refused']} simulated")
    if live["send_lag_ms"]["p99"] is not None and live["send_lag_ms"]["p99"] > 5:
        terms.append(f"this client sent late (p99 {live['send_lag_ms']['p99']:.1f} ms behind schedule): the live "
                     "arrivals are burstier than the trace's")
    return terms


# -- the command ---------------------------------------------------------------------------------------
def _log(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


def register_digits(client, tasks: list[str]) -> list[str]:
    """Train the digits classifiers and register them (with validation data, shared) under each
    task: ``<architecture>`` for the first task, ``<architecture>-<k>`` for the k-th after it."""
    import tempfile

    from infaas.cli import digits

    names = []
    with tempfile.TemporaryDirectory(prefix="infaas-replay-") as tmp:
        data = digits.split()
        trained = digits.train(os.path.join(tmp, "models"), data=data)
        val = os.path.join(tmp, "validation.npz")
        with open(val, "wb") as f:
            f.write(digits.validation_npz(data))
        for k, task in enumerate(tasks):
            for t in trained:
                name = t.name if k == 0 else f"{t.name}-{k}"
                client.register(t.path, name=name, task=task, accuracy=round(t.val_accuracy, 4), validation=val)
                names.append(name)
        _log(f"registered {len(names)} architectures for {', '.join(tasks)}; waiting for their variants ...")
        client.wait_ready(names, timeout_s=600)
    return names


def load_workload(args):
    from infaas.sim import data

    if args.trace:
        return data.csv_workload(args.trace, seed=args.seed)
    return data.proteus_workload(args.workload, args.data, seed=args.seed)


def build_plan(args, catalogue_variants) -> Plan:
    from infaas.sim import live

    w = load_workload(args)
    w = live.scale(w, rate=args.rate, factor=args.scale, duration_s=args.duration, max_queries=args.max_queries,
                   latency_ms=args.latency_ms)
    w = live.map_tasks(w, args.task)
    tenants = live.tenant_floors(catalogue_variants, w.tenants)
    w = live.with_tenants(w, tenants)
    return Plan(w, [t.min_accuracy for t in tenants])


def catalogue(client, tasks: list[str]) -> list[dict]:
    """``GET /v1/models/<name>`` of every architecture of ``tasks`` (the profiles measured here)."""
    return [client.model(m["name"]) for m in client.models() if m["task"] in tasks]


def machine_seconds(client, fallback_workers: int, wall_s: float) -> tuple[int, float]:
    """Live workers (an admin key sees them; else ``fallback_workers``) times the run's wall time."""
    try:
        n = len(client.workers())
    except Exception:  # noqa: BLE001 -- a key without the admin scope: the count given
        n = fallback_workers
    return n, n * wall_s


def cmd_replay(args) -> int:
    from infaas.cli import CliError, _client
    from infaas.core.settings import Settings
    from infaas.sim import live

    if args.rate is not None and args.scale is not None:
        raise CliError("give --rate or --scale, not both")
    client = _client(args)
    if args.register_digits:
        register_digits(client, args.task)
    docs = catalogue(client, args.task)
    variants = live.variants_from_catalogue(docs)
    if not variants:
        raise CliError(f"no ready variant for {', '.join(args.task)} on the stack at {args.url}: register models "
                       "for it (or pass --register-digits)")
    plan = build_plan(args, variants)
    w = plan.workload
    if not len(w):
        raise CliError("the scaled trace holds no query: raise --duration or --rate")
    from infaas.cli import digits

    rows = digits.split().x_test.astype(np.float32)
    _log(f"replaying {w.name}: {len(w)} queries over {w.arrival_ms[-1] / 1000:.1f} s "
         f"({w.meta['offered_rps']:g} queries/s offered, the trace x {w.meta['scale_factor']:.4g}); families -> "
         f"tasks {w.meta['task_map']}; floors {dict(zip((t.name for t in w.tenants), plan.floors))}")

    def progress(t, i, done, in_flight, out) -> None:
        ans = sum(1 for o in out if o.status == 200)
        late = sum(1 for k, o in enumerate(out) if o.status == 200 and o.edge_ms > w.latency_ms[k])
        other = sum(1 for o in out if o.status not in (200, NOT_SENT))
        _log(f"  {t:6.1f} s: sent {i}/{len(w)}, answered {ans} ({late} late at the edge), not answered {other}, "
             f"in flight {in_flight}")

    out, wall = asyncio.run(send(plan, args.url, args.api_key, rows, max_in_flight=args.max_in_flight,
                                 timeout_s=args.timeout_s, if_late=args.if_late, progress=progress))
    settings = Settings.from_env()
    hw = settings.hardware["cpu"]
    workers, machine_s = machine_seconds(client, args.workers, wall)
    live_doc = summarise(plan, out)
    live_doc.update(wall_s=round(wall, 2), workers=workers, machine_seconds=round(machine_s, 1),
                    cost=round(machine_s * hw.price_per_hour / 3600.0, 6))
    report = {"trace": w.name, "queries": len(w), "offered_rps": w.meta["offered_rps"], "scale": w.meta["scale_factor"],
              "task_map": w.meta["task_map"], "floors": dict(zip((t.name for t in w.tenants), plan.floors)),
              "live": live_doc}
    if not args.no_sim:
        res, sim = live.simulate(w, variants, workers=workers, params=Settings.from_env(workers=workers).scaling_params(),
                                 hardware=hw, refuse_late=(args.if_late or settings.refuse_late) in ("refuse", "on"),
                                 seed=args.seed)
        sim_doc = simulated_summary(res, sim)
        report["simulated"] = sim_doc
        # the simulator models the service (arrival at the API to the answer leaving it), not this
        # client's machine and HTTP stack: it is held against the misses the service measured
        report["agree"] = agree(live_doc["late_in_service_rate"], sim_doc["late_rate"])
        report["agree_violations"] = agree((live_doc["violations"]) / max(1, len(w)), sim_doc["violation_rate"])
        report["terms"] = differing_terms(live_doc, sim_doc)
    client.close()
    if args.json:
        print(json.dumps(report, indent=2, default=_plain))
    else:
        print_report(report)
    return 0


def _plain(o):
    """numpy scalars as Python numbers in the JSON report."""
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"{type(o).__name__} in the report")


def print_report(r: dict) -> None:
    lv = r["live"]
    print(f"{r['trace']}: {r['queries']} queries at {r['offered_rps']:g}/s offered (the trace x {r['scale']:.4g}), "
          f"{lv['wall_s']:.1f} s")
    print(f"  sent {lv['sent']}, answered {lv['answered']}, refused {lv['refused']} {lv['refused_by_status'] or ''}, "
          f"timed out {lv['timed_out']}, failed {lv['failed']}, not sent {lv['not_sent']}")
    print(f"  objective missed among answered: {lv['late_in_service']} at the service's edge, as it measured them "
          f"({100 * lv['late_in_service_rate']:.2f} %); {lv['late_at_edge']} at this client ({100 * lv['late_at_edge_rate']:.2f} %, "
          f"its own machine and HTTP included); below the accuracy floor {lv['below_accuracy_floor']}")
    print(f"  latency at the edge p50 {lv['edge_ms']['p50']} ms, p99 {lv['edge_ms']['p99']} ms; in the service p50 "
          f"{lv['service_ms']['p50']} ms, p99 {lv['service_ms']['p99']} ms; sent late p99 {lv['send_lag_ms']['p99']} ms")
    print(f"  variants: {lv['variants']}")
    print(f"  machine time: {lv['workers']} workers x {lv['wall_s']:.1f} s = {lv['machine_seconds']} s (${lv['cost']:.6f})")
    if "simulated" in r:
        s = r["simulated"]
        print(f"  simulated: answered {s['answered']}, refused {s['refused']}, late {s['late']} "
              f"({100 * s['late_rate']:.2f} %), latency p50 {s['latency_ms']['p50']} ms, p99 {s['latency_ms']['p99']} ms, "
              f"machine time {s['machine_seconds']} s")
        print(f"  live (the service's edge) vs simulated misses among answered: {100 * lv['late_in_service_rate']:.2f} % vs "
              f"{100 * s['late_rate']:.2f} %: {'within' if r['agree'] else 'NOT within'} a factor of 2 or 2 points")
        for t in r["terms"]:
            print(f"    {t}")


def add_parser(sub) -> None:
    rp = sub.add_parser("replay", help="send a trace to a running stack, then the same trace through the simulator")
    which = rp.add_mutually_exclusive_group(required=True)
    which.add_argument("--workload", help="a Proteus workload (a folder under <data>/traces), e.g. zipf_exponential")
    which.add_argument("--trace", help="a CSV trace: <ms>,<task>[,<latency ms>] per line")
    rp.add_argument("--data", default=None, help="the Proteus data folder (as for infaas sim compare)")
    rp.add_argument("--task", action="append", default=None,
                    help="a task of the stack the trace's families map onto (repeat for more; default classification/digits)")
    speed = rp.add_mutually_exclusive_group()
    speed.add_argument("--rate", type=float, default=None, help="queries per second on average (time-scales the trace)")
    speed.add_argument("--scale", type=float, default=None, help="the trace's rate times this (default 1)")
    rp.add_argument("--duration", type=float, default=60.0, help="seconds of the scaled trace to send (default 60)")
    rp.add_argument("--max-queries", type=int, default=20000, help="at most this many queries (default 20000)")
    rp.add_argument("--latency-ms", type=float, default=None, help="every query's objective (default: the trace's)")
    rp.add_argument("--if-late", choices=("serve", "refuse"), default=None,
                    help="the admission asked for (default: the stack's INFAAS_REFUSE_LATE)")
    rp.add_argument("--seed", type=int, default=0, help="tenant draw and simulation seed")
    rp.add_argument("--max-in-flight", type=int, default=256)
    rp.add_argument("--timeout-s", type=float, default=10.0, help="per query")
    rp.add_argument("--workers", type=int, default=2, help="the stack's workers, when the key cannot list them")
    rp.add_argument("--register-digits", action="store_true", help="train and register the digits classifiers first")
    rp.add_argument("--local", action="store_true", help="start a stack of its own on 127.0.0.1 (--workers cpu workers), "
                    "register the digits classifiers, replay, stop it")
    rp.add_argument("--no-sim", action="store_true", help="the live run only")
    rp.add_argument("--json", action="store_true", help="the report as JSON (progress stays on stderr)")
    rp.set_defaults(func=_run)


def _run(args) -> int:
    if not args.task:
        from infaas.cli import digits

        args.task = [digits.TASK]
    if not args.local:
        return cmd_replay(args)
    from infaas.local.launcher import StackProcess

    _log(f"starting a local stack with {args.workers} cpu workers on 127.0.0.1 ...")
    with StackProcess(workers=args.workers) as stack:
        args.url, args.api_key, args.register_digits = stack.url, stack.api_key, True
        return cmd_replay(args)
