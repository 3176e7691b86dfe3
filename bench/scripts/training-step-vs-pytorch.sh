#!/usr/bin/env bash
# One training step on PoCL (ours) against PyTorch on the CPU (OpenBLAS-OpenMP, 2 threads), the
# same config, in alternating rounds in one session; optionally a second build of ours (e.g. the
# commit before a change) in the same rounds. Writes bench/results/<date>-training-step-vs-pytorch-cpu.md.
#
#   bench/scripts/training-step-vs-pytorch.sh [--config vocab=8192,d_model=256,nhead=8,layers=4,d_ff=1024,T=128,batch=16]
#       [--rounds 3] [--reps 3] [--baseline-bench PATH/gpu-transformer-bench.dll] [--out FILE.md]
#
# Each round runs: ours (this tree's Release build), the baseline build if given, PyTorch.
# Ours: `compare --backend opencl --sections train --reps N` (median of N steps after warm-ups);
# PyTorch: bench/gpu/torch_reference.py --device cpu --sections train (median of ≥ 5 steps).
# Reported: the median over rounds of each run's median step time. The report is marked
# PROVISIONAL when the 1-minute load average exceeded half the cores during the run.
set -euo pipefail
cd "$(dirname "$0")/../.."

config="vocab=8192,d_model=256,nhead=8,layers=4,d_ff=1024,T=128,batch=16"
rounds=3
reps=3
baseline=""
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --config) config="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --reps) reps="$2"; shift 2 ;;
    --baseline-bench) baseline="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
out="${out:-bench/results/$(date -u +%F)-training-step-vs-pytorch-cpu.md}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log() { printf '[training-step-vs-pytorch] %s\n' "$*" >&2; }
cores=$(nproc)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
max_load=$(cut -d' ' -f1 /proc/loadavg)
sample_load() { max_load=$(printf '%s\n%s\n' "$max_load" "$(cut -d' ' -f1 /proc/loadavg)" | sort -g | tail -1); }

log "building the bench app (Release)"
dotnet build bench/GpuTransformer.Bench/GpuTransformer.Bench.csproj -c Release -nologo -v quiet -clp:ErrorsOnly >&2
ours_args=(compare --backend opencl --sections train --train-config "$config" --reps "$reps")
torch_args=(bench/gpu/torch_reference.py --device cpu --sections train --train "$config" --warmup 3 --reps 5 --min-time 0.5 --threads 2)
# Ours: "[compare ...] train step custom: ...: median 956.1 ms per step, ..." (compare also runs its
# presets; the custom line is this config); PyTorch: "[torch ...] train ...: median 558.0 ms, ...".
median_of() { grep -E "$2" "$1" | grep -oE 'median [0-9.]+ ms' | head -1 | grep -oE '[0-9.]+'; }
run_ours() { GPUTRANSFORMER_OPENCL_PORTABLE=1 dotnet "$1" "${ours_args[@]}" >"$2" 2>&1 || true; }

for round in $(seq 1 "$rounds"); do
  log "round $round/$rounds: ours"
  run_ours bench/GpuTransformer.Bench/bin/Release/net10.0/gpu-transformer-bench.dll "$work/ours-$round.txt"
  echo "$(median_of "$work/ours-$round.txt" 'train step custom')" >>"$work/ours.ms"; sample_load
  if [ -n "$baseline" ]; then
    log "round $round/$rounds: baseline $baseline"
    run_ours "$baseline" "$work/baseline-$round.txt"
    echo "$(median_of "$work/baseline-$round.txt" 'train step custom')" >>"$work/baseline.ms"; sample_load
  fi
  log "round $round/$rounds: PyTorch"
  LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp OMP_NUM_THREADS=2 /usr/bin/python3 "${torch_args[@]}" >"$work/torch-$round.txt" 2>&1 || true
  echo "$(median_of "$work/torch-$round.txt" '\] train')" >>"$work/torch.ms"; sample_load
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

WORK="$work" OUT="$out" CORES="$cores" LOAD_START="$load_start" LOAD_END="$load_end" MAX_LOAD="$max_load" CONFIG="$config" \
  ROUNDS="$rounds" REPS="$reps" BASELINE="$baseline" OURS_ARGS="${ours_args[*]}" TORCH_ARGS="${torch_args[*]}" /usr/bin/python3 - <<'PY'
import os, statistics, subprocess, datetime
env = os.environ
def read(name):
    path = f"{env['WORK']}/{name}.ms"
    if not os.path.exists(path):
        return []
    return [float(x) for x in open(path).read().split() if x.strip()]
ours, base, torch = read("ours"), read("baseline"), read("torch")
cfg = dict(kv.split("=") for kv in env["CONFIG"].split(","))
tokens = int(cfg["T"]) * int(cfg["batch"])
commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True).stdout.strip()
if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip():
    commit += " + uncommitted changes"
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
cores, max_load = int(env["CORES"]), float(env["MAX_LOAD"])
fmt = lambda xs: ", ".join(f"{x:.0f}" for x in xs) or "–"
med = lambda xs: statistics.median(xs) if xs else float("nan")
lines = [f"# Training step: ours (PoCL) vs PyTorch (CPU), {env['CONFIG']}", ""]
if max_load > cores / 2:
    lines += [f"**PROVISIONAL**: the machine was busy (1-minute load average up to {max_load:.1f} on {cores} cores); ratios of runs in the same rounds are the usable part; re-measure on a quiet machine.", ""]
lines += [
    f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; commit {commit}",
    f"- Machine: {cpu}, {cores} cores; load average (1/5/15 min) at start {env['LOAD_START']}, at end {env['LOAD_END']}, highest 1-min sample {max_load:.2f}",
    f"- Command: `bench/scripts/training-step-vs-pytorch.sh --config {env['CONFIG']} --rounds {env['ROUNDS']} --reps {env['REPS']}" + (f" --baseline-bench {env['BASELINE']}`" if env["BASELINE"] else "`"),
    f"- Ours: `gpu-transformer-bench {env['OURS_ARGS']}` (PoCL, portable OpenCL); PyTorch: `LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp OMP_NUM_THREADS=2 /usr/bin/python3 {env['TORCH_ARGS']}`",
    f"- Rounds alternate ours{', baseline' if env['BASELINE'] else ''}, PyTorch; each cell is one run's median step; the summary is the median over rounds",
    "",
    "| run | step ms per round | median step ms | tokens/s | PyTorch ÷ run (≥ 1.0 is the target) |",
    "|---|---|---:|---:|---:|",
]
def row(name, xs):
    m = med(xs)
    lines.append(f"| {name} | {fmt(xs)} | {m:.0f} | {tokens / m * 1e3:,.0f} | {med(torch) / m:.2f}× |")
row(f"ours ({commit})", ours)
if base:
    row(f"baseline ({env['BASELINE']})", base)
row("PyTorch", torch)
open(env["OUT"], "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
log "wrote $out"
