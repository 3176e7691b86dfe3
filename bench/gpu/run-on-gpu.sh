#!/usr/bin/env bash
# One command on the GPU machine (device tool), inside its 10-minute limit:
#   unpack the publish (bench/gpu/publish.sh), record nvidia-smi, run the demo (every kernel
#   family checked against its reference on CUDA), our benchmarks (compare runner) and the
#   PyTorch reference (bench/gpu/torch_reference.py) at the same shapes, the test suite on CUDA,
#   and write $OUT/gpu-results.{json,md} (bench/gpu/report.py) plus the raw log.
#
#   bash bench/gpu/run-on-gpu.sh [--dry-run] [--parts demo,ours,torch,tests] [--budget SECONDS]
#                                [--archive FILE] [--out DIR] [--test-filter TEXT|'*']
#
# --dry-run proves the flow on a machine without a GPU: OpenCL (PoCL) or the simulator instead
# of CUDA, PyTorch on the CPU, tiny shapes, a subset of the tests. Nothing needs a GPU.
# Each part runs under `timeout` within the budget (default 540 s) and stops starting work at
# its own time limit, so a slow part leaves results for the others. Parts that fail are
# reported; the script still writes the report. Results land in $OUT (set by the device tool;
# default ./gpu-out): gpu-results.md, gpu-results.json, gpu-run.log, ours.json, ours.md,
# torch.json, tests.json (7 files: the tool returns at most 8).
set -uo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
start=$(date +%s)

dry=0
parts="demo,ours,torch,tests"
budget=540
archive="$repo/.publish/gpu-transformer-linux-x64.tar.xz"
out="${OUT:-$repo/gpu-out}"
test_filter=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=1; shift ;;
    --parts) parts="$2"; shift 2 ;;
    --budget) budget="$2"; shift 2 ;;
    --archive) archive="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --test-filter) test_filter="$2"; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-run.XXXXXX")
