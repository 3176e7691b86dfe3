#!/usr/bin/python3
"""Load a GpuTransformer checkpoint into the PyTorch reference model and run it.

Run with Debian's interpreter (torch 1.13; the `python3` first on PATH cannot import torch):

    /usr/bin/python3 scripts/parity/import_to_pytorch.py model.safetensors \\
        --batch batch.safetensors --out torch.safetensors [--compare ours.safetensors]

The checkpoint is what `StateDict.Save`, `gpu-transformer parity` inputs and
`export_pytorch.py` use: safetensors with PyTorch state_dict names and the metadata `model`
("transformer" or "language_model") and `config` (JSON, the names of scripts/parity/README.md).
The script builds `Seq2SeqTransformer` or `LanguageModel` from make_parity_golden.py with that
config, loads the weights with `load_state_dict(strict=True)` (tensors that are not parameters,
such as a golden file's batch and outputs, are skipped), runs one forward, loss and backward
with dropout off, and writes `logits`, `loss` and `grad.<name>` exactly as
`gpu-transformer parity --out` does. The math runs in float64 (the float32 weights widened, as the
golden files are made) unless --float32. With --compare it prints max |Δ| per tensor against
another run (ours, or a golden file) and exits 3 when one is outside tolerance: for every tensor
max|a − b| ≤ rtol · max|b| + atol (rtol 1e-4, atol 1e-8), the loss |a − b| ≤ 1e-5 · |b|.

Batch (--batch, default the checkpoint itself): safetensors with I64/I32 [B, T] tensors `ids`,
`targets` (language_model) or `src`, `tgt_in`, `tgt_out` (transformer), or a .json file
{"ids": [[5, 3, 9]], "targets": [[3, 9, 1]]}. --resave PATH writes the loaded PyTorch model back
through export_pytorch.export (the file GpuTransformer loads), closing the round trip.
"""

import argparse
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "golden"))
from make_parity_golden import build, loss_of  # noqa: E402
from safetensors_io import load_file, save_file  # noqa: E402

KINDS = ("transformer", "language_model")
BATCH_NAMES = {"language_model": ("ids", "targets"), "transformer": ("src", "tgt_in", "tgt_out")}
RTOL, LOSS_RTOL, ATOL = 1e-4, 1e-5, 1e-8
OUTSIDE_TOLERANCE = 3


class InteropError(Exception):
    """Bad input: printed as one line `error: …`, exit code 1."""


def normalized_prefix(prefix):
    return prefix if not prefix or prefix.endswith(".") else prefix + "."


def load_checkpoint(path, prefix=""):
    """(model, kind, config, ignored tensor count) for a GpuTransformer checkpoint."""
    if not os.path.exists(path):
        raise InteropError(f"checkpoint '{path}' does not exist")
    tensors, metadata = load_file(path)
    kind = metadata.get("model")
    if kind not in KINDS:
        raise InteropError(f"'{path}' has no model kind in its metadata ('model' is {kind!r}; expected one of {', '.join(KINDS)})")
    if "config" not in metadata:
        raise InteropError(f"'{path}' has no 'config' in its metadata")
    config = json.loads(metadata["config"])
    model = build(kind, config)
    prefix = normalized_prefix(prefix)
    wanted = model.state_dict()
    state, ignored = {}, 0
    for name, tensor in tensors.items():
        key = name[len(prefix):] if name.startswith(prefix) else None
        if key in wanted:
            state[key] = tensor.to(wanted[key].dtype)
        else:
            ignored += 1
    missing = sorted(set(wanted) - set(state))
    if missing:
        raise InteropError(f"'{path}' lacks {len(missing)} tensors of the {kind} model (prefix '{prefix}'): {', '.join(missing[:6])}")
    model.load_state_dict(state, strict=True)
    return model, kind, config, ignored


def read_batch(path, kind):
    """The batch tensors (int64) of a safetensors or JSON file."""
    names = BATCH_NAMES[kind]
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as stream:
            data = json.load(stream)
        rows = {name: data[name] if data[name] and isinstance(data[name][0], list) else [data[name]] for name in names if name in data}
        batch = {name: torch.tensor(value, dtype=torch.int64) for name, value in rows.items()}
    else:
        tensors, _ = load_file(path)
        batch = {name: tensors[name].to(torch.int64) for name in names if name in tensors}
        batch = {name: t[None] if t.dim() == 1 else t for name, t in batch.items()}
    absent = [name for name in names if name not in batch]
    if absent:
        raise InteropError(f"'{path}' has no {', '.join(absent)}; a {kind} batch needs {', '.join(names)}")
    return batch


