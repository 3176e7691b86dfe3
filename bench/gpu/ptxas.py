#!/usr/bin/env python3
"""Assembles every .ptx of a folder with `ptxas -arch=ARCH -v` and records, per kernel, what the
resource report says: registers, spill stores and loads, stack frame, shared and constant memory,
barriers. Where `cuobjdump` is there too it disassembles each cubin and counts the SASS
instructions that tell whether the hot loops are what we meant (FFMA, shared/global loads by width,
local-memory loads/stores). Standard library only.

One JSON line per .ptx file is appended to --jsonl as soon as it is assembled (a killed run keeps
what it did); a file that fails to assemble gets a line with "ok": false and ptxas's message: a
finding, not a stop.

    python3 bench/gpu/ptxas.py --ptx-dir DIR --jsonl ptxas.jsonl [--arch sm_90] [--sass-dir DIR]
        [--jobs N] [--time-limit S]
    python3 bench/gpu/ptxas.py --find     # prints the ptxas it would use, or nothing (exit 1)
"""
import argparse
import collections
import concurrent.futures
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time

# Where CUDA's tools live on the GPU machine besides the PATH (CUDA 13 image, pip wheels).
SEARCH = ["/usr/local/cuda/bin", "/usr/local/cuda-*/bin", "/opt/cuda/bin",
          "/usr/local/lib/python3*/dist-packages/nvidia/cuda_nvcc/bin", "/opt/*/.venv/lib/python3*/site-packages/nvidia/cu*/bin"]


def find_tool(name):
    """The path of a CUDA tool (ptxas, cuobjdump), or None."""
    found = shutil.which(name)
    if found:
        return found
    for pattern in SEARCH:
        for folder in sorted(glob.glob(pattern), reverse=True):
            candidate = os.path.join(folder, name)
            if os.access(candidate, os.X_OK):
                return candidate
    return None


ENTRY = re.compile(r"Compiling entry function '([^']+)' for '([^']+)'")
PROPERTIES = re.compile(r"Function properties for (\S+)")
FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
USED = re.compile(r"Used (\d+) registers")
BARRIERS = re.compile(r"used (\d+) barriers")
SMEM = re.compile(r"(\d+) bytes smem")
CMEM = re.compile(r"(\d+) bytes cmem\[(\d+)\]")


def parse_ptxas(text):
    """Per entry function: registers, spills, stack frame, shared/constant memory, barriers, from `ptxas -v` output.

    ptxas prints, per function:
        ptxas info    : Compiling entry function 'name' for 'sm_90'
        ptxas info    : Function properties for name
            0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
        ptxas info    : Used 40 registers, used 1 barriers, 8192 bytes smem, 400 bytes cmem[0]
    Functions that are called rather than launched get "Function properties" without the
    "Compiling entry" line; they are returned under "functions" (their stack frame counts).
    """
    entries, functions = {}, {}
    current_entry, properties_of = None, None
    for line in text.splitlines():
        if m := ENTRY.search(line):
            current_entry = m.group(1)
            entries[current_entry] = {"entry": current_entry, "arch": m.group(2)}
            properties_of = None
            continue
        if m := PROPERTIES.search(line):
            properties_of = m.group(1)
            continue
        if m := FRAME.search(line):
            frame = {"stack_frame": int(m.group(1)), "spill_stores": int(m.group(2)), "spill_loads": int(m.group(3))}
            if properties_of is None or properties_of in entries:
                target = entries.get(properties_of or current_entry)
            else:
                target = functions.setdefault(properties_of, {"function": properties_of})
            if target is not None:
                target.update(frame)
            properties_of = None
            continue
        if m := USED.search(line):
            if current_entry is None:
                continue
            entry = entries[current_entry]
            entry["registers"] = int(m.group(1))
            entry["barriers"] = int(b.group(1)) if (b := BARRIERS.search(line)) else 0
            entry["smem"] = int(s.group(1)) if (s := SMEM.search(line)) else 0
            entry["cmem"] = {f"cmem[{bank}]": int(size) for size, bank in CMEM.findall(line)}
    return list(entries.values()), list(functions.values())


SASS_LINE = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)")


def count_sass(text):
    """Counts of the instructions that matter for our kernels, from `cuobjdump -sass` text.

    ffma / fmul / fadd: FP32 arithmetic (ILGPU writes a*b+c as mul + add; ptxas contracts them to FFMA by default).
    lds / ldg / sts / stg by width: "128" for .128, "64" for .64, "32" otherwise (16-byte loads are what tiles want).
    local: LDL + STL (registers spilled or arrays indexed at run time). hmma: tensor-core instructions.
    """
    opcodes = collections.Counter(m.group(1) for m in SASS_LINE.finditer(text))
    summary = {"instructions": sum(opcodes.values()), "ffma": 0, "fmul": 0, "fadd": 0, "local": 0, "hmma": 0, "bar": 0,
               "lds": collections.Counter(), "ldg": collections.Counter(), "sts": collections.Counter(), "stg": collections.Counter()}
    for opcode, count in opcodes.items():
        base = opcode.split(".")[0]
        width = "128" if ".128" in opcode else "64" if ".64" in opcode else "32"
        if base in ("FFMA", "FFMA2"):
            summary["ffma"] += count
        elif base == "FMUL":
            summary["fmul"] += count
        elif base == "FADD":
            summary["fadd"] += count
        elif base in ("LDL", "STL"):
            summary["local"] += count
        elif base in ("HMMA", "HGMMA"):
            summary["hmma"] += count
        elif base == "BAR":
            summary["bar"] += count
        elif base in ("LDS", "LDSM"):
            summary["lds"][width] += count
        elif base in ("LDG", "LD"):
            summary["ldg"][width] += count
        elif base == "STS":
            summary["sts"][width] += count
        elif base in ("STG", "ST"):
            summary["stg"][width] += count
    for key in ("lds", "ldg", "sts", "stg"):
        summary[key] = dict(sorted(summary[key].items()))
    return summary


