#!/usr/bin/env bash
# The whole GPU run in ONE command of the device tool (bench/gpu/README.md):
#   run(command="bash bench/gpu/run-on-gpu.sh", carry=[".publish"], timeout_s=480)
#
#   bash bench/gpu/run-on-gpu.sh [--dry-run] [--sections LIST] [--budget SECONDS] [--archive FILE]
#                                [--out DIR] [--test-filter TEXT|'*']
#
# Unpacks the publish (bench/gpu/publish.sh), records the GPU and driver, then runs each section in
# its own process, in this order, each under a fixed share of the budget:
#   ptx        dump every kernel instantiation's PTX (CUDA tuning) and assemble each with ptxas -v
#   demo       smoke test: every kernel family once on CUDA, checked against its C# reference
#   torch      the PyTorch reference at every shape (cuBLAS SGEMM, row-wise, attention, training step, generation)
#   matmul, rowwise, attention, train, generate    our side of the same
#   tests      the tests that run on each backend, on CUDA only, with whatever time is left
# A section that fails, hangs or hits a sticky CUDA error ends with its process; the next starts
# fresh. Every measurement is appended to $OUT as it is taken, and the report is rebuilt after
# each section and every 10 s, so a kill at any moment leaves a report of what was measured.
#
# --dry-run proves the flow on a machine without a GPU: OpenCL (PoCL, else the simulator) instead of
# CUDA, PyTorch on the CPU, tiny shapes with every workload checked, ptxas skipped where it is absent.
# --sections runs a subset (e.g. "tests" for a second call); --budget changes the 420 s.
#
# Results in $OUT (set by the device tool; default ./gpu-out), at most 8 files:
#   gpu-results.md     the report: read this first        gpu-results.json   everything, paired
#   gpu-run.log        this script's whole output          ours.jsonl, torch.jsonl   raw measurements
#   tests.json         the CUDA test run's summary          ptxas.jsonl        ptxas -v (+ SASS counts) per kernel
#   sass.tar.xz        the SASS of every kernel (only when the run reached its end)
set -uo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
start=$(date +%s)

dry=0
only=""
budget=420
archive="$repo/.publish/gpu-transformer-linux-x64.tar.xz"
out="${OUT:-$repo/gpu-out}"
test_filter=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=1; shift ;;
    --sections|--parts) only="$2"; shift 2 ;;
    --budget) budget="$2"; shift 2 ;;
    --archive) archive="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --test-filter) test_filter="$2"; shift 2 ;;
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

# Fixed shares of the budget in seconds, in running order; the tests get what is left at their turn
# (at least 75 s when every section uses its whole share). Each section also stops starting new work
# a little before its share ends, so it normally ends by itself and writes its last lines.
sections="ptx demo torch matmul rowwise attention train generate tests"
declare -A share=([ptx]=40 [demo]=30 [torch]=55 [matmul]=45 [rowwise]=20 [attention]=80 [train]=30 [generate]=25)
report_reserve=10   # seconds kept for the last report

mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-run.XXXXXX")
log="$out/gpu-run.log"
exec > >(tee -a "$log") 2>&1
deadline=$((start + budget))
now() { date +%s; }
say() { printf '\n[run-on-gpu %s +%ss] %s\n' "$(date -u +%H:%M:%S)" "$(( $(now) - start ))" "$*"; }
left() { echo $((deadline - $(now))); }
wanted() { [ -z "$only" ] && return 0; case ",$only," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
export GPUTRANSFORMER_OPENCL_PORTABLE=1 PYTHONUNBUFFERED=1 DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1

say "run-on-gpu: dry run $dry, sections ${only:-all}, budget ${budget}s, out $out"

# ---------------------------------------------------------------- unpack
if [ ! -f "$archive" ]; then
  say "error: no archive at $archive (run bench/gpu/publish.sh first and carry .publish)"
  exit 1
fi
unpack="$work/app"
mkdir -p "$unpack"
tar -xJf "$archive" -C "$unpack" || { say "error: could not unpack $archive"; exit 1; }
app="$unpack/gpu-transformer-linux-x64"
say "unpacked $(du -sh "$app" | cut -f1) in $(( $(now) - start )) s; $(head -1 "$app/BUILD-INFO")"
cp "$app/BUILD-INFO" "$work/build-info.txt"

# ---------------------------------------------------------------- our programs
# This file is their only caller on the GPU machine, and each command and option of theirs is
# spelled once below: a rename in the CLI, the bench app or the test runner is one edit here.
cli="$app/gpu-transformer"
bench="$app/gpu-transformer-bench"
test_runner="$app/gpu-transformer-tests"

# ---------------------------------------------------------------- environment and backend
python=""
for candidate in python3 /usr/bin/python3; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import torch' 2>/dev/null; then python="$candidate"; break; fi
done
report_python="${python:-python3}"
# NCCL comes with PyTorch's pip wheels (nvidia-nccl-cu13), outside the loader's path: point the NCCL test at it.
if [ -z "${GPUTRANSFORMER_NCCL_LIBRARY:-}" ] && [ -n "$python" ]; then
  nccl=$("$python" -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib", "libnccl.so.2"))' 2>/dev/null)
  [ -n "$nccl" ] && [ -f "$nccl" ] && export GPUTRANSFORMER_NCCL_LIBRARY="$nccl" && say "NCCL: $nccl"
fi
{
  echo "host: $(uname -n), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw,power.limit,utilization.gpu --format=csv 2>&1
    nvidia-smi 2>/dev/null | grep -m1 -o 'CUDA Version: [0-9.]*'
  else
    echo "nvidia-smi: not found (no NVIDIA GPU here)"
  fi
  ptxas=$("$report_python" "$repo/bench/gpu/ptxas.py" --find 2>/dev/null) && echo "ptxas: $ptxas ($("$ptxas" --version 2>/dev/null | tail -1))" || echo "ptxas: not found"
  [ -n "$python" ] && echo "python: $python, $("$python" -c 'import torch, sys; print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, Python {sys.version.split()[0]}")' 2>&1)"
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); command: bash bench/gpu/run-on-gpu.sh $*"
} >"$work/env.txt"
cat "$work/env.txt"
"$cli" devices || true

if [ "$dry" = 1 ]; then
  if "$cli" devices --backend opencl >/dev/null 2>&1; then backend=opencl; else backend=cpu; fi
  torch_device=cpu
  timing=(--warmup 1 --reps 3 --min-time 0.05)
  ours_timing=("${timing[@]}" --check)
  matmul=(--matmul-sizes 128,256 --naive-max 256)
  attention=(--batch 1 --heads 2 --head-dims 32,64 --lengths 64,128)
  rowwise=(--rowwise 256x512)
  train_config="vocab=256,d_model=64,nhead=4,layers=2,d_ff=128,T=32,batch=4"
  train_presets=tiny
  generate_preset=tiny
  torch_extra=(--threads 2)
  test_filter="${test_filter:-WorkloadTests|ElementwiseTests|SoftmaxTests}"
  title="DRY RUN on $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') ($backend, PyTorch on the CPU): flow check only, not a GPU result"
else
  backend=cuda
  torch_device=cuda
  timing=(--warmup 2 --reps 5 --min-time 0.1)
  ours_timing=("${timing[@]}")
  matmul=(--matmul-sizes 1024,2048,4096,8192 --naive-max 2048)
  attention=(--batch 4 --heads 8 --head-dims 64,128 --lengths 512,1024,2048,4096)
  rowwise=(--rowwise 8192x4096)
  train_config="vocab=8192,d_model=256,nhead=8,layers=4,d_ff=1024,T=128,batch=16"
  train_presets=cpu,gpu
  generate_preset=gpu
  torch_extra=()
  gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
  title="GpuTransformer vs PyTorch on ${gpu_name:-the GPU}, FP32"
fi
generate_spec=$("$bench" compare --print-generate-spec "$generate_preset" 2>/dev/null | tail -1)
say "backend $backend; PyTorch device $torch_device; python ${python:-none}; generation shape ${generate_spec:-unknown}"

# ---------------------------------------------------------------- the report, rebuilt from whatever exists
notes=()
[ "$dry" = 1 ] && notes=(--note "DRY RUN: $backend and PyTorch on the CPU at tiny shapes; this proves the flow, the numbers mean nothing.")
build_report() {
  "$report_python" "$repo/bench/gpu/report.py" --ours "$out/ours.jsonl" --torch "$out/torch.jsonl" --tests "$out/tests.json" \
    --ptxas "$out/ptxas.jsonl" --ptx-report "$work/ptx-report.json" --sections "$work/sections.jsonl" --demo "$work/demo.txt" \
    --environment "$work/env.txt" --build-info "$work/build-info.txt" --title "$title" "${notes[@]}" \
    --out-json "$out/gpu-results.json" --out-md "$out/gpu-results.md" >/dev/null
}
( while sleep 10; do build_report 2>/dev/null; done ) &
refresher=$!

