"""``infaas sim compare``: every policy over one workload, then the report.

The report is a block of ``docs/evaluation.md`` per (workload, mode),
between ``<!-- sim:<workload>:<mode> -->`` and ``<!-- /sim:<workload>:<mode> -->``
(replaced on each run, the rest of the page left alone), and PNG plots in
``docs/img/``.
"""

from __future__ import annotations

import json
import math
import platform
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from infaas.core.scaling import ScalingParams
from infaas.sim import data, runner
from infaas.sim.engine import VariantInfo
from infaas.sim.metrics import Result, Series
from infaas.sim.policies.clipper import Clipper
from infaas.sim.policies.infaas import INFaaS
from infaas.sim.policies.optimum import lower_bound
from infaas.sim.policies.ours import Ours
from infaas.sim.policies.static import Static

CLOUD_MIN = {"cpu": 1, "gpu-pascal": 1}
TIER_MIN = {"cpu": 0, "gpu-pascal": 1}  # ours-tier: the cpu fleet's minimum at zero
CLOUD_MAX = {"cpu": 200, "gpu-pascal": 60, "gpu-ampere": 20}
WARMUP_S = 60.0
OBJECTIVE_MS = 300.0
# Published reference points (Proteus artifact's simulator on the same traces), fixed-cluster mode.
REFERENCE = {
    "zipf_exponential": {"INFaaS": (59.0, 8.8, 96.1), "Clipper (smallest)": (36.0, 11.3, 80.2), "Clipper (largest)": (None, 28.2, None)},
    "zipf_exponential_bursty": {"INFaaS": (68.0, 12.3, 90.9), "Clipper (smallest)": (33.0, 10.8, 80.0), "Clipper (largest)": (None, 37.8, None)},
}


BUDGET_FROM = ("clipper", "static")  # ours-budget gets the hourly spend of the cheaper of these


def cloud_policies(objective_ms: float = OBJECTIVE_MS, budget_per_hour: float | None = None,
                   peak_budget_per_hour: float | None = None) -> dict[str, Callable]:
    """The cloud set-up's policies. Ours runs with ``refuse_late`` (a deployment setting): a query
    every replica would answer late is refused (503) instead of queued behind the others."""
    ours = lambda name, **kw: Ours(ScalingParams(min_workers=CLOUD_MIN, max_workers=CLOUD_MAX, latency_ms=objective_ms, **kw),
                                   name=name, refuse_late=True)
    return {
        "ours": lambda: ours("ours"),
        # the same, configured to remember demand longer (half-life ~45 s instead of ~6 s) for bursty traffic
        "ours-memory": lambda: ours("ours-memory", demand_decay=0.97),
        # the same, given the money of the cheapest mean-sized baseline as its hourly budget
        "ours-budget": lambda: ours("ours-budget", budget_per_hour=budget_per_hour),
        # with the serverless tier, and no cpu machine kept up: bursts and rare models go to functions
        "ours-tier": lambda: Ours(ScalingParams(min_workers=TIER_MIN, max_workers=CLOUD_MAX, latency_ms=objective_ms),
                                  name="ours-tier", refuse_late=True, tier=True),
        # the same, given static-peak's money (machines and the tier's invocations together)
        "ours-tier-budget": lambda: Ours(ScalingParams(min_workers=TIER_MIN, max_workers=CLOUD_MAX, latency_ms=objective_ms,
                                                       budget_per_hour=peak_budget_per_hour),
                                         name="ours-tier-budget", refuse_late=True, tier=True),
        "infaas": lambda: INFaaS(initial=CLOUD_MIN, max_workers=CLOUD_MAX),
        "clipper": lambda: Clipper(pick="floor"),
        "static": lambda: Static(pick="floor"),
        "static-peak": lambda: Static(pick="floor", sizing="peak"),
    }


