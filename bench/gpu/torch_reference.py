#!/usr/bin/env python3
"""PyTorch reference timings for the GPU comparison, same shapes and FP32 as our `compare` runner.

Writes the same JSON layout as `gpu-transformer-bench compare --json` (a "results" list of
{op, shape, impl, flops, bytes, unit, median_ms, min_ms, reps, rate, best_rate}), so that
bench/gpu/report.py can pair the measurements by (op, shape).

  sgemm        torch.matmul, float32, TF32 off (impl torch_fp32) and on (torch_tf32, for reference)
  attention    q, k, v [B, H, T, d]: the math written out (impl torch_math: Q·Kᵀ·scale, mask,
               softmax, ·V) and F.scaled_dot_product_attention (torch_sdpa; PyTorch ≥ 2.0), FP32,
               forward or forward+backward (autograd from a random dO)
  softmax / layernorm  [rows, cols] forward, and backward alone (autograd.grad of the saved graph)
  train_step   one AdamW step of a decoder-only Transformer LM (tokens/s); our side comes with the trainer

FLOP and byte conventions are those of src/Kernels.Testing/Workloads (attention: 4·B·H·T²·d forward,
halved when causal, ×3.5 for forward+backward). Timing: warm-up runs, then timed runs each
followed by a device synchronization (CUDA events on a GPU); median and fastest.

    python3 bench/gpu/torch_reference.py --device cuda --json torch.json [--sgemm 1024,2048 ...]
"""
import argparse
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


def record(results, timer, op, shape, impl, fn, flops, bytes_, unit="GFLOP/s", note=None, tokens=0):
    if timer.expired():
        results.append(dict(op=op, shape=shape, impl=impl, flops=flops, bytes=bytes_, unit=unit, error="skipped: time limit"))
        log(f"{op} {shape} {impl}: skipped (time limit)")
        return
    try:
        median, best, reps = timer.measure(fn)
    except RuntimeError as e:  # e.g. CUDA out of memory
        message = str(e).splitlines()[0]
        results.append(dict(op=op, shape=shape, impl=impl, flops=flops, bytes=bytes_, unit=unit, error=message))
        log(f"{op} {shape} {impl}: ERROR {message}")
        if timer.device.type == "cuda":
            torch.cuda.empty_cache()
        return
    rate = rate_of(unit, flops, bytes_, tokens, median)
    entry = dict(op=op, shape=shape, impl=impl, flops=flops, bytes=bytes_, unit=unit,
                 median_ms=median * 1e3, min_ms=best * 1e3, reps=reps, rate=rate, best_rate=rate_of(unit, flops, bytes_, tokens, best))
    if note:
        entry["note"] = note
    if tokens:
        entry["tokens_per_step"] = tokens
    results.append(entry)
    log(f"{op} {shape} {impl}: median {median * 1e3:.3f} ms, min {best * 1e3:.3f} ms ({reps} runs), {rate:.1f} {unit}")


def log(line):
    print(f"[torch {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def set_tf32(enabled):
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def run_sgemm(args, timer, device, results):
    for n in parse_ints(args.sgemm):
        generator = torch.Generator(device="cpu").manual_seed(n)
        a = torch.randn(n, n, generator=generator).to(device)
        b = torch.randn(n, n, generator=generator).to(device)
        shape = {"n": n, "layout": "NN"}
        flops, bytes_ = 2.0 * n ** 3, 4.0 * 3 * n * n
        set_tf32(False)
        record(results, timer, "sgemm", shape, "torch_fp32", lambda: torch.matmul(a, b), flops, bytes_)
        if device.type == "cuda":
            set_tf32(True)
            record(results, timer, "sgemm", shape, "torch_tf32", lambda: torch.matmul(a, b), flops, bytes_)
            set_tf32(False)
        del a, b


def math_attention(q, k, v, causal, scale):
    s = torch.matmul(q, k.transpose(-2, -1)) * scale
    if causal:
        t = q.shape[-2]
        mask = torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1)
        s = s.masked_fill(mask, float("-inf"))
    return torch.matmul(torch.softmax(s, dim=-1), v)


