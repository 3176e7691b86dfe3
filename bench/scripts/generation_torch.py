#!/usr/bin/python3
"""Greedy tokens/s of PyTorch on a GpuTransformer language-model checkpoint, whole-window recompute.

Run with Debian's interpreter (torch 1.13), OpenBLAS-OpenMP and 2 threads as bench/scripts/generation-vs-pytorch.sh does:

    /usr/bin/python3 bench/scripts/generation_torch.py CHECKPOINT --prompt-ids 1 2 3 --new 200 [--threads 2]

The checkpoint is loaded through scripts/parity/import_to_pytorch.load_checkpoint (float32, eval,
no_grad). Each new token runs the model over the whole window (the last max_seq_len tokens) and
takes the argmax of the last row: no key/value cache (the model of the parity scripts has none).
One untimed generation first, then --reps timed ones; prints one JSON line per timed run.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "parity"))
import torch  # noqa: E402
from import_to_pytorch import load_checkpoint  # noqa: E402


def generate(model, prompt, new, window):
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(new):
            context = torch.tensor([ids[-window:]], dtype=torch.int64)
            logits = model(context)
            logits = logits[0] if isinstance(logits, tuple) else logits
            ids.append(int(logits[0, -1].argmax()))
    return ids[len(prompt):]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--prompt-ids", type=int, nargs="+", required=True)
    parser.add_argument("--new", type=int, default=200)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, kind, config, _ = load_checkpoint(args.checkpoint)
    if kind != "language_model":
        sys.exit(f"error: '{args.checkpoint}' holds a {kind}, not a language model")
    model = model.float().eval()
    window = config["max_seq_len"]
    generate(model, args.prompt_ids, min(args.new, 8), window)
    for _ in range(args.reps):
        start = time.perf_counter()
        tokens = generate(model, args.prompt_ids, args.new, window)
        seconds = time.perf_counter() - start
        print(json.dumps({"impl": "torch (whole window)", "tokens": len(tokens), "seconds": seconds,
                          "tokens_per_s": len(tokens) / seconds, "threads": torch.get_num_threads(),
                          "torch": torch.__version__, "first_ids": tokens[:8]}))


if __name__ == "__main__":
    main()