def assemble(path, ptxas, cuobjdump, arch, sass_dir, timeout):
    """One .ptx: ptxas -v (and the SASS counts); returns the JSON line."""
    name = os.path.basename(path)[:-len(".ptx")]
    cubin = os.path.join(sass_dir, name + ".cubin") if sass_dir and cuobjdump else os.devnull
    line = {"kernel": name, "arch": arch}
    started = time.monotonic()
    try:
        done = subprocess.run([ptxas, f"-arch={arch}", "-v", "-o", cubin, path], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        line.update(ok=False, error=f"ptxas took more than {timeout} s")
        return line
    line["seconds"] = round(time.monotonic() - started, 2)
    output = done.stdout + done.stderr
    entries, functions = parse_ptxas(output)
    line["ok"] = done.returncode == 0
    if not line["ok"]:
        errors = [l.strip() for l in output.splitlines() if "error" in l.lower()] or output.strip().splitlines()[-3:]
        line["error"] = " | ".join(errors[:5])[:1000] or f"ptxas exit code {done.returncode}"
    warnings = [l.strip() for l in output.splitlines() if "warning" in l.lower()]
    if warnings:
        line["warnings"] = warnings[:5]
    line["entries"] = entries
    if functions:
        line["functions"] = functions
    if line["ok"] and sass_dir and cuobjdump:
        sass = subprocess.run([cuobjdump, "-sass", cubin], capture_output=True, text=True, timeout=timeout)
        if sass.returncode == 0:
            with open(os.path.join(sass_dir, name + ".sass"), "w", encoding="utf-8") as f:
                f.write(sass.stdout)
            line["sass"] = count_sass(sass.stdout)
        else:
            line["sass_error"] = (sass.stderr or sass.stdout).strip()[:300]
        os.remove(cubin)  # the .sass text is what is read later; cubins only add size
    return line


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--find", action="store_true", help="print the ptxas found and exit (1 when none)")
    parser.add_argument("--ptx-dir")
    parser.add_argument("--jsonl")
    parser.add_argument("--arch", default="sm_90")
    parser.add_argument("--sass-dir", help="keep each kernel's SASS (cuobjdump -sass) here")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--time-limit", type=float, default=float("inf"), help="stop starting ptxas after S seconds")
    parser.add_argument("--timeout", type=float, default=120, help="seconds for one ptxas")
    args = parser.parse_args()

    ptxas = find_tool("ptxas")
    if args.find:
        if ptxas:
            print(ptxas)
        return 0 if ptxas else 1
    if not args.ptx_dir or not args.jsonl:
        parser.error("--ptx-dir and --jsonl are needed")
    if not ptxas:
        print("ptxas.py: no ptxas on the PATH nor under " + ", ".join(SEARCH), file=sys.stderr)
        return 1
    cuobjdump = find_tool("cuobjdump")
    files = sorted(glob.glob(os.path.join(args.ptx_dir, "*.ptx")))
    version = subprocess.run([ptxas, "--version"], capture_output=True, text=True).stdout.strip().splitlines()
    print(f"[ptxas] {len(files)} PTX files, {ptxas} ({version[-1] if version else '?'}), -arch={args.arch}, "
          f"{args.jobs} at a time; SASS counts {'with ' + cuobjdump if cuobjdump and args.sass_dir else 'off'}", file=sys.stderr, flush=True)
    if args.sass_dir:
        os.makedirs(args.sass_dir, exist_ok=True)
    started = time.monotonic()
    failed = skipped = 0
    with open(args.jsonl, "a", encoding="utf-8") as out, concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        def submit(path):
            if time.monotonic() - started > args.time_limit:
                return None
            return assemble(path, ptxas, cuobjdump, args.arch, args.sass_dir, args.timeout)

        for line in pool.map(submit, files):
            if line is None:
                skipped += 1
                continue
            failed += not line["ok"]
            out.write(json.dumps(line) + "\n")
            out.flush()
            entry = (line.get("entries") or [{}])[0]
            print(f"[ptxas] {line['kernel']}: " + (f"{entry.get('registers', '?')} registers, spills {entry.get('spill_stores', '?')}/{entry.get('spill_loads', '?')} B, "
                  f"stack {entry.get('stack_frame', '?')} B, smem {entry.get('smem', '?')} B" if line["ok"] else f"FAILED: {line['error']}"), file=sys.stderr, flush=True)
        if skipped:
            out.write(json.dumps({"skipped": skipped, "reason": f"time limit {args.time_limit} s"}) + "\n")
    print(f"[ptxas] {len(files) - skipped - failed} assembled, {failed} failed, {skipped} not started (time limit) in "
          f"{time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
