"""``infaas sim compare`` and ``infaas sim static-split`` (wired in ``infaas.cli``)."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from infaas.sim import compare, data


def compare_main(args) -> int:
    names = data.list_workloads(args.data) if args.all else [args.workload]
    cvs = [c for c in (getattr(args, "burst_cv", None) or "").split(",") if c.strip()]
    if cvs:  # the same workloads' per-second totals, re-timed into sub-second bursts
        names = names + [f"{n}-cv{float(c):g}" for n in names for c in cvs]
    if not names:
        print(f"error: no workloads under {data.data_dir(args.data) / 'traces'}", file=sys.stderr)
        return 1
    modes = ["fixed"] if args.fixed_cluster else (["cloud", "fixed"] if args.mode == "both" else [args.mode])
    policies = args.policies.split(",") if args.policies else None
    command = "infaas " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["sim"] else \
        f"infaas sim compare --workload {names[0]}"
    t0 = time.perf_counter()
    for name in names:
        for mode in modes:
            print(f"{name} ({mode}):", flush=True)
            c = compare.compare(name, mode=mode, seed=args.seed, duration_s=args.duration, path=args.data,
                                policies=policies, progress=lambda line: print(line, flush=True))
            c.command = command
            if not args.no_report:
                compare.write_report(c, Path(args.doc), Path(args.img), plots=not getattr(args, "no_plots", False))
            print(f"  ({c.wall_s:.0f} s)", flush=True)
    if not args.no_report:
        print(f"report: {args.doc} (plots in {args.img}/), {time.perf_counter() - t0:.0f} s in all")
    return 0


def static_split_main(args) -> int:
    import math

    from infaas.sim import runner, static_split

    def fail(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return 1

    if not 0 <= args.min_accuracy <= 100:
        return fail(f"--min-accuracy must be within 0-100, got {args.min_accuracy:g}")
    if args.busy_above is not None and not (math.isfinite(args.busy_above) and args.busy_above >= 0):
        return fail(f"--busy-above must be a number of arrivals per second, at least 0, got {args.busy_above:g}")
    folder = data.data_dir(args.data)
    known = data.list_workloads(args.data)
    burst = compare.BURST.match(args.workload)
    if args.workload not in known and not (burst and burst["base"] in known):
        where = f"{folder / 'traces'}" + (" (--data)" if args.data else "")
        return fail(f"--workload: no workload {args.workload!r} under {where}; "
                    f"have: {', '.join(known) or 'none'} (and <name>-cv<c>)")
    setup = runner.fixed_setup(objective_ms=compare.OBJECTIVE_MS, path=args.data)
    w = compare.load_workload(args.workload, "fixed", seed=args.seed, duration_s=None, path=args.data)
    print(f"{args.workload}: the best static split of {setup.devices} at effective accuracy >= {args.min_accuracy:g}",
          flush=True)
    try:
        split = static_split.find(w, setup.variants, setup.devices, args.min_accuracy,
                                  objective_ms=compare.OBJECTIVE_MS, busy_above=args.busy_above,
                                  progress=lambda line: print(line, flush=True))
    except ValueError as exc:
        return fail(str(exc))
    if split.configs is None:
        print(f"no split of the devices reaches effective accuracy {args.min_accuracy:g} in the queue model")
        return 1
    if split.rows_modelled == split.rows:
        print(f"queue model: {split.late} late of {split.rows} scored rows ({split.late / split.rows:.2%}) "
              f"at effective accuracy {split.accuracy:.2f}")
    else:
        print(f"queue model: {split.late} late, {split.late / split.rows_modelled:.2%} of the {split.rows_modelled} "
              f"rows in the busy seconds and {split.late / split.rows:.2%} of all {split.rows} scored rows (the quiet "
              f"seconds counted in time), at effective accuracy {split.accuracy:.2f} on the rows modelled")
    for c in split.configs:
        print(f"  {c.task:24} {c.label}  late {c.outcome.late}")
    if args.replay:
        from infaas.sim.static_split import FixedSplit

        res, _, _ = runner.run(w, setup, FixedSplit(split.replicas(), setup.devices, hardware=compare.PINNED_PRICES),
                               seed=args.seed)
        print(f"replayed in the simulator (the whole trace): strict violations {res.strict_violation_rate:.2%} at "
              f"effective accuracy {res.mean_accuracy:.2f}")
    return 0
