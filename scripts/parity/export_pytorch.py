#!/usr/bin/python3
"""Export a PyTorch Transformer as a checkpoint GpuTransformer loads.

Run with Debian's interpreter (torch 1.13; the `python3` first on PATH cannot import torch).
The file is safetensors with the state_dict names of scripts/parity/README.md (F32) and the
metadata `model` ("transformer" or "language_model") and `config` (JSON with the names of
`TransformerConfig` / `LanguageModelConfig`), which `StateDict.Load`, `gpu-transformer parity`
and import_to_pytorch.py read.

From Python (any model whose layers are PyTorch's nn.Transformer / nn.TransformerEncoderLayer):

    from export_pytorch import export, transformer_config
    config = transformer_config(model.transformer, model.src_tok_emb.embedding, model.tgt_tok_emb.embedding,
                                max_seq_len=5000, pad_id=PAD_IDX)
    export(model, "model.safetensors", "transformer", config,
           rename={"transformer.": "", "src_tok_emb.embedding.": "src_embed.", "tgt_tok_emb.embedding.": "tgt_embed."})

Commands:

    export_pytorch.py state-dict model.pt --kind transformer --config config.json [--prefix model] \\
        [--rename OLD=NEW ...] [--drop NAME ...] --out model.safetensors
        a state_dict saved with torch.save (names mapped by --prefix/--rename, buffers left out with --drop)
    export_pytorch.py reference --kind language_model --config '{"d_model": 64, ...}' [--seed 0] --out model.safetensors
        a fresh make_parity_golden.py reference model (PyTorch's initialisation)
    export_pytorch.py tutorial --out model.safetensors
        a small model built like PyTorch's translation tutorial (nn.Transformer inside a wrapper,
        other embedding names), exported through transformer_config + rename

`reference` and `tutorial` also take --batch-out FILE (a random batch) and --reference-out FILE
(that model's own logits, loss and grad.<name> on the batch, float64 math), so
`gpu-transformer parity model.safetensors --batch FILE --compare REFERENCE` checks the import.
"""

import argparse
import json
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "golden"))
from import_to_pytorch import KINDS, InteropError, run  # noqa: E402
from make_parity_golden import build, expected_parameters, read_spec  # noqa: E402
from safetensors_io import save_file  # noqa: E402

# Tied copies PyTorch models often keep under a second name; dropped when they equal the table.
TIED = {"transformer": {"tgt_embed.weight": "src_embed.weight", "generator.weight": "src_embed.weight"},
        "language_model": {"lm_head.weight": "tok_embed.weight"}}


def activation_name(activation):
    """The config name of a PyTorch layer's activation (a function or a module)."""
    if activation in (F.relu,) or isinstance(activation, nn.ReLU):
        return "relu"
    if activation in (F.gelu,):
        return "gelu"
    if isinstance(activation, nn.GELU):
        return "gelu_tanh" if activation.approximate == "tanh" else "gelu"
    raise InteropError(f"activation {activation!r} has no GpuTransformer equivalent (relu, gelu, gelu_tanh)")


def layer_config(layer):
    """d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps, norm_first of one nn.Transformer*Layer."""
    return {
        "d_model": layer.self_attn.embed_dim,
        "nhead": layer.self_attn.num_heads,
        "dim_feedforward": layer.linear1.out_features,
        "dropout": float(layer.dropout.p),
        "activation": activation_name(layer.activation),
        "layer_norm_eps": float(layer.norm1.eps),
        "norm_first": bool(layer.norm_first),
    }


def transformer_config(core, src_embedding, tgt_embedding=None, max_seq_len=256, scale_embeddings=True, pad_id=-1):
    """The config of an encoder–decoder model built on `core` (an nn.Transformer) and its embeddings.

    tgt_embedding None (or the same module as src_embedding) means one shared table."""
    shared = tgt_embedding is None or tgt_embedding is src_embedding or tgt_embedding.weight is src_embedding.weight
    target = src_embedding if shared else tgt_embedding
    return {**layer_config(core.encoder.layers[0]),
            "num_encoder_layers": len(core.encoder.layers), "num_decoder_layers": len(core.decoder.layers),
            "src_vocab_size": src_embedding.num_embeddings, "tgt_vocab_size": target.num_embeddings,
            "share_embeddings": shared, "max_seq_len": max_seq_len, "scale_embeddings": scale_embeddings, "pad_id": pad_id}


