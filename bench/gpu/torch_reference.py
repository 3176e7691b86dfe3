#!/usr/bin/env python3
"""PyTorch reference timings for the GPU comparison, same shapes and FP32 as our `compare` runner.

Writes the measurements in the layout of `gpu-transformer-bench compare` ({op, shape, impl, label,
flops, bytes, unit, median_ms, min_ms, reps, rate, best_rate}), so that bench/gpu/report.py can
pair them by (op, shape): --jsonl appends one line per measurement as soon as it is taken
({"run": info} first, then {"measurement": …}; a killed run keeps what it measured), --json
writes them all at the end. Each measurement's "label" says what PyTorch really ran:

  sgemm        torch.mm, float32: TF32 off = cuBLAS SGEMM (impl torch_fp32); TF32 on (torch_tf32)
               only as a reference for what the tensor cores give
  attention    q, k, v [B, H, T, d]: the math written out (impl torch_math: Q·Kᵀ·scale, mask,
               softmax, ·V, TF32 off); F.scaled_dot_product_attention at FP32 held to its
               memory-efficient backend (torch_sdpa: the CUTLASS kernel PyTorch 2.x picks for FP32 —
               FlashAttention-2 takes only FP16/BF16); and at BF16 held to its flash backend
               (torch_sdpa_bf16: FlashAttention-2, an upper reference, not a like-for-like FP32 one);
               forward or forward+backward (autograd from a random dO)
  softmax / layernorm  [rows, cols] forward, and backward alone (autograd.grad of the saved graph)
  train_step   one AdamW step of a decoder-only Transformer LM (tokens/s), eager FP32
  generate     greedy generation, batch 1, with a key/value cache: our presets' model (pre-LN, GELU
               tanh, tied embeddings), the prompt in one prefill, then one position per token (tokens/s)

FLOP and byte conventions are those of src/Kernels.Testing/Workloads (attention: 4·B·H·T²·d forward,
halved when causal, ×3.5 for forward+backward). Timing: warm-up runs, then timed runs each between
two CUDA events (host clock and a synchronization on the CPU); median and fastest.

    python3 bench/gpu/torch_reference.py --device cuda --jsonl torch.jsonl [--sections sgemm,rowwise ...] [--sgemm 1024,2048 ...]
"""
import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def parse_ints(text):
    return [int(x) for x in text.split(",") if x]


class Timer:
    def __init__(self, device, warmup, reps, max_reps, min_seconds, time_limit):
        self.device = device
        self.warmup = warmup
        self.reps = reps
        self.max_reps = max_reps
        self.min_seconds = min_seconds
        self.start = time.monotonic()
        self.time_limit = time_limit

    def expired(self):
        return time.monotonic() - self.start > self.time_limit

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def measure(self, fn):
        for _ in range(self.warmup):
            fn()
        self.sync()
        times = []
        while len(times) < self.reps or (sum(times) < self.min_seconds and len(times) < self.max_reps):
            if self.device.type == "cuda":
                begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                begin.record()
                fn()
                end.record()
                end.synchronize()
                times.append(begin.elapsed_time(end) / 1e3)
            else:
                begin = time.perf_counter()
                fn()
                times.append(time.perf_counter() - begin)
        return statistics.median(times), min(times), len(times)


def rate_of(unit, flops, bytes_, tokens, seconds):
    if unit == "GFLOP/s":
        return flops / seconds / 1e9
    if unit == "GB/s":
        return bytes_ / seconds / 1e9
    return tokens / seconds


class Results(list):
    """The measurements; each one is also appended to the --jsonl file at once (flushed)."""

    def __init__(self, jsonl, info):
        super().__init__()
        self.file = open(jsonl, "a", encoding="utf-8") if jsonl else None
        self.write({"run": info})

    def write(self, line):
        if self.file:
            self.file.write(json.dumps(line) + "\n")
            self.file.flush()

    def append(self, entry):
        super().append(entry)
        self.write({"measurement": entry})


