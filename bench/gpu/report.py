#!/usr/bin/env python3
"""Pairs our measurements (gpu-transformer-bench compare --json) with PyTorch's
(bench/gpu/torch_reference.py --json) by (op, shape) and writes gpu-results.json and
gpu-results.md: ratios ours/PyTorch (throughput, i.e. PyTorch's time over ours), TFLOP/s,
% of the FP32 peak, GB/s, the test summary and the demo's check line. Standard library only.

    python3 bench/gpu/report.py --ours ours.json --torch torch.json --tests tests.json \
        --demo demo.txt --environment env.txt --out-json gpu-results.json --out-md gpu-results.md
"""
import argparse
import json
import math
import os
import re

# Which implementation of ours is compared with which of PyTorch's, per op.
PRIMARY = {"sgemm": "tiled", "attention": "fused"}


def load(path):
    if not path or not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def number(value):
    """Our C# JSON writes NaN as the string "NaN"."""
    if isinstance(value, (int, float)):
        return float(value)
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
        return f"{value:.{digits}f}"
    magnitude = abs(value)
    return f"{value:.0f}" if magnitude >= 100 else f"{value:.1f}" if magnitude >= 10 else f"{value:.2f}" if magnitude >= 0.1 else f"{value:.3g}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ours")
    parser.add_argument("--torch")
    parser.add_argument("--tests")
    parser.add_argument("--demo")
    parser.add_argument("--environment")
    parser.add_argument("--build-info")
    parser.add_argument("--peak-tflops", type=float, default=67.0, help="FP32 peak for the %% column (H100 SXM: 67)")
    parser.add_argument("--title", default="GpuTransformer vs PyTorch")
    parser.add_argument("--note", action="append", default=[], help="extra line for the header (repeatable)")
    parser.add_argument("--out-json", required=True)
    parser.add_argument("--out-md", required=True)
    args = parser.parse_args()

    ours_doc = load(args.ours) or {"results": []}
    torch_doc = load(args.torch) or {"results": [], "info": {}}
    tests = load(args.tests)
    demo_text = open(args.demo, encoding="utf-8").read() if args.demo and os.path.exists(args.demo) else ""
    demo_line = next((l.strip() for l in demo_text.splitlines() if re.search(r"\d+ of \d+ checks passed", l)), None)
    environment = open(args.environment, encoding="utf-8").read().strip() if args.environment and os.path.exists(args.environment) else ""
    build_info = open(args.build_info, encoding="utf-8").read().strip() if args.build_info and os.path.exists(args.build_info) else ""

    groups = {}
    for side, doc in (("ours", ours_doc), ("torch", torch_doc)):
        for entry in doc.get("results", []):
            group = groups.setdefault(key_of(entry), {"op": entry["op"], "shape": entry["shape"], "ours": {}, "torch": {}})
            group[side][entry["impl"]] = {k: entry.get(k) for k in ("median_ms", "min_ms", "reps", "rate", "best_rate", "unit", "flops", "bytes", "error", "check", "note")}

    peak = args.peak_tflops
    comparisons = []
    for group in groups.values():
        primary = PRIMARY.get(group["op"], "ours")
        mine = group["ours"].get(primary)
        ratios, percent = {}, {}
        if ok(mine):
            for impl, theirs in group["torch"].items():
                if ok(theirs):
                    ratios[f"{primary}/{impl}"] = number(mine["rate"]) / number(theirs["rate"])
            if mine.get("unit") == "GFLOP/s":
                for impl, entry in group["ours"].items():
                    if ok(entry):
                        percent[impl] = 100 * number(entry["rate"]) / 1e3 / peak
        for impl, entry in group["torch"].items():
            if ok(entry) and entry.get("unit") == "GFLOP/s":
                percent[impl] = 100 * number(entry["rate"]) / 1e3 / peak
        group["ratios"] = ratios
        group["percent_of_fp32_peak"] = percent
        comparisons.append(group)

    document = {
        "title": args.title,
        "notes": args.note,
        "environment": environment,
        "build": build_info,
        "peak_fp32_tflops": peak,
        "ours": {k: v for k, v in ours_doc.items() if k != "results"},
        "torch": torch_doc.get("info", {}),
        "tests": tests,
        "demo": {"summary": demo_line, "output": demo_text},
        "comparisons": comparisons,
    }
    with open(args.out_json, "w", encoding="utf-8") as f:
        json.dump(document, f, indent=2, default=str)

    lines = []
    add = lines.append
    add(f"# {args.title}")
    add("")
    for note in args.note:
        add(f"**{note}**")
        add("")
    machine = ours_doc.get("machine", {})
    add(f"- Our device: {ours_doc.get('device', '?')} ({ours_doc.get('backend', '?')}); build: {build_info.splitlines()[0] if build_info else machine.get('commit', '?')}")
    info = torch_doc.get("info", {})
    add(f"- PyTorch {info.get('torch', '?')} on {info.get('name', '?')} ({info.get('device', '?')}{', CUDA ' + str(info.get('cuda')) if info.get('cuda') else ''})")
    if machine:
        add(f"- Host: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores; load average at start {machine.get('load_average', '?')}; date {str(machine.get('date_utc', '?'))[:16].replace('T', ' ')} UTC")
    add(f"- Ratios are ours / PyTorch in throughput (PyTorch's time ÷ ours): above 1 we are faster. % of peak is against {peak:g} TFLOP/s FP32.")
    add("- FLOPs: matmul 2·n³; attention forward 4·B·H·T²·d (halved when causal), forward+backward 3.5× that (FlashAttention's convention; recomputation not counted). GB/s: fewest bytes read + written.")
    if environment:
        add("")
        add("```")
        add(environment)
        add("```")
    add("")

    add("## Tests and checks")
    add("")
    if tests:
        stopped = " (stopped at the time limit: some tests did not run)" if tests.get("stopped_at_time_limit") else ""
        add(f"- Test suite: **{tests['passed']} passed, {tests['failed']} failed, {tests['skipped']} skipped** in {tests['seconds']:.0f} s{stopped}")
        for failure in tests.get("failures", [])[:20]:
            add(f"  - FAIL {failure['test']}: {failure['message'][:300]}")
    else:
        add("- Test suite: no result (not run or killed)")
    add(f"- Demo (every kernel family once, checked against the C# references): {demo_line or 'no result'}")
    checks = [e for e in ours_doc.get("results", []) if e.get("check")]
    if checks:
        failed = [e["description"] for e in checks if e["check"] != "ok"]
        add(f"- Benchmark workloads checked against the references: {len(checks) - len(failed)} of {len(checks)} ok" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    add("")

    def rows(op):
        return [g for g in comparisons if g["op"] == op]

    def cell(entry, scale=1.0, digits=None):
        return fmt(number(entry["rate"]) * scale, digits) if ok(entry) else ("error" if entry and entry.get("error") and not entry["error"].startswith("skipped") else "–")

    def ms(entry):
        return fmt(number(entry["median_ms"])) if ok(entry) else "–"

    def ratio(group, name):
        value = group["ratios"].get(name)
        return fmt(value, 2) + "×" if value is not None else "–"

    sgemm = sorted(rows("sgemm"), key=lambda g: (g["shape"]["layout"], g["shape"]["n"]))
    if sgemm:
        add("## SGEMM (square, FP32)")
        add("")
        add("torch.matmul (cuBLAS on CUDA) with TF32 off (FP32) and on (TF32 tensor cores, for reference).")
        add("")
        add("| n | ours tiled ms | ours TFLOP/s | % peak | torch FP32 ms | torch FP32 TFLOP/s | ours / torch FP32 | torch TF32 TFLOP/s | ours / torch TF32 | ours naive TFLOP/s |")
        add("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for g in sgemm:
            o, t = g["ours"], g["torch"]
            add(f"| {g['shape']['n']} | {ms(o.get('tiled'))} | {cell(o.get('tiled'), 1e-3)} | {fmt(g['percent_of_fp32_peak'].get('tiled'), 1)} | "
                f"{ms(t.get('torch_fp32'))} | {cell(t.get('torch_fp32'), 1e-3)} | {ratio(g, 'tiled/torch_fp32')} | "
                f"{cell(t.get('torch_tf32'), 1e-3)} | {ratio(g, 'tiled/torch_tf32')} | {cell(o.get('naive'), 1e-3)} |")
        add("")

    attention = sorted(rows("attention"), key=lambda g: (g["shape"]["pass"], g["shape"]["causal"], g["shape"]["d"], g["shape"]["t"]))
    if attention:
        shape0 = attention[0]["shape"]
        add(f"## Attention (B {shape0['b']}, H {shape0['h']}: B·H = {shape0['b'] * shape0['h']}, FP32)")
        add("")
        add("Ours fused: FlashAttention-2-style kernels; ours unfused: batched Matmul + Softmax + Matmul (our kernels). "
            "PyTorch math: the same unfused computation in torch ops (TF32 off); SDPA: F.scaled_dot_product_attention at FP32.")
        add("")
        add("| pass | causal | d | T | ours fused ms | ours fused TFLOP/s | % peak | ours unfused TFLOP/s | torch math TFLOP/s | torch SDPA TFLOP/s | fused / math | fused / SDPA |")
        add("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for g in attention:
            s, o, t = g["shape"], g["ours"], g["torch"]
            add(f"| {'fwd' if s['pass'] == 'fwd' else 'fwd+bwd'} | {'yes' if s['causal'] else 'no'} | {s['d']} | {s['t']} | {ms(o.get('fused'))} | "
                f"{cell(o.get('fused'), 1e-3)} | {fmt(g['percent_of_fp32_peak'].get('fused'), 1)} | {cell(o.get('unfused'), 1e-3)} | "
                f"{cell(t.get('torch_math'), 1e-3)} | {cell(t.get('torch_sdpa'), 1e-3)} | {ratio(g, 'fused/torch_math')} | {ratio(g, 'fused/torch_sdpa')} |")
        add("")

    rowwise = [g for g in comparisons if g["op"] in ("softmax_fwd", "softmax_bwd", "layernorm_fwd", "layernorm_bwd")]
    if rowwise:
        add("## Row-wise kernels (GB/s)")
        add("")
        add("| kernel | shape | ours ms | ours GB/s | PyTorch ms | PyTorch GB/s | ours / PyTorch |")
        add("|---|---|---:|---:|---:|---:|---:|")
        for g in rowwise:
            o, t = g["ours"].get("ours"), g["torch"].get("torch")
            add(f"| {g['op'].replace('_', ' ')} | {g['shape']['rows']} × {g['shape']['cols']} | {ms(o)} | {cell(o)} | {ms(t)} | {cell(t)} | {ratio(g, 'ours/torch')} |")
        add("")

    train = rows("train_step")
    add("## Training step (decoder-only LM, FP32, tokens/s)")
    add("")
    if train:
        add("| config | ours tokens/s | PyTorch tokens/s | ours / PyTorch |")
        add("|---|---:|---:|---:|")
        for g in train:
            config = ", ".join(f"{k} {v}" for k, v in g["shape"].items())
            ours = g['ours'].get('ours') or next(iter(g['ours'].values()), None)  # a preset's row is named after the preset
            add(f"| {config} | {cell(ours)} | {cell(g['torch'].get('torch'))} | {ratio(g, 'ours/torch')} |")
        notes = {e.get("note") for g in train for e in g["torch"].values() if e.get("note")}
        for note in notes:
            add(f"\nPyTorch model: {note}.")
    else:
        add("Not measured.")
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
    with open(args.out_md, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
