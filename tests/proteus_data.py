"""A small data set in the Proteus artifact's layout, written by the tests themselves.

The simulator reads the published Proteus profiles and traces in place for
``infaas sim compare``; the test suite must not depend on them being beside
the clone, so it writes this one: the same files and columns
(``aggregate_profiled.csv``, ``model_variants/<family>``,
``traces/<workload>/<family>.txt``), three families of three models, three
accelerators, and a minute of Poisson arrivals per family.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

ACCELS = {"onnxruntime_cpu": 1.0, "onnxruntime_gpu_pascal": 0.25, "onnxruntime_gpu_ampere": 0.12}
BATCHES = (1, 2, 4, 8, 16)
# family -> {model: (normalised accuracy, p50 ms of batch 1 on the CPU)}
FAMILIES = {
    "resnet": {"resnet18_v1": (89.5, 30.0), "resnet50_v1": (97.7, 96.9), "resnet152_v1": (100.0, 240.0)},
    "mobilenet": {"mobilenet0.25": (80.0, 4.0), "mobilenet1.0": (95.0, 12.0), "mobilenetv2_1.0": (100.0, 15.0)},
    "bert": {"distilbert-base-uncased": (92.0, 60.0), "bert-base-uncased": (97.0, 110.0), "roberta-base": (100.0, 120.0)},
}
RATES = {"resnet": 40.0, "mobilenet": 25.0, "bert": 10.0}  # requests/s in the trace
DURATION_S = 60.0
WORKLOAD = "zipf_exponential"


def p50(model: str, accel: str, batch: int) -> float:
    family = next(f for f, ms in FAMILIES.items() if model in ms)
    base = FAMILIES[family][model][1] * ACCELS[accel]
    return round(base * (0.6 + 0.4 * batch), 4)  # some fixed cost per call, the rest per row


def p90(model: str, accel: str, batch: int) -> float | None:
    """1.05 x p50, except batch 16 on the CPU: left blank as some rows of the artifact are."""
    return None if accel == "onnxruntime_cpu" and batch == 16 else round(p50(model, accel, batch) * 1.05, 4)


def write(root: Path) -> Path:
    (root / "model_variants").mkdir(parents=True)
    for family, models in FAMILIES.items():
        (root / "model_variants" / family).write_text("".join(f"{m},{acc}\n" for m, (acc, _) in models.items()))
    with open(root / "aggregate_profiled.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["Model", "Accel", "Trials", "batchsize", "50th_pct", "90th_pct", "avg_latency(ms)", "Min", "Max",
                      "Accuracy", "Normalized_Accuracy"])
        for family, models in FAMILIES.items():
            for model, (acc, _) in models.items():
                for accel in ACCELS:
                    for b in BATCHES:
                        q90 = p90(model, accel, b)
                        out.writerow([model, accel, 1000, b, p50(model, accel, b), "" if q90 is None else q90,
                                      p50(model, accel, b), 0, 0, acc, acc])
        out.writerow(["not-in-a-family", "onnxruntime_cpu", 1000, 1, 5.0, 6.0, 5.0, 0, 0, 50.0, 50.0])
    rng = np.random.default_rng(0)
    folder = root / "traces" / WORKLOAD
    folder.mkdir(parents=True)
    for family, rate in RATES.items():
        arrivals = np.cumsum(rng.exponential(1000.0 / rate, int(rate * DURATION_S * 1.2)))
        arrivals = arrivals[arrivals < DURATION_S * 1000.0].astype(int)
        (folder / f"{family}.txt").write_text("".join(f"{t},1,300\n" for t in arrivals))
    return root


def trace_length(root: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in (root / "traces" / WORKLOAD).glob("*.txt"))
