#!/usr/bin/env bash
# Greedy generation tokens/s for one language-model checkpoint: ours with the key/value cache,
# ours without it (whole window per token), and PyTorch 1.13 on the same checkpoint
# (scripts/parity/import_to_pytorch.load_checkpoint, whole window per token: the parity model has
# no cache), runs alternating, each after an untimed warm-up, on this machine's CPU.
#
#   bench/scripts/generation-vs-pytorch.sh CHECKPOINT [NEW_TOKENS=200] [ROUNDS=2] > report.md
#
# Ours: `gpu-transformer generate --greedy --warmup [--no-cache]` on the auto backend (PoCL on a
# CPU machine); the tokens/s it prints counts prefill and every new token. PyTorch: Debian's
# /usr/bin/python3 with OpenBLAS-OpenMP, 2 threads and 1 (on a busy machine OpenMP's spinning
# threads can make 2 far slower than 1; the ratio is against the faster). The prompt is the same
# 16 ids on both sides.
set -euo pipefail
cd "$(dirname "$0")/../.."
checkpoint=${1:?usage: $0 CHECKPOINT [NEW_TOKENS] [ROUNDS]}
new=${2:-200}
rounds=${3:-2}
prompt=(84 104 101 32 115 116 97 116 101 32 111 102 32 116 104 101)
cli=src/Cli/bin/Release/net10.0/gpu-transformer.dll
[ -f "$cli" ] || dotnet build src/Cli -c Release -nologo -v quiet -clp:ErrorsOnly >&2
export LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp OMP_NUM_THREADS=2

ours() { # $@: extra flags; prints tokens/s
  dotnet "$cli" generate --checkpoint "$checkpoint" --prompt-ids "${prompt[@]}" --max-tokens "$new" --greedy --warmup "$@" 2>&1 >/dev/null |
    grep -o '[0-9.]* tokens/s' | cut -d' ' -f1
}
torch() { # $1: threads
  OMP_NUM_THREADS=$1 /usr/bin/python3 bench/scripts/generation_torch.py "$checkpoint" --prompt-ids "${prompt[@]}" --new "$new" --threads "$1" |
    /usr/bin/python3 -c 'import json,sys; print("%.1f" % json.loads(sys.stdin.readline())["tokens_per_s"])'
}

echo "# Greedy generation: ours (KV cache / whole window) vs PyTorch (whole window)"
echo
echo "- Checkpoint: \`$checkpoint\`; $new new tokens after a 16-token prompt; batch 1"
echo "- Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit $(git rev-parse --short=12 HEAD)$(git diff --quiet || echo ' (+ uncommitted changes)')"
echo "- Command: \`bench/scripts/generation-vs-pytorch.sh $*\`"
echo
echo "| round | ours, KV cache (tokens/s) | ours, whole window | PyTorch 1.13, whole window, 2 threads | 1 thread | ours cached / best PyTorch |"
echo "|---:|---:|---:|---:|---:|---:|"
for round in $(seq "$rounds"); do
  cached=$(ours); uncached=$(ours --no-cache); two=$(torch 2); one=$(torch 1)
  ratio=$(/usr/bin/python3 -c "print('%.2f×' % ($cached / max($two, $one)))")
  echo "| $round | $cached | $uncached | $two | $one | $ratio |"
done
echo
echo "Load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
