#!/usr/bin/env bash
# Our tiled SGEMM on PoCL (OpenCL on the CPU) against OpenBLAS through numpy, same sizes,
# same machine, one run. Writes bench/results/<date>-pocl-sgemm-vs-openblas.md.
#
#   bench/scripts/pocl-vs-openblas.sh [--sizes 256,512,1024] [--out FILE.md] [--reps N]
#
# Steps:
#  1. installs libopenblas0-openmp when it is missing and apt-get can (root or sudo);
#  2. runs bench/scripts/sgemm_openblas.py with Debian's /usr/bin/python3 + numpy as installed
#     (whatever update-alternatives selects for libblas.so.3), then with
#     LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp OMP_NUM_THREADS=2 and each
#     OPENBLAS_CORETYPE of $CORETYPES (default: SkylakeX Zen Haswell Cooperlake), and takes the
#     fastest as the reference (by the best-run GFLOP/s summed over the sizes: medians of an
#     OpenMP BLAS swing with the load of a shared machine);
#  3. runs our tiled matmul on PoCL at the same sizes (bench app, `compare --sections matmul`);
#  4. writes the markdown table with ours / OpenBLAS (targets: at least 30% (issue 1), 75% at n = 512–2048 (issue 11)).
# The report is marked PROVISIONAL when the load average exceeded half the cores during the run.
set -euo pipefail
cd "$(dirname "$0")/../.."

sizes="256,512,1024"
reps=5
out=""
coretypes="${CORETYPES:-SkylakeX Zen Haswell Cooperlake}"
while [ $# -gt 0 ]; do
  case "$1" in
    --sizes) sizes="$2"; shift 2 ;;
    --reps) reps="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
date_utc=$(date -u +%F)
out="${out:-bench/results/${date_utc}-pocl-sgemm-vs-openblas.md}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log() { printf '[pocl-vs-openblas] %s\n' "$*" >&2; }
python=/usr/bin/python3
openblas_dir=/usr/lib/x86_64-linux-gnu/openblas-openmp
cores=$(nproc)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
max_load=$(cut -d' ' -f1 /proc/loadavg)
sample_load() { max_load=$(printf '%s\n%s\n' "$max_load" "$(cut -d' ' -f1 /proc/loadavg)" | sort -g | tail -1); }

# 1. OpenBLAS (OpenMP build).
if ! dpkg -s libopenblas0-openmp >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo -n"
  if command -v apt-get >/dev/null 2>&1 && { [ -z "$sudo" ] || sudo -n true 2>/dev/null; }; then
    log "installing libopenblas0-openmp"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas0-openmp >/dev/null 2>&1 ||
      { $sudo apt-get update -qq >/dev/null 2>&1 && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas0-openmp >/dev/null 2>&1; } ||
      log "could not install libopenblas0-openmp; the OpenBLAS runs will use whatever BLAS is there"
  else
    log "libopenblas0-openmp missing and no root/apt-get; the OpenBLAS runs will use whatever BLAS is there"
  fi
fi
if ! "$python" -c 'import numpy' 2>/dev/null; then
  echo "error: $python has no numpy (apt-get install python3-numpy)" >&2
  exit 1
fi

# 2. numpy as installed, then OpenBLAS-OpenMP with each core type.
log "numpy as installed (update-alternatives: $(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || echo unknown))"
"$python" bench/scripts/sgemm_openblas.py --label "as installed" --sizes "$sizes" --reps "$reps" --json "$work/default.json" >&2
sample_load
for core in $coretypes; do
  log "OpenBLAS-OpenMP, OPENBLAS_CORETYPE=$core, 2 threads"
  LD_LIBRARY_PATH=$openblas_dir OPENBLAS_CORETYPE=$core OMP_NUM_THREADS=2 \
    "$python" bench/scripts/sgemm_openblas.py --label "$core" --sizes "$sizes" --reps "$reps" --json "$work/openblas-$core.json" >&2
  sample_load
done

# 3. Ours: the tiled matmul on PoCL (the bench app; a published one if GPUTRANSFORMER_BENCH is set).
if [ -n "${GPUTRANSFORMER_BENCH:-}" ]; then
  bench=("$GPUTRANSFORMER_BENCH")
  bench_command="$GPUTRANSFORMER_BENCH"
else
  log "building the bench app (Release)"
  dotnet build bench/GpuTransformer.Bench/GpuTransformer.Bench.csproj -c Release -nologo -v quiet -clp:ErrorsOnly >&2
  bench=(dotnet bench/GpuTransformer.Bench/bin/Release/net10.0/gpu-transformer-bench.dll)
  bench_command="dotnet run -c Release --project bench/GpuTransformer.Bench --"
