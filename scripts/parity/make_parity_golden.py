#!/usr/bin/python3
"""PyTorch reference models and parity golden files for GpuTransformer's two models.

Run with Debian's interpreter (torch 1.13, numpy; the `python3` first on PATH cannot import torch):

    /usr/bin/python3 scripts/parity/make_parity_golden.py

Defines `Seq2SeqTransformer` (encoder–decoder, model kind "transformer") and `LanguageModel`
(decoder-only, "language_model") with exactly the state_dict names of scripts/parity/README.md
(the script reads that README's tables and checks its models against them), and writes
tests/golden/parity/<case>.safetensors (weights, a batch, logits, loss, every gradient and the
losses of 10 AdamW steps) and tests/golden/parity/README.md (generated: edit this script, not it).

Weights are drawn in float32 from fixed seeds and initialised as PyTorch does, then every 1-D
parameter gets N(0, 0.1) noise; the math runs in float64 and each output is rounded to float32
once. Running the script again rewrites identical bytes.
"""

import copy
import json
import math
import os
import re
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts", "golden"))
from safetensors_io import load_file, save_file  # noqa: E402

SPEC = os.path.join(ROOT, "scripts", "parity", "README.md")
OUT = os.path.join(ROOT, "tests", "golden", "parity")
GENERATOR = "scripts/parity/make_parity_golden.py"

torch.set_num_threads(1)

# AdamW for the 10-step check: the paper's betas, PyTorch's default eps, a weight decay large
# enough that applying it to the wrong parameters shows in the losses.
OPTIMIZER = {"lr": 3e-3, "beta1": 0.9, "beta2": 0.98, "eps": 1e-8, "weight_decay": 0.1}
STEPS = 10
PAD, BOS, EOS = 0, 1, 2  # seq2seq ids; ordinary tokens are 3 … V−1 (language model: 1 … V−1)
NOISE = 0.1  # std of the noise added to every 1-D parameter after PyTorch's init


# --------------------------------------------------------------------------------------------
# The models
# --------------------------------------------------------------------------------------------


def sinusoid_table(length, d):
    """The paper's table PE[pos, 2i] = sin(pos/10000^(2i/d)), PE[pos, 2i+1] = cos(…), in float64."""
    position = torch.arange(length, dtype=torch.float64)[:, None]
    pair = torch.arange(0, d, 2, dtype=torch.float64)
    angle = position / torch.pow(torch.tensor(10000.0, dtype=torch.float64), pair / d)
    table = torch.zeros(length, d, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, : d // 2])
    return table


def activation_of(name):
    """PyTorch's activation for a config name: "relu", "gelu" (exact erf) or "gelu_tanh"."""
    if name in ("relu", "gelu"):
        return name
    if name == "gelu_tanh":
        return lambda x: F.gelu(x, approximate="tanh")
    raise ValueError(f"unknown activation {name}")


def causal_mask(length, dtype):
    """Float mask with −inf above the diagonal: query i sees keys j ≤ i."""
    return torch.triu(torch.full((length, length), -math.inf, dtype=dtype), 1)


class Embedder(nn.Module):
    """x = E[ids]·√d + PE[:T]; PE is a non-persistent buffer (not in the state_dict)."""

    def __init__(self, d_model, max_seq_len, scale):
        super().__init__()
        self.scale = math.sqrt(d_model) if scale else 1.0
        self.register_buffer("pe", sinusoid_table(max_seq_len, d_model), persistent=False)

    def forward(self, table, ids):
        return F.embedding(ids, table) * self.scale + self.pe[: ids.shape[1]].to(table.dtype)


class SharedGenerator(nn.Module):
    """The generator of a shared-embedding Transformer: the embedding table as weight, own bias."""

    def __init__(self, vocab, d_model):
        super().__init__()
        self.bias = nn.Parameter(torch.empty(vocab))
        bound = 1 / math.sqrt(d_model)  # nn.Linear's bias init for in_features = d_model
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x, weight):
        return F.linear(x, weight, self.bias)


