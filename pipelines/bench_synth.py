"""Benchmark of the synthetic X-ray generator: wall time for 200 patients at the default size.

python -m pipelines.bench_synth [--cases 200] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

from spine_monai.synthetic.xray import write_xray_dataset


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_xray_dataset(os.path.join(tmp, "data"), args.cases, seed=0, workers=args.workers)
        elapsed = time.perf_counter() - start
    machine = f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}"
    rate = args.cases / elapsed
    print(f"synth xray: {args.cases} patients at 384x576 in {elapsed:.1f} s ({rate:.1f}/s) on {machine}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