def fixed_policies(objective_ms: float = OBJECTIVE_MS) -> dict[str, Callable]:
    dev = runner.FIXED_DEVICES
    return {
        "ours": lambda: Ours(ScalingParams(min_workers=dev, max_workers=dev, latency_ms=objective_ms,
                                           fill_fleet_ms=objective_ms), hardware=PINNED_PRICES),
        "infaas": lambda: INFaaS(initial=dev, max_workers=dev, vm_scaling=False),
        "clipper-smallest": lambda: Clipper(pick="smallest", devices=dev),
        "clipper-largest": lambda: Clipper(pick="largest", devices=dev),
        "static-largest": lambda: Static(pick="largest", devices=dev),
    }


@dataclass
class Comparison:
    workload: str
    mode: str
    seed: int
    requests: int
    duration_s: float
    results: list[Result]
    series: dict[str, Series]
    lower_bound: float | None = None
    lower_bound_tier: float | None = None  # with the serverless tier as an option (``lower_bound(tier=True)``)
    lb_window_s: float = 10.0
    wall_s: float = 0.0
    command: str = ""
    plots: list[str] = field(default_factory=list)


BURST = re.compile(r"^(?P<base>.+)-cv(?P<cv>\d+(?:\.\d+)?)$")


def load_workload(name: str, mode: str, *, seed: int, duration_s: float | None, path=None, tenants=None) -> data.Workload:
    """A published workload by name, or ``<name>-cv<c>``: its per-second totals re-timed with
    gamma gaps of coefficient of variation ``c`` (``data.burst_workload``). Then the warm-up: a
    synthetic prefix at the trace's mean rates, not drawn from the scored trace."""
    m = BURST.match(name)
    base = m["base"] if m and name not in data.list_workloads(path) else name
    if mode == "fixed":
        w = data.proteus_workload(base, path, tenants=data.NO_FLOOR, seed=seed, objective_ms=OBJECTIVE_MS)
    else:
        w = data.proteus_workload(base, path, tenants=tenants or data.DEFAULT_TENANTS, seed=seed)
    if base != name:
        w = data.burst_workload(w, float(m["cv"]), seed=seed)
    if duration_s:
        w = w.head(duration_s)
    return w.with_warmup(min(WARMUP_S, w.duration_s / 4), seed=seed)


def compare(name: str, *, mode: str = "cloud", seed: int = 0, duration_s: float | None = None, path=None,
            policies: list[str] | None = None, progress: Callable[[str], None] = print) -> Comparison:
    t0 = time.perf_counter()
    w = load_workload(name, mode, seed=seed, duration_s=duration_s, path=path)
    setup = runner.fixed_setup(path=path) if mode == "fixed" else runner.cloud_setup(path=path)
    with_tier = runner.cloud_setup(path=path, tier=True) if mode == "cloud" else setup
    table = fixed_policies() if mode == "fixed" else cloud_policies()
    names = policies or list(table)
    # ours-budget runs last: its budget is the hourly spend of the baselines it is held against.
    runs: dict[str, tuple[Result, object, float]] = {}  # policy -> (result, series, $/h over the billed interval)

    def run(policy) -> tuple[Result, object, float]:
        res, ser, sim = runner.run(w, with_tier if getattr(policy, "tier", False) else setup, policy, seed=seed)
        return res, ser, res.cost / max((sim.end_ms - w.t0_ms) / 3.6e6, 1e-12)

    for pname in sorted(names, key=lambda n: n in ("ours-budget", "ours-tier-budget")):
        if pname == "ours-tier-budget":
            if "static-peak" not in runs:
                runs["static-peak"] = run(table["static-peak"]())
            budget = runs["static-peak"][2]
            policy = cloud_policies(peak_budget_per_hour=budget)[pname]()
            progress(f"  {pname:18} budget ${budget:.3f}/h (the spend of static-peak)")
        elif pname == "ours-budget":
            for ref in BUDGET_FROM:
                if ref not in runs:  # measured for the budget only, not reported
                    runs[ref] = run(table[ref]())
            budget = min(runs[r][2] for r in BUDGET_FROM)
            policy = cloud_policies(budget_per_hour=budget)[pname]()
            progress(f"  {pname:18} budget ${budget:.3f}/h (the spend of the cheaper of {', '.join(BUDGET_FROM)})")
        else:
            policy = table[pname]()
        runs[pname] = run(policy)
        res = runs[pname][0]
        progress(f"  {pname:18} violations {res.violation_rate:7.2%}  cost ${res.cost:8.3f}  accuracy {res.mean_accuracy:5.1f}"
                 f"  ({res.wall_s:.1f} s)")
    results = [runs[n][0] for n in names]
    series = {n: runs[n][1] for n in names}
    lb = lb_tier = None
    if mode == "cloud":
        infos = [VariantInfo(v, k) for k, v in enumerate(setup.variants)]
        prices = {h: t.price_per_hour for h, t in setup.spec.hardware.items()}
        lb = lower_bound(w, infos, prices, window_s=10.0).cost
        progress(f"  {'lower bound':18} cost ${lb:8.3f}")
        if any(getattr(table[n](), "tier", False) for n in names):  # the bound with the tier as an option too
            tinfos = [VariantInfo(v, k) for k, v in enumerate(with_tier.variants)]
            lb_tier = lower_bound(w, tinfos, prices, window_s=10.0, tier=True).cost
            progress(f"  {'lower bound, tier':18} cost ${lb_tier:8.3f}")
    return Comparison(name, mode, seed, len(w) - w.warmup, w.duration_s, results, series, lb, lb_tier,
                      wall_s=time.perf_counter() - t0)


