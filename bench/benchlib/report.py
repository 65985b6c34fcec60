"""The report: the machine's description, the tables, the section of docs/performance.md
between its marker comments, and the helpers that format the figures."""

from __future__ import annotations

import datetime
import os
import platform
import time

from benchlib.client import Result, _event_loop_name, aiohttp_version
from benchlib.config import (
    CORES,
    DOC,
    SQUEEZE,
    TINY,
    WORKERS,
    counterpart,
    is_infaas,
    label,
    split_key,
)
from benchlib.procs import Memory, machine_busy_s

BEGIN = "<!-- bench/run.py: local-vs-baseline BEGIN (generated; edit bench/run.py instead) -->"
END = "<!-- bench/run.py: local-vs-baseline END -->"


def machine() -> dict[str, str]:
    import onnxruntime

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "unknown"
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f"{kb / (1 << 20):.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu": cpu,
        "cores": str(CORES),
        "memory": mem,
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "client loop": _event_loop_name(),
        "aiohttp": aiohttp_version() or "not installed",
        "busy before": _busy_before(),
    }


def _busy_before(seconds: float = 1.0) -> str:
    """Busy share of all cores over one second before anything starts: other work on the machine."""
    b0 = machine_busy_s()
    time.sleep(seconds)
    share = (machine_busy_s() - b0) / (seconds * CORES)
    return "unknown" if share != share else f"{share * 100:.0f}%"



def _f(x: float, d: int = 2) -> str:
    return "-" if x is None or x != x else f"{x:,.{d}f}"


def _ratio(a: float, b: float) -> str:
    return "-" if a is None or b is None or not (a == a and b == b) or b == 0 else f"{a / b:.2f}×"


def _pc(x: float) -> str:
    return "-" if x != x else f"{x * 100:.0f}%"


def _bad(rs: list[Result]) -> str:
    n = sum(r.bad for r in rs)
    if not n:
        return "0"
    non200: dict = {}
    errors: dict = {}
    for r in rs:
        for s, k in r.non200.items():
            non200[s] = non200.get(s, 0) + k
        for e, k in r.errors.items():
            errors[e] = errors.get(e, 0) + k
    parts = [f"{k}×{s}" for s, k in sorted(non200.items())] + [f"{k}×{e}" for e, k in sorted(errors.items())]
    return f"{n} ({', '.join(parts)})"


def best_of(res: dict[str, dict[int, Result]], keys: tuple[str, ...]) -> str | None:
    """Of the configurations ``keys`` of one peer, the one with the most requests/s at concurrency 32."""
    have = [k for k in keys if k in res and 32 in res[k] and res[k][32].ok]
    return max(have, key=lambda k: res[k][32].rps) if have else None