log="$out/gpu-run.log"
exec > >(tee -a "$log") 2>&1
deadline=$((start + budget))
say() { printf '\n[run-on-gpu %s +%ss] %s\n' "$(date -u +%H:%M:%S)" "$(( $(date +%s) - start ))" "$*"; }
left() { echo $((deadline - $(date +%s))); }
has_part() { case ",$parts," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
export GPUTRANSFORMER_OPENCL_PORTABLE=1 PYTHONUNBUFFERED=1 DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1

say "run-on-gpu: dry run $dry, parts $parts, budget ${budget}s, out $out"

# ---------------------------------------------------------------- unpack
if [ ! -f "$archive" ]; then
  say "error: no archive at $archive (run bench/gpu/publish.sh first and carry .publish)"
  exit 1
fi
unpack="$work/app"
mkdir -p "$unpack"
tar -xJf "$archive" -C "$unpack" || { say "error: could not unpack $archive"; exit 1; }
app="$unpack/gpu-transformer-linux-x64"
say "unpacked $(du -sh "$app" | cut -f1) in $(( $(date +%s) - start )) s; $(head -1 "$app/BUILD-INFO")"
cp "$app/BUILD-INFO" "$work/build-info.txt"

# ---------------------------------------------------------------- environment and backend
{
  echo "host: $(uname -n), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw,power.limit,utilization.gpu --format=csv 2>&1
  else
    echo "nvidia-smi: not found (no NVIDIA GPU here)"
  fi
} >"$work/env.txt"
cat "$work/env.txt"
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi

python=""
for candidate in python3 /usr/bin/python3; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import torch' 2>/dev/null; then python="$candidate"; break; fi
done
[ -z "$python" ] && say "warning: no python3 with torch; the PyTorch part is skipped"
report_python="${python:-python3}"
# NCCL comes with PyTorch's pip wheels (nvidia-nccl-cu13), outside the loader's path: point the NCCL test at it.
if [ -z "${GPUTRANSFORMER_NCCL_LIBRARY:-}" ] && [ -n "$python" ]; then
  nccl=$("$python" -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib", "libnccl.so.2"))' 2>/dev/null)
  [ -n "$nccl" ] && [ -f "$nccl" ] && export GPUTRANSFORMER_NCCL_LIBRARY="$nccl" && say "NCCL: $nccl"
fi

"$app/gpu-transformer" devices || true
if [ "$dry" = 1 ]; then
  if "$app/gpu-transformer" devices --backend opencl >/dev/null 2>&1; then backend=opencl; else backend=cpu; fi
  torch_device=cpu
  ours_sizes=(--matmul-sizes 128,256 --naive-max 256 --batch 1 --heads 2 --head-dims 32,64 --lengths 64,128
              --rowwise 256x512 --warmup 1 --reps 3 --min-time 0.05 --check
              --sections matmul,attention,rowwise,train --train-presets tiny
              --train-config vocab=256,d_model=64,nhead=4,layers=2,d_ff=128,T=32,batch=4)
  torch_sizes=(--sgemm 128,256 --batch 1 --heads 2 --head-dims 32,64 --lengths 64,128 --rowwise 256x512
               --train vocab=256,d_model=64,nhead=4,layers=2,d_ff=128,T=32,batch=4 --warmup 1 --reps 3 --min-time 0.05 --threads 2)
  test_filter="${test_filter:-WorkloadTests|ElementwiseTests|SafeTensorsTests}"
  title="DRY RUN on $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') ($backend, PyTorch on the CPU): flow check only, not a GPU result"
else
  backend=cuda
  torch_device=cuda
  ours_sizes=(--matmul-sizes 1024,2048,4096,8192 --naive-max 2048 --batch 4 --heads 8 --head-dims 64,128
              --lengths 512,1024,2048,4096 --unfused-max 2048 --rowwise 8192x4096 --warmup 2 --reps 5 --min-time 0.3
              --sections matmul,attention,rowwise,train --train-presets cpu,gpu
              --train-config vocab=8192,d_model=256,nhead=8,layers=4,d_ff=1024,T=128,batch=16)
  torch_sizes=(--sgemm 1024,2048,4096,8192 --batch 4 --heads 8 --head-dims 64,128 --lengths 512,1024,2048,4096
               --rowwise 8192x4096 --train vocab=8192,d_model=256,nhead=8,layers=4,d_ff=1024,T=128,batch=16
               --warmup 2 --reps 5 --min-time 0.3)
  gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
  title="GpuTransformer vs PyTorch on ${gpu_name:-the GPU}, FP32"
fi
say "backend $backend; PyTorch device $torch_device; python ${python:-none}"

# ---------------------------------------------------------------- demo
if has_part demo; then
  say "demo: every kernel family once, checked against its C# reference"
  timeout 90 "$app/gpu-transformer" demo --backend "$backend" | tee "$work/demo.txt"
  say "demo exit code ${PIPESTATUS[0]}"
fi

# ---------------------------------------------------------------- our benchmarks
if has_part ours; then
  t=$(( $(left) - 340 )); [ "$t" -gt 200 ] && t=200; [ "$t" -lt 60 ] && t=60
  say "ours: compare on $backend (${t}s)"
  timeout "$t" "$app/gpu-transformer-bench" compare --backend "$backend" "${ours_sizes[@]}" --time-limit $((t - 25)) \
    --json "$out/ours.json" --out "$out/ours.md" --title "$title: our kernels" >/dev/null
  say "ours exit code $?"
fi

# ---------------------------------------------------------------- PyTorch
if has_part torch && [ -n "$python" ]; then
  t=$(( $(left) - 180 )); [ "$t" -gt 150 ] && t=150; [ "$t" -lt 45 ] && t=45
  say "PyTorch reference on $torch_device (${t}s)"
  timeout "$t" "$python" "$repo/bench/gpu/torch_reference.py" --device "$torch_device" "${torch_sizes[@]}" \
    --time-limit $((t - 20)) --json "$out/torch.json"
  say "torch exit code $?"
fi

# Our training step is the compare run's train section (--train-config is torch_reference.py's --train).

# ---------------------------------------------------------------- tests
if has_part tests; then
  t=$(( $(left) - 20 ))
  if [ "$t" -lt 30 ]; then
    say "tests: skipped, only ${t}s left (run again with --parts tests)"
  else
    filter_args=()
    [ -n "$test_filter" ] && [ "$test_filter" != "*" ] && filter_args=(--filter "$test_filter")
    say "tests on $backend only (GPUTRANSFORMER_TEST_BACKENDS=$backend; no simulator), ${t}s${test_filter:+, filter $test_filter}"
    GPUTRANSFORMER_TEST_BACKENDS=$backend GPUTRANSFORMER_REQUIRE_BACKENDS=$backend \
      timeout "$t" "$app/gpu-transformer-tests" "${filter_args[@]}" --time-limit $((t - 15)) --json "$out/tests.json"
    say "tests exit code $?"
  fi
fi

# ---------------------------------------------------------------- report
notes=()
[ "$dry" = 1 ] && notes=(--note "DRY RUN: $backend and PyTorch on the CPU at tiny shapes; this proves the flow, the numbers mean nothing.")
"$report_python" "$repo/bench/gpu/report.py" --ours "$out/ours.json" --torch "$out/torch.json" --tests "$out/tests.json" \
  --demo "$work/demo.txt" --environment "$work/env.txt" --build-info "$work/build-info.txt" --title "$title" "${notes[@]}" \
  --out-json "$out/gpu-results.json" --out-md "$out/gpu-results.md" >/dev/null \
  && say "wrote $out/gpu-results.md and gpu-results.json" || say "error: the report failed"
say "done in $(( $(date +%s) - start )) s"
rm -rf "$work"