class Seq2SeqTransformer(nn.Module):
    """Encoder–decoder Transformer: state_dict names as in README.md ("transformer")."""

    def __init__(self, config):
        super().__init__()
        c = config
        d = c["d_model"]
        self.config = dict(c)
        self.src_embed = nn.Embedding(c["src_vocab_size"], d)
        if not c["share_embeddings"]:
            self.tgt_embed = nn.Embedding(c["tgt_vocab_size"], d)
        core = nn.Transformer(
            d, c["nhead"], c["num_encoder_layers"], c["num_decoder_layers"], c["dim_feedforward"], c["dropout"],
            activation_of(c["activation"]), layer_norm_eps=c["layer_norm_eps"], batch_first=True, norm_first=c["norm_first"])
        self.encoder = core.encoder  # nn.Transformer's init (xavier_uniform on every ≥2-D weight) is kept
        self.decoder = core.decoder
        if c["share_embeddings"]:
            self.generator = SharedGenerator(c["tgt_vocab_size"], d)
        else:
            self.generator = nn.Linear(d, c["tgt_vocab_size"])
        self.embed = Embedder(d, c["max_seq_len"], c["scale_embeddings"])
        self.dropout = nn.Dropout(c["dropout"])

    def target_table(self):
        return self.src_embed.weight if self.config["share_embeddings"] else self.tgt_embed.weight

    def forward(self, src, tgt_in):
        pad = self.config["pad_id"]
        src_padding = src == pad  # [B, S] True = padded key
        tgt_padding = tgt_in == pad  # [B, T]
        x = self.dropout(self.embed(self.src_embed.weight, src))
        memory = self.encoder(x, src_key_padding_mask=src_padding)
        y = self.dropout(self.embed(self.target_table(), tgt_in))
        out = self.decoder(y, memory, tgt_mask=causal_mask(tgt_in.shape[1], y.dtype),
                           tgt_key_padding_mask=tgt_padding, memory_key_padding_mask=src_padding)
        if self.config["share_embeddings"]:
            return self.generator(out, self.src_embed.weight)
        return self.generator(out)  # [B, T, V]


class LanguageModel(nn.Module):
    """Decoder-only model: state_dict names as in README.md ("language_model")."""

    def __init__(self, config):
        super().__init__()
        c = config
        d = c["d_model"]
        self.config = dict(c)
        self.tok_embed = nn.Embedding(c["vocab_size"], d)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(d, c["nhead"], c["dim_feedforward"], c["dropout"], activation_of(c["activation"]),
                                       layer_norm_eps=c["layer_norm_eps"], batch_first=True, norm_first=c["norm_first"])
            for _ in range(c["num_layers"]))
        self.norm = nn.LayerNorm(d, eps=c["layer_norm_eps"])
        if not c["tie_weights"]:
            self.lm_head = nn.Linear(d, c["vocab_size"], bias=False)
        self.embed = Embedder(d, c["max_seq_len"], c["scale_embeddings"])
        self.dropout = nn.Dropout(c["dropout"])

    def forward(self, ids):
        padding = ids == self.config["pad_id"]  # [B, T]
        x = self.dropout(self.embed(self.tok_embed.weight, ids))
        mask = causal_mask(ids.shape[1], x.dtype)
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=padding)
        x = self.norm(x)
        weight = self.tok_embed.weight if self.config["tie_weights"] else self.lm_head.weight
        return F.linear(x, weight)  # [B, T, V]


def build(kind, config):
    return Seq2SeqTransformer(config) if kind == "transformer" else LanguageModel(config)


def embedding_names(model):
    return {f"{name}.weight" for name, module in model.named_modules() if isinstance(module, nn.Embedding)}


def decays(model):
    """The weight-decay rule: ≥2-D weights that are not embedding tables."""
    embeddings = embedding_names(model)
    return {name: p.dim() >= 2 and name not in embeddings for name, p in model.named_parameters()}


def loss_of(model, kind, batch):
    if kind == "transformer":
        logits = model(batch["src"], batch["tgt_in"])
        targets = batch["tgt_out"]
    else:
        logits = model(batch["ids"])
        targets = batch["targets"]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=model.config["pad_id"])
    return logits, loss


