"""Does the search pay? The searched genotype against random architectures of the same depth and size.

Retrains, with one recipe (default ``experiments/retrain_cpu.yaml``) and the same seeds, the searched genotype
and ``--random`` genotypes drawn uniformly from the search space (``random_genotype``) at the same depth and unit
widths whose GGMNet has within +-15 % of the searched one's parameters, on the spatial-block split (no
validation window overlaps a training one) and the paper's random split of the same scene. Prints the
validation FWIoU and MPA of each, the random genotypes' mean and the searched genotype's rank, and writes
``OUT/search_vs_random.md`` and ``.json``. Runs are kept under ``OUT`` (rerunning resumes and skips finished
ones).

    python experiments/search_vs_random.py --genotype runs/quickstart/genotype.json \\
        --data runs/quickstart/data-spatial-block --paper-data runs/quickstart/data-random [--random 5] \\
        [--seeds 0] [--splits spatial-block,random] [--config experiments/retrain_cpu.yaml] \
        [--out runs/search-vs-random]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def parameters(genotype, ablation: str = "ours") -> int:
    """Parameters of GGMNet built from ``genotype`` with Table 5's row ``ablation``."""
    from ggmnet.retrain.ggmnet_model import ABLATIONS, GGMNet

    return sum(p.numel() for p in GGMNet(genotype, **ABLATIONS[ablation]).parameters())


def matched_random_genotypes(searched, count: int, *, tolerance: float = 0.15, seed: int = 0,
                             max_draws: int = 10000) -> list:
    """``count`` random genotypes of ``searched``'s depth, widths and channels whose GGMNet has within
    ``tolerance`` of its parameters (drawn with seeds ``seed``, ``seed + 1``, ...; rejected draws skipped)."""
    from ggmnet.search_space.genotype import random_genotype

    target = parameters(searched)
    found = []
    for k in range(max_draws):
        g = random_genotype(searched.depth, seed=seed + k, num_classes=searched.num_classes,
                            in_channels=searched.in_channels, stem_channels=searched.stem_channels,
                            unit_channels=searched.unit_channels)
        if abs(parameters(g) / target - 1.0) <= tolerance:
            found.append(g)
            if len(found) == count:
                return found
    raise SystemExit(f"search_vs_random: error: only {len(found)} of {count} random genotypes within "
                     f"{tolerance:.0%} of {target / 1e6:.2f} M parameters in {max_draws} draws")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--genotype", required=True, help="the searched genotype (nas-export output)")
    parser.add_argument("--data", required=True, help="prepared dataset with the spatial-block split")
    parser.add_argument("--paper-data", default=None, help="the same scene with the paper's random split "
                                                            "(optional: scored beside)")
    parser.add_argument("--random", type=int, default=5, help="random genotypes (default 5)")
    parser.add_argument("--seeds", default="0", help="training seeds, comma-separated (default 0)")
    parser.add_argument("--splits", default=None,
                        help="spatial-block and/or random, comma-separated (default: each given dataset; run one split per process to "
                             "use two cores, then once more with both to tabulate: finished runs are found)")
    parser.add_argument("--config", default=str(REPO / "experiments" / "retrain_cpu.yaml"), help="retrain recipe")
    parser.add_argument("--out", default="runs/search-vs-random", help="folder of the runs and the tables")
    args, extra = parser.parse_known_args(argv)

    from ggmnet.retrain.study import train_and_score
    from ggmnet.search_space.genotype import Genotype

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    searched = Genotype.load(args.genotype)
    candidates = {"searched": searched}
    for k, g in enumerate(matched_random_genotypes(searched, args.random)):
        candidates[f"random{k + 1}"] = g
    datasets = {"spatial-block": args.data, **({"random": args.paper_data} if args.paper_data else {})}
    wanted = args.splits.split(",") if args.splits else list(datasets)
    if not wanted or not set(wanted) <= {"spatial-block", "random"} or ("random" in wanted and not args.paper_data):
        parser.error(f"--splits {args.splits!r}: expected spatial-block and/or random (random needs --paper-data)")
    datasets = {s: d for s, d in datasets.items() if s in wanted}
    rows = []
    for name, genotype in candidates.items():
        path = out / f"genotype_{name}.json"
        genotype.save(path)
        for split, data in datasets.items():
            for seed in args.seeds.split(","):
                flags = ["--config", args.config, "--genotype", str(path), "--data", data, "--seed", seed,
                         "--out", str(out / f"{name}-{split}-seed{seed}"), "--wandb-mode", "disabled", *extra]
                result = train_and_score(flags)
                rows.append({"genotype": name, "split": split, "seed": int(seed),
                             "parameters": result["parameters"], "fwiou": result["val"]["outcrop"]["fwiou"],
                             "mpa": result["val"]["outcrop"]["mpa"], "run": result["run"]})

    def mean(name: str, split: str, key: str) -> float:
        return float(np.mean([r[key] for r in rows if r["genotype"] == name and r["split"] == split]))

    splits = list(datasets)
    lines = ["| genotype | parameters (M) | " + " | ".join(f"{s} val FWIoU (%) | {s} val MPA (%)" for s in splits)
             + " |", "|---|---|" + "---|---|" * len(splits)]
    for name in candidates:
        p = next(r["parameters"] for r in rows if r["genotype"] == name)
        lines.append(f"| {name} | {p / 1e6:.2f} | " + " | ".join(
            f"{100 * mean(name, s, 'fwiou'):.1f} | {100 * mean(name, s, 'mpa'):.1f}" for s in splits) + " |")
    randoms = [n for n in candidates if n != "searched"]
    lines.append("| random mean | | " + " | ".join(
        f"{100 * np.mean([mean(n, s, 'fwiou') for n in randoms]):.1f} | "
        f"{100 * np.mean([mean(n, s, 'mpa') for n in randoms]):.1f}" for s in splits) + " |")
    for s in splits:
        rank = 1 + sum(mean(n, s, "fwiou") > mean("searched", s, "fwiou") for n in randoms)
        lines.append(f"\n{s}: the searched genotype ranks {rank} of {len(candidates)} by validation FWIoU.")
    table = "\n".join(lines)
    print(table)
    (out / "search_vs_random.md").write_text(table + "\n")
    (out / "search_vs_random.json").write_text(json.dumps({"rows": rows, "table": table}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