# record NAME SHARE USED EXIT RESULT: one line of sections.jsonl, then the report again.
record() {
  printf '{"section": "%s", "share": %s, "used": %s, "exit": "%s", "result": "%s"}\n' "$1" "$2" "$3" "$4" "${5//\"/\'}" >>"$work/sections.jsonl"
  build_report || say "warning: the report failed"
}

# seconds NAME: this section's time, its share capped by what the budget has left (minus the report's reserve).
seconds() {
  local s=${share[$1]:-0} l
  l=$(( $(left) - report_reserve ))
  [ "$l" -lt "$s" ] && s=$l
  echo "$s"
}

# run_section NAME COMMAND...: COMMAND under `timeout` of the section's time; records how it ended.
# (--foreground: no process group of its own, so that a kill of the whole run reaches every section too.)
# With stdout_to=FILE set for the call, COMMAND's standard output goes there instead of the log.
run_section() {
  local name=$1; shift
  local t; t=$(seconds "$name")
  if [ "$t" -lt 5 ]; then
    say "$name: skipped, ${t}s left"
    record "$name" "${share[$name]:-0}" 0 "–" "skipped: no time left"
    return
  fi
  say "$name (${t}s): $*"
  local begin; begin=$(now)
  timeout --foreground -k 5 "$t" "$@" >"${stdout_to:-/dev/stdout}"
  local code=$?
  local result="ok"
  [ "$code" -ne 0 ] && result="exit code $code"
  [ "$code" -eq 124 ] || [ "$code" -eq 137 ] && result="stopped at its share (${t}s)"
  say "$name: $result after $(( $(now) - begin )) s"
  record "$name" "$t" "$(( $(now) - begin ))" "$code" "$result"
}
# For the apps' own --time-limit: stop starting work this many seconds before the share ends.
limit() { local t; t=$(seconds "$1"); echo $(( t > 20 ? t - t / 5 : t - 3 )); }

# ---------------------------------------------------------------- ptx: PTX of every kernel instantiation, assembled by ptxas
ptxas_job=""
if wanted ptx; then
  t=$(seconds ptx); begin=$(now)
  say "ptx (${t}s): bench ptx --tuning cuda --arch sm_90 --out-dir $work/ptx"
  timeout --foreground -k 5 $((t * 2 / 3)) "$bench" ptx --tuning cuda --arch sm_90 --out-dir "$work/ptx" \
    --json "$work/ptx-report.json" --markdown "$work/ptx-report.md" >"$work/ptx-dump.txt" 2>&1
  code=$?
  count=$(find "$work/ptx" -name '*.ptx' 2>/dev/null | wc -l)
  if [ "$count" -eq 0 ]; then
    say "ptx: no PTX dumped (exit code $code): this build's bench app has no working 'ptx' subcommand (issue 9); the ptxas step is skipped"
    tail -3 "$work/ptx-dump.txt"
    record ptx "$t" "$(( $(now) - begin ))" "$code" "skipped: no PTX dumped (bench ptx missing or failed)"
  elif ! ptxas=$("$report_python" "$repo/bench/gpu/ptxas.py" --find); then
    say "ptx: $count PTX files dumped; ptxas: not found on this machine, skipped (the GPU machine has CUDA's ptxas)"
    record ptx "$t" "$(( $(now) - begin ))" "$code" "$count PTX files; ptxas skipped: not found"
  else
    # ptxas needs only the CPU: it runs while the demo (whose timing does not matter) runs on the GPU,
    # with the rest of its share and the demo's.
    rest=$(( t - ($(now) - begin) + ${share[demo]} ))
    say "ptx: $count PTX files; ptxas -v on each (${rest}s, alongside the demo)"
    jobs=$(( $(nproc) > 2 ? $(nproc) - 2 : 1 ))
    timeout --foreground -k 5 "$rest" "$report_python" "$repo/bench/gpu/ptxas.py" --ptx-dir "$work/ptx" --arch sm_90 --jsonl "$out/ptxas.jsonl" \
      --sass-dir "$work/sass" --jobs "$jobs" --time-limit $(( rest > 10 ? rest - 8 : rest )) &
    ptxas_job=$!
    ptx_begin=$begin; ptx_share=$t
  fi
fi

# ---------------------------------------------------------------- demo: the smoke test
if wanted demo; then
  stdout_to="$work/demo.txt" run_section demo "$cli" demo --backend "$backend"
  cat "$work/demo.txt"