# --------------------------------------------------------------------------------------------
# Independent forward in plain float64 ops (checks the models, masks and names above)
# --------------------------------------------------------------------------------------------


def manual_layer_norm(x, sd, name, eps):
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * sd[f"{name}.weight"] + sd[f"{name}.bias"]


def manual_attention(query, memory, sd, name, heads, masked):
    """nn.MultiheadAttention by hand. query [B, Tq, d], memory [B, Tk, d], masked [B, Tq, Tk] bool."""
    d = query.shape[-1]
    w, b = sd[f"{name}.in_proj_weight"], sd[f"{name}.in_proj_bias"]
    q = query @ w[:d].T + b[:d]
    k = memory @ w[d:2 * d].T + b[d:2 * d]
    v = memory @ w[2 * d:].T + b[2 * d:]
    hd = d // heads
    out = torch.zeros_like(q)
    for h in range(heads):
        cols = slice(h * hd, (h + 1) * hd)
        scores = q[..., cols] @ k[..., cols].transpose(1, 2) / math.sqrt(hd)
        scores = scores.masked_fill(masked, -math.inf)
        out[..., cols] = torch.softmax(scores, dim=-1) @ v[..., cols]
    return out @ sd[f"{name}.out_proj.weight"].T + sd[f"{name}.out_proj.bias"]


def manual_feed_forward(x, sd, name, activation):
    hidden = x @ sd[f"{name}.linear1.weight"].T + sd[f"{name}.linear1.bias"]
    hidden = {"relu": F.relu, "gelu": lambda t: 0.5 * t * (1 + torch.erf(t / math.sqrt(2))),
              "gelu_tanh": lambda t: 0.5 * t * (1 + torch.tanh(math.sqrt(2 / math.pi) * (t + 0.044715 * t ** 3)))}[activation](hidden)
    return hidden @ sd[f"{name}.linear2.weight"].T + sd[f"{name}.linear2.bias"]


def manual_block(x, sd, name, c, self_masked, memory=None, cross_masked=None):
    """One encoder layer (memory None) or decoder layer, post-LN or pre-LN."""
    eps, heads = c["layer_norm_eps"], c["nhead"]
    sublayers = [lambda t: manual_attention(t, t, sd, f"{name}.self_attn", heads, self_masked)]
    if memory is not None:
        sublayers.append(lambda t: manual_attention(t, memory, sd, f"{name}.multihead_attn", heads, cross_masked))
    sublayers.append(lambda t: manual_feed_forward(t, sd, name, c["activation"]))
    for index, sublayer in enumerate(sublayers, start=1):
        norm = f"{name}.norm{index}"
        if c["norm_first"]:
            x = x + sublayer(manual_layer_norm(x, sd, norm, eps))
        else:
            x = manual_layer_norm(x + sublayer(x), sd, norm, eps)
    return x


def manual_forward(kind, c, sd, batch):
    d = c["d_model"]
    scale = math.sqrt(d) if c["scale_embeddings"] else 1.0
    pe = sinusoid_table(c["max_seq_len"], d)
    embed = lambda table, ids: table[ids] * scale + pe[: ids.shape[1]]  # noqa: E731
    pad = c["pad_id"]
    if kind == "language_model":
        ids = batch["ids"]
        t = ids.shape[1]
        masked = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)[None] | (ids == pad)[:, None, :]
        x = embed(sd["tok_embed.weight"], ids)
        for i in range(c["num_layers"]):
            x = manual_block(x, sd, f"layers.{i}", c, masked)
        x = manual_layer_norm(x, sd, "norm", c["layer_norm_eps"])
        return x @ (sd["tok_embed.weight"] if c["tie_weights"] else sd["lm_head.weight"]).T
    src, tgt = batch["src"], batch["tgt_in"]
    s, t = src.shape[1], tgt.shape[1]
    src_masked = (src == pad)[:, None, :]
    x = embed(sd["src_embed.weight"], src)
    for i in range(c["num_encoder_layers"]):
        x = manual_block(x, sd, f"encoder.layers.{i}", c, src_masked.expand(-1, s, -1))
    memory = manual_layer_norm(x, sd, "encoder.norm", c["layer_norm_eps"])
    target_table = sd["src_embed.weight"] if c["share_embeddings"] else sd["tgt_embed.weight"]
    y = embed(target_table, tgt)
    self_masked = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)[None] | (tgt == pad)[:, None, :]
    for i in range(c["num_decoder_layers"]):
        y = manual_block(y, sd, f"decoder.layers.{i}", c, self_masked, memory, src_masked.expand(-1, t, -1))
    y = manual_layer_norm(y, sd, "decoder.norm", c["layer_norm_eps"])
    weight = sd["src_embed.weight"] if c["share_embeddings"] else sd["generator.weight"]
    return y @ weight.T + sd["generator.bias"]


