#!/usr/bin/python3
"""Times float32 SGEMM (numpy `a @ b`) at square sizes and says which BLAS numpy really loaded.

Run with Debian's interpreter (/usr/bin/python3 has numpy). The BLAS is whatever the dynamic
loader finds: Debian's `update-alternatives` choice for libblas.so.3, or the one that
LD_LIBRARY_PATH puts first (e.g. /usr/lib/x86_64-linux-gnu/openblas-openmp). OpenBLAS reads
OPENBLAS_CORETYPE (kernel choice) and OMP_NUM_THREADS (threads) from the environment.

    /usr/bin/python3 bench/scripts/sgemm_openblas.py --sizes 256,512,1024 [--json out.json]

Prints one line per size (median and fastest run, GFLOP/s = 2·n³ / time) and the BLAS
libraries mapped into the process after the first product.
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np


def loaded_blas():
    """Shared libraries in this process whose name mentions blas/lapack (read from /proc/self/maps)."""
    libraries = set()
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            for line in maps:
                path = line.split()[-1] if len(line.split()) >= 6 else ""
                name = os.path.basename(path).lower()
                if "blas" in name or "lapack" in name:
                    libraries.add(os.path.realpath(path))
    except OSError:
        pass
    return sorted(libraries)


def openblas_core():
    """OpenBLAS's own report of its kernel (openblas_get_corename) and thread count, when OpenBLAS is loaded."""
    import ctypes
    for path in loaded_blas():
        if "openblas" not in path:
            continue
        try:
            library = ctypes.CDLL(path)
            library.openblas_get_corename.restype = ctypes.c_char_p
            library.openblas_get_config.restype = ctypes.c_char_p
            return {
                "corename": library.openblas_get_corename().decode(),
                "config": library.openblas_get_config().decode().strip(),
                "threads": library.openblas_get_num_threads(),
            }
        except (OSError, AttributeError):
            continue
    return None


def time_sgemm(n, warmup, reps, min_seconds, seed=0):
    random = np.random.default_rng(seed + n)
    a = random.standard_normal((n, n), dtype=np.float32)
    b = random.standard_normal((n, n), dtype=np.float32)
    c = a @ b
    # A wrong BLAS setup shows up here rather than as a fast wrong number.
    reference = a[:4].astype(np.float64) @ b.astype(np.float64)
    error = float(np.max(np.abs(c[:4] - reference)) / np.max(np.abs(reference)))
    for _ in range(warmup):
        a @ b
    times = []
    while len(times) < reps or (sum(times) < min_seconds and len(times) < 50):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    best = min(times)
    flops = 2.0 * n ** 3
    return {
        "n": n,
        "median_ms": median * 1e3,
        "min_ms": best * 1e3,
        "reps": len(times),
        "gflops": flops / median / 1e9,
        "best_gflops": flops / best / 1e9,
        "relative_error_first_rows": error,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="256,512,1024")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=0.5)
    parser.add_argument("--label", default="numpy")
    parser.add_argument("--json", help="write the results there")
    args = parser.parse_args()

    sizes = [int(s) for s in args.sizes.split(",") if s]
    results = [time_sgemm(n, args.warmup, args.reps, args.min_time) for n in sizes]
    environment = {k: os.environ.get(k) for k in ("LD_LIBRARY_PATH", "OPENBLAS_CORETYPE", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    document = {
        "label": args.label,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "blas_libraries": loaded_blas(),
        "openblas": openblas_core(),
        "environment": environment,
        "results": results,
    }
    print(f"[{args.label}] numpy {np.__version__}; BLAS loaded: {', '.join(document['blas_libraries']) or 'none found'}")
    if document["openblas"]:
        o = document["openblas"]
        print(f"[{args.label}] OpenBLAS core {o['corename']}, {o['threads']} threads ({o['config']})")
    print(f"[{args.label}] environment: " + ", ".join(f"{k}={v}" for k, v in environment.items() if v))
    for r in results:
        print(f"[{args.label}] sgemm n={r['n']}: median {r['median_ms']:.3f} ms, min {r['min_ms']:.3f} ms "
              f"({r['reps']} runs) -> {r['gflops']:.1f} GFLOP/s (best {r['best_gflops']:.1f}); rel. error {r['relative_error_first_rows']:.1e}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(document, f, indent=2)


if __name__ == "__main__":
    main()