def record(results, timer, op, shape, impl, fn, flops, bytes_, unit="GFLOP/s", note=None, tokens=0, label=None, prepare=None):
    """Times fn and appends the measurement; prepare() runs first (inside the error handling: allocations that may fail)."""
    base = dict(op=op, shape=shape, impl=impl, flops=flops, bytes=bytes_, unit=unit)
    if label:
        base["label"] = label
    if timer.expired():
        results.append(dict(base, error="skipped: time limit"))
        log(f"{op} {shape} {impl}: skipped (time limit)")
        return
    try:
        if prepare:
            prepare()
        median, best, reps = timer.measure(fn)
    except (RuntimeError, NotImplementedError) as e:  # e.g. CUDA out of memory, no kernel for a forced SDPA backend
        message = (str(e).strip().splitlines() or [type(e).__name__])[0]
        results.append(dict(base, error=message))
        log(f"{op} {shape} {impl}: ERROR {message}")
        if timer.device.type == "cuda":
            torch.cuda.empty_cache()
        return
    rate = rate_of(unit, flops, bytes_, tokens, median)
    entry = dict(base, median_ms=median * 1e3, min_ms=best * 1e3, reps=reps, rate=rate, best_rate=rate_of(unit, flops, bytes_, tokens, best),
                 clock="device events" if timer.device.type == "cuda" else "host")
    if note:
        entry["note"] = note
    if tokens:
        entry["tokens_per_step"] = tokens
    results.append(entry)
    log(f"{op} {shape} {impl}: median {median * 1e3:.3f} ms, min {best * 1e3:.3f} ms ({reps} runs), {rate:.1f} {unit}")


def log(line):
    print(f"[torch {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def set_tf32(enabled):
    """TF32 on or off for matmuls and cuDNN (off: FP32 products, i.e. cuBLAS SGEMM)."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    torch.set_float32_matmul_precision("high" if enabled else "highest")


def run_sgemm(args, timer, device, results):
    gpu = device.type == "cuda"
    for n in parse_ints(args.sgemm):
        generator = torch.Generator(device="cpu").manual_seed(n)
        a = torch.randn(n, n, generator=generator).to(device)
        b = torch.randn(n, n, generator=generator).to(device)
        shape = {"n": n, "layout": "NN"}
        flops, bytes_ = 2.0 * n ** 3, 4.0 * 3 * n * n
        set_tf32(False)
        record(results, timer, "sgemm", shape, "torch_fp32", lambda: torch.mm(a, b), flops, bytes_,
               label="cuBLAS SGEMM (torch.mm, TF32 off)" if gpu else "torch.mm FP32 (CPU BLAS)")
        if gpu:
            set_tf32(True)
            record(results, timer, "sgemm", shape, "torch_tf32", lambda: torch.mm(a, b), flops, bytes_,
                   label="cuBLAS TF32 tensor cores (torch.mm, TF32 on; reference only: 10-bit mantissa products)")
            set_tf32(False)
        del a, b


def math_attention(q, k, v, causal, scale):
    s = torch.matmul(q, k.transpose(-2, -1)) * scale
    if causal:
        t = q.shape[-2]
        mask = torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1)
        s = s.masked_fill(mask, float("-inf"))
    return torch.matmul(torch.softmax(s, dim=-1), v)


def sdpa_backend(name):
    """A context that holds F.scaled_dot_product_attention to one backend ("efficient" or "flash"): the label then says what ran."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel  # PyTorch ≥ 2.3
        return sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION if name == "efficient" else SDPBackend.FLASH_ATTENTION)
    except ImportError:
        return torch.backends.cuda.sdp_kernel(enable_flash=name == "flash", enable_math=False, enable_mem_efficient=name == "efficient")


SDPA_LABELS = {
    "torch_sdpa": "SDPA FP32 = memory-efficient attention (CUTLASS kernel; FlashAttention-2 takes no FP32)",
    "torch_sdpa_bf16": "SDPA BF16 = FlashAttention-2 (upper reference: BF16 inputs, not FP32)",
}