# --------------------------------------------------------------------------------------------
# The specification: README.md's state_dict tables
# --------------------------------------------------------------------------------------------


def read_spec():
    """README.md's tables: kind → [(name template, shape expressions, condition, decay)]."""
    spec, current = {}, None
    with open(SPEC, encoding="utf-8") as stream:
        for line in stream:
            heading = re.match(r"^## State dict of `(\w+)`", line)
            if heading:
                current = spec.setdefault(heading.group(1), [])
                continue
            if line.startswith("## "):
                current = None
            row = re.match(r"^\| `([^`]+)` \| \[([^\]]*)\] \| ([^|]+) \| (yes|no) \|", line)
            if current is not None and row:
                current.append((row.group(1), [s.strip() for s in row.group(2).split(",")], row.group(3).strip(), row.group(4) == "yes"))
    assert set(spec) == {"transformer", "language_model"} and all(spec.values()), "README.md lacks a state_dict table"
    return spec


def expected_parameters(spec, kind, config):
    """name → (shape, decay) for this configuration, in the README's order."""
    def size(expression):
        value = 1
        for factor in expression.split("*"):
            value *= int(factor) if factor.isdigit() else config[factor]
        return value

    # Consecutive rows of one layer stack form a block that repeats per layer (PyTorch's order).
    blocks = []
    for template, shape, condition, decay in spec[kind]:
        if blocks and blocks[-1][0] == condition and condition.startswith("i < "):
            blocks[-1][1].append((template, shape, decay))
        else:
            blocks.append((condition, [(template, shape, decay)]))
    expected = {}
    for condition, rows in blocks:
        layer_count = re.fullmatch(r"i < (\w+)", condition)
        if layer_count:
            names = [(template.replace("{i}", str(i)), shape, decay) for i in range(config[layer_count.group(1)]) for template, shape, decay in rows]
        elif condition == "always":
            names = rows
        else:
            flag = re.fullmatch(r"(\w+) = (true|false)", condition)
            assert flag, f"unknown condition '{condition}'"
            names = rows if config[flag.group(1)] == (flag.group(2) == "true") else []
        for name, shape, decay in names:
            expected[name] = ([size(s) for s in shape], decay)
    return expected


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------


TRANSFORMER_DEFAULTS = {
    "d_model": 16, "nhead": 2, "num_encoder_layers": 2, "num_decoder_layers": 2, "dim_feedforward": 32,
    "dropout": 0.0, "activation": "relu", "layer_norm_eps": 1e-5, "norm_first": False,
    "src_vocab_size": 23, "tgt_vocab_size": 19, "share_embeddings": False, "max_seq_len": 16,
    "scale_embeddings": True, "pad_id": PAD,
}
LANGUAGE_MODEL_DEFAULTS = {
    "d_model": 16, "nhead": 2, "num_layers": 2, "dim_feedforward": 32, "dropout": 0.0, "activation": "relu",
    "layer_norm_eps": 1e-5, "norm_first": False, "vocab_size": 23, "max_seq_len": 16, "tie_weights": False,
    "scale_embeddings": True, "pad_id": PAD,
}

