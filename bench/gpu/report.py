#!/usr/bin/env python3
"""Builds the GPU run's report from whatever its parts left: pairs our measurements
(gpu-transformer-bench compare --jsonl) with PyTorch's (bench/gpu/torch_reference.py --jsonl) by
(op, shape) and writes gpu-results.json and gpu-results.md: ratios ours/PyTorch (throughput, i.e.
PyTorch's time over ours), TFLOP/s and GB/s with % of peak, ptxas's resource report per kernel,
the test summary, the demo's check line and how long each section of the run took.

Every input may be missing, partial or cut off mid-line (a run killed at any moment): the report
says what is missing and shows what is there. Standard library only; run it again at any time:

    python3 bench/gpu/report.py --ours ours.jsonl --torch torch.jsonl --tests tests.json \
        --ptxas ptxas.jsonl --out-json gpu-results.json --out-md gpu-results.md
"""
import argparse
import json
import math
import os
import re

# Which implementation of ours is compared with which of PyTorch's, per op.
PRIMARY = {"sgemm": "tiled", "attention": "fused"}
ROWWISE = ("softmax_fwd", "softmax_bwd", "layernorm_fwd", "layernorm_bwd")


def read_lines(path):
    """The objects of a JSON-lines file; a torn or garbled line (a kill mid-write) is skipped and counted."""
    objects, torn = [], 0
    if path and os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    objects.append(json.loads(line))
                except json.JSONDecodeError:
                    torn += 1
    return objects, torn


def load_measurements(path):
    """(run headers, measurements, torn lines) from a --jsonl file, or from a --json document (older layout)."""
    if path and path.endswith(".json") and os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                document = json.load(f)
        except json.JSONDecodeError:
            return [], [], 1
        header = {k: v for k, v in document.items() if k != "results"}
        return [header.get("info", header)], document.get("results", []), 0
    objects, torn = read_lines(path)
    runs = [o["run"] for o in objects if "run" in o]
    measurements = [o["measurement"] for o in objects if "measurement" in o]
    return runs, measurements, torn


def load_json(path):
    if not path or not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError:
        return None


def read_text(path):
    if not path or not os.path.exists(path):
        return ""
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def number(value):
    """Our C# JSON writes NaN as the string "NaN"."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def key_of(entry):
    return entry["op"], json.dumps(entry["shape"], sort_keys=True)


def ok(entry):
    return entry is not None and not entry.get("error") and math.isfinite(number(entry.get("rate")))


def fmt(value, digits=None):
    if value is None or not math.isfinite(value):
        return "–"
    if digits is not None:
        return f"{value:,.{digits}f}"
    magnitude = abs(value)
    return f"{value:,.0f}" if magnitude >= 100 else f"{value:.1f}" if magnitude >= 10 else f"{value:.2f}" if magnitude >= 0.1 else f"{value:.3g}"


def pair(ours, theirs, peak_tflops, peak_gbs):
    """Groups both sides' measurements by (op, shape) with ratios and % of peak."""
    groups = {}
    for side, measurements in (("ours", ours), ("torch", theirs)):
        for entry in measurements:
            group = groups.setdefault(key_of(entry), {"op": entry["op"], "shape": entry["shape"], "ours": {}, "torch": {}})
            group[side][entry["impl"]] = {k: entry.get(k) for k in (
                "label", "median_ms", "min_ms", "reps", "rate", "best_rate", "unit", "flops", "bytes", "error", "check", "max_error",
                "note", "clock", "launches_per_sample")}
    for group in groups.values():
        primary = PRIMARY.get(group["op"], "ours")
        mine = group["ours"].get(primary)
        group["ratios"] = {f"{primary}/{impl}": number(mine["rate"]) / number(theirs["rate"])
                           for impl, theirs in group["torch"].items() if ok(mine) and ok(theirs)}
        percent = {}
        for side in ("ours", "torch"):
            for impl, entry in group[side].items():
                if not ok(entry):
                    continue
                if entry.get("unit") == "GFLOP/s":
                    percent[f"{side}:{impl}"] = 100 * number(entry["rate"]) / 1e3 / peak_tflops
                elif entry.get("unit") == "GB/s":
                    percent[f"{side}:{impl}"] = 100 * number(entry["rate"]) / peak_gbs
        group["percent_of_peak"] = percent
    return list(groups.values())


