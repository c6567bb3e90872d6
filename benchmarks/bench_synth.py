"""Time and peak memory of the default synthetic scene (E65-95, N40-55, 2', 500 km margin) and its files.

Usage: ``python benchmarks/bench_synth.py [--seed N] [--out DIR] [--repeat K]``. Prints the wall time of
generating the scene (best of ``--repeat``) and of writing it, the process's peak resident memory, the node
and model-cell counts, and the scene's summary figures (class shares, cover and anomaly statistics).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from ggmnet.datasets.synth import SynthConfig, generate_scene, write_scene
from ggmnet.studies.measure import peak_resident_mib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: a temporary one)")
    parser.add_argument("--repeat", type=int, default=1, help="generations to time, best reported (default 1)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    config = SynthConfig(seed=args.seed)
    times = []
    for _ in range(max(args.repeat, 1)):
        start = time.perf_counter()
        scene = generate_scene(config)
        times.append(time.perf_counter() - start)
    rss_after_generate = peak_resident_mib()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "synth"
        start = time.perf_counter()
        paths = write_scene(scene, out)
        write_seconds = time.perf_counter() - start
        sizes = {key: path.stat().st_size / 2**20 for key, path in paths.items()}

    stats = scene.stats
    print(f"scene nodes (lat x lon): {stats['scene_nodes'][0]} x {stats['scene_nodes'][1]}; region nodes: "
          f"{stats['region_nodes'][0]} x {stats['region_nodes'][1]}; model cells: {stats['model_cells'][0]} x "
          f"{stats['model_cells'][1]}")
    print(f"generate: {min(times):.1f} s (best of {len(times)}); write: {write_seconds:.1f} s")
    print(f"peak RSS: {rss_after_generate:.0f} MiB after generating, {peak_resident_mib():.0f} MiB after writing")
    print("file sizes (MiB): " + ", ".join(f"{k} {v:.1f}" for k, v in sizes.items()))
    print("outcrop class shares (%): " + ", ".join(f"{k} {v:.1f}" for k, v in stats["class_shares_percent"].items()))
    print(f"outcrop fraction of the region: {stats['outcrop_fraction']:.3f}")
    cover = stats["cover_km"]
    print(f"cover (km): median {cover['median']:.2f}, p90 {cover['p90']:.2f}, max {cover['max']:.2f}")
    for name in ("bouguer_mgal", "regional_mgal", "crust_mgal"):
        s = stats[name]
        print(f"{name}: mean {s['mean']:.1f}, std {s['std']:.1f}, min {s['min']:.1f}, max {s['max']:.1f}")


if __name__ == "__main__":
    main()