# name, kind, seed, config changes, batch: (B, lengths) — seq2seq lengths are (source, target
# before <bos>/<eos>) per row, language-model lengths are real tokens per row; the longest
# row sets T, shorter rows are padded.
CASES = [
    ("transformer_post_relu", "transformer", 11, {},
     {"src": [7, 7, 7], "tgt": [5, 5, 5]}, "post-LN, ReLU, no padding, S 7 ≠ T 6"),
    ("transformer_post_gelu_padded", "transformer", 12, {"activation": "gelu"},
     {"src": [9, 5, 7], "tgt": [6, 3, 5]}, "post-LN, exact GELU, padded source and target rows"),
    ("transformer_pre_relu_padded_shared", "transformer", 13,
     {"norm_first": True, "share_embeddings": True, "src_vocab_size": 23, "tgt_vocab_size": 23, "nhead": 4},
     {"src": [8, 3, 6], "tgt": [8, 5, 2]}, "pre-LN, ReLU, padded, one shared embedding table (source, target, generator weight), 4 heads of 4"),
    ("transformer_pre_gelu", "transformer", 14,
     {"norm_first": True, "activation": "gelu", "d_model": 24, "nhead": 3, "num_encoder_layers": 3,
      "dim_feedforward": 40, "src_vocab_size": 21, "tgt_vocab_size": 23},
     {"src": [5, 5, 5], "tgt": [7, 7, 7]}, "pre-LN, exact GELU, no padding, d_model 24, 3 heads, 3 encoder / 2 decoder layers, S 5 < T 8"),
    ("lm_post_relu", "language_model", 21, {},
     {"ids": [8, 8, 8]}, "post-LN, ReLU, no padding, separate lm_head"),
    ("lm_post_gelu_padded", "language_model", 22, {"activation": "gelu"},
     {"ids": [9, 4, 6]}, "post-LN, exact GELU, padded rows"),
    ("lm_pre_relu_padded_tied", "language_model", 23, {"norm_first": True, "tie_weights": True, "nhead": 4},
     {"ids": [7, 7, 3]}, "pre-LN, ReLU, padded, output projection tied to the embedding, 4 heads of 4"),
    ("lm_pre_gelu_tanh", "language_model", 24,
     {"norm_first": True, "activation": "gelu_tanh", "d_model": 24, "nhead": 3, "num_layers": 3,
      "dim_feedforward": 40, "vocab_size": 29, "scale_embeddings": False},
     {"ids": [5, 5, 5]}, "pre-LN, tanh GELU, no padding, no √d_model scaling, d_model 24, 3 heads, 3 layers"),
]


def make_batch(kind, config, lengths, g):
    """Token ids (int64), padded with pad_id to the longest row."""
    if kind == "transformer":
        rows = len(lengths["src"])
        s, t = max(lengths["src"]), max(lengths["tgt"]) + 1
        src = torch.full((rows, s), PAD, dtype=torch.int64)
        tgt_in = torch.full((rows, t), PAD, dtype=torch.int64)
        tgt_out = torch.full((rows, t), PAD, dtype=torch.int64)
        for b, (source_length, target_length) in enumerate(zip(lengths["src"], lengths["tgt"])):
            src[b, :source_length] = torch.randint(3, config["src_vocab_size"], (source_length,), generator=g)
            y = torch.randint(3, config["tgt_vocab_size"], (target_length,), generator=g)
            tgt_in[b, 0] = BOS
            tgt_in[b, 1:target_length + 1] = y
            tgt_out[b, :target_length] = y
            tgt_out[b, target_length] = EOS
        return {"src": src, "tgt_in": tgt_in, "tgt_out": tgt_out}
    rows, t = len(lengths["ids"]), max(lengths["ids"])
    ids = torch.full((rows, t), PAD, dtype=torch.int64)
    targets = torch.full((rows, t), PAD, dtype=torch.int64)
    for b, length in enumerate(lengths["ids"]):
        stream = torch.randint(1, config["vocab_size"], (length + 1,), generator=g)
        ids[b, :length] = stream[:-1]
        targets[b, :length] = stream[1:]
    return {"ids": ids, "targets": targets}


BATCH_MEANINGS = {
    "src": "source ids [B, S], padded with pad_id",
    "tgt_in": "decoder input ids [B, T]: `<bos>` then the target, padded with pad_id",
    "tgt_out": "decoder target ids [B, T]: the target then `<eos>`, padded with pad_id (ignored by the loss)",
    "ids": "input ids [B, T], padded with pad_id",
    "targets": "next-token ids [B, T]; pad_id (ignored by the loss) where ids is padded",
}


