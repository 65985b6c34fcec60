"""Device check: build and profile the GPU variants of a real-size model, print one table.

    .venv/bin/python bench/device_check.py                 (a machine with an NVIDIA GPU, onnxruntime-gpu)
    .venv/bin/python bench/device_check.py --dry-run       (any machine: everything but the GPU)

1. takes a "light" ONNX graph that the ``onnx`` wheel ships (ResNet-50 by
   default: real architecture and compute cost, weights generated as
   constants), makes its batch dimension free, and gives it seeded random
   weights so that outputs differ between inputs (He-scaled convolutions,
   identity batch norms, residual branches scaled down so activations stay in
   fp16 range);
2. labels ``--agreement-rows`` random inputs with the fp32 graph on the CPU
   and saves them as validation data: a variant's "accuracy" is then its top-1
   agreement with fp32, measured by the same profiling child process
   (``infaas.runtime.profile``) that the build jobs use;
3. builds the variants with ``infaas.runtime.generate.build_variant`` (CPU
   fp32, CUDA fp32, CUDA fp16, TensorRT fp16 at the largest batch asked for)
   and profiles each with ``profile_in_subprocess`` (p50 / p99 per batch
   size; TensorRT builds its engine on first load, into ``--cache-dir``);
4. prints one markdown table.

``--dry-run`` runs steps 1-2, builds every GPU variant (fp16 conversion checked
with onnx.checker and its input/output types, TensorRT graph checks), prints
the generation plan, profiles the CPU fp32 variant and, standing in for CUDA
fp16, the fp16 graph on the CPU provider (so the fp16 agreement figure is
exercised); the GPU rows say "not run".
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))  # run from a checkout without an install too

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from infaas.core.domain import Architecture, TensorSpec, Variant  # noqa: E402
from infaas.core.errors import InfaasError  # noqa: E402
from infaas.runtime.convert import graph_io, io_types  # noqa: E402
from infaas.runtime.generate import PLANS, build_variant, generation_plan  # noqa: E402
from infaas.runtime.profile import BATCH_SIZES, ProfileLimits, profile_in_subprocess  # noqa: E402

LIGHT_MODELS = ("resnet50", "squeezenet", "densenet121", "inception_v1", "inception_v2", "vgg19", "bvlc_alexnet", "zfnet512")


# ------------------------------------------------------------------ model
def light_model_path(name: str) -> str:
    import onnx.backend.test

    path = os.path.join(os.path.dirname(onnx.backend.test.__file__), "data", "light", f"light_{name}.onnx")
    if not os.path.exists(path):
        raise SystemExit(f"no light model {name!r} in the onnx wheel (have: {', '.join(LIGHT_MODELS)})")
    return path


def real_size_model(name: str, seed: int = 0) -> onnx.ModelProto:
    """The light graph with a free batch dimension, seeded random weights and a 2-D output."""
    model = onnx.load(light_model_path(name))
    g = model.graph
    rng = np.random.default_rng(seed)
    init = {i.name: i for i in g.initializer}
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in g.node:
        for i, name_ in enumerate(node.input):
            consumers.setdefault(name_, []).append((node, i))
    sums = {n.name or id(n) for n in g.node if n.op_type in ("Sum", "Add")}

    nodes = []
    for node in g.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in init:
            shape = tuple(int(d) for d in numpy_helper.to_array(init[node.input[0]]))
            out = node.output[0]
            users = consumers.get(out, [])
            weight = _random_weight(shape, users, rng, feeds_residual=any(
                (nxt.name or id(nxt)) in sums for n, _ in users for o in _outputs_reaching(n, consumers, 1)
                for nxt, _ in consumers.get(o, [])))
            g.initializer.append(numpy_helper.from_array(weight, out))
        else:
            nodes.append(node)
    g.ClearField("node")
    g.node.extend(nodes)
    used = {n for node in g.node for n in node.input}
    keep = [i for i in g.initializer if i.name in used]
    g.ClearField("initializer")
    g.initializer.extend(keep)

    produced = {o for node in g.node for o in node.output} | {i.name for i in g.initializer}
    real_inputs = [i for i in g.input if i.name not in produced and i.name in used]
    g.ClearField("input")
    g.input.extend(real_inputs)
    for v in (*g.input, *g.output):
        v.type.tensor_type.shape.dim[0].ClearField("dim_value")
        v.type.tensor_type.shape.dim[0].dim_param = "N"
    for node in g.node:  # reshapes to a fixed batch of 1 become free in the batch
        if node.op_type == "Reshape" and node.input[1] in {i.name for i in g.initializer}:
            t = next(i for i in g.initializer if i.name == node.input[1])
            shape = numpy_helper.to_array(t).copy()
            if shape.size and shape[0] == 1:
                shape[0] = -1
                t.CopyFrom(numpy_helper.from_array(shape.astype(np.int64), t.name))
    out = g.output[0]
    if len(out.type.tensor_type.shape.dim) == 4:  # squeezenet: [N, 1000, 1, 1] -> [N, 1000]
        flat = f"{out.name}_2d"
        g.node.append(helper.make_node("Flatten", [out.name], [flat], axis=1))
        classes = out.type.tensor_type.shape.dim[1].dim_value
        g.ClearField("output")
        g.output.extend([helper.make_tensor_value_info(flat, TensorProto.FLOAT, ["N", classes])])
    g.ClearField("value_info")
    model.ir_version = 8
    _calibrate_batchnorm(model, rng)
    _calibrate_logits(model, rng)
    onnx.checker.check_model(model, full_check=True)
    return model


def _session(model: onnx.ModelProto, extra_outputs: list[str]) -> ort.InferenceSession:
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend([helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in extra_outputs])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = os.cpu_count() or 1
    opts.log_severity_level = 3
    return ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def images(rng: np.random.Generator, rows: int, shape) -> np.ndarray:
    """Synthetic images that differ in their global statistics, not only in pixel
    noise (i.i.d. noise images all look alike after global pooling): smooth
    random patterns at two scales, per-image colour offset and contrast, noise."""
    c, h, w = shape
    out = np.empty((rows, c, h, w), np.float32)
    for i in range(rows):
        img = np.zeros((c, h, w), np.float32)
        for cells, weight in ((7, 1.0), (28, 0.5)):
            coarse = rng.standard_normal((c, cells, cells)).astype(np.float32)
            ry, rx = -(-h // cells), -(-w // cells)
            img += weight * np.kron(coarse, np.ones((1, ry, rx), np.float32))[:, :h, :w]
        img = img * rng.uniform(0.3, 1.5) + rng.normal(0, 0.5, (c, 1, 1)).astype(np.float32)
        out[i] = img + 0.1 * rng.standard_normal((c, h, w)).astype(np.float32)
    return out


def _calibration_batch(model: onnx.ModelProto, rng: np.random.Generator, rows: int) -> dict[str, np.ndarray]:
    inp = model.graph.input[0]
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim[1:]]
    return {inp.name: images(rng, rows, shape)}


def _calibrate_batchnorm(model: onnx.ModelProto, rng: np.random.Generator, rows: int = 8) -> None:
    """Set each batch norm's running mean and variance to what its input has on a
    calibration batch, as training would, so activations stay normalised through
    the depth (no drift to huge or vanishing values). One pass over a copy of the
    graph in which every batch norm uses the batch's own statistics: each layer's
    statistics are then those it sees once the layers before it are calibrated."""
    g = model.graph
    bns = [n for n in g.node if n.op_type == "BatchNormalization"]
    if not bns:
        return
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    nodes, stats = [], []
    for node in probe.graph.node:
        if node.op_type != "BatchNormalization":
            nodes.append(node)
            continue
        x, scale, bias = node.input[:3]
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        p = node.output[0] + "__calib"
        eps_name = p + "_eps"
        probe.graph.initializer.append(numpy_helper.from_array(np.array(eps, np.float32), eps_name))
        nodes += [
            helper.make_node("ReduceMean", [x], [p + "_mean"], axes=[0, 2, 3], keepdims=1),
            helper.make_node("Sub", [x, p + "_mean"], [p + "_d"]),
            helper.make_node("Mul", [p + "_d", p + "_d"], [p + "_d2"]),
            helper.make_node("ReduceMean", [p + "_d2"], [p + "_var"], axes=[0, 2, 3], keepdims=1),
            helper.make_node("Add", [p + "_var", eps_name], [p + "_vare"]),
            helper.make_node("Sqrt", [p + "_vare"], [p + "_std"]),
            helper.make_node("Div", [p + "_d", p + "_std"], [p + "_n"]),
            helper.make_node("Unsqueeze", [scale], [p + "_s"], axes=[0, 2, 3]),
            helper.make_node("Unsqueeze", [bias], [p + "_b"], axes=[0, 2, 3]),
            helper.make_node("Mul", [p + "_n", p + "_s"], [p + "_ns"]),
            helper.make_node("Add", [p + "_ns", p + "_b"], [node.output[0]]),
        ]
        stats.append((node.input[3], node.input[4], p + "_mean", p + "_var"))
    probe.graph.ClearField("node")
    probe.graph.node.extend(nodes)
    probe.graph.ClearField("value_info")
    sess = _session(probe, [n for _m, _v, mean, var in stats for n in (mean, var)])
    values = sess.run([n for _m, _v, mean, var in stats for n in (mean, var)], _calibration_batch(model, rng, rows))
    init = {i.name: i for i in g.initializer}
    for k, (mean_name, var_name, _m, _v) in enumerate(stats):
        mean, var = values[2 * k].reshape(-1), values[2 * k + 1].reshape(-1)
        init[mean_name].CopyFrom(numpy_helper.from_array(mean.astype(np.float32), mean_name))
        init[var_name].CopyFrom(numpy_helper.from_array(var.astype(np.float32), var_name))


def _calibrate_logits(model: onnx.ModelProto, rng: np.random.Generator, rows: int = 32) -> None:
    """Random deep ReLU networks send every input to nearly the same logits, so one
    class would win for all inputs. Centre each class on a calibration batch and
    scale to unit spread (two constant nodes before the Softmax), so the top-1
    class depends on the input and top-1 agreement means something."""
    g = model.graph
    softmax = next((n for n in g.node if n.op_type == "Softmax"), None)
    if softmax is None:
        return
    logits = softmax.input[0]
    sess = _session(model, [logits])
    x = next(iter(_calibration_batch(model, rng, rows).values()))
    z = np.concatenate([sess.run([logits], {g.input[0].name: x[i:i + 8]})[0] for i in range(0, rows, 8)])
    mu = z.mean(axis=0, keepdims=True).astype(np.float32)
    scale = np.array(1.0 / max(float((z - mu).std()), 1e-6), np.float32)
    g.initializer.extend([numpy_helper.from_array(mu, "calib_mu"), numpy_helper.from_array(scale, "calib_scale")])
    centred, scaled = f"{logits}_centred", f"{logits}_calibrated"
    at = list(g.node).index(softmax)
    g.node.insert(at, helper.make_node("Sub", [logits, "calib_mu"], [centred]))
    g.node.insert(at + 1, helper.make_node("Mul", [centred, "calib_scale"], [scaled]))
    softmax.input[0] = scaled


def _outputs_reaching(node, consumers, depth):
    """Outputs of ``node`` and of its direct single-input successors (BN -> Relu -> Sum)."""
    outs = list(node.output)
    if depth > 0:
        for o in node.output:
            for nxt, _ in consumers.get(o, []):
                if nxt.op_type in ("Relu", "BatchNormalization"):
                    outs += _outputs_reaching(nxt, consumers, depth - 1)
    return outs


def _random_weight(shape, users, rng, *, feeds_residual: bool) -> np.ndarray:
    role = users[0] if users else (None, -1)
    node, idx = role
    op = node.op_type if node is not None else ""
    if op in ("Conv", "Gemm", "MatMul") and idx == 1:
        fan_in = int(np.prod(shape[1:])) if op == "Conv" else (shape[1] if op == "Gemm" and _trans_b(node) else shape[0])
        return (rng.standard_normal(shape) * np.sqrt(2.0 / max(fan_in, 1))).astype(np.float32)
    if op == "BatchNormalization":
        if idx == 1:  # scale: branches that end in a residual sum start small
            return np.full(shape, 0.2 if feeds_residual else 1.0, np.float32) * rng.uniform(0.8, 1.2, shape).astype(np.float32)
        if idx == 4:  # variance
            return rng.uniform(0.8, 1.2, shape).astype(np.float32)
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)  # bias, mean
    return (rng.standard_normal(shape) * 0.02).astype(np.float32)  # conv and gemm biases, anything else


def _trans_b(node) -> bool:
    return any(a.name == "transB" and a.i == 1 for a in node.attribute)


# ------------------------------------------------------------------ variants
def gpu_name() -> str:
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20).stdout.strip()
            return out.splitlines()[0] if out else "unknown GPU"
        except (OSError, subprocess.SubprocessError):
            pass
    return "no NVIDIA GPU"


@dataclasses.dataclass
class Row:
    label: str
    variant: Variant | None
    latency: dict[int, tuple[float, float]] = dataclasses.field(default_factory=dict)
    agreement: float | None = None
    load_ms: float | None = None
    note: str = ""


def run(args) -> str:
    batches = sorted({int(b) for b in args.batch_sizes.split(",")})
    unknown = [b for b in batches if b not in BATCH_SIZES]
    if unknown:
        raise SystemExit(f"--batch-sizes must be among the profiled sizes {BATCH_SIZES}; got {unknown}")
    max_batch = max(batches)
    if not args.dry_run and "CUDAExecutionProvider" not in ort.get_available_providers():
        raise SystemExit("CUDAExecutionProvider is not available: install onnxruntime-gpu (in place of onnxruntime) "
                         "on a machine with an NVIDIA GPU, or pass --dry-run")
    work = args.work_dir or tempfile.mkdtemp(prefix="infaas-device-check-")
    os.makedirs(work, exist_ok=True)
    cache_dir = args.cache_dir or os.path.join(work, "cache")
    t0 = time.time()

    model = real_size_model(args.model, args.seed)
    original = os.path.join(work, "original.onnx")
    onnx.save(model, original)
    inputs, outputs = graph_io(model)
    (in_name, in_dtype, in_shape), = inputs
    specs = (TensorSpec(in_name, in_dtype, tuple(in_shape)),)
    arch = Architecture(name=args.model.replace("_", "-"), tenant="local", task="classification/imagenet-light",
                        accuracy=1.0, sha256="0" * 64, model_key="architectures/x/original.onnx", inputs=specs,
                        outputs=tuple(TensorSpec(o, "float32", (-1, 0)) for o in outputs))

    # fp32 labels on the CPU: every variant's accuracy is its agreement with them
    rng = np.random.default_rng(args.seed + 1)
    x = images(rng, args.agreement_rows, in_shape[1:])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = os.cpu_count() or 1
    ref = ort.InferenceSession(original, opts, providers=["CPUExecutionProvider"])
    probs = np.concatenate([ref.run(None, {in_name: x[i:i + 16]})[0] for i in range(0, len(x), 16)])
    labels = probs.argmax(axis=1)
    validation = os.path.join(work, "agreement.npz")
    np.savez(validation, inputs=x, labels=labels)
    top2 = np.log(np.clip(np.sort(probs, axis=1)[:, -2:], 1e-30, None))
    spread = (float(np.mean(top2[:, 1] - top2[:, 0])), len(set(labels.tolist())))

    plan = {hw: generation_plan(arch, hw) for hw in PLANS}
    gpu = {(v.runtime, v.format): v for v in plan["gpu"] if v.runtime == "onnxruntime"}
    trt = [v for v in plan["gpu"] if v.runtime == "tensorrt"]
    trt_v = min((v for v in trt if v.max_batch >= max_batch), key=lambda v: v.max_batch, default=trt[-1])
    cpu_v = next(v for v in plan["cpu"] if v.format == "fp32")
    rows = [
        Row("CPU fp32 (onnxruntime, 1 thread)", cpu_v),
        Row("CUDA fp32 (onnxruntime)", gpu[("onnxruntime", "fp32")]),
        Row("CUDA fp16 (onnxruntime)", gpu[("onnxruntime", "fp16")]),
        Row(f"TensorRT fp16 (engine b1-{max_batch})", trt_v),
    ]
    limits = ProfileLimits(timeout_s=args.profile_timeout_s, memory_bytes=args.memory_bytes,
                           budget_s=args.budget_s, min_runs=args.min_runs)
    built: dict[str, str] = {}
    for v in [cpu_v, *plan["gpu"]]:  # build every GPU variant, dry or not: conversion and checks run here
        if v.runtime == "tensorrt" and v is not trt_v and not args.all_tensorrt:
            continue
        path = os.path.join(work, v.id.replace(":", "_") + ".onnx")
        with open(path, "wb") as f:
            f.write(build_variant(v, original))
        built[v.id] = path
    half = onnx.load(built[gpu[("onnxruntime", "fp16")].id])
    onnx.checker.check_model(half, full_check=True)
    assert io_types(half) == io_types(model), "fp16 variant changed the input/output types"

    if args.dry_run:  # the fp16 graph on the CPU provider stands in for CUDA fp16
        stand_in = dataclasses.replace(gpu[("onnxruntime", "fp16")], hardware="cpu")
        rows.insert(1, Row("CPU fp16 (dry-run stand-in for CUDA fp16)", stand_in))
        built[stand_in.id] = built[gpu[("onnxruntime", "fp16")].id]
    for row in rows:
        v = row.variant
        if args.dry_run and v.hardware == "gpu":
            row.note = "not run (dry run: no GPU)"
            continue
        measured = dataclasses.replace(v, max_batch=max_batch)
        try:
            result = profile_in_subprocess(built[v.id], measured.to_dict(), specs, validation, limits, cache_dir=cache_dir)
        except InfaasError as exc:  # one runtime missing (say TensorRT's libraries) still leaves the other rows
            row.note = f"failed: {exc.message}"
            continue
        row.latency = {int(b): (p50, p99) for b, (p50, p99) in result["latency_ms"].items()}
        row.agreement = result["accuracy"]
        row.load_ms = result["load_ms"]

    return render(args, rows, batches, plan, work, spread, time.time() - t0)


def render(args, rows, batches, plan, work, spread, elapsed) -> str:
    lines = [
        f"Device check, {datetime.date.today().isoformat()}: {args.model} (onnx light graph, free batch, seeded random "
        f"weights), {args.agreement_rows} random inputs; {'DRY RUN' if args.dry_run else gpu_name()}; "
        f"onnxruntime {ort.__version__} ({', '.join(ort.get_available_providers())}); {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs.",
        "",
        "| variant | " + " | ".join(f"b{b} p50 / p99 ms" for b in batches) + " | load ms | top-1 agreement with fp32 |",
        "|---|" + "---:|" * len(batches) + "---:|---:|",
    ]
    for r in rows:
        if r.note:
            cells = [r.note] + [""] * (len(batches) - 1) + ["", ""]
        else:
            cells = [f"{r.latency[b][0]:.2f} / {r.latency[b][1]:.2f}" if b in r.latency else "-" for b in batches]
            cells += [f"{r.load_ms:.0f}", f"{r.agreement:.4f}" if r.agreement is not None else "-"]
        lines.append(f"| {r.label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"fp32 outputs: {spread[1]} distinct top-1 classes over {args.agreement_rows} inputs, mean logit margin between "
        f"the two best classes {spread[0]:.3f} (logits calibrated to unit spread).",
        "Generation plan: " + "; ".join(f"{hw}: {', '.join(v.id.split(':', 1)[1] for v in vs)}" for hw, vs in plan.items()),
        f"Files in {work}; took {elapsed:.0f} s.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/device_check.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="everything but the GPU (any machine)")
    p.add_argument("--model", default="resnet50", choices=LIGHT_MODELS)
    p.add_argument("--batch-sizes", default="1,8,32", help=f"comma list among {BATCH_SIZES} (default 1,8,32)")
    p.add_argument("--agreement-rows", type=int, default=128)
    p.add_argument("--min-runs", type=int, default=10)
    p.add_argument("--budget-s", type=float, default=0.5, help="measuring time per batch size and variant")
    p.add_argument("--profile-timeout-s", type=float, default=480.0, help="per variant (TensorRT builds its engine)")
    p.add_argument("--memory-bytes", type=int, default=8 << 30, help="address-space limit of CPU profiling children")
    p.add_argument("--all-tensorrt", action="store_true", help="also build the TensorRT b1/b8 variants (checks only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", default=None)
    p.add_argument("--cache-dir", default=None, help="TensorRT engine cache (default: <work-dir>/cache)")
    args = p.parse_args(argv)
    print(run(args), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