fi
ours_args=(compare --backend opencl --sections matmul --matmul-sizes "$sizes" --naive-max 0 --reps "$reps" --check --json "$work/ours.json")
log "ours: ${bench_command} ${ours_args[*]}"
GPUTRANSFORMER_OPENCL_PORTABLE=1 "${bench[@]}" "${ours_args[@]}" >"$work/ours.md"
sample_load
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# 4. Report.
mkdir -p "$(dirname "$out")"
WORK="$work" OUT="$out" CORES="$cores" LOAD_START="$load_start" LOAD_END="$load_end" MAX_LOAD="$max_load" \
  SIZES="$sizes" REPS="$reps" CORETYPES="$coretypes" BENCH_COMMAND="$bench_command ${ours_args[*]:0:${#ours_args[@]}-1} ours.json" \
  "$python" - <<'PY'
import glob, json, os, subprocess, datetime
work = os.environ["WORK"]
load = lambda p: json.load(open(p))
default = load(f"{work}/default.json")
candidates = {os.path.basename(p)[len("openblas-"):-5]: load(p) for p in sorted(glob.glob(f"{work}/openblas-*.json"))}
# By the fastest runs: on a shared machine the medians of an OpenMP BLAS swing with the load.
score = lambda doc: sum(r["best_gflops"] for r in doc["results"])
best_core = max(candidates, key=lambda c: score(candidates[c]))
best = candidates[best_core]
ours = load(f"{work}/ours.json")
ours_by_n = {r["shape"]["n"]: r for r in ours["results"] if r["impl"] == "tiled"}
cores, max_load = int(os.environ["CORES"]), float(os.environ["MAX_LOAD"])
provisional = max_load > cores / 2
try:
    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip():
        commit += " + uncommitted changes"
except Exception:
    commit = "unknown"
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
blas = lambda doc: ", ".join(doc["blas_libraries"]) or "none found"
core = lambda doc: f"OpenBLAS core {doc['openblas']['corename']}, {doc['openblas']['threads']} threads" if doc.get("openblas") else "not OpenBLAS"
lines = []
add = lines.append
add(f"# Our tiled SGEMM on PoCL vs OpenBLAS (numpy), n = {os.environ['SIZES'].replace(',', ', ')}")
add("")
if provisional:
    add(f"**PROVISIONAL**: the machine was busy (1-minute load average up to {max_load:.1f} on {cores} cores); re-measure on a quiet machine.")
    add("")
add(f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; commit {commit}")
add(f"- Machine: {cpu}, {cores} cores; load average (1/5/15 min) at start {os.environ['LOAD_START']}, at end {os.environ['LOAD_END']}, highest 1-min sample {max_load:.2f}")
add(f"- Command: `bench/scripts/pocl-vs-openblas.sh --sizes {os.environ['SIZES']} --reps {os.environ['REPS']}` (ours: `{os.environ['BENCH_COMMAND']}`)")
add(f"- Device (ours): {ours['device']} via {ours['backend']} (PoCL), tuning from KernelTuning; each timed run is the launch + a device synchronization")
add(f"- numpy {default['numpy']} with Debian's /usr/bin/python3 {default['python']}; GFLOP/s = 2·n³ / median time; medians of ≥ {os.environ['REPS']} runs after 2 warm-ups")
add(f"- numpy as installed loads: {blas(default)} ({core(default)})")
add(f"- Reference: LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp OMP_NUM_THREADS=2 OPENBLAS_CORETYPE={best_core} (fastest of {', '.join(candidates)} by the best runs): loads {blas(best)} ({core(best)})")
add("")
header = "| n | numpy as installed GFLOP/s | " + " | ".join(f"OpenBLAS {c} GFLOP/s" for c in candidates) + " | ours (PoCL tiled) GFLOP/s | ours / OpenBLAS " + best_core + " |"
add(header)
add("|---:|---:|" + "---:|" * len(candidates) + "---:|---:|")
for r in default["results"]:
    n = r["n"]
    row = [str(n), f"{r['gflops']:.1f}"]
    row += [f"{next(x['gflops'] for x in doc['results'] if x['n'] == n):.1f}" for doc in candidates.values()]
    reference = next(x for x in best["results"] if x["n"] == n)
    mine = ours_by_n.get(n)
    if mine and mine.get("error") is None:
        row += [f"{mine['rate']:.1f}", f"{100 * mine['rate'] / reference['gflops']:.0f}%"]
    else:
        row += ["–", "–"]
    add("| " + " | ".join(row) + " |")
add("")
add("Targets: ours ≥ 30% of the OpenBLAS reference (issue 1), ≥ 75% at n = 512–2048 (issue 11). Best single runs (GFLOP/s at the fastest run):")
add("")
add("| n | OpenBLAS " + best_core + " best | ours best | ours / OpenBLAS (best runs) |")
add("|---:|---:|---:|---:|")
for r in best["results"]:
    mine = ours_by_n.get(r["n"])
    add(f"| {r['n']} | {r['best_gflops']:.1f} | {mine['best_rate']:.1f} | {100 * mine['best_rate'] / r['best_gflops']:.0f}% |" if mine and mine.get("error") is None else f"| {r['n']} | {r['best_gflops']:.1f} | – | – |")
checks = [r.get("check") for r in ours_by_n.values()]
add("")
add("Our results were checked against the C# reference (double): " + ("all within tolerance." if all(c == "ok" for c in checks) else f"checks: {checks}"))
open(os.environ["OUT"], "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
log "wrote $out"