def run_attention(args, timer, device, results):
    set_tf32(False)
    sdpa = getattr(F, "scaled_dot_product_attention", None)
    gpu = device.type == "cuda"
    b, h = args.batch, args.heads
    for backward in [p == "fwdbwd" for p in args.passes.split(",")]:
        for causal in [c == "true" for c in args.causal.split(",")]:
            for d in parse_ints(args.head_dims):
                for t in parse_ints(args.lengths):
                    shape = {"b": b, "h": h, "t": t, "d": d, "causal": causal, "pass": "fwdbwd" if backward else "fwd"}
                    forward_flops = 4.0 * b * h * t * t * d * (0.5 if causal else 1.0)
                    flops = forward_flops * (3.5 if backward else 1.0)
                    operand = 4.0 * b * t * h * d
                    bytes_ = (9 if backward else 4) * operand
                    generator = torch.Generator(device="cpu").manual_seed(t * 1000 + d)
                    q, k, v, do = (torch.randn(b, h, t, d, generator=generator).to(device).requires_grad_(backward) for _ in range(4))
                    scale = 1.0 / math.sqrt(d)
                    half = {}

                    def to_bf16():
                        half.update(zip("qkvo", (x.detach().to(torch.bfloat16).requires_grad_(backward) for x in (q, k, v, do))))

                    # (impl, forward, inputs, dO, backend context, prepare)
                    implementations = [("torch_math", lambda: math_attention(q, k, v, causal, scale), lambda: (q, k, v), lambda: do,
                                        contextlib.nullcontext, None)]
                    if sdpa is not None:
                        implementations.append(("torch_sdpa", lambda: sdpa(q, k, v, is_causal=causal), lambda: (q, k, v), lambda: do,
                                                (lambda: sdpa_backend("efficient")) if gpu else contextlib.nullcontext, None))
                        if gpu:
                            implementations.append(("torch_sdpa_bf16", lambda: sdpa(half["q"], half["k"], half["v"], is_causal=causal),
                                                    lambda: (half["q"], half["k"], half["v"]), lambda: half["o"], lambda: sdpa_backend("flash"), to_bf16))
                    for impl, forward, inputs, gradient, backend, prepare in implementations:
                        if backward:
                            def step(forward=forward, inputs=inputs, gradient=gradient, backend=backend):
                                with backend():
                                    out = forward()
                                    torch.autograd.grad(out, inputs(), gradient())
                        else:
                            def step(forward=forward, backend=backend):
                                with torch.no_grad(), backend():
                                    forward()
                        label = SDPA_LABELS.get(impl, "PyTorch math: Q·Kᵀ, mask, softmax, ·V in torch ops (FP32, TF32 off)") if gpu or impl == "torch_math" \
                            else "F.scaled_dot_product_attention FP32 (CPU)"
                        record(results, timer, "attention", shape, impl, step, flops, bytes_, label=label, prepare=prepare)
                    if sdpa is None:
                        results.append(dict(op="attention", shape=shape, impl="torch_sdpa", flops=flops, bytes=bytes_, unit="GFLOP/s", label="F.scaled_dot_product_attention",
                                            error=f"F.scaled_dot_product_attention needs PyTorch >= 2.0 (this is {torch.__version__})"))
                    del q, k, v, do, half
                    if device.type == "cuda":
                        torch.cuda.empty_cache()


def run_rowwise(args, timer, device, results):
    for text in args.rowwise.split(","):
        rows, cols = (int(x) for x in text.split("x"))
        shape = {"rows": rows, "cols": cols}
        generator = torch.Generator(device="cpu").manual_seed(rows + cols)
        x = (torch.randn(rows, cols, generator=generator) * 3).to(device).requires_grad_(True)
        dy = torch.randn(rows, cols, generator=generator).to(device)
        elements = float(rows) * cols
        with torch.no_grad():
            record(results, timer, "softmax_fwd", shape, "torch", lambda: torch.softmax(x, dim=-1), 5 * elements, 4 * 2 * elements, "GB/s",
                   label="torch.softmax")
        y = torch.softmax(x, dim=-1)
        record(results, timer, "softmax_bwd", shape, "torch", lambda: torch.autograd.grad(y, x, dy, retain_graph=True), 4 * elements, 4 * 3 * elements, "GB/s",
               label="autograd of torch.softmax")
        del y
        gamma = torch.randn(cols, generator=generator).to(device).requires_grad_(True)
        beta = torch.randn(cols, generator=generator).to(device).requires_grad_(True)
        with torch.no_grad():
            record(results, timer, "layernorm_fwd", shape, "torch", lambda: F.layer_norm(x, (cols,), gamma, beta), 7 * elements,
                   4 * (2 * elements + 2 * cols + 2 * rows), "GB/s", label="F.layer_norm")
        y = F.layer_norm(x, (cols,), gamma, beta)
        record(results, timer, "layernorm_bwd", shape, "torch", lambda: torch.autograd.grad(y, (x, gamma, beta), dy, retain_graph=True),
               9 * elements, 4 * (3 * elements + 3 * cols + 2 * rows), "GB/s", label="autograd of F.layer_norm (dx, dγ, dβ)")
        del x, dy, y, gamma, beta


def sinusoidal_encoding(max_len, d_model):
    """The paper's positional encoding [max_len, d_model]: sin on even features, cos on odd ones."""
    position = torch.arange(max_len).unsqueeze(1)
    rate = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(max_len, d_model)
    pe[:, 0::2] = torch.sin(position * rate)
    pe[:, 1::2] = torch.cos(position * rate)
    return pe


