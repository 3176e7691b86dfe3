#!/usr/bin/env bash
# Packs the libraries into artifacts/packages, builds every sample against those packages
# (samples/nuget.config, not the projects) and runs each at tiny sizes on a CPU backend (PoCL when
# an OpenCL ICD is installed, else ILGPU's CPU accelerator; GPUTRANSFORMER_BACKEND overrides), then
# gives each a bad input and expects one "error: " line and a non-zero exit. .ci/run calls it after ./gt test.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
log() { printf '\033[1;34m[samples]\033[0m %s\n' "$*" >&2; }

version="$(sed -n 's:.*<VersionPrefix>\(.*\)</VersionPrefix>.*:\1:p' Directory.Build.props)"
if [ -z "${GPUTRANSFORMER_BACKEND:-}" ]; then
  if ls /etc/OpenCL/vendors/*.icd >/dev/null 2>&1; then export GPUTRANSFORMER_BACKEND=opencl; else export GPUTRANSFORMER_BACKEND=cpu; fi
fi
export GPUTRANSFORMER_OPENCL_PORTABLE=1 DOTNET_NOLOGO=1 DOTNET_CLI_TELEMETRY_OPTOUT=1
start=$(date +%s)

log "dotnet pack -c Release -o artifacts/packages (version $version)"
rm -rf artifacts/packages
for project in src/Kernels/GpuTransformer.Kernels.csproj src/Layers/GpuTransformer.Layers.csproj \
  src/Training/GpuTransformer.Training.csproj src/Reporting/GpuTransformer.Reporting.csproj src/Cli/GpuTransformer.Cli.csproj; do
  dotnet pack "$project" -c Release -o artifacts/packages -nologo -v q
done
# The NuGet cache keeps one copy per id and version: drop ours, so the samples restore the packages just made.
cache="${NUGET_PACKAGES:-$HOME/.nuget/packages}"
for id in gputransformer.kernels gputransformer.layers gputransformer.training gputransformer.reporting gpu-transformer; do
  rm -rf "${cache:?}/$id/$version"
done

samples=(KernelsDirect TrainOnText PyTorchModel AttentionHeatmap)
for sample in "${samples[@]}"; do
  log "build samples/$sample against GpuTransformer $version"
  dotnet build "samples/$sample/$sample.csproj" -c Release -nologo -v q "-p:GpuTransformerVersion=$version"
done
run() { local sample="$1"; shift; dotnet "samples/$sample/bin/Release/net10.0/$sample.dll" "$@"; }

# expect_error sample "what the line names" args...: exit non-zero, one line "error: …" naming it.
expect_error() {
  local sample="$1" expected="$2"; shift 2
  local err code=0
  err="$(run "$sample" "$@" 2>&1 >/dev/null)" || code=$?
  if [ "$code" -eq 0 ] || [ "$(printf '%s\n' "$err" | wc -l)" -ne 1 ] || [[ "$err" != "error: "*"$expected"* ]]; then
    log "FAIL: $sample $* should exit non-zero with one line 'error: …$expected…'; exit $code, stderr:"; printf '%s\n' "$err" >&2
    exit 1
  fi
  log "ok: $sample $* → $err"
}

log "run on $GPUTRANSFORMER_BACKEND"
run KernelsDirect
out="$(mktemp -d)"; trap 'rm -rf "$out"' EXIT
run TrainOnText README.md "$GPUTRANSFORMER_BACKEND" 40 "$out/trained.safetensors"
# A language model made by PyTorch (scripts/parity/make_parity_golden.py), as export_pytorch.py writes them.
run PyTorchModel tests/golden/parity/lm_pre_gelu_tanh.safetensors
run AttentionHeatmap "$out/trained.safetensors" "the state of the union" "$out/attention"
ls "$out/attention"/*.png >/dev/null
expect_error KernelsDirect "tpu" tpu
expect_error TrainOnText "no-such-file.txt" no-such-file.txt
expect_error TrainOnText "tpu" README.md tpu
expect_error PyTorchModel "no-such.safetensors" no-such.safetensors
expect_error PyTorchModel "transformer" tests/golden/parity/transformer_post_relu.safetensors
expect_error AttentionHeatmap "language" tests/golden/parity/transformer_post_relu.safetensors "hello"

log "all samples ran in $(( $(date +%s) - start )) s"
