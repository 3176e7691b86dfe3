#!/usr/bin/python3
"""Golden reference data for GpuTransformer's kernels, computed with PyTorch on the CPU.

Run with Debian's interpreter (torch 1.13, numpy; the `python3` first on PATH cannot import torch):

    /usr/bin/python3 scripts/golden/make_kernel_golden.py

Writes tests/golden/kernels/<case>.safetensors and tests/golden/README.md (generated: edit this
script, not the README). Every input is drawn as float32 from a fixed seed and stored exactly as a
kernel receives it; the math runs in float64 (torch ops and autograd on the widened inputs) and
each output is rounded to float32 once. Running the script again rewrites identical bytes.
"""

import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import load_file, save_file  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GOLDEN = os.path.join(ROOT, "tests", "golden")
KERNELS = os.path.join(GOLDEN, "kernels")
GENERATOR = "scripts/golden/make_kernel_golden.py"

torch.set_num_threads(1)

CONVENTIONS = {
    "generator": GENERATOR,
    "torch": torch.__version__,
    "inputs": "float32 from fixed seeds, stored exactly as the kernels receive them",
    "math": "float64: torch ops and autograd on the float32 inputs widened to float64",
    "outputs": "float32: each float64 result rounded once",
}


class Golden:
    """One file: tensors with their meaning (for the README), metadata, and prose."""

    def __init__(self, name, title, about, **metadata):
        self.name = name
        self.title = title
        self.about = about
        self.metadata = {"case": name, **CONVENTIONS, **{k: str(v) for k, v in metadata.items()}}
        self.tensors = {}
        self.meanings = {}

    def input(self, name, tensor, meaning):
        """An input: float32 as drawn (integers as given)."""
        assert tensor.dtype != torch.float64, name
        return self._add(name, tensor, meaning)

    def output(self, name, tensor, meaning):
        """An output computed in float64, stored rounded to float32."""
        assert tensor.dtype == torch.float64, f"{name} must be computed in float64"
        return self._add(name, tensor.detach().to(torch.float32), meaning)

    def _add(self, name, tensor, meaning):
        assert name not in self.tensors, name
        assert tensor.dtype in (torch.int64, torch.int32) or torch.isfinite(tensor).all(), f"{self.name}/{name} is not finite"
        self.tensors[name] = tensor.contiguous()
        self.meanings[name] = meaning
        return tensor


def generator(seed):
    return torch.Generator().manual_seed(seed)


def randn(g, *shape, scale=1.0):
    return torch.randn(*shape, generator=g, dtype=torch.float32) * scale


def wide(tensor):
    """float32 input -> float64 leaf that records gradients."""
    return tensor.double().requires_grad_(True)


# --------------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------------


def attention(q, k, v, causal, key_padding):
    """Scaled dot-product attention in plain ops. q [B, Tq, H, d], k/v [B, Tk, H, d];
    returns O [B, Tq, H, d], LSE [B, H, Tq], P [B, H, Tq, Tk]."""
    batch, tq, heads, d = q.shape
    tk = k.shape[1]
    scale = 1.0 / math.sqrt(d)
    qh, kh, vh = (x.permute(0, 2, 1, 3) for x in (q, k, v))  # [B, H, T, d]
    scores = (qh @ kh.transpose(-1, -2)) * scale  # [B, H, Tq, Tk]
    masked = torch.zeros(batch, 1, tq, tk, dtype=torch.bool)
    if causal:
        masked = masked | torch.triu(torch.ones(tq, tk, dtype=torch.bool), 1)
    if key_padding is not None:
        masked = masked | key_padding.bool()[:, None, None, :]
    scores = scores.masked_fill(masked, -math.inf)
    lse = torch.logsumexp(scores, dim=-1)
    p = torch.softmax(scores, dim=-1)
    o = (p @ vh).permute(0, 2, 1, 3)
    return o, lse, p, masked


