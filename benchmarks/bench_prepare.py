"""Time and peak memory of ``prepare_dataset`` at the paper's size (E65-95, N40-55, 2', 500 km margin).

Uses the raw synthetic default scene (``ensure_synthetic_default`` makes it on first use) or the files given;
writes into a temporary folder and prints the seconds of each run and the peak resident memory.

    python benchmarks/bench_prepare.py [--raw DIR] [--repeat N]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from ggmnet.datasets import ensure_synthetic_default
from ggmnet.datasets.prepare import prepare_dataset
from ggmnet.studies.measure import peak_resident_mib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", type=Path, default=None,
                        help="folder with bouguer.nc, labels.nc, bedrock.nc (default: the synthetic default's)")
    parser.add_argument("--repeat", type=int, default=2, help="number of timed runs (default 2)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="  %(relativeCreated)8.0f ms  %(message)s")
    raw = args.raw or ensure_synthetic_default().parent / "raw"
    for run in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            prepare_dataset(raw / "bouguer.nc", raw / "labels.nc", Path(tmp) / "ds", bedrock=raw / "bedrock.nc")
            elapsed = time.perf_counter() - start
        peak = peak_resident_mib()
        print(f"run {run + 1}: prepare_dataset {elapsed:6.1f} s, peak RSS {peak:6.0f} MiB")


if __name__ == "__main__":
    main()
