"""Load time of the default model: first load (read + dequantize + repack + cache write) against the
second (memory-mapped repacked cache), each in a fresh process, for every quantization.

Usage: python bench/load.py [--runs 3]. Prints medians and the second/first ratio.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

CHILD = """
import sys, time
start = time.perf_counter()
import model
imported = time.perf_counter()
model.load("default", quant=sys.argv[2] or None, cache_dir=sys.argv[1])
print(f"{imported - start:.3f} {time.perf_counter() - imported:.3f}")
"""


def timed_load(cache_dir: str, quant: str) -> tuple[float, float]:
    """(import seconds, load seconds) of `model.load` in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", CHILD, cache_dir, quant], capture_output=True, text=True, check=True)
    imported, loaded = map(float, out.stdout.split())
    return imported, loaded


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="fresh caches per variant; medians are reported")
    args = parser.parse_args()
    print("| variant | first load s | second load s | import torch + model s | second / first |")
    print("|---|---:|---:|---:|---:|")
    for quant in ("", "int8", "int4"):
        first, second, imports = [], [], []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as cache_dir:
                first.append(timed_load(cache_dir, quant)[1])
                imported, loaded = timed_load(cache_dir, quant)
                second.append(loaded)
                imports.append(imported)
        f, s, i = statistics.median(first), statistics.median(second), statistics.median(imports)
        print(f"| {quant or 'fp32'} | {f:.2f} | {s:.2f} | {i:.2f} | {s / f:.2f} |", flush=True)
    print(f"\nmedians of {args.runs} fresh caches each, measured {time.strftime('%Y-%m-%d %H:%M')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