def check_against_multi_head_attention(q, k, v, causal, key_padding, o, p):
    """Our layout and masks against PyTorch's own attention (identity projections, float64)."""
    batch, tq, heads, d = q.shape
    tk = k.shape[1]
    e = heads * d
    eye = torch.eye(e, dtype=torch.float64)
    attn_mask = torch.triu(torch.ones(tq, tk, dtype=torch.bool), 1) if causal else None
    out, weights = F.multi_head_attention_forward(
        q.reshape(batch, tq, e).transpose(0, 1), k.reshape(batch, tk, e).transpose(0, 1), v.reshape(batch, tk, e).transpose(0, 1),
        e, heads, torch.cat([eye, eye, eye]), torch.zeros(3 * e, dtype=torch.float64), None, None, False, 0.0,
        eye, torch.zeros(e, dtype=torch.float64), training=False,
        key_padding_mask=None if key_padding is None else key_padding.bool(), need_weights=True,
        attn_mask=attn_mask, average_attn_weights=False)
    assert torch.allclose(out.transpose(0, 1).reshape(batch, tq, heads, d), o, atol=1e-12, rtol=0)
    assert torch.allclose(weights, p, atol=1e-12, rtol=0)


def attention_case(name, seed, batch, tq, tk, heads, d, causal=False, padded=None, about=""):
    g = generator(seed)
    golden = Golden(
        name, f"attention: {about}",
        "Scaled dot-product attention, heads side by side. S = Q·Kᵀ·scale per (batch, head), masked "
        "entries set to −∞; P = softmax(S) over keys; O = P·V; LSE = log Σ_k exp(S) over unmasked keys "
        "(so P = exp(S − LSE)). Backward: dQ, dK, dV for the upstream gradient dO (autograd). "
        "Layout of q, k, v, dO, O, dQ, dK, dV: dense row-major [B, T, H, d], i.e. [B, T, C] with "
        "C = H·d and head h in columns h·d … h·d + d − 1 (the output of the Q/K/V projections).",
        scale=repr(1.0 / math.sqrt(d)), causal=str(causal).lower(),
        causal_mask="torch.triu(torch.ones(Tq, Tk), 1): query i sees keys j <= i" if causal else "none",
        key_padding_mask="key_padding_mask [B, Tk] int32, 1 = padded key (never attended)" if padded else "none",
        layout="q,k,v,dO,O,dQ,dK,dV: [B,T,H,d] dense row-major; P: [B,H,Tq,Tk]; LSE: [B,H,Tq]")
    q = golden.input("q", randn(g, batch, tq, heads, d), "queries [B, Tq, H, d]")
    k = golden.input("k", randn(g, batch, tk, heads, d), "keys [B, Tk, H, d]")
    v = golden.input("v", randn(g, batch, tk, heads, d), "values [B, Tk, H, d]")
    do = golden.input("dO", randn(g, batch, tq, heads, d), "upstream gradient of O [B, Tq, H, d]")
    key_padding = None
    if padded:
        key_padding = torch.zeros(batch, tk, dtype=torch.int32)
        for row, count in padded.items():
            key_padding[row, tk - count:] = 1
        golden.input("key_padding_mask", key_padding, "1 = padded key position, 0 = real [B, Tk]")

    q64, k64, v64 = wide(q), wide(k), wide(v)
    o, lse, p, masked = attention(q64, k64, v64, causal, key_padding)
    o.backward(do.double())
    check_against_multi_head_attention(q64.detach(), k64.detach(), v64.detach(), causal, key_padding, o.detach(), p.detach())
    assert torch.all(p.detach()[masked.expand_as(p)] == 0)
    if key_padding is not None:
        assert torch.all(k64.grad[key_padding.bool()] == 0) and torch.all(v64.grad[key_padding.bool()] == 0)
    assert torch.allclose(p.detach().sum(dim=-1), torch.ones_like(lse), atol=1e-14)

    golden.output("O", o, "attention output [B, Tq, H, d]")
    golden.output("LSE", lse, "log-sum-exp of the scaled, masked scores over keys [B, H, Tq]")
    golden.output("P", p, "probabilities softmax(S) [B, H, Tq, Tk]; exactly 0 where masked")
    golden.output("dQ", q64.grad, "gradient of q [B, Tq, H, d]")
    golden.output("dK", k64.grad, "gradient of k [B, Tk, H, d]")
    golden.output("dV", v64.grad, "gradient of v [B, Tk, H, d]")
    return golden


def attention_goldens():
    return [
        attention_case("attention_noncausal", 101, batch=2, tq=13, tk=13, heads=3, d=16,
                       about="self-attention, no mask (B 2, T 13, H 3, d 16)"),
        attention_case("attention_causal", 102, batch=2, tq=33, tk=33, heads=2, d=16, causal=True,
                       about="causal self-attention over several key blocks (B 2, T 33, H 2, d 16)"),
        attention_case("attention_keypad", 103, batch=2, tq=19, tk=19, heads=2, d=32, padded={1: 7},
                       about="self-attention with key padding: batch row 1 has its last 7 keys padded (B 2, T 19, H 2, d 32); "
                             "queries at padded positions are computed like any other (as PyTorch does), and dK, dV are 0 at padded keys"),
        attention_case("attention_cross", 104, batch=2, tq=7, tk=21, heads=1, d=64,
                       about="cross-attention, Tq ≠ Tk, no mask (B 2, Tq 7, Tk 21, H 1, d 64)"),
    ]


