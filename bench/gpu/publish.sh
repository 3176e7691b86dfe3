#!/usr/bin/env bash
# Builds a self-contained linux-x64 publish of everything the GPU machine runs (it has no .NET):
#   gpu-transformer        the CLI (demo, devices, train, ...)
#   gpu-transformer-bench  the benchmark app (compare runner, BenchmarkDotNet in-process)
#   gpu-transformer-tests  the xunit test suite with its in-process runner (no SDK needed)
# all in ONE folder (they share the runtime), packed as .publish/gpu-transformer-linux-x64.tar.xz
# (git-ignored; name .publish in the device tool's `carry`). Untrimmed (trimming breaks ILGPU's
# reflection) and InvariantGlobalization (Directory.Build.props). The archive must stay under the
# device tool's 64 MiB for the whole working tree; the script fails if it is larger.
#
#   bench/gpu/publish.sh [--out DIR]    (default DIR: .publish)
set -euo pipefail
cd "$(dirname "$0")/../.."

out=".publish"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
log() { printf '[publish] %s\n' "$*" >&2; }
name=gpu-transformer-linux-x64
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
folder="$stage/$name"

# The test runner first: through the test project it also references the CLI, whose apphost,
# deps.json and runtimeconfig.json it gets in a second (RID-less) flavour; the duplicates are
# allowed there and then overwritten by the CLI's own self-contained publish.
for project in tests/GpuTransformer.TestRunner/GpuTransformer.TestRunner.csproj \
               src/Cli/GpuTransformer.Cli.csproj \
               bench/GpuTransformer.Bench/GpuTransformer.Bench.csproj; do
  log "dotnet publish $project"
  dotnet publish "$project" -c Release -r linux-x64 --self-contained true -nologo -v quiet -clp:ErrorsOnly \
    -p:PublishTrimmed=false -p:InvariantGlobalization=true -p:SatelliteResourceLanguages=en \
    -p:ErrorOnDuplicatePublishOutputFiles=false -o "$folder" >&2
done
# Each app must start without an SDK (a self-contained runtimeconfig names no framework to look up).
for app in gpu-transformer gpu-transformer-bench gpu-transformer-tests; do
  if grep -q '"framework"' "$folder/$app.runtimeconfig.json"; then
    echo "error: $app.runtimeconfig.json is framework-dependent" >&2
    exit 1
  fi
done
for app in gpu-transformer gpu-transformer-bench gpu-transformer-tests; do
  [ -x "$folder/$app" ] || { echo "error: $app missing from the publish" >&2; exit 1; }
done

commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
dirty=$(git status --porcelain --untracked-files=no 2>/dev/null | head -1)
{
  echo "commit $commit${dirty:+ (with uncommitted changes)}"
  echo "built $(date -u '+%Y-%m-%d %H:%M UTC') on $(uname -n)"
  echo "dotnet $(dotnet --version)"
} >"$folder/BUILD-INFO"

mkdir -p "$out"
archive="$out/$name.tar.xz"
log "packing $archive ($(du -sh "$folder" | cut -f1) unpacked)"
XZ_OPT="-6 -T0" tar -C "$stage" -cJf "$archive.tmp" "$name"
mv "$archive.tmp" "$archive"
bytes=$(stat -c %s "$archive")
log "$archive: $((bytes / 1024 / 1024)) MiB ($(du -sh "$folder" | cut -f1) unpacked, $(find "$folder" -type f | wc -l) files)"
if [ "$bytes" -ge $((60 * 1024 * 1024)) ]; then
  echo "error: the archive is $bytes bytes; with the repository it would not fit the device tool's 64 MiB" >&2
  exit 1
fi
echo "$archive"