def language_model_config(layers, embedding, tie_weights, max_seq_len=256, scale_embeddings=True, pad_id=-1):
    """The config of a decoder-only model: `layers` a list of nn.TransformerEncoderLayer run causally."""
    return {**layer_config(layers[0]), "num_layers": len(layers), "vocab_size": embedding.num_embeddings,
            "max_seq_len": max_seq_len, "tie_weights": tie_weights, "scale_embeddings": scale_embeddings, "pad_id": pad_id}


def map_names(state, prefix="", rename=None):
    """Keeps the names under `prefix` (stripped) and applies `rename` (longest matching name prefix first)."""
    prefix = prefix if not prefix or prefix.endswith(".") else prefix + "."
    rename = sorted((rename or {}).items(), key=lambda item: -len(item[0]))
    mapped = {}
    for name, tensor in state.items():
        if not name.startswith(prefix):
            continue
        name = name[len(prefix):]
        for old, new in rename:
            if name.startswith(old):
                name = new + name[len(old):]
                break
        if name in mapped:
            raise InteropError(f"two tensors map to '{name}'; check --prefix/--rename")
        mapped[name] = tensor
    return mapped


def checked_state(state, kind, config, buffers=()):
    """The state_dict of scripts/parity/README.md for `config`, as F32, from `state` (already renamed).

    Drops tied duplicates equal to their table and the given buffers (e.g. positional tables); refuses
    anything else that is not in the specification, missing tensors and wrong shapes, naming each."""
    if kind not in KINDS:
        raise InteropError(f"unknown model kind '{kind}' (known: {', '.join(KINDS)})")
    expected = expected_parameters(read_spec(), kind, config)
    state = dict(state)
    for copy, table in TIED[kind].items():
        if copy in state and copy not in expected and table in state and torch.equal(state[copy], state[table]):
            del state[copy]
    extra = [n for n in state if n not in expected and n not in buffers]
    missing = [n for n in expected if n not in state]
    misshapen = [f"{n}: {list(state[n].shape)} vs {shape}" for n, (shape, _) in expected.items() if n in state and list(state[n].shape) != shape]
    problems = [f"{label}: {', '.join(items[:6])}{' …' if len(items) > 6 else ''}"
                for label, items in (("missing", missing), ("not in the specification (map them with --prefix/--rename, "
                                     "or leave buffers out with --drop)", extra), ("shapes differ", misshapen)) if items]
    if problems:
        raise InteropError(f"the state_dict does not match a {kind} with this config ({'; '.join(problems)})")
    return {n: state[n].detach().float().contiguous() for n in expected}


def export(model_or_state, path, kind, config, prefix="", rename=None, buffers=()):
    """Writes a model (nn.Module) or a state_dict as a GpuTransformer checkpoint.

    A module's buffers (positional tables and the like) are left out; for a state_dict, name
    them (after prefix and rename) in `buffers`."""
    if isinstance(model_or_state, nn.Module):
        state = model_or_state.state_dict()
        own = {name for name, _ in model_or_state.named_buffers()}
        buffers = set(buffers) | set(map_names({b: None for b in own}, prefix, rename))
    else:
        state = model_or_state
    mapped = map_names(state, prefix, rename)
    tensors = checked_state(mapped, kind, config, set(buffers))
    save_file(tensors, path, {"model": kind, "config": json.dumps(config, separators=(",", ":")),
                              "generator": "scripts/parity/export_pytorch.py", "torch": torch.__version__})
    return tensors


# --------------------------------------------------------------------------------------------
# A model built like PyTorch's translation tutorial (nn.Transformer in a wrapper, other names)
# --------------------------------------------------------------------------------------------


class TokenEmbedding(nn.Module):
    def __init__(self, vocab_size, emb_size):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_size)
        self.emb_size = emb_size

    def forward(self, tokens):
        return self.embedding(tokens) * math.sqrt(self.emb_size)


class PositionalEncoding(nn.Module):
    def __init__(self, emb_size, maxlen=5000):
        super().__init__()
        den = torch.exp(-torch.arange(0, emb_size, 2, dtype=torch.float64) * math.log(10000) / emb_size)
        pos = torch.arange(0, maxlen, dtype=torch.float64).reshape(maxlen, 1)
        table = torch.zeros((maxlen, emb_size), dtype=torch.float64)
        table[:, 0::2] = torch.sin(pos * den)
        table[:, 1::2] = torch.cos(pos * den)
        self.register_buffer("pos_embedding", table)

    def forward(self, x):
        return x + self.pos_embedding[: x.shape[1]].to(x.dtype)