def run_attention(args, timer, device, results):
    set_tf32(False)
    sdpa = getattr(F, "scaled_dot_product_attention", None)
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
                    implementations = [("torch_math", lambda: math_attention(q, k, v, causal, scale))]
                    if sdpa is not None:
                        implementations.append(("torch_sdpa", lambda: sdpa(q, k, v, is_causal=causal)))
                    for impl, forward in implementations:
                        if backward:
                            def step(forward=forward):
                                out = forward()
                                torch.autograd.grad(out, (q, k, v), do)
                        else:
                            def step(forward=forward):
                                with torch.no_grad():
                                    forward()
                        record(results, timer, "attention", shape, impl, step, flops, bytes_)
                    if sdpa is None:
                        results.append(dict(op="attention", shape=shape, impl="torch_sdpa", flops=flops, bytes=bytes_, unit="GFLOP/s",
                                            error=f"F.scaled_dot_product_attention needs PyTorch >= 2.0 (this is {torch.__version__})"))
                    del q, k, v, do
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
            record(results, timer, "softmax_fwd", shape, "torch", lambda: torch.softmax(x, dim=-1), 5 * elements, 4 * 2 * elements, "GB/s")
        y = torch.softmax(x, dim=-1)
        record(results, timer, "softmax_bwd", shape, "torch", lambda: torch.autograd.grad(y, x, dy, retain_graph=True), 4 * elements, 4 * 3 * elements, "GB/s")
        del y
        gamma = torch.randn(cols, generator=generator).to(device).requires_grad_(True)
        beta = torch.randn(cols, generator=generator).to(device).requires_grad_(True)
        with torch.no_grad():
            record(results, timer, "layernorm_fwd", shape, "torch", lambda: F.layer_norm(x, (cols,), gamma, beta), 7 * elements,
                   4 * (2 * elements + 2 * cols + 2 * rows), "GB/s")
        y = F.layer_norm(x, (cols,), gamma, beta)
        record(results, timer, "layernorm_bwd", shape, "torch", lambda: torch.autograd.grad(y, (x, gamma, beta), dy, retain_graph=True),
               9 * elements, 4 * (3 * elements + 3 * cols + 2 * rows), "GB/s")
        del x, dy, y, gamma, beta


class DecoderLM(torch.nn.Module):
    """Decoder-only LM (GPT-style: self-attention with a causal mask, no cross-attention), post-LN as nn.Transformer's default."""

    def __init__(self, vocab, d_model, nhead, layers, d_ff, max_len):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, d_model)
        position = torch.arange(max_len).unsqueeze(1)
        rate = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(position * rate)
        pe[:, 1::2] = torch.cos(position * rate)
        self.register_buffer("pe", pe)
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
           note=f"{parameters} parameters, nn.TransformerEncoderLayer post-LN, FP32, AdamW", tokens=tokens_per_step)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sections", default="sgemm,attention,rowwise,train")
    parser.add_argument("--sgemm", default="1024,2048,4096,8192")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dims", default="64,128")
    parser.add_argument("--lengths", default="512,1024,2048,4096")
    parser.add_argument("--causal", default="false,true")
    parser.add_argument("--passes", default="fwd,fwdbwd")
    parser.add_argument("--rowwise", default="8192x4096")
    parser.add_argument("--train", default="vocab=8192,d_model=256,nhead=8,layers=4,d_ff=1024,T=128,batch=16")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--max-reps", type=int, default=50)
    parser.add_argument("--min-time", type=float, default=0.3)
    parser.add_argument("--time-limit", type=float, default=float("inf"))
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: PyTorch's default)")
    parser.add_argument("--json", required=True)
    args = parser.parse_args()

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
    results = []
    sections = args.sections.split(",")
    runners = {"sgemm": run_sgemm, "attention": run_attention, "rowwise": run_rowwise, "train": run_train}
    for section in sections:
        runners[section](args, timer, device, results)
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump({"info": info, "arguments": sys.argv[1:], "results": results}, f, indent=2)
    log(f"wrote {args.json} ({len(results)} measurements)")


if __name__ == "__main__":
    main()