def ptxas_summary(lines):
    """Kernels, failures and the worst registers/spills/stack from ptxas.jsonl lines."""
    kernels = [l for l in lines if "kernel" in l]
    entries = [(l["kernel"], e) for l in kernels if l.get("ok") for e in l.get("entries", [])]
    return {
        "kernels": len(kernels),
        "assembled": sum(1 for l in kernels if l.get("ok")),
        "failed": [{"kernel": l["kernel"], "error": l.get("error")} for l in kernels if not l.get("ok")],
        "not_started": sum(l.get("skipped", 0) for l in lines if "skipped" in l),
        "with_spills": sorted({k for k, e in entries if e.get("spill_stores", 0) or e.get("spill_loads", 0)}),
        "with_stack_frame": sorted({k for k, e in entries if e.get("stack_frame", 0)}),
        "max_registers": max((e.get("registers", 0) for _, e in entries), default=None),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ours", help="our measurements: compare --jsonl (or --json)")
    parser.add_argument("--torch", help="PyTorch's: torch_reference.py --jsonl (or --json)")
    parser.add_argument("--tests", help="gpu-transformer-tests --json (partial while it runs)")
    parser.add_argument("--ptxas", help="ptxas.py --jsonl")
    parser.add_argument("--ptx-report", help="gpu-transformer-bench ptx --json (embedded as it is)")
    parser.add_argument("--sections", help="run-on-gpu.sh's sections.jsonl: share, time used, exit code per section")
    parser.add_argument("--demo")
    parser.add_argument("--environment")
    parser.add_argument("--build-info")
    parser.add_argument("--peak-tflops", type=float, default=67.0, help="FP32 peak for the %% column (H100/H200 SXM datasheet: 67)")
    parser.add_argument("--peak-gbs", type=float, default=4800.0, help="memory bandwidth for the %% column (H200 datasheet: 4800 GB/s)")
    parser.add_argument("--title", default="GpuTransformer vs PyTorch")
    parser.add_argument("--note", action="append", default=[], help="extra line for the header (repeatable)")
    parser.add_argument("--out-json", required=True)
    parser.add_argument("--out-md", required=True)
    args = parser.parse_args()

    our_runs, ours, ours_torn = load_measurements(args.ours)
    torch_runs, theirs, torch_torn = load_measurements(args.torch)
    tests = load_json(args.tests)
    ptxas_lines, ptxas_torn = read_lines(args.ptxas)
    sections, _ = read_lines(args.sections)
    demo_text = read_text(args.demo)
    demo_line = next((l.strip() for l in demo_text.splitlines() if re.search(r"\d+ of \d+ checks passed", l)), None)
    environment = read_text(args.environment).strip()
    build_info = read_text(args.build_info).strip()
    comparisons = pair(ours, theirs, args.peak_tflops, args.peak_gbs)
    ptxas = ptxas_summary(ptxas_lines)

    document = {
        "title": args.title,
        "notes": args.note,
        "environment": environment,
        "build": build_info,
        "peak_fp32_tflops": args.peak_tflops,
        "peak_gbs": args.peak_gbs,
        "sections": sections,
        "ours": our_runs,
        "torch": torch_runs,
        "torn_lines": {"ours": ours_torn, "torch": torch_torn, "ptxas": ptxas_torn},
        "tests": tests,
        "demo": {"summary": demo_line, "output": demo_text},
        "ptxas": {"summary": ptxas, "kernels": ptxas_lines},
        "ptx_report": load_json(args.ptx_report),
        "comparisons": comparisons,
    }
    write_atomically(args.out_json, json.dumps(document, indent=2, default=str))
    lines = markdown(args, document, comparisons, ours, our_runs, torch_runs, tests, demo_line, ptxas, ptxas_lines, sections)
    write_atomically(args.out_md, "\n".join(lines) + "\n")
    print("\n".join(lines))


def write_atomically(path, text):
    """Through a temporary file: a report being rebuilt while the run is killed is never half written."""
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(temporary, path)


def markdown(args, document, comparisons, ours, our_runs, torch_runs, tests, demo_line, ptxas, ptxas_lines, sections):
    lines = []
    add = lines.append
    add(f"# {args.title}")
    add("")
    for note in args.note:
        add(f"**{note}**")
        add("")
    run = our_runs[-1] if our_runs else {}
    machine = run.get("machine", {})
    build = document["build"]
    add(f"- Our device: {run.get('device', '?')} ({run.get('backend', '?')}; tuning {run.get('tuning', '?')}); build: "
        f"{build.splitlines()[0] if build else machine.get('commit', '?')}")
    kernels = [e for e in ours if ok(e) and e.get("unit") != "tokens/s"]
    if kernels:
        launches = [int(number(e.get("launches_per_sample", 1))) for e in kernels]
        add(f"- Our kernels timed with: {', '.join(sorted({e.get('clock', 'host') for e in kernels}))}; "
            f"{min(launches)}–{max(launches)} launches back to back per timed sample, one synchronization each")
    info = torch_runs[-1] if torch_runs else {}
    torch_clocks = sorted({e.get("clock") for g in comparisons for e in g["torch"].values() if e.get("clock")})
    add(f"- PyTorch {info.get('torch', '?')} on {info.get('name', '?')} ({info.get('device', '?')}{', CUDA ' + str(info.get('cuda')) if info.get('cuda') else ''}), "
        f"timed with {', '.join(torch_clocks) or '?'}")
    if machine:
        add(f"- Host: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores; load average at start {machine.get('load_average', '?')}; "
            f"date {str(machine.get('date_utc', '?'))[:16].replace('T', ' ')} UTC")
    add(f"- Ratios are ours / PyTorch in throughput (PyTorch's time ÷ ours): above 1 we are faster. % of peak: against {args.peak_tflops:g} TFLOP/s FP32 "
        f"and {args.peak_gbs:,.0f} GB/s (datasheet figures; a device copy measured about 4,300 GB/s on an H200 here).")
    add("- FLOPs: matmul 2·n³; attention forward 4·B·H·T²·d (halved when causal), forward+backward 3.5× that (FlashAttention's convention; "
        "recomputation not counted). GB/s: fewest bytes read + written.")
    torn = {k: v for k, v in document["torn_lines"].items() if v}
    if torn:
        add(f"- Lines cut off by a kill and skipped: {', '.join(f'{k} {v}' for k, v in torn.items())}")
    if document["environment"]:
        add("")
        add("```")
        add(document["environment"])
        add("```")
    add("")

    if sections:
        add("## The run")
        add("")
        add("| section | share s | used s | exit | result |")
        add("|---|---:|---:|---:|---|")
        for s in sections:
            add(f"| {s.get('section')} | {s.get('share', '–')} | {s.get('used', '–')} | {s.get('exit', '–')} | {s.get('result', '')} |")
        add("")

    add("## Tests and checks")
    add("")
    if tests:
        partial = "" if tests.get("finished", True) else " — **killed before the end: counts up to the last copy of the summary**"
        stopped = " (stopped at the time limit: some tests did not run)" if tests.get("stopped_at_time_limit") else ""
        add(f"- Tests on the device: **{tests['passed']} passed, {tests['failed']} failed, {tests['skipped']} skipped** in {tests['seconds']:.0f} s{stopped}{partial}")
        for failure in tests.get("failures", [])[:30]:
            add(f"  - FAIL {failure['test']}: {failure['message'][:300]}")
    else:
        add("- Tests on the device: no result (not run, or killed before the first summary)")
    add(f"- Demo (every kernel family once, checked against the C# references): {demo_line or 'no result'}")
    checks = [e for e in ours if e.get("check")]
    if checks:
        failed = [e.get("description", e["op"]) for e in checks if e["check"] != "ok"]
        add(f"- Benchmark workloads checked against the references: {len(checks) - len(failed)} of {len(checks)} ok" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    add("")

    add("## ptxas: registers, spills, stack, shared memory per kernel")
    add("")
    if ptxas["kernels"]:
        add(f"{ptxas['assembled']} of {ptxas['kernels']} kernels assembled; {len(ptxas['failed'])} failed; "
            f"{len(ptxas['with_spills'])} spill; {len(ptxas['with_stack_frame'])} have a stack frame; most registers {ptxas['max_registers']}"
            + (f"; {ptxas['not_started']} not started (time limit)" if ptxas["not_started"] else "") + ".")
        add("")
        add("| kernel | registers | spill st / ld B | stack B | smem B | barriers | FFMA | FMUL+FADD | LDS 128/64/32 | LDG 128/64/32 | LDL+STL |")
        add("|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|")
        for line in sorted((l for l in ptxas_lines if "kernel" in l), key=lambda l: l["kernel"]):
            if not line.get("ok"):
                add(f"| {line['kernel']} | **failed**: {str(line.get('error'))[:200]} |||||||||| ")
                continue
            for e in line.get("entries") or [{}]:
                sass = line.get("sass", {})

                def widths(counts):
                    return "/".join(str(counts.get(w, 0)) for w in ("128", "64", "32")) if counts is not None else "–"
                add(f"| {line['kernel']} | {e.get('registers', '–')} | {e.get('spill_stores', '–')} / {e.get('spill_loads', '–')} | {e.get('stack_frame', '–')} | "
                    f"{e.get('smem', '–')} | {e.get('barriers', '–')} | {sass.get('ffma', '–')} | "
                    f"{sass.get('fmul', 0) + sass.get('fadd', 0) if sass else '–'} | {widths(sass.get('lds')) if sass else '–'} | "
                    f"{widths(sass.get('ldg')) if sass else '–'} | {sass.get('local', '–')} |")
    else:
        add("Not run (no ptxas on this machine, or no PTX dumped): see the run log.")
    add("")

    def rows(*ops):
        return [g for g in comparisons if g["op"] in ops]

    def cell(entry, scale=1.0, digits=None):
        if ok(entry):
            return fmt(number(entry["rate"]) * scale, digits)
        return "error" if entry and entry.get("error") and not entry["error"].startswith("skipped") else "–"

    def ms(entry):
        return fmt(number(entry["median_ms"])) if ok(entry) else "–"

    def ratio(group, name):
        value = group["ratios"].get(name)
        return fmt(value, 2) + "×" if value is not None else "–"

    def percent(group, name):
        return fmt(group["percent_of_peak"].get(name), 1)

    def label(group_rows, impl, fallback):
        found = next((g["torch"][impl].get("label") for g in group_rows if impl in g["torch"] and g["torch"][impl].get("label")), None)
        return found or fallback

    sgemm = sorted(rows("sgemm"), key=lambda g: (g["shape"]["layout"], g["shape"]["n"]))
    if sgemm:
        add("## SGEMM (square, FP32)")
        add("")
        add(f"PyTorch: {label(sgemm, 'torch_fp32', 'torch.mm FP32')}; TF32 column: {label(sgemm, 'torch_tf32', 'not measured')}.")
        add("")
        add("| n | ours tiled ms | ours TFLOP/s | % peak | cuBLAS SGEMM ms | cuBLAS SGEMM TFLOP/s | % peak | ours / SGEMM | TF32 TFLOP/s | ours / TF32 | ours naive TFLOP/s |")
        add("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for g in sgemm:
            o, t = g["ours"], g["torch"]
            add(f"| {g['shape']['n']} | {ms(o.get('tiled'))} | {cell(o.get('tiled'), 1e-3)} | {percent(g, 'ours:tiled')} | "
                f"{ms(t.get('torch_fp32'))} | {cell(t.get('torch_fp32'), 1e-3)} | {percent(g, 'torch:torch_fp32')} | {ratio(g, 'tiled/torch_fp32')} | "
                f"{cell(t.get('torch_tf32'), 1e-3)} | {ratio(g, 'tiled/torch_tf32')} | {cell(o.get('naive'), 1e-3)} |")
        add("")

    rowwise = rows(*ROWWISE)
    if rowwise:
        add("## Row-wise kernels (GB/s)")
        add("")
        add("| kernel | shape | ours ms | ours GB/s | % peak | PyTorch ms | PyTorch GB/s | % peak | ours / PyTorch |")
        add("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for g in sorted(rowwise, key=lambda g: ROWWISE.index(g["op"])):
            o, t = g["ours"].get("ours"), g["torch"].get("torch")
            add(f"| {g['op'].replace('_', ' ')} | {g['shape']['rows']} × {g['shape']['cols']} | {ms(o)} | {cell(o)} | {percent(g, 'ours:ours')} | "
                f"{ms(t)} | {cell(t)} | {percent(g, 'torch:torch')} | {ratio(g, 'ours/torch')} |")
        add("")

    attention = sorted(rows("attention"), key=lambda g: (g["shape"]["pass"], g["shape"]["causal"], g["shape"]["d"], g["shape"]["t"]))
    if attention:
        shape0 = attention[0]["shape"]
        add(f"## Attention (B {shape0['b']}, H {shape0['h']}: B·H = {shape0['b'] * shape0['h']}; TFLOP/s)")
        add("")
        add("Ours fused: FlashAttention-2-style kernels (FP32); ours unfused: batched Matmul + Softmax + Matmul (our kernels). "
            f"{label(attention, 'torch_math', 'PyTorch math: the unfused computation in torch ops')}. "
            f"SDPA FP32: {label(attention, 'torch_sdpa', 'F.scaled_dot_product_attention at FP32')}. "
            f"SDPA BF16: {label(attention, 'torch_sdpa_bf16', 'not measured')}.")
        add("")
        add("| pass | causal | d | T | ours fused ms | ours fused | % peak | ours unfused | torch math | SDPA FP32 (mem-efficient) | SDPA BF16 (FA2) | fused / math | fused / SDPA FP32 | fused / SDPA BF16 |")
        add("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for g in attention:
            s, o, t = g["shape"], g["ours"], g["torch"]
            add(f"| {'fwd' if s['pass'] == 'fwd' else 'fwd+bwd'} | {'yes' if s['causal'] else 'no'} | {s['d']} | {s['t']} | {ms(o.get('fused'))} | "
                f"{cell(o.get('fused'), 1e-3)} | {percent(g, 'ours:fused')} | {cell(o.get('unfused'), 1e-3)} | {cell(t.get('torch_math'), 1e-3)} | "
                f"{cell(t.get('torch_sdpa'), 1e-3)} | {cell(t.get('torch_sdpa_bf16'), 1e-3)} | {ratio(g, 'fused/torch_math')} | "
                f"{ratio(g, 'fused/torch_sdpa')} | {ratio(g, 'fused/torch_sdpa_bf16')} |")
        add("")

    for op, heading, fallback in (("train_step", "Training step (decoder-only LM, FP32, tokens/s)", "ours"),
                                  ("generate", "Greedy generation (batch 1, key/value cache, FP32, tokens/s)", "ours")):
        add(f"## {heading}")
        add("")
        found = rows(op)
        if not found:
            add("Not measured.")
            add("")
            continue
        add("| config | ours tokens/s | ours ms | PyTorch tokens/s | PyTorch ms | ours / PyTorch |")
        add("|---|---:|---:|---:|---:|---:|")
        for g in found:
            config = ", ".join(f"{k} {v}" for k, v in g["shape"].items())
            mine = g["ours"].get(fallback) or next(iter(g["ours"].values()), None)  # a preset's training row is named after the preset
            add(f"| {config} | {cell(mine)} | {ms(mine)} | {cell(g['torch'].get('torch'))} | {ms(g['torch'].get('torch'))} | {ratio(g, 'ours/torch')} |")
        for text in sorted({e.get("label") or e.get("note") for g in found for e in g["torch"].values() if e.get("label") or e.get("note")}):
            add(f"\nPyTorch: {text}.")
        add("")

    errors = {}
    for g in comparisons:
        for side in ("ours", "torch"):
            for impl, e in g[side].items():
                if e.get("error"):
                    errors.setdefault((side, impl, e["error"]), []).append(f"{g['op']} {json.dumps(g['shape'], sort_keys=True)}")
    if errors:
        add("## Not measured")
        add("")
        for (side, impl, error), cases in errors.items():
            where = cases[0] if len(cases) == 1 else f"{len(cases)} cases, e.g. {cases[0]}"
            add(f"- {side} {impl}: {error} ({where})")
        add("")
    return lines


if __name__ == "__main__":
    main()