class DecoderLM(torch.nn.Module):
    """Decoder-only LM (GPT-style: self-attention with a causal mask, no cross-attention), post-LN as nn.Transformer's default."""

    def __init__(self, vocab, d_model, nhead, layers, d_ff, max_len):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, d_model)
        self.register_buffer("pe", sinusoidal_encoding(max_len, d_model))
        layer = torch.nn.TransformerEncoderLayer(d_model, nhead, d_ff, dropout=0.0, batch_first=True)
        self.blocks = torch.nn.TransformerEncoder(layer, layers)
        self.head = torch.nn.Linear(d_model, vocab)
        self.scale = math.sqrt(d_model)

    def forward(self, tokens):
        t = tokens.shape[1]
        x = self.embed(tokens) * self.scale + self.pe[:t]
        mask = torch.triu(torch.full((t, t), float("-inf"), device=tokens.device), 1)
        return self.head(self.blocks(x, mask=mask))


def run_train(args, timer, device, results):
    config = dict(item.split("=") for item in args.train.split(","))
    config = {k: int(v) for k, v in config.items()}
    set_tf32(False)
    torch.manual_seed(0)
    model = DecoderLM(config["vocab"], config["d_model"], config["nhead"], config["layers"], config["d_ff"], config["T"]).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator(device="cpu").manual_seed(1)
    tokens = torch.randint(0, config["vocab"], (config["batch"], config["T"] + 1), generator=generator).to(device)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(inputs).reshape(-1, config["vocab"]), targets.reshape(-1))
        loss.backward()
        optimizer.step()

    parameters = sum(p.numel() for p in model.parameters())
    tokens_per_step = config["batch"] * config["T"]
    record(results, timer, "train_step", config, "torch", step, 0.0, 0.0, "tokens/s",
           note=f"{parameters} parameters, nn.TransformerEncoderLayer post-LN, FP32, AdamW", tokens=tokens_per_step,
           label="PyTorch eager FP32 (nn.TransformerEncoderLayer post-LN, AdamW)")


