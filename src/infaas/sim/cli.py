"""``infaas sim compare`` (wired in ``infaas.cli``)."""

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