# --------------------------------------------------------------------------------------------
# Row-wise: softmax, layernorm, cross-entropy
# --------------------------------------------------------------------------------------------


def softmax_golden():
    g = generator(201)
    golden = Golden(
        "softmax", "softmax over the last dimension, forward and backward",
        "y = softmax(x) along each row; dx = y ⊙ (dy − Σ_j dy_j·y_j). Row 3 is shifted by +100 "
        "(exp overflows in float32 without subtracting the row maximum); row 5 is constant (y uniform).")
    x = randn(g, 9, 67, scale=3.0)
    x[3] += 100.0
    x[5] = 0.25
    golden.input("x", x, "logits [N, C]")
    dy = golden.input("dy", randn(g, 9, 67), "upstream gradient [N, C]")
    x64 = wide(x)
    y = torch.softmax(x64, dim=-1)
    y.backward(dy.double())
    golden.output("y", y, "softmax(x) [N, C]")
    golden.output("dx", x64.grad, "gradient of x [N, C]")
    return golden


def softmax_causal_golden():
    g = generator(202)
    golden = Golden(
        "softmax_causal", "causally masked softmax (attention scores), forward and backward",
        "x holds [R, T, T] score matrices (R = batch·heads); in matrix r, row i is a softmax over "
        "columns j ≤ i only (mask torch.triu(ones(T, T), 1)). x and dy hold random values at masked "
        "positions that a kernel must ignore; y and dx are exactly 0 there.",
        causal_mask="torch.triu(torch.ones(T, T), 1)")
    x = golden.input("x", randn(g, 3, 21, 21, scale=3.0), "scores [R, T, T], masked entries arbitrary")
    dy = golden.input("dy", randn(g, 3, 21, 21), "upstream gradient [R, T, T], masked entries arbitrary")
    x64 = wide(x)
    masked = torch.triu(torch.ones(21, 21, dtype=torch.bool), 1)
    y = torch.softmax(x64.masked_fill(masked, -math.inf), dim=-1)
    y.backward(dy.double())
    assert torch.all(x64.grad[:, masked] == 0)
    golden.output("y", y, "masked softmax [R, T, T], 0 above the diagonal")
    golden.output("dx", x64.grad, "gradient of x [R, T, T], 0 above the diagonal")
    return golden


def layernorm_golden():
    g = generator(301)
    eps = 1e-5
    golden = Golden(
        "layernorm", "layer normalization over the last dimension, forward and backward",
        "y = (x − mean)·rstd·γ + β per row, mean and biased variance over C, rstd = 1/√(var + eps), "
        "eps = 1e-5 (torch.nn.functional.layer_norm). Backward: dx, dγ, dβ for upstream dy (dγ and dβ "
        "summed over rows). Row 4 is shifted by +100 (a one-pass E[x²] − E[x]² variance loses digits there).",
        eps=repr(eps))
    x = randn(g, 11, 47, scale=2.0) + 0.5
    x[4] += 100.0
    golden.input("x", x, "input [N, C]")
    gamma = golden.input("gamma", randn(g, 47, scale=0.5) + 1.0, "scale γ [C]")
    beta = golden.input("beta", randn(g, 47, scale=0.5), "shift β [C]")
    dy = golden.input("dy", randn(g, 11, 47), "upstream gradient [N, C]")
    x64, gamma64, beta64 = wide(x), wide(gamma), wide(beta)
    y = F.layer_norm(x64, (47,), gamma64, beta64, eps=eps)
    y.backward(dy.double())
    xd = x.double()
    mean = xd.mean(dim=-1)
    rstd = 1.0 / torch.sqrt(xd.var(dim=-1, unbiased=False) + eps)
    assert torch.allclose(((xd - mean[:, None]) * rstd[:, None]) * gamma.double() + beta.double(), y.detach(), atol=1e-12)
    golden.output("y", y, "normalized output [N, C]")
    golden.output("mean", mean, "row means [N]")
    golden.output("rstd", rstd, "row 1/√(var + eps) [N]")
    golden.output("dx", x64.grad, "gradient of x [N, C]")
    golden.output("dgamma", gamma64.grad, "gradient of γ [C]")
    golden.output("dbeta", beta64.grad, "gradient of β [C]")
    return golden