def train(model, kind, batch):
    """Loss, logits and gradients of the first forward/backward, then the losses of STEPS AdamW steps."""
    decay = decays(model)
    named = list(model.named_parameters())
    optimizer = torch.optim.AdamW(
        [{"params": [p for n, p in named if decay[n]], "weight_decay": OPTIMIZER["weight_decay"]},
         {"params": [p for n, p in named if not decay[n]], "weight_decay": 0.0}],
        lr=OPTIMIZER["lr"], betas=(OPTIMIZER["beta1"], OPTIMIZER["beta2"]), eps=OPTIMIZER["eps"])
    losses, first = [], None
    for _ in range(STEPS):
        optimizer.zero_grad()
        logits, loss = loss_of(model, kind, batch)
        loss.backward()
        if first is None:
            first = (logits.detach().clone(), loss.detach().clone(), {n: p.grad.detach().clone() for n, p in named})
        losses.append(loss.detach().clone())
        optimizer.step()
    return first, torch.stack(losses)


def deviation(reference, other):
    """Largest |a − b| and largest |a − b| / max|a| over a set of tensors (a tensor → max over it)."""
    worst_abs, worst_rel = 0.0, 0.0
    for a, b in zip(reference, other):
        diff = (a.double() - b.double()).abs().max().item()
        worst_abs = max(worst_abs, diff)
        worst_rel = max(worst_rel, diff / max(a.double().abs().max().item(), 1e-30))
    return worst_abs, worst_rel