class CachedDecoder(torch.nn.Module):
    """Our presets' decoder-only LM for generation: embedding·√d + sinusoidal PE, pre-LN blocks
    (causal self-attention, GELU-tanh feed-forward), final LayerNorm, output tied to the embedding;
    keys and values of past positions kept in a cache [layers, 2, H, T, d] (batch 1)."""

    def __init__(self, vocab, d_model, nhead, layers, d_ff, max_len):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, d_model)
        self.register_buffer("pe", sinusoidal_encoding(max_len, d_model))
        self.blocks = torch.nn.ModuleList(torch.nn.ModuleDict(dict(
            norm1=torch.nn.LayerNorm(d_model), in_proj=torch.nn.Linear(d_model, 3 * d_model), out_proj=torch.nn.Linear(d_model, d_model),
            norm2=torch.nn.LayerNorm(d_model), linear1=torch.nn.Linear(d_model, d_ff), linear2=torch.nn.Linear(d_ff, d_model))) for _ in range(layers))
        self.norm = torch.nn.LayerNorm(d_model)
        self.nhead, self.d_model, self.scale = nhead, d_model, math.sqrt(d_model)
        self.cache = None

    def reset(self, max_len, device):
        head = self.d_model // self.nhead
        self.cache = torch.zeros(len(self.blocks), 2, self.nhead, max_len, head, device=device)

    def forward(self, ids, start):
        """ids [n] at positions start… → logits of the last position [vocab]; fills the cache at start…start+n."""
        n, h = ids.shape[0], self.nhead
        x = self.embed(ids) * self.scale + self.pe[start:start + n]  # [n, E]
        causal = None
        if n > 1:
            causal = torch.triu(torch.full((n, start + n), float("-inf"), device=ids.device), start + 1)
        for i, block in enumerate(self.blocks):
            q, k, v = block["in_proj"](block["norm1"](x)).view(n, 3, h, -1).permute(1, 2, 0, 3)  # each [H, n, d]
            self.cache[i, 0, :, start:start + n] = k
            self.cache[i, 1, :, start:start + n] = v
            keys, values = self.cache[i, 0, :, :start + n], self.cache[i, 1, :, :start + n]
            scores = torch.matmul(q, keys.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # [H, n, start+n]
            if causal is not None:
                scores = scores + causal
            attended = torch.matmul(torch.softmax(scores, dim=-1), values).permute(1, 0, 2).reshape(n, -1)
            x = x + block["out_proj"](attended)
            x = x + block["linear2"](F.gelu(block["linear1"](block["norm2"](x)), approximate="tanh"))
        return F.linear(self.norm(x[-1]), self.embed.weight)


def run_generate(args, timer, device, results):
    config = {k: int(v) for k, v in (item.split("=") for item in args.generate.split(","))}
    set_tf32(False)
    torch.manual_seed(0)
    model = CachedDecoder(config["vocab"], config["d_model"], config["nhead"], config["layers"], config["d_ff"], config["T"]).to(device).eval()
    generator = torch.Generator(device="cpu").manual_seed(1)
    prompt = torch.randint(0, config["vocab"], (config["prompt"],), generator=generator).to(device)

    def generate():
        """The new tokens; the cache holds every position but the last token's."""
        tokens = []
        with torch.no_grad():
            model.reset(config["T"], device)
            logits = model(prompt, 0)
            position = config["prompt"]
            for _ in range(config["new"] - 1):
                tokens.append(int(torch.argmax(logits)))  # read back to the host, as a sampler does
                logits = model(torch.tensor(tokens[-1:], device=device), position)
                position += 1
            tokens.append(int(torch.argmax(logits)))
        return tokens

    # The cache must give what the whole sequence gives in one pass (else the reference times a wrong model).
    tokens = generate()
    with torch.no_grad():
        cached = model(torch.tensor(tokens[-1:], device=device), config["prompt"] + len(tokens) - 1)
        model.reset(config["T"], device)
        whole = model(torch.cat([prompt, torch.tensor(tokens, device=device)]), 0)
    if not torch.allclose(cached, whole, rtol=1e-3, atol=1e-3):
        error = f"cached decoding differs from the whole sequence by {float((cached - whole).abs().max()):.3g}: the reference model is wrong"
        results.append(dict(op="generate", shape=config, impl="torch", flops=0.0, bytes=0.0, unit="tokens/s", error=error))
        log(f"generate: ERROR {error}")
        return

    record(results, timer, "generate", config, "torch", generate, 0.0, 0.0, "tokens/s", tokens=config["new"],
           label="PyTorch eager FP32, key/value cache, greedy (argmax read back per token)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sections", default="sgemm,attention,rowwise,train", help="any of sgemm,attention,rowwise,train,generate, run in this order")
    parser.add_argument("--sgemm", default="1024,2048,4096,8192")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dims", default="64,128")
    parser.add_argument("--lengths", default="512,1024,2048,4096")
    parser.add_argument("--causal", default="false,true")
    parser.add_argument("--passes", default="fwd,fwdbwd")
    parser.add_argument("--rowwise", default="8192x4096")
    parser.add_argument("--train", default="vocab=8192,d_model=256,nhead=8,layers=4,d_ff=1024,T=128,batch=16")
    parser.add_argument("--generate", help="generate section: vocab=N,d_model=N,nhead=N,layers=N,d_ff=N,T=N,prompt=N,new=N, "
                        "as `gpu-transformer-bench compare --print-generate-spec PRESET` prints it")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--max-reps", type=int, default=50)
    parser.add_argument("--min-time", type=float, default=0.3)
    parser.add_argument("--time-limit", type=float, default=float("inf"))
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: PyTorch's default)")
    parser.add_argument("--json", help="write every measurement here at the end")
    parser.add_argument("--jsonl", help="append each measurement here as soon as it is taken")
    args = parser.parse_args()
    if "generate" in args.sections.split(",") and not args.generate:
        parser.error("the generate section needs --generate (the shape: gpu-transformer-bench compare --print-generate-spec PRESET)")

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    timer = Timer(device, args.warmup, args.reps, args.max_reps, args.min_time, args.time_limit)
    info = {"torch": torch.__version__, "device": str(device), "python": sys.version.split()[0]}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(name=properties.name, multiprocessors=properties.multi_processor_count,
                    memory_gib=round(properties.total_memory / 2 ** 30, 1), cuda=torch.version.cuda)
    else:
        info.update(name="CPU", threads=torch.get_num_threads())
    log(f"PyTorch {torch.__version__} on {info['name']} ({device})")
    info["arguments"] = sys.argv[1:]
    results = Results(args.jsonl, info)
    runners = {"sgemm": run_sgemm, "attention": run_attention, "rowwise": run_rowwise, "train": run_train, "generate": run_generate}
    for section in args.sections.split(","):
        runners[section](args, timer, device, results)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"info": info, "arguments": sys.argv[1:], "results": list(results)}, f, indent=2)
        log(f"wrote {args.json} ({len(results)} measurements)")


if __name__ == "__main__":
    main()