class TutorialSeq2Seq(nn.Module):
    """The tutorial's Seq2SeqTransformer, batch first; its state_dict names differ from ours."""

    def __init__(self, num_encoder_layers, num_decoder_layers, emb_size, nhead, src_vocab_size, tgt_vocab_size,
                 dim_feedforward, pad_id, maxlen=64):
        super().__init__()
        self.pad_id = pad_id
        self.transformer = nn.Transformer(d_model=emb_size, nhead=nhead, num_encoder_layers=num_encoder_layers,
                                          num_decoder_layers=num_decoder_layers, dim_feedforward=dim_feedforward,
                                          dropout=0.1, batch_first=True)
        self.generator = nn.Linear(emb_size, tgt_vocab_size)
        self.src_tok_emb = TokenEmbedding(src_vocab_size, emb_size)
        self.tgt_tok_emb = TokenEmbedding(tgt_vocab_size, emb_size)
        self.positional_encoding = PositionalEncoding(emb_size, maxlen)
        self.maxlen = maxlen

    def forward(self, src, tgt):
        src_emb = self.positional_encoding(self.src_tok_emb(src))
        tgt_emb = self.positional_encoding(self.tgt_tok_emb(tgt))
        t = tgt.shape[1]
        tgt_mask = torch.triu(torch.full((t, t), float("-inf"), dtype=tgt_emb.dtype), 1)
        src_padding, tgt_padding = src == self.pad_id, tgt == self.pad_id
        out = self.transformer(src_emb, tgt_emb, tgt_mask=tgt_mask, src_key_padding_mask=src_padding,
                               tgt_key_padding_mask=tgt_padding, memory_key_padding_mask=src_padding)
        return self.generator(out)


class TutorialAdapter(nn.Module):
    """Runs a TutorialSeq2Seq with the reference models' interface (config, forward(src, tgt_in))."""

    def __init__(self, model, config):
        super().__init__()
        self.model, self.config = model, config

    def forward(self, src, tgt_in):
        return self.model(src, tgt_in)


TUTORIAL_RENAME = {"transformer.": "", "src_tok_emb.embedding.": "src_embed.", "tgt_tok_emb.embedding.": "tgt_embed."}


def tutorial_model(seed):
    torch.manual_seed(seed)
    model = TutorialSeq2Seq(num_encoder_layers=2, num_decoder_layers=2, emb_size=32, nhead=4, src_vocab_size=29,
                            tgt_vocab_size=31, dim_feedforward=48, pad_id=0)
    config = transformer_config(model.transformer, model.src_tok_emb.embedding, model.tgt_tok_emb.embedding,
                                max_seq_len=model.maxlen, scale_embeddings=True, pad_id=0)
    return model, config


def random_batch(kind, config, seed, rows=3):
    """Token ids padded with pad_id (rows of different lengths), as make_parity_golden.py builds them."""
    g = torch.Generator().manual_seed(seed)
    pad = max(config["pad_id"], 0)
    if kind == "transformer":
        lengths = [(7, 5), (4, 6), (6, 2)][:rows]
        s, t = max(a for a, _ in lengths), max(b for _, b in lengths) + 1
        src = torch.full((rows, s), pad, dtype=torch.int64)
        tgt_in = torch.full((rows, t), pad, dtype=torch.int64)
        tgt_out = torch.full((rows, t), pad, dtype=torch.int64)
        for b, (ls, lt) in enumerate(lengths):
            src[b, :ls] = torch.randint(3, config["src_vocab_size"], (ls,), generator=g)
            y = torch.randint(3, config["tgt_vocab_size"], (lt,), generator=g)
            tgt_in[b, 0], tgt_in[b, 1:lt + 1], tgt_out[b, :lt], tgt_out[b, lt] = 1, y, y, 2
        return {"src": src, "tgt_in": tgt_in, "tgt_out": tgt_out}
    lengths = [8, 5, 7][:rows]
    ids = torch.full((rows, max(lengths)), pad, dtype=torch.int64)
    targets = torch.full((rows, max(lengths)), pad, dtype=torch.int64)
    for b, length in enumerate(lengths):
        stream = torch.randint(1, config["vocab_size"], (length + 1,), generator=g)
        ids[b, :length], targets[b, :length] = stream[:-1], stream[1:]
    return {"ids": ids, "targets": targets}