def cross_entropy_golden(name, seed, smoothing):
    g = generator(seed)
    n, classes = 13, 131
    about = (
        "Row-wise cross-entropy of logits against integer targets (F.cross_entropy). Rows whose "
        "target is −100 are ignored: loss 0, gradient 0, and not counted in the mean. loss is the mean "
        "over the counted rows; dlogits is the gradient of that mean (so it carries 1/count). Row 2 is "
        "shifted by +100 (needs the max-subtraction); row 7 has one confident logit (+30).")
    if smoothing:
        about += (
            f" Label smoothing ε = {smoothing}: per-row loss = (1 − ε)·(−log p_target) + ε·mean_j(−log p_j) "
            "(PyTorch's definition: ε spread uniformly over all classes, the target included).")
    golden = Golden(name, "cross-entropy" + (f" with label smoothing {smoothing}" if smoothing else "") + " and ignore_index −100",
                    about, ignore_index="-100", label_smoothing=repr(smoothing), reduction="mean over rows with target != -100")
    logits = randn(g, n, classes, scale=2.0)
    logits[2] += 100.0
    logits[7, 5] += 30.0
    golden.input("logits", logits, "logits [N, V]")
    targets = torch.randint(0, classes, (n,), generator=g, dtype=torch.int64)
    targets[7] = 5
    targets[4] = -100
    targets[10] = -100
    golden.input("targets", targets, "target class per row, −100 = ignored [N] (int64)")
    logits64 = wide(logits)
    losses = F.cross_entropy(logits64, targets, ignore_index=-100, label_smoothing=smoothing, reduction="none")
    loss = F.cross_entropy(logits64, targets, ignore_index=-100, label_smoothing=smoothing, reduction="mean")
    loss.backward()

    counted = targets != -100
    logp = torch.log_softmax(logits.double(), dim=-1)
    nll = -logp.gather(1, targets.clamp(min=0)[:, None])[:, 0]
    manual = ((1 - smoothing) * nll + smoothing * (-logp.mean(dim=-1))) * counted
    assert torch.allclose(manual, losses.detach(), atol=1e-12)
    assert torch.allclose(manual.sum() / counted.sum(), loss.detach(), atol=1e-12)
    assert torch.all(logits64.grad[~counted] == 0)

    golden.output("losses", losses, "per-row loss, 0 for ignored rows [N]")
    golden.output("loss", loss, "mean loss over rows with target ≠ −100 (scalar)")
    golden.output("dlogits", logits64.grad, "gradient of the mean loss w.r.t. logits [N, V]")
    return golden


# --------------------------------------------------------------------------------------------
# Pointwise: positional encoding, GELU, ReLU
# --------------------------------------------------------------------------------------------