# -- the report ------------------------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f} %"


def markdown(c: Comparison) -> str:
    lines = [f"### {c.workload} -- {'fixed cluster (Proteus set-up)' if c.mode == 'fixed' else 'cloud, autoscaling'}", ""]
    lines.append(f"`{c.command}` -- {c.requests} requests over {c.duration_s:.0f} s, seed {c.seed}, "
                 f"{c.wall_s:.0f} s on {platform.machine()} ({_cpus()} CPUs).")
    lines.append("")
    if c.mode == "cloud":
        lines.append("| policy | violations | of which latency | of which refused | of which accuracy | cost $ | cost / lower bound | goodput req/s | mean accuracy | p99 ms | machine-hours | sim s |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in c.results:
            bound = c.lower_bound_tier if "-tier" in r.policy and c.lower_bound_tier else c.lower_bound
            ratio = r.cost / bound if bound else math.nan
            mh = sum(r.machine_seconds.values()) / 3600.0
            lines.append(f"| {r.policy} | {_pct(r.violation_rate)} | {r.latency_violations} | {r.refused} | {r.accuracy_violations} | "
                         f"{r.cost:.3f} | {ratio:.2f} | {r.goodput_rps:.1f} | {r.mean_accuracy:.1f} | {r.p99_ms:.0f} | {mh:.2f} | {r.wall_s:.0f} |")
        if c.lower_bound is not None:
            lines.append(f"| lower bound (MILP, {c.lb_window_s:.0f} s windows) | - | - | - | - | {c.lower_bound:.3f} | 1.00 | - | - | - | - | - |")
        if c.lower_bound_tier is not None:
            lines.append(f"| lower bound with the serverless tier (the *-tier* policies' ratio) | - | - | - | - | "
                         f"{c.lower_bound_tier:.3f} | 1.00 | - | - | - | - | - |")
    else:
        lines.append("| policy | strict violations (> 300 ms or dropped) | Proteus-style (dropped or > 1 s) | effective accuracy | p99 ms | sim s |")
        lines.append("|---|---:|---:|---:|---:|---:|")
        for r in c.results:
            lines.append(f"| {r.policy} | {_pct(r.strict_violation_rate)} | {_pct(r.proteus_violation_rate)} | "
                         f"{r.mean_accuracy:.1f} | {r.p99_ms:.0f} | {r.wall_s:.0f} |")
        for label, (strict, proteus, acc) in REFERENCE.get(c.workload, {}).items():
            lines.append(f"| *{label}, published reference* | {'-' if strict is None else f'{strict:.0f} %'} | "
                         f"{proteus:.1f} % | {'-' if acc is None else f'{acc:.1f}'} | - | - |")
    lines.append("")
    for p in c.plots:
        lines.append(f"![{Path(p).stem}](img/{Path(p).name})")
    lines.append("")
    return "\n".join(lines)


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def plot(c: Comparison, img_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    img_dir.mkdir(parents=True, exist_ok=True)
    stem = f"sim-{c.workload}-{c.mode}"
    rows = 3
    fig, axes = plt.subplots(rows, 1, figsize=(9, 8.5), sharex=True)
    smooth = lambda x, k=5: np.convolve(np.nan_to_num(x), np.ones(k) / k, mode="same")
    any_series = next(iter(c.series.values()))
    axes[0].plot(any_series.t_s, smooth(any_series.arrivals), color="black", lw=1.2, label="arrivals")
    for name, s in c.series.items():
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = smooth(s.violations) / np.maximum(smooth(s.arrivals), 1e-9)
        axes[1].plot(s.t_s, 100 * rate, lw=1, label=name)
        if c.mode == "cloud":
            axes[2].plot(s.t_s, s.cost_per_hour, lw=1, label=name)
        else:
            axes[2].plot(s.t_s, smooth(s.accuracy), lw=1, label=name)
    axes[0].set_ylabel("requests / s")
    axes[0].legend(loc="upper right", fontsize=8)
    axes[1].set_ylabel("violations %\n(5 s mean)")
    axes[1].legend(loc="upper right", fontsize=8, ncol=2)
    if c.mode == "cloud":
        axes[2].set_ylabel("fleet $ / hour")
    else:
        axes[2].set_ylabel("effective accuracy\n(5 s mean)")
    axes[2].legend(loc="lower right", fontsize=8, ncol=2)
    axes[-1].set_xlabel("seconds into the trace")
    fig.suptitle(f"{c.workload}: {'fixed cluster' if c.mode == 'fixed' else 'cloud, autoscaling'}")
    fig.tight_layout()
    out = img_dir / f"{stem}.png"
    fig.savefig(out, dpi=90)
    plt.close(fig)
    paths = [str(out)]
    if c.mode == "cloud":
        fig, ax = plt.subplots(figsize=(9, 3.2))
        for name, s in c.series.items():
            total = sum(s.machines.values())
            ax.plot(s.t_s, total, lw=1, label=name)
        ax.set_ylabel("machines")
        ax.set_xlabel("seconds into the trace")
        ax.legend(fontsize=8, ncol=4)
        fig.tight_layout()
        out2 = img_dir / f"{stem}-machines.png"
        fig.savefig(out2, dpi=90)
        plt.close(fig)
        paths.append(str(out2))
    return paths


def write_report(c: Comparison, doc: Path, img_dir: Path, *, plots: bool = True) -> None:
    c.plots = plot(c, img_dir) if plots else []
    img_dir.mkdir(parents=True, exist_ok=True)
    block = markdown(c)
    tag = f"sim:{c.workload}:{c.mode}"
    start, end = f"<!-- {tag} -->", f"<!-- /{tag} -->"
    text = doc.read_text() if doc.exists() else "# Evaluation\n\n## Results\n\n"
    new = f"{start}\n{block}\n{end}"
    if start in text and end in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: new, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + new + "\n"
    doc.write_text(text)
    summary = {"workload": c.workload, "mode": c.mode, "seed": c.seed, "requests": c.requests, "command": c.command,
               "wall_s": round(c.wall_s, 1), "lower_bound": c.lower_bound, "lower_bound_tier": c.lower_bound_tier,
               "results": [r.to_dict() for r in c.results]}
    (img_dir / f"sim-{c.workload}-{c.mode}.json").write_text(json.dumps(summary, indent=1, default=float))


PINNED_PRICES = {h: data.HARDWARE[h].__class__(h, 0.0, data.HARDWARE[h].memory_bytes) for h in runner.FIXED_DEVICES}