def model_table(model: str, systems: tuple[str, ...], res: dict[str, dict[int, Result]], raw: dict[str, dict],
                missing: dict[str, str]) -> str:
    """One row per system and client; each compared with INFaaS in the same format under the same client
    (``config.counterpart``), raw onnxruntime with INFaaS's binary endpoint under the raw-socket client."""
    out = ["| system (client) | c=1 p50 ms | c=1 p99 ms | c=32 req/s | c=32 p50 ms | c=32 p99 ms | non-200 / errors "
           "| client CPU c=1 / c=32 | server CPU c=1 / c=32 | server CPU ms per answer c=1 / c=32 "
           "| machine CPU c=32 | INFaaS ÷ system (same format, same client): c=32 req/s | c=1 p50 | c=32 p99 |",
           "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key in systems:
        why = missing.get(key) or missing.get(split_key(key)[0])
        if why:
            out.append(f"| {label(key)} | not measured: {why[:160]} |" + " |" * 12)
            continue
        out.append(_system_row(key, res[key], res.get(counterpart(key), {})))
    o32 = res.get("infaas", {}).get(32)
    for name, r in raw.items():
        if "error" in r:
            out.append(f"| {name} | not measured: {r['error'][:160]} |" + " |" * 12)
            continue
        ratio = f"**{_ratio(o32.rps, r['per_s'])}**" if o32 else "-"
        out.append(f"| {name} | {_f(r['p50_ms'], 3)} (one call) | {_f(r['p99_ms'], 3)} (one call) "
                   f"| {_f(r['per_s'], 0)} inferences/s | | | 0 | no client | {_pc(r['cpu_s'] / r['wall_s'])} "
                   f"| {_f(r['cpu_s'] * 1000 / max(r['per_s'] * r['wall_s'], 1), 3)} | | {ratio} | | |")
    return "\n".join(out)


def _system_row(key: str, mine: dict[int, Result], ours: dict[int, Result]) -> str:
    r1, r32 = mine.get(1), mine.get(32)
    o1, o32 = ours.get(1), ours.get(32)
    name = f"**{label(key)}**" if is_infaas(key) else label(key)
    ratios = ("", "", "") if is_infaas(key) else (
        f"**{_ratio(o32.rps, r32.rps)}**" if o32 and r32 else "-",
        _ratio(o1.pct(50), r1.pct(50)) if o1 and r1 else "-",
        _ratio(o32.pct(99), r32.pct(99)) if o32 and r32 else "-")
    return (f"| {name} | {_f(r1.pct(50), 3)} | {_f(r1.pct(99), 3)} | {_f(r32.rps, 0)} | {_f(r32.pct(50), 2)} "
            f"| {_f(r32.pct(99), 2)} | {_bad([r1, r32])} | {_pc(r1.cpu_share)} / {_pc(r32.cpu_share)} "
            f"| {_pc(r1.server_share)} / {_pc(r32.server_share)} "
            f"| {_f(r1.cpu_ms_per_answer, 3)} / {_f(r32.cpu_ms_per_answer, 3)} | {_pc(r32.machine_share)} "
            f"| {ratios[0]} | {ratios[1]} | {ratios[2]} |")


def memory_table(mem: dict[str, tuple[str, Memory]], missing: dict[str, str], infaas_rss: float | None) -> str:
    out = ["| stack at rest | what it serves | processes | RSS sum MiB | PSS sum MiB | INFaaS ÷ stack (RSS) |",
           "|---|---|---:|---:|---:|---:|"]
    for key, (what, m) in mem.items():
        label = key
        out.append(f"| {label} | {what} | {len(m.processes)} | {m.rss / (1 << 20):,.0f} | {_f(m.pss / (1 << 20), 0)} "
                   f"| {'' if key.startswith('INFaaS') else _ratio(infaas_rss, m.rss)} |")
    for key, err in missing.items():
        out.append(f"| {key} | not measured: {err[:160]} | | | | |")
    return "\n".join(out)


def write_doc(text: str) -> None:
    os.makedirs(os.path.dirname(DOC), exist_ok=True)
    try:
        with open(DOC, encoding="utf-8") as f:
            current = f.read()
    except FileNotFoundError:
        current = "# Performance\n\n"
    if BEGIN in current and END in current:
        head, rest = current.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        new = head + text + ("\n" + tail if tail else "")
    else:
        new = current.rstrip("\n") + "\n\n" + text
    tmp = DOC + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(new)
    os.replace(tmp, DOC)


def verdict(ok: bool | None) -> str:
    return "**met**" if ok else ("**not met**" if ok is not None else "**not measured**")


def section(info, versions, peers_state, peers_s, chosen, ready_s, results, raw, missing, mem, mem_missing,
            infaas_rss, targets, notes, sel_out, plot_note, total, *, rounds: int,
            run_plan: dict[str, tuple[tuple[int, float, float, int], ...]], systems: dict[str, tuple[str, ...]]) -> str:
    """The section of docs/performance.md; ``rounds``, ``run_plan`` and ``systems`` are bench/run.py's
    ROUNDS, RUNS and SYSTEMS."""
    runs = "; ".join(
        f"{'tiny' if m == TINY else 'compute-bound'} c={c}: {rounds} rounds per system, each {w:g} s warm-up then at most "
        f"{s / rounds:g} s or {n // rounds:,} requests" for m in (TINY, SQUEEZE) for c, w, s, n in run_plan[m]) + (
        " (the compute-bound model's 4 s warm-up at c=32, for every system, is time for INFaaS's autoscaler to see "
        "the load again after the other systems' rounds and load the replica on the second worker: in between, a "
        "quiet variant is scaled back to one replica, and the first seconds of a burst run on it)")
    now = datetime.datetime.now(datetime.timezone.utc)

    def about(name: str) -> str:
        c = chosen[name]
        prof = (c["variant"].get("profile") or {}).get("latency_ms", {}).get("1")
        return (f"variant `{c['id']}` ({c['size'] / 1e6:.2f} MB, sha256 `{c['sha'][:16]}…`), the one INFaaS chose "
                f"for a query by architecture, copied from its model store"
                + (f"; its profile says p50/p99 {prof[0]:.3f}/{prof[1]:.3f} ms at batch 1 inside onnxruntime" if prof
                   else ""))

    lines = [
        BEGIN,
        "## INFaaS side by side with a hand-written endpoint, raw onnxruntime, Ray Serve and BentoML",
        "",
        f"Generated by `make bench` (`.venv/bin/python bench/run.py`) on {now:%Y-%m-%d %H:%M} UTC; "
        f"the whole run took **{total:.0f} s** (peers' virtualenv {peers_state} in {peers_s:.0f} s; INFaaS built and "
        f"profiled both models' variants in {ready_s:.0f} s).",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores (`os.cpu_count()`), {info['memory']} of memory, {info['os']}; "
        f"Python {info['python']}, onnxruntime {info['onnxruntime']} (product's `.venv`). Peers, in their own "
        f"virtualenv `bench/.work/peers-venv`: {versions}. The client, INFaaS ({WORKERS} workers) and every peer share "
        f"these cores; before the run, other work kept {info['busy before']} of them busy. The client and every "
        f"server ran in autogroups of {info.get('autogroup', 'off')} (`INFAAS_BENCH_NICE`; Linux schedules sessions "
        "fairly whatever their nice value, so background work in other sessions would otherwise take a fair share "
        "of the cores).",
        "",
        "![throughput and latency of each system](img/performance.png)" if not plot_note else f"({plot_note})",
        "",
        "### Targets (issue 8)",
        "",
        *targets,
        "",
        "### Tiny model: MLP 512-256 on digits",
        "",
        f"Every system serves the same file: {about(TINY)}. One row of 64 float32 per request, in two formats: "
        "binary (INFaaS's OIP binary extension, FastAPI's raw bytes) and JSON (INFaaS's OIP JSON, FastAPI's "
        "`{\"x\": [[...]]}`); INFaaS and FastAPI each measured with both clients, the peers with the raw-socket one. "
        "Each row is compared with INFaaS in the same format under the same client.",
        "",
        model_table(TINY, systems[TINY], results[TINY], raw[TINY], missing),
        "",
        "### Compute-bound model: SqueezeNet 1.0 (onnx's light_squeezenet, batch dimension made dynamic)",
        "",
        f"Every system serves the same file: {about(SQUEEZE)}. One image of 3×224×224 float32 (588 KiB) per "
        "request; INFaaS (binary) and FastAPI (raw bytes) measured with both clients, the peers with the raw-socket "
        "one. The graph is the `onnx` wheel's `backend/test/data/light/light_squeezenet.onnx` with its weights "
        "(ConstantOfShape nodes) materialised as He-scaled random initialisers, its batch dimension made dynamic, "
        "converted to opset 13 (the final Softmax becomes Flatten → Softmax → Reshape, which works at any batch; "
        "checked); registered with INFaaS as task `classification/imagenet-light` without validation data.",
        "",
        model_table(SQUEEZE, systems[SQUEEZE], results[SQUEEZE], raw[SQUEEZE], missing),
        "",
        "### Memory of each whole stack at rest",
        "",
        "After all the load above, 3 s idle: the sum over every process of the stack (its session and its "
        "descendants) of RSS (shared pages counted once per process) and of PSS (shared pages split between the "
        "processes that share them).",
        "",
        memory_table(mem, mem_missing, infaas_rss),
        "",
        "### Selection microbenchmark",
        "",
        "`.venv/bin/python bench/selection_bench.py` (run by the bench after the servers stopped):",
        "",
        "```",
        sel_out,
        "```",
        "",
        "### How it was measured",
        "",
        "- **INFaaS**: `infaas up` with "
        f"{WORKERS} CPU workers and no tenant rate limit (`INFAAS_TENANT_RPS=0`: every answer must be a 200) and no access log (`INFAAS_ACCESS_LOG=off`, as the others run), "
        "queried over its OIP endpoint `POST /v2/models/{variant_id}/infer` with `Authorization: Bearer`, in two "
        "formats: *OIP binary* (JSON header + raw bytes, `Inference-Header-Content-Length`, binary output) and *OIP "
        "JSON* (`{\"inputs\": [{\"name\", \"shape\": [1, N], \"datatype\": \"FP32\", \"data\": [...]}]}`, the "
        "outputs answered as JSON tensors): API process "
        "(uvicorn, the inference routes on a bare ASGI path in front of FastAPI: parse, authenticate, select; "
        "concurrent queries for one variant and worker coalesced into one call of at most the variant's efficient "
        "batch) → worker over a local Unix socket with length-prefixed binary frames (batching, onnxruntime with 1 "
        "intra-op thread) → back.",
        "- **FastAPI raw bytes**: `bench/baseline_server.py`, one FastAPI/uvicorn process with one session per model: "
        "`request.body()` → `np.frombuffer` → `session.run` (1 intra-op thread) → raw output bytes, nothing else. "
        "**FastAPI JSON**: the same process and session, `POST /NAME/infer_json`: `json.loads` of `{\"x\": [[...]]}` "
        "→ `np.asarray` → `session.run` → `{\"outputs\": [...]}` (every output as nested lists, `json.dumps`), "
        "nothing else.",
        "- **Ray Serve**: `bench/peers/ray_server.py`, a one-node Ray cluster on loopback "
        "(`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, `_node_ip_address=\"127.0.0.1\"`, no dashboard), Serve's proxy on "
        "127.0.0.1; per model one application per configuration, one replica, `max_ongoing_requests=64` (Serve's "
        "default collapses under 32 concurrent clients), access log off, raw float32 bytes in and raw bytes out; "
        "*+ @serve.batch* coalesces up to 32 requests (2 ms wait) into one `session.run`. The targets compare "
        "against the better of the two at c=32.",
        "- **BentoML**: `bench/peers/bento_service.py` under `bentoml serve`, one worker, access log off. Tiny "
        "model: a batchable API (adaptive batching, up to 32 requests, `max_latency_ms` 1000: at 10 ms it sheds "
        "most requests at c=32 with 503 \"process is overloaded\"), its JSON body `{\"x\": [[...]]}`, answers the "
        "probabilities as JSON. Compute-bound model: the raw float32 bytes as a multipart file upload (an image as "
        "JSON would cost more than the model; BentoML batches only tensor inputs), not batched, answers the "
        "probabilities as JSON.",
        "- **raw onnxruntime**: `bench/peers/ort_raw.py`, `session.run` in a loop in the process (1 intra-op "
        "thread), no HTTP, no client; *one process per core* starts one process per core together, each its own "
        "session, and sums their inferences/s (two rounds, before and after the HTTP rounds, merged). "
        "Its p50/p99 columns are those of one `session.run` call.",
        "- Before measuring, every system answered the same outputs as onnxruntime in-process for the same rows "
        "(8 digits rows, 2 random images).",
        f"- **clients**: one asyncio process ({info['client loop']} event loop), closed loops, two clients, each "
        "request described once and sent by both: the *raw-socket client*, raw HTTP/1.1 over asyncio streams, one "
        "keep-alive connection per closed loop, the request's bytes encoded once (as little client work as Python "
        f"allows), and *aiohttp* {info.get('aiohttp', '')} (a widely used client: one `ClientSession`, a "
        "`TCPConnector(limit=concurrency)`, keep-alive, each request sent with `session.request(...)` and its "
        "body read whole; what a typical Python caller pays). Both: {runs}; the rounds alternate the systems and "
        "the clients (A B C …, then … C B A) and are merged; traffic only to 127.0.0.1.".replace("{runs}", runs),
        "- **c=1 / c=32**: closed loops in the client; 1 measures latency alone, 32 throughput under load. "
        "**p50/p99**: time from writing the request to reading the whole answer, 200 answers only. **req/s**: 200 "
        "answers / wall time. **non-200 / errors**: other statuses and transport errors, never in the latencies.",
        "- **client CPU**: the benchmark process's CPU time / wall time (near 100%, the client, not the server, "
        "bounds the figure); **server CPU**: CPU time of all the server's processes / wall time in % of one core "
        f"(up to {CORES * 100}%); **server CPU ms per answer**: CPU time of all the server's processes / 200 "
        "answers (for raw onnxruntime: per inference), what one answer costs whatever the concurrency; "
        "**machine CPU**: busy share of all cores (`/proc/stat`) during the measurement.",
        "- **INFaaS ÷ system**: INFaaS in the row's format under the row's client ÷ the row; for req/s above 1× "
        "means INFaaS serves more; for latency below 1× means INFaaS answers faster.",
    ]
    if notes:
        lines += ["", "### Observed during the run", ""] + [f"- {n}" for n in notes]
    lines.append(END)
    return "\n".join(lines) + "\n"
