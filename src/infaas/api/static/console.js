// The INFaaS console: polls GET v1/console every 2 s and draws what it says. No framework, no
// build step; every value from the service goes into the page as text (never as HTML).
"use strict";
(() => {
  const KEY = "infaas.apiKey";
  const PERIOD_MS = 2000;
  const COLOURS = ["#2f6fdb", "#d9480f", "#2b8a3e", "#9c36b5", "#e67700", "#0b7285", "#c2255c", "#5c940d"];
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  let pinned = false; // the key box was opened by hand: polling leaves it open

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null) continue;
      if (k === "text") node.textContent = String(v);
      else if (k === "cls") node.className = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  const fmt = (x, digits = 3) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));
  const ms = (x) => {
    if (x === null || x === undefined) return "–";
    const v = Number(x);
    return v > 0 && v < 0.001 ? v.toExponential(0) : v < 10 ? v.toFixed(3) : v.toFixed(1);
  };
  const mib = (b) => (b / (1 << 20)).toFixed(0) + " MiB";
  const clock = (t) => new Date(t * 1000).toLocaleTimeString();

  function table(headers, rows) {
    const head = el("tr", {}, ...headers.map((h) => el("th", { cls: h.num ? "num" : "", text: h.label || h })));
    return el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows));
  }

  // ------------------------------------------------------------------ latency against batch size
  function plot(variants) {
    const W = 400, H = 210, L = 46, R = 10, T = 10, B = 34;
    const series = variants
      .filter((v) => v.profile && v.profile.latency_ms)
      .map((v, i) => ({
        id: v.id, colour: COLOURS[i % COLOURS.length],
        points: Object.entries(v.profile.latency_ms).map(([b, pair]) => [Number(b), pair[0], pair[1]]).sort((a, b) => a[0] - b[0]),
      }));
    if (!series.length) return el("div", { cls: "muted", text: "no profile yet (building or profiling)" });
    const batches = [...new Set(series.flatMap((s) => s.points.map((p) => p[0])))].sort((a, b) => a - b);
    // both axes logarithmic: a profile spans orders of magnitude (p50 against a noisy p99, batch 1 against 32)
    const values = series.flatMap((s) => s.points.flatMap((p) => [p[1], p[2]])).filter((v) => v > 0);
    const y0 = Math.floor(Math.log10(Math.min(...values))), y1 = Math.ceil(Math.log10(Math.max(...values)));
    const lx = (b) => Math.log2(b);
    const x0 = lx(batches[0]), x1 = lx(batches[batches.length - 1]) || 1;
    const X = (b) => L + ((lx(b) - x0) / (x1 - x0 || 1)) * (W - L - R);
    const Y = (v) => H - B - ((Math.log10(Math.max(v, 10 ** y0)) - y0) / (y1 - y0 || 1)) * (H - T - B);
    const root = svg("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img" });
    root.append(svg("title", {}, "latency (ms, log scale) against batch size: p50 solid, p99 dashed"));
    for (let e = y0; e <= y1; e++) {
      const v = 10 ** e;
      root.append(svg("line", { x1: L, x2: W - R, y1: Y(v), y2: Y(v), stroke: "#e6eaf0" }));
      root.append(svg("text", { x: L - 4, y: Y(v) + 3, "text-anchor": "end" }, v >= 1 ? String(v) : v.toPrecision(1)));
    }
    for (const b of batches) {
      root.append(svg("line", { x1: X(b), x2: X(b), y1: H - B, y2: H - B + 4, stroke: "#8a96a6" }));
      root.append(svg("text", { x: X(b), y: H - B + 14, "text-anchor": "middle" }, b));
    }
    root.append(svg("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, stroke: "#8a96a6" }));
    root.append(svg("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle" }, "batch size (rows)"));
    root.append(svg("text", { x: 10, y: T + (H - T - B) / 2, transform: `rotate(-90 10 ${T + (H - T - B) / 2})`, "text-anchor": "middle" }, "latency (ms)"));
    root.append(svg("text", { x: W - R, y: T + 8, "text-anchor": "end" }, "p50 solid · p99 dashed"));
    for (const s of series) {
      const line = (k) => s.points.map((p) => `${X(p[0]).toFixed(1)},${Y(p[k]).toFixed(1)}`).join(" ");
      root.append(svg("polyline", { points: line(2), fill: "none", stroke: s.colour, "stroke-width": 1.2, "stroke-dasharray": "4 3", opacity: 0.7 }));
      root.append(svg("polyline", { points: line(1), fill: "none", stroke: s.colour, "stroke-width": 2 }));
      for (const p of s.points) {
        const dot = svg("circle", { cx: X(p[0]).toFixed(1), cy: Y(p[1]).toFixed(1), r: 2.5, fill: s.colour });
        dot.append(svg("title", {}, `${s.id}: batch ${p[0]}: p50 ${ms(p[1])} ms, p99 ${ms(p[2])} ms`));
        root.append(dot);
      }
    }
    const legend = el("div", { cls: "legend" }, ...series.map((s) =>
      el("span", {}, el("span", { cls: "swatch", style: `background:${s.colour}` }), el("code", { text: s.id }))));
    return el("div", {}, root, legend);
  }

  // ------------------------------------------------------------------ sections
  function models(list) {
    if (!list.length) return el("div", { cls: "muted", text: "no models registered (POST /v1/models, or infaas register)" });
    return el("div", {}, ...list.map((m) => {
      const rows = (m.variants || []).map((v) => {
        const p = v.profile && v.profile.latency_ms;
        const one = p && p["1"];
        return el("tr", {},
          el("td", {}, el("code", { text: v.id })),
          el("td", { cls: v.status === "ready" ? "ok" : v.status === "failed" ? "bad" : "", text: v.status, title: v.message || "" }),
          el("td", { cls: "num", text: fmt(v.accuracy, 4), title: v.accuracy_source || "" }),
          el("td", { cls: "num", text: v.max_batch }),
          el("td", { cls: "num", text: one ? ms(one[0]) : "–" }),
          el("td", { cls: "num", text: v.profile ? ms(v.profile.load_ms) : "–" }));
      });
      const info = el("div", {},
        el("h3", { text: m.name }),
        el("div", { cls: "muted" }, `task ${m.task} · ${m.status} · ${m.visibility} · owner ${m.tenant} · declared accuracy ${fmt(m.declared_accuracy, 4)}`,
          m.measured_accuracy !== null && m.measured_accuracy !== undefined ? `, measured ${fmt(m.measured_accuracy, 4)}` : ""),
        table(["variant", "status", { label: "accuracy", num: true }, { label: "max batch", num: true },
               { label: "p50 at 1 (ms)", num: true }, { label: "load (ms)", num: true }], rows));
      return el("div", { cls: "model" }, info, plot(m.variants || []));
    }));
  }

  function workers(list) {
    if (list === null) return el("div", { cls: "muted", text: "workers are shown to an admin key" });
    if (!list.length) return el("div", { cls: "muted", text: "no worker is up" });
    return table(["worker", "hardware", "state", { label: "memory", num: true }, "replicas (queued rows · rows/s)"],
      list.map((w) => el("tr", {},
        el("td", {}, el("code", { text: w.id })),
        el("td", { text: w.hardware }),
        el("td", { cls: w.suspect ? "bad" : w.state === "up" ? "ok" : "", text: w.suspect ? "suspect" : w.state }),
        el("td", { cls: "num", text: `${mib(w.memory_used_bytes)} / ${mib(w.memory_budget_bytes)}` }),
        el("td", {}, ...(w.replicas.length ? w.replicas.map((r) =>
          el("span", { cls: "pill" }, el("code", { text: r.variant_id }), ` · ${r.queued_rows} · ${fmt(r.rate_rps, 1)}`))
          : [el("span", { cls: "muted", text: "none loaded" })])))));
  }

  function objectives(list) {
    if (!list.length) return el("div", { cls: "muted", text: "no queries with a latency objective yet" });
    return table(["task", { label: "met", num: true }, { label: "missed", num: true }, "rate"],
      list.map((o) => el("tr", {},
        el("td", { text: o.task }),
        el("td", { cls: "num", text: o.met }),
        el("td", { cls: "num", text: o.missed }),
        el("td", {}, el("span", { cls: "bar" }, el("span", { style: `width:${Math.round((o.rate || 0) * 100)}%` })),
          o.rate === null ? "–" : `${(o.rate * 100).toFixed(1)} %`))));
  }

  function decisions(list) {
    if (!list.length) return el("div", { cls: "muted", text: "no queries yet" });
    return table(["time", "tenant", "asked for", "variant", "worker", { label: "rows", num: true }, { label: "predicted ms", num: true },
                  { label: "measured ms", num: true }, { label: "objective ms", num: true }, "met", "reason"],
      list.map((d) => el("tr", {},
        el("td", { cls: "num", text: clock(d.time) }),
        el("td", { text: d.tenant }),
        el("td", {}, el("span", { cls: "muted", text: d.target_kind + " " }), el("code", { text: d.target })),
        el("td", {}, d.variant ? el("code", { text: d.variant }) : el("span", { cls: "bad", text: `refused (${d.status})` })),
        el("td", {}, d.worker ? el("code", { text: d.worker }) : "–"),
        el("td", { cls: "num", text: d.rows }),
        el("td", { cls: "num", text: ms(d.predicted_latency_ms) }),
        el("td", { cls: "num", text: ms(d.latency_ms) }),
        el("td", { cls: "num", text: ms(d.objective && d.objective.latency_ms) }),
        el("td", { cls: d.objective_met === true ? "ok" : d.objective_met === false ? "bad" : "muted",
                   text: d.objective_met === true ? "yes" : d.objective_met === false ? "no" : "–" }),
        el("td", { cls: "reason", text: d.reason, title: d.request_id ? `request ${d.request_id}` : "" }))));
  }

  // ------------------------------------------------------------------ polling
  function replace(id, node) {
    const box = $(id);
    box.className = "";
    box.replaceChildren(node);
  }

  function say(text, ok) {
    $("status").textContent = text;
    $("dot").className = ok ? "ok" : "bad";
  }

  function banner(text) {
    $("banner").textContent = text || "";
    $("banner").className = text ? "show" : "";
  }

  function askForKey(why) {
    if (why) $("keywhy").textContent = why;
    $("keybox").className = "show";
  }

  async function poll() {
    const key = sessionStorage.getItem(KEY);
    let resp;
    try {
      resp = await fetch("v1/console", { headers: key ? { Authorization: "Bearer " + key } : {}, cache: "no-store" });
    } catch (err) {
      say("service unreachable", false);
      banner(`Cannot reach the service: ${err}`);
      return;
    }
    let body = null;
    try { body = await resp.json(); } catch (err) { body = null; }
    if (resp.status === 401 || resp.status === 403) {
      say(resp.status === 401 ? "API key needed" : "key lacks the query scope", false);
      banner("");
      askForKey(resp.status === 401
        ? "This service needs an API key (scope query; workers need admin). It is kept in this tab only (sessionStorage) and sent as Authorization: Bearer."
        : `This key cannot read the console: ${body && body.message}`);
      return;
    }
    if (!resp.ok || !body) {
      say(`error ${resp.status}`, false);
      banner(body && body.message ? `${body.error}: ${body.message}` : `The service answered ${resp.status}`);
      return;
    }
    banner("");
    if (!pinned) $("keybox").className = "";
    say(`updated ${clock(body.time)}`, true);
    $("who").textContent = `tenant ${body.tenant}${body.admin ? " (admin)" : ""} · auth ${body.auth}`;
    replace("models", models(body.models));
    replace("workers", workers(body.workers));
    replace("objectives", objectives(body.objectives));
    replace("decisions", decisions(body.decisions));
  }

  async function loop() {
    try { await poll(); } finally { setTimeout(loop, PERIOD_MS); }
  }

  $("keyform").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = $("key").value.trim();
    if (key) sessionStorage.setItem(KEY, key);
    $("key").value = "";
    $("keybox").className = "";
    pinned = false;
    poll();
  });
  $("forget").addEventListener("click", () => { sessionStorage.removeItem(KEY); askForKey(); poll(); });
  $("changekey").addEventListener("click", () => { pinned = true; askForKey(); });
  loop();
})();
