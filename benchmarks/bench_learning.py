"""What training learns: GGMNet beside a plain U-Net and the commonest-class rule, on a scene it was not tuned on.

Every training change is judged here. On a synthetic scene of another seed than the one the recipes were tuned
on (default ``--scene-seed 1``; the demo and the recipes use seed 0), prepared with both splits (the paper's
random split of overlapping windows, and the spatial-block split where no validation window overlaps a
training one), each network is trained by ``retrain`` itself, with the same recipe (default
``experiments/retrain_cpu.yaml``: the same tiles, batches and number of steps), then scored by ``ggm-evaluate``'s
code on the training windows, the validation windows and the test windows' cover:

* ``ggmnet``: GGMNet from ``--genotype`` (default: ``default_genotype(22)`` at the CPU recipe's unit widths),
  Table 5's full model;
* ``unet_resnet18``: the plain U-Net reference (smp, ResNet-18 encoder, random weights);
* the commonest class of the training windows everywhere, on the same pixels (no training).

It prints one table (pixel accuracy, MPA and FWIoU on the train and val windows' outcrop, pixel accuracy under
the test windows' cover beside the commonest-class and nearest-outcrop rules, training wall-clock) and writes it
with every figure to ``OUT/bench_learning.json``. The runs are kept under ``OUT`` (rerunning skips finished
ones). At the CPU recipe's budget the whole benchmark takes about 4 x the recipe's training time.

    python benchmarks/bench_learning.py [--scene-seed 1] [--config experiments/retrain_cpu.yaml]
        [--genotype FILE] [--models ggmnet,unet_resnet18] [--splits random,spatial-block] [--out DIR]
        [-- extra retrain flags, e.g. --epochs 2]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ggmnet.metrics import percent as pct
from ggmnet.studies import RECIPES
from ggmnet.studies.trial import default_genotype_file, split_retrain_flags, train_and_score


def main(argv: list[str] | None = None) -> int:
    argv, extra = split_retrain_flags(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene-seed", type=int, default=1, help="seed of the synthetic scene (default 1)")
    parser.add_argument("--config", default=str(RECIPES / "retrain_cpu.yaml"),
                        help="retrain recipe every network is trained with (default experiments/retrain_cpu.yaml)")
    parser.add_argument("--genotype", default=None, help="GGMNet's genotype (default: default_genotype(22) at the "
                                                         "recipe's unit widths 4,8,16)")
    parser.add_argument("--models", default="ggmnet,unet_resnet18", help="registered models to train")
    parser.add_argument("--splits", default="random,spatial-block", help="dataset splits to train and score on")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--out", default="runs/bench-learning", help="folder of the runs and the JSON")
    args = parser.parse_args(argv)

    from ggmnet.datasets import ensure_synthetic_default

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    genotype = args.genotype or default_genotype_file(out)
    rows = []
    for split in args.splits.split(","):
        data = ensure_synthetic_default(seed=args.scene_seed, split=split)
        for model in args.models.split(","):
            flags = ["--config", args.config, "--data", str(data), "--out", str(out / f"{split}-{model}"),
                     "--model", model, "--seed", str(args.seed), "--wandb-mode", "disabled", *extra]
            if model == "ggmnet":
                flags += ["--genotype", genotype]
            rows.append({"split": split, "model": model,
                         **train_and_score(flags, splits=("train", "val", "test"))})

    def row(split: str, name: str, key: str, cover_key: str, r: dict, seconds: str) -> str:
        train, val, test = r["train"][key], r["val"][key], r["test"][cover_key]
        return (f"| {split} | {name} | {pct(train['pixel_accuracy'])} | {pct(train['mpa'])} | {pct(train['fwiou'])} "
                f"| {pct(val['pixel_accuracy'])} | {pct(val['mpa'])} | {pct(val['fwiou'])} | "
                f"{pct(test['pixel_accuracy']) if test else '--'} | {seconds} |")

    lines = [f"Learning benchmark: scene seed {args.scene_seed}, recipe {args.config}"
             + (f" {' '.join(extra)}" if extra else ""), "",
             "| split | model | train PA | train MPA | train FWIoU | val PA | val MPA | val FWIoU | test cover PA "
             "| train time |", "|---|---|---|---|---|---|---|---|---|---|"]
    for split in args.splits.split(","):
        done = [r for r in rows if r["split"] == split]
        for r in done:
            lines.append(row(split, f"{r['model']} ({r['parameters'] / 1e6:.1f} M, {r['steps']} steps)", "outcrop",
                             "under_cover", r, f"{r['seconds'] / 60:.1f} min"))
            fused = r["test"].get("outcrop_prior_under_cover")
            if fused:
                lines.append(f"| {split} | {r['model']} with the outcrop prior (cover only) | | | | | | | "
                             f"{pct(fused['pixel_accuracy'])} | -- |")
        if done:
            lines.append(row(split, "commonest class", "commonest_class", "commonest_class_under_cover", done[0], "--"))
            nearest = done[0]["test"]["nearest_outcrop_baseline"]
            lines.append(f"| {split} | nearest outcrop (cover only) | | | | | | | "
                         f"{pct(nearest['pixel_accuracy']) if nearest else '--'} | -- |")
    table = "\n".join(lines)
    print(table)
    (out / "bench_learning.json").write_text(json.dumps({"table": table, "rows": rows}, indent=1, default=str))
    (out / "bench_learning.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