def run(model, kind, batch, float64=True):
    """One forward, loss and backward with dropout off: {'logits', 'loss', 'grad.<name>'} as float32."""
    model = model.double() if float64 else model.float()
    model.eval()  # dropout off; with gradients enabled PyTorch stays on its regular (not fast) path
    model.zero_grad(set_to_none=True)
    logits, loss = loss_of(model, kind, batch)
    loss.backward()
    outputs = {"logits": logits.detach().float().contiguous(), "loss": loss.detach().float()}
    for name, parameter in model.named_parameters():
        outputs[f"grad.{name}"] = parameter.grad.detach().float().contiguous()
    return outputs


def compare(outputs, reference_path, kind, config, rtol=RTOL, loss_rtol=LOSS_RTOL, atol=ATOL):
    """Prints max |Δ| per tensor against a reference file; returns the names outside tolerance."""
    reference, metadata = load_file(reference_path)
    if "config" in metadata and (metadata.get("model") != kind or json.loads(metadata["config"]) != config):
        raise InteropError(f"'{reference_path}' is for another model: {metadata.get('model')} {metadata['config']}")
    outside = []
    print(f"{'tensor':48s} {'max |Δ|':>9s} {'max |ref|':>9s} {'rel':>9s}")
    for name, value in outputs.items():
        if name not in reference:
            raise InteropError(f"'{reference_path}' has no '{name}' to compare with")
        expected = reference[name].double()
        if expected.numel() != value.numel():
            raise InteropError(f"'{reference_path}': {name} has shape {list(expected.shape)} but this run produced {list(value.shape)}")
        difference = (value.double().reshape(expected.shape) - expected).abs().max().item()
        scale = expected.abs().max().item()
        allowed = loss_rtol * scale if name == "loss" else rtol * scale + atol
        ok = difference <= allowed  # False for NaN
        if not ok:
            outside.append(name)
        relative = difference / scale if scale > 0 else (0.0 if difference == 0 else float("inf"))
        print(f"{name:48s} {difference:9.2e} {scale:9.2e} {relative:9.2e} {'ok' if ok else 'OUTSIDE'}")
    return outside


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="GpuTransformer checkpoint (safetensors with 'model' and 'config' metadata)")
    parser.add_argument("--prefix", default="", help="name prefix of the checkpoint's tensors")
    parser.add_argument("--batch", help="batch file (safetensors or .json); default: the checkpoint")
    parser.add_argument("--out", help="write logits, loss and grad.<name> here (safetensors, F32)")
    parser.add_argument("--compare", help="reference to compare with (our parity output or a golden file); exit 3 when outside tolerance")
    parser.add_argument("--float32", action="store_true", help="run in float32 instead of float64")
    parser.add_argument("--resave", help="write the PyTorch model back as a GpuTransformer checkpoint (export_pytorch.export)")
    args = parser.parse_args(argv)
    try:
        model, kind, config, ignored = load_checkpoint(args.checkpoint, args.prefix)
        count = sum(p.numel() for p in model.parameters())
        print(f"Loaded {kind} ({count:,} parameters, strict names; {ignored} other tensors skipped) from {args.checkpoint}")
        batch = read_batch(args.batch or args.checkpoint, kind)
        outputs = run(model, kind, batch, float64=not args.float32)
        shapes = ", ".join(f"{name} {list(t.shape)}" for name, t in batch.items())
        print(f"Batch: {shapes}; loss {outputs['loss'].item():.9g}; logits {list(outputs['logits'].shape)} "
              f"({'float32' if args.float32 else 'float64'} math)")
        if args.out:
            save_file(outputs, args.out, {"model": kind, "config": json.dumps(config, separators=(",", ":")),
                                          "generator": "scripts/parity/import_to_pytorch.py", "torch": torch.__version__})
            print(f"Wrote {args.out}")
        if args.resave:
            from export_pytorch import export  # noqa: E402 (only needed here)
            export(model.float(), args.resave, kind, config)
            print(f"Re-exported the PyTorch model to {args.resave}")
        if args.compare:
            outside = compare(outputs, args.compare, kind, config)
            if outside:
                print(f"error: {len(outside)} of {len(outputs)} tensors outside tolerance: {', '.join(outside[:5])}", file=sys.stderr)
                return OUTSIDE_TOLERANCE
            print(f"All {len(outputs)} tensors within tolerance (rtol {RTOL:g} + atol {ATOL:g}, loss rtol {LOSS_RTOL:g}).")
        return 0
    except (InteropError, ValueError, KeyError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