fi
if [ -n "$ptxas_job" ]; then
  wait "$ptxas_job"; code=$?
  say "ptx: ptxas done (exit code $code)"
  record ptx "$ptx_share" "$(( $(now) - ptx_begin ))" "$code" "$(grep -c '"kernel"' "$out/ptxas.jsonl" 2>/dev/null || echo 0) kernels assembled or failed (ptxas.jsonl)"
fi

# ---------------------------------------------------------------- PyTorch: every reference at once, before our kernels run
if wanted torch; then
  if [ -z "$python" ]; then
    say "torch: skipped, no python3 with torch"
    record torch "${share[torch]}" 0 "–" "skipped: no python3 with torch"
  else
    torch_sections=sgemm,rowwise,attention,train
    [ -n "$generate_spec" ] && torch_sections+=,generate
    run_section torch "$python" "$repo/bench/gpu/torch_reference.py" --device "$torch_device" --sections "$torch_sections" \
      --sgemm "${matmul[1]}" "${attention[@]}" --rowwise "${rowwise[1]}" --train "$train_config" \
      ${generate_spec:+--generate "$generate_spec"} "${timing[@]}" "${torch_extra[@]}" --time-limit "$(limit torch)" --jsonl "$out/torch.jsonl"
  fi
fi

# ---------------------------------------------------------------- ours: one process per section
# Device events where ILGPU's profiling markers work (else the host clock: each measurement's "clock" says which),
# and kernels enqueued back to back for at least 5 ms per timed sample, so launch overhead does not bias short kernels.
compare() {
  local name=$1; shift
  stdout_to="$work/ours-$name.md" run_section "$name" "$bench" compare --backend "$backend" --sections "$name" "$@" "${ours_timing[@]}" \
    --clock events --min-sample-time 0.005 --time-limit "$(limit "$name")" --jsonl "$out/ours.jsonl"
}
wanted matmul && compare matmul "${matmul[@]}"
wanted rowwise && compare rowwise "${rowwise[@]}"
wanted attention && compare attention "${attention[@]}" --unfused-max 2048
wanted train && compare train --train-presets "$train_presets" --train-config "$train_config"
wanted generate && compare generate --generate-presets "$generate_preset"

# ---------------------------------------------------------------- tests: the ones that exercise the device, with what is left
# Those that run once per backend, and the facts that need CUDA itself (the single-rank NCCL test, the CLI's
# choice of CUDA); not the theory over the backends other than CUDA, which has no rows where CUDA is the only one.
cuda_facts="OneRankOfNcclOnACudaDevice|Cuda_backend_is_picked"
no_rows_on_cuda="NcclOffCudaIsRefused"
if wanted tests; then
  share[tests]=$(( $(left) - report_reserve ))
  filter_args=()
  [ -n "$test_filter" ] && [ "$test_filter" != "*" ] && filter_args=(--filter "$test_filter")
  export GPUTRANSFORMER_TEST_BACKENDS=$backend GPUTRANSFORMER_REQUIRE_BACKENDS=$backend
  run_section tests "$test_runner" --backend-tests --also "$cuda_facts" --exclude "$no_rows_on_cuda" "${filter_args[@]}" --time-limit "$(limit tests)" --json "$out/tests.json"
fi

# ---------------------------------------------------------------- the last report, the SASS, and what comes back
kill "$refresher" 2>/dev/null; wait "$refresher" 2>/dev/null
build_report && say "wrote $out/gpu-results.md and gpu-results.json" || say "error: the report failed"
if [ -d "$work/sass" ] && [ -n "$(ls "$work/sass" 2>/dev/null)" ]; then
  tar -C "$work" -cJf "$out/sass.tar.xz" sass
  [ "$(stat -c %s "$out/sass.tar.xz")" -gt $((15 * 1024 * 1024)) ] && { say "sass.tar.xz over 15 MiB: left out"; rm -f "$out/sass.tar.xz"; }
fi
files=$(find "$out" -type f | wc -l)
big=$(find "$out" -type f -size +16M)
say "done in $(( $(now) - start )) s (budget ${budget}s); $out holds $files files ($(du -sh "$out" | cut -f1)):"
ls -l "$out"
[ "$files" -gt 8 ] && say "warning: more than the 8 files the device tool brings back"
[ -n "$big" ] && say "warning: over the tool's 16 MiB per file: $big"
rm -rf "$work"