def make_case(spec, name, kind, seed, changes, lengths, about):
    config = {**(TRANSFORMER_DEFAULTS if kind == "transformer" else LANGUAGE_MODEL_DEFAULTS), **changes}
    torch.manual_seed(seed)
    model32 = build(kind, config)  # float32, PyTorch's init
    g = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        for parameter in model32.parameters():
            if parameter.dim() == 1:
                parameter.add_(torch.randn(parameter.shape, generator=g) * NOISE)
    batch = make_batch(kind, config, lengths, g)
    model32.train()  # dropout is 0; training mode keeps PyTorch off its inference fast path
    model64 = copy.deepcopy(model32).double()

    # The model against the README's specification.
    expected = expected_parameters(spec, kind, config)
    state = model32.state_dict()
    assert list(state) == list(expected), f"{name}: state_dict names differ from README.md:\n{list(state)}\n{list(expected)}"
    for key, (shape, decay) in expected.items():
        assert list(state[key].shape) == shape, f"{name}/{key}: {list(state[key].shape)} vs README {shape}"
        assert decays(model32)[key] == decay, f"{name}/{key}: decay rule differs from README.md"
    weights = {key: value.clone() for key, value in state.items()}

    # Gradients and the 10 steps in float64, then the same in float32 as a yardstick.
    (logits, loss, grads), losses = train(model64, kind, batch)
    (logits32, loss32, grads32), losses32 = train(model32, kind, batch)

    # Self-checks: an independent forward in plain ops, the loss by hand, training makes progress.
    sd64 = {key: value.double() for key, value in weights.items()}
    manual = manual_forward(kind, config, sd64, batch)
    assert torch.allclose(manual, logits, atol=1e-10, rtol=0), f"{name}: hand-written forward differs by {(manual - logits).abs().max()}"
    targets = batch["tgt_out" if kind == "transformer" else "targets"]
    counted = targets != PAD
    log_probabilities = torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None])[..., 0]
    assert torch.allclose(-(log_probabilities * counted).sum() / counted.sum(), loss, atol=1e-12)
    assert torch.equal(losses[0], loss)
    assert all(losses[k + 1] < losses[k] for k in range(STEPS - 1)), f"{name}: losses do not decrease: {losses.tolist()}"
    if (targets == PAD).any() and not (config.get("share_embeddings") or config.get("tie_weights")):
        # Padded positions are masked as keys and ignored by the loss, so the pad token's
        # embedding rows get exactly no gradient (a shared or tied table gets one from the
        # output projection).
        for table in embedding_names(model64):
            assert torch.all(grads[table][PAD] == 0), f"{name}: {table}[pad] has a gradient"

    names = list(weights)
    measured = {
        "logits": deviation([logits], [logits32]),
        "loss": deviation([loss], [loss32]),
        "grads": deviation([grads[n] for n in names], [grads32[n] for n in names]),
        "losses": deviation([losses], [losses32]),
    }
    yardstick = json.dumps({k: {"max_abs": float(f"{a:.3g}"), "max_rel": float(f"{r:.3g}")} for k, (a, r) in measured.items()},
                           separators=(",", ":"))

    tensors, meanings = {}, {}

    def put(key, tensor, meaning):
        assert key not in tensors, key
        assert tensor.dtype == torch.int64 or torch.isfinite(tensor).all(), f"{name}/{key} is not finite"
        tensors[key] = tensor.detach().contiguous()
        meanings[key] = meaning

    for key, value in weights.items():
        put(key, value, "parameter (F32, as initialised)")
    for key, value in batch.items():
        put(key, value, BATCH_MEANINGS[key])
    put("logits", logits.float(), "logits [B, T, V] of the first forward")
    put("loss", loss.float(), "mean cross-entropy over non-pad targets (scalar)")
    for key in names:
        put(f"grad.{key}", grads[key].float(), f"∂loss/∂{key}")
    put("losses", losses.float(), f"loss at each of {STEPS} AdamW steps on this batch [{STEPS}]; losses[0] = loss")

    metadata = {
        "case": name,
        "about": about,
        "generator": GENERATOR,
        "torch": torch.__version__,
        "model": kind,
        "config": json.dumps(config, separators=(",", ":")),
        "weights": f"F32: drawn with torch.manual_seed({seed}), PyTorch's init, then N(0, {NOISE}) added to every 1-D parameter",
        "inputs": "I64 token ids, padded with pad_id",
        "math": "float64: the float32 weights widened, autograd, AdamW on float64 parameters",
        "outputs": "F32: logits, loss, grad.*, losses, each float64 result rounded once",
        "special_ids": f"pad {PAD}, bos {BOS}, eos {EOS}" if kind == "transformer" else f"pad {PAD}",
        "loss": "cross-entropy, ignore_index = pad_id, mean over non-ignored targets",
        "optimizer": "torch.optim.AdamW, amsgrad off, no gradient clipping, constant lr",
        **{key: repr(value) for key, value in OPTIMIZER.items()},
        "steps": str(STEPS),
        "decay_rule": "weight_decay on ≥2-D weights that are not embedding tables; 0 on biases, LayerNorm parameters and embeddings",
        "torch_float32_deviation": yardstick,
    }
    return name, kind, config, about, tensors, meanings, metadata, losses


# --------------------------------------------------------------------------------------------
# Files and README
# --------------------------------------------------------------------------------------------


DTYPE_NAMES = {torch.float32: "F32", torch.int64: "I64"}