def read_config(text):
    """A config from inline JSON or a .json file."""
    if os.path.exists(text):
        with open(text, encoding="utf-8") as stream:
            return json.load(stream)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InteropError(f"--config is neither a file nor JSON: {e}") from e


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    from_state = commands.add_parser("state-dict", help="convert a state_dict saved with torch.save")
    from_state.add_argument("state_dict", help="file written by torch.save(model.state_dict(), …)")
    from_state.add_argument("--kind", choices=KINDS, required=True)
    from_state.add_argument("--config", required=True, help="config JSON (inline or a file), names as scripts/parity/README.md")
    from_state.add_argument("--prefix", default="", help="keep only names under this prefix, stripped (e.g. 'model')")
    from_state.add_argument("--rename", nargs="*", default=[], metavar="OLD=NEW", help="rename name prefixes, e.g. src_tok_emb.embedding.=src_embed.")
    from_state.add_argument("--drop", nargs="*", default=[], metavar="NAME", help="leave out tensors under these names (after --prefix/--rename), e.g. buffers such as positional tables")
    reference = commands.add_parser("reference", help="a fresh reference model of make_parity_golden.py")
    reference.add_argument("--kind", choices=KINDS, required=True)
    reference.add_argument("--config", required=True, help="config JSON (inline or a file)")
    reference.add_argument("--seed", type=int, default=0)
    tutorial = commands.add_parser("tutorial", help="a small model built like PyTorch's translation tutorial")
    tutorial.add_argument("--seed", type=int, default=0)
    for command in (from_state, reference, tutorial):
        command.add_argument("--out", required=True, help="the checkpoint to write")
    for command in (reference, tutorial):
        command.add_argument("--batch-out", help="also write a random padded batch (safetensors, I64)")
        command.add_argument("--reference-out", help="also write the model's logits, loss and grad.<name> on that batch (float64 math)")
    args = parser.parse_args(argv)
    try:
        if args.command == "state-dict":
            kind, config = args.kind, read_config(args.config)
            state = torch.load(args.state_dict, map_location="cpu")
            if not isinstance(state, dict):
                raise InteropError(f"'{args.state_dict}' holds a {type(state).__name__}, not a state_dict")
            rename = dict(item.split("=", 1) for item in args.rename)
            dropped = [n for n in map_names(state, args.prefix, rename) if any(n.startswith(d) for d in args.drop)]
            tensors = export(state, args.out, kind, config, args.prefix, rename, buffers=dropped)
            model = None
        elif args.command == "reference":
            kind, config = args.kind, read_config(args.config)
            torch.manual_seed(args.seed)
            model = build(kind, config)
            tensors = export(model, args.out, kind, config)
        else:
            kind = "transformer"
            tutorial_net, config = tutorial_model(args.seed)
            tensors = export(tutorial_net, args.out, kind, config, rename=TUTORIAL_RENAME)
            model = TutorialAdapter(tutorial_net, config)
        count = sum(t.numel() for t in tensors.values())
        print(f"Wrote {args.out}: {kind}, {len(tensors)} tensors, {count:,} parameters; config {json.dumps(config, separators=(',', ':'))}")
        if model is not None and (args.batch_out or args.reference_out):
            batch = random_batch(kind, config, args.seed)
            if args.batch_out:
                save_file(batch, args.batch_out)
                print(f"Wrote {args.batch_out}: " + ", ".join(f"{n} {list(t.shape)}" for n, t in batch.items()))
            if args.reference_out:
                outputs = run(model, kind, batch, float64=True)
                if model is not None and isinstance(model, TutorialAdapter):
                    # Gradients under the exported names (the tutorial's own names mapped).
                    grads = map_names({n[len("grad.model."):]: t for n, t in outputs.items() if n.startswith("grad.")}, rename=TUTORIAL_RENAME)
                    outputs = {"logits": outputs["logits"], "loss": outputs["loss"], **{f"grad.{n}": t for n, t in grads.items()}}
                save_file(outputs, args.reference_out, {"model": kind, "config": json.dumps(config, separators=(",", ":")),
                                                         "generator": "scripts/parity/export_pytorch.py", "torch": torch.__version__})
                print(f"Wrote {args.reference_out}: loss {outputs['loss'].item():.9g}")
        return 0
    except (InteropError, ValueError, KeyError, RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