def positional_encoding_golden(name, positions, d):
    golden = Golden(
        name, f"sinusoidal positional encoding table, T {positions}, d {d} ({'even' if d % 2 == 0 else 'odd'})",
        "The paper's table: PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(pos / 10000^(2i/d)), "
        "pos = 0 … T−1; for odd d the last column is a sine. Computed in float64. A float32 kernel "
        "differs by up to ~2e-4 at pos ≈ 3000 (the float32 angle pos·ω carries ~1e-7 relative error).",
        formula="PE[pos,2i]=sin(pos/10000^(2i/d)), PE[pos,2i+1]=cos(pos/10000^(2i/d))", T=positions, d=d)
    position = torch.arange(positions, dtype=torch.float64)[:, None]
    pair = torch.arange(0, d, 2, dtype=torch.float64)  # 2i
    angle = position / torch.pow(torch.tensor(10000.0, dtype=torch.float64), pair / d)
    table = torch.zeros(positions, d, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, : d // 2])
    golden.output("pe", table, "PE table [T, d]")
    return golden


def gelu_golden():
    g = generator(401)
    golden = Golden(
        "gelu", "GELU, tanh approximation and exact (erf), forward and backward",
        "tanh form: y = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) (F.gelu(x, approximate='tanh')); "
        "exact form: y = 0.5·x·(1 + erf(x/√2)) (F.gelu(x), nn.GELU()). dx = dy·y'(x). x covers "
        "[−10, 10] on a grid (0 included) plus random values.")
    x = torch.cat([torch.linspace(-10, 10, 201, dtype=torch.float32), randn(g, 170, scale=3.0)]).reshape(7, 53)
    golden.input("x", x, "input [7, 53]")
    dy = golden.input("dy", randn(g, 7, 53), "upstream gradient [7, 53]")
    for suffix, approximate in (("tanh", "tanh"), ("exact", "none")):
        x64 = wide(x)
        y = F.gelu(x64, approximate=approximate)
        y.backward(dy.double())
        golden.output(f"y_{suffix}", y, f"GELU ({'tanh approximation' if suffix == 'tanh' else 'erf'}) of x [7, 53]")
        golden.output(f"dx_{suffix}", x64.grad, f"gradient of x through the {suffix} GELU [7, 53]")
    return golden


def relu_golden():
    g = generator(402)
    golden = Golden(
        "relu", "ReLU forward and backward",
        "y = max(x, 0); dx = dy where x > 0, else 0 (PyTorch's convention: the gradient at exactly "
        "x = 0 is 0). Every 5th element of x is exactly 0.")
    x = randn(g, 7, 53)
    x.view(-1)[::5] = 0.0
    golden.input("x", x, "input [7, 53], every 5th element 0")
    dy = golden.input("dy", randn(g, 7, 53), "upstream gradient [7, 53]")
    x64 = wide(x)
    y = F.relu(x64)
    y.backward(dy.double())
    assert torch.all(x64.grad.view(-1)[::5] == 0)
    golden.output("y", y, "relu(x) [7, 53]")
    golden.output("dx", x64.grad, "gradient of x [7, 53]")
    return golden


# --------------------------------------------------------------------------------------------
# Optimizer
# --------------------------------------------------------------------------------------------


def adamw_golden():
    g = generator(501)
    lr, beta1, beta2, eps, weight_decay, steps, count = 1e-2, 0.9, 0.98, 1e-9, 0.01, 5, 37
    golden = Golden(
        "adamw", f"AdamW, {steps} steps of torch.optim.AdamW",
        "torch.optim.AdamW(lr, betas, eps, weight_decay), amsgrad off, on one parameter vector, step t = 1 … "
        f"{steps} with gradient grads[t−1]: p ← p·(1 − lr·wd); m ← β1·m + (1 − β1)·g; v ← β2·v + (1 − β2)·g²; "
        "p ← p − (lr / (1 − β1ᵗ))·m / (√v / √(1 − β2ᵗ) + eps). Elements 0–2 get zero gradients (pure decay), "
        "elements 3–5 tiny ones (~1e-10, where eps dominates √v̂ — catches eps inside the square root), "
        "element 6 large ones (~1e3).",
        lr=repr(lr), beta1=repr(beta1), beta2=repr(beta2), eps=repr(eps), weight_decay=repr(weight_decay), steps=steps)
    params0 = golden.input("params0", randn(g, count), "parameter before the first step [P]")
    grads = randn(g, steps, count)
    grads[:, 0:3] = 0.0
    grads[:, 3:6] *= 1e-10
    grads[:, 6] *= 1e3
    golden.input("grads", grads, "gradient used at step t = 1 … 5 [steps, P]")

    p = params0.double().clone().requires_grad_(True)
    optimizer = torch.optim.AdamW([p], lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay, amsgrad=False)
    after = []
    m = torch.zeros(count, dtype=torch.float64)
    v = torch.zeros(count, dtype=torch.float64)
    manual = params0.double().clone()
    for t in range(1, steps + 1):
        p.grad = grads[t - 1].double().clone()
        optimizer.step()
        after.append(p.detach().clone())
        grad = grads[t - 1].double()
        manual = manual * (1 - lr * weight_decay)
        m = beta1 * m + (1 - beta1) * grad
        v = beta2 * v + (1 - beta2) * grad * grad
        manual = manual - (lr / (1 - beta1 ** t)) * m / (v.sqrt() / math.sqrt(1 - beta2 ** t) + eps)
        assert torch.allclose(manual, p.detach(), atol=1e-13, rtol=1e-13), t
    state = optimizer.state[p]
    golden.output("params", torch.stack(after), "parameter after step t = 1 … 5 [steps, P]")
    golden.output("m", state["exp_avg"], "first moment after the last step [P]")
    golden.output("v", state["exp_avg_sq"], "second moment after the last step [P]")
    return golden


# --------------------------------------------------------------------------------------------
# Files and README
# --------------------------------------------------------------------------------------------


def all_goldens():
    return [
        *attention_goldens(),
        softmax_golden(),
        softmax_causal_golden(),
        layernorm_golden(),
        cross_entropy_golden("cross_entropy", 601, 0.0),
        cross_entropy_golden("cross_entropy_smoothing", 602, 0.1),
        positional_encoding_golden("positional_encoding_even", 3001, 10),
        positional_encoding_golden("positional_encoding_odd", 3001, 7),
        gelu_golden(),
        relu_golden(),
        adamw_golden(),
    ]


DTYPE_NAMES = {torch.float32: "F32", torch.int64: "I64", torch.int32: "I32"}


def readme(goldens, sizes):
    lines = [
        "# Golden data",
        "",
        f"Generated by `{GENERATOR}` (PyTorch {torch.__version__}, CPU; run it with Debian's `/usr/bin/python3`). "
        "Do not edit by hand: change the script and run it again; it rewrites the same bytes for the same torch.",
        "",
        "## Conventions (every file)",
        "",
        "- Format: safetensors (8-byte little-endian header length, JSON header padded with spaces to 8 bytes, "
        "raw little-endian data), written by `scripts/golden/safetensors_io.py`; read with `SafeTensors.Read`.",
        "- Inputs are float32 drawn from fixed seeds and stored exactly as a kernel receives them. The math runs in "
        "float64 (torch ops and autograd on the widened inputs); each output is rounded to float32 once. "
        "`__metadata__` says so (`inputs`, `math`, `outputs`) and names the case and its hyper-parameters.",
        "- Integer tensors: targets are I64 (PyTorch's class indices), the key padding mask is I32.",
        "- Shapes are small (≤ 64 per dimension except the positional-encoding tables) and ragged, so a kernel's "
        "tiles meet partial edges. Tolerances belong to the tests that use the files: the data is exact to float32 rounding.",
        "- Shapes below are as stored (row-major, last dimension fastest); `[]` is a scalar.",
        "",
        "## Files",
        "",
    ]
    for golden in goldens:
        lines += [f"### kernels/{golden.name}.safetensors", "", f"{golden.title[0].upper()}{golden.title[1:]}. {golden.about}", ""]
        extra = {k: v for k, v in golden.metadata.items() if k not in CONVENTIONS and k != "case"}
        if extra:
            lines += ["Metadata: " + "; ".join(f"`{k}` = `{v}`" for k, v in extra.items()) + ".", ""]
        lines += ["| tensor | dtype | shape | meaning |", "|---|---|---|---|"]
        for name, tensor in golden.tensors.items():
            shape = ", ".join(str(s) for s in tensor.shape)
            lines.append(f"| `{name}` | {DTYPE_NAMES[tensor.dtype]} | [{shape}] | {golden.meanings[name]} |")
        lines += ["", f"{sizes[golden.name]:,} bytes.", ""]
    lines += [f"Total: {sum(sizes.values()):,} bytes in {len(goldens)} files.", ""]
    return "\n".join(lines)


def main():
    goldens = all_goldens()
    os.makedirs(KERNELS, exist_ok=True)
    expected = {f"{g.name}.safetensors" for g in goldens}
    for stale in sorted(set(os.listdir(KERNELS)) - expected):
        if stale.endswith(".safetensors"):
            os.remove(os.path.join(KERNELS, stale))
    sizes = {}
    for golden in goldens:
        path = os.path.join(KERNELS, f"{golden.name}.safetensors")
        save_file(golden.tensors, path, golden.metadata)
        tensors, metadata = load_file(path)
        assert metadata == golden.metadata, golden.name
        assert list(tensors) == list(golden.tensors), golden.name
        for name, tensor in golden.tensors.items():
            assert tensors[name].dtype == tensor.dtype and torch.equal(tensors[name], tensor), f"{golden.name}/{name}"
        sizes[golden.name] = os.path.getsize(path)
        print(f"{golden.name:28s} {sizes[golden.name]:8,d} bytes  " + ", ".join(f"{n}{list(t.shape)}" for n, t in golden.tensors.items()))
    with open(os.path.join(GOLDEN, "README.md"), "w", encoding="utf-8") as stream:
        stream.write(readme(goldens, sizes))
    total = sum(sizes.values())
    print(f"total {total:,} bytes in {len(goldens)} files")
    assert total < 1_000_000, "golden data must stay well under 1 MB"


if __name__ == "__main__":
    main()