def readme(cases, sizes):
    lines = [
        "# Parity golden data",
        "",
        f"Generated by `{GENERATOR}` (PyTorch {torch.__version__}, CPU; run it with Debian's `/usr/bin/python3`). "
        "Do not edit by hand: change the script and run it again; it rewrites the same bytes for the same torch. "
        "The models, the state_dict names, the masks, the loss and the AdamW rule are described in "
        "`scripts/parity/README.md`.",
        "",
        "## Conventions (every file)",
        "",
        "- Weights: F32 under their state_dict names, drawn in float32 from a fixed seed, initialised as PyTorch does, "
        f"then N(0, {NOISE}) noise added to every 1-D parameter (no bias 0, no LayerNorm weight 1).",
        "- Batch: I64 token ids padded with `pad_id` (0); seq2seq ids `<bos>` = 1, `<eos>` = 2.",
        "- Math in float64 (weights widened, autograd, AdamW on float64 parameters); `logits`, `loss`, `grad.*` and `losses` "
        "are float64 results rounded once to F32.",
        f"- `losses[k]` is the loss computed at AdamW step k + 1 (before its update), k = 0 … {STEPS - 1}; hyper-parameters in "
        "the metadata (`lr`, `beta1`, `beta2`, `eps`, `weight_decay`, `decay_rule`); no clipping, constant lr.",
        "- Logits at padded positions are computed like any other position (with the padding masked as keys); they do not "
        "reach the loss or the gradients.",
        "- The key rows (d_model … 2·d_model − 1) of every `in_proj_bias` gradient are 0 in exact arithmetic (softmax "
        "ignores a constant added to all of a query's scores); the stored values are float64 round-off (~1e-17), and a "
        "float32 implementation gets float32 round-off there: compare gradients with an absolute tolerance.",
        "- `torch_float32_deviation` (metadata): how far PyTorch's own float32 run of the same case is from these values "
        "(max |Δ| and max |Δ| / max |reference| for logits, loss, all gradients together, losses).",
        "",
        "## Files",
        "",
    ]
    for name, kind, config, about, tensors, meanings, metadata, losses in cases:
        weights = [k for k, m in meanings.items() if m.startswith("parameter")]
        count = sum(tensors[k].numel() for k in weights)
        lines += [
            f"### parity/{name}.safetensors",
            "",
            f"`{kind}`: {about}. {len(weights)} parameter tensors, {count:,} parameters.",
            "",
            f"Config: `{metadata['config']}`.",
            "",
            f"Losses: {', '.join(f'{v:.4f}' for v in losses.tolist())}.",
            "",
            f"PyTorch float32 vs these values: `{metadata['torch_float32_deviation']}`.",
            "",
            "| tensor | dtype | shape | meaning |",
            "|---|---|---|---|",
        ]
        for key, tensor in tensors.items():
            if key in weights or key.startswith("grad."):
                continue
            lines.append(f"| `{key}` | {DTYPE_NAMES[tensor.dtype]} | [{', '.join(str(s) for s in tensor.shape)}] | {meanings[key]} |")
        lines += [
            "| *every parameter* | F32 | as in `scripts/parity/README.md` | the weights |",
            "| `grad.<parameter>` | F32 | the parameter's | ∂loss/∂parameter |",
            "",
            f"{sizes[name]:,} bytes.",
            "",
        ]
    lines += [f"Total: {sum(sizes.values()):,} bytes in {len(cases)} files.", ""]
    return "\n".join(lines)


def main():
    spec = read_spec()
    cases = [make_case(spec, *case) for case in CASES]
    os.makedirs(OUT, exist_ok=True)
    expected = {f"{case[0]}.safetensors" for case in cases}
    for stale in sorted(set(os.listdir(OUT)) - expected):
        if stale.endswith(".safetensors"):
            os.remove(os.path.join(OUT, stale))
    sizes = {}
    for name, kind, config, about, tensors, meanings, metadata, losses in cases:
        path = os.path.join(OUT, f"{name}.safetensors")
        save_file(tensors, path, metadata)
        stored, stored_metadata = load_file(path)
        assert stored_metadata == metadata and list(stored) == list(tensors), name
        for key, tensor in tensors.items():
            assert stored[key].dtype == tensor.dtype and torch.equal(stored[key], tensor), f"{name}/{key}"
        # The weights load into a fresh model with strict names and shapes.
        fresh = build(kind, json.loads(metadata["config"]))
        fresh.load_state_dict({k: v for k, v in stored.items() if k in fresh.state_dict()}, strict=True)
        sizes[name] = os.path.getsize(path)
        print(f"{name:36s} {sizes[name]:9,d} bytes  losses {losses[0]:.4f} → {losses[-1]:.4f}  "
              f"float32 vs float64: {metadata['torch_float32_deviation']}")
    with open(os.path.join(OUT, "README.md"), "w", encoding="utf-8") as stream:
        stream.write(readme(cases, sizes))
    total = sum(sizes.values())
    print(f"total {total:,} bytes in {len(cases)} files")
    assert total < 3_000_000, "parity golden data must stay under 3 MB"


if __name__ == "__main__":
    main()
