"""Why the CPU recipe is what it is: each of its departures from the paper's recipe undone, one at a time.

Trains GGMNet (a fixed genotype, default ``default_genotype(22)`` at the CPU recipe's unit widths) with
``experiments/retrain_cpu.yaml`` and with one departure at a time put back to the paper's choice, all at the
same number of steps (default 400: ``--epochs 4``), on one split of a synthetic scene (default: seed 0, the
paper's random split), and prints validation pixel accuracy, MPA and FWIoU, pixel accuracy under the cover of
the validation and of the test windows, the training time and each variant's difference from the recipe.
``--variants`` also takes additions tried on top of the recipe (``ema``, ``cover_augment``) and ``uniform``
(the recipe's class weights made uniform). Flags after ``--`` go to every run's ``retrain`` after the recipe
(e.g. ``-- --class-weighting uniform`` for the recipe as it was before the square-root weights). Runs are kept
under ``OUT`` (rerunning skips finished ones).

    python experiments/recipe_ablation.py [--scene-seed 0] [--split random] [--steps 400] [--out DIR]
        [--genotype FILE] [--variants recipe,eq19,paper_aug,windows,30ppd,deformable,no_residual]
        [-- extra retrain flags]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ggmnet.studies import RECIPES
from ggmnet.studies.trial import default_genotype_file, split_retrain_flags, train_and_score

#: Variant name -> (what it puts back, the retrain flags that do it).
VARIANTS = {
    "recipe": ("the CPU recipe (experiments/retrain_cpu.yaml)", []),
    "eq19": ("Eq. 19 as the paper: K = 0.15 N, median-frequency class and instance-size weights",
             ["--top-k-fraction", "0.15", "--class-weighting", "median_frequency", "--instance-weighting"]),
    "paper_aug": ("section 5.1.1's augmentation (rotation, translation, contrast, brightness, noise)",
                  ["--augment", "paper"]),
    "windows": ("each window whole at 128 px, cropped to 96 (the paper's tiles, scaled down)",
                ["--pixels-per-degree", "none", "--tile-size", "128", "--crop-size", "96"]),
    "30ppd": ("one pixel per 2' node (30 px per degree) instead of half", ["--pixels-per-degree", "30"]),
    "deformable": ("the deformable decoder of the full GGMNet", ["--deformable"]),
    "no_residual": ("Table 5's row d (no residual connections in the MRFEM), no deformable convolution",
                    ["--ablation", "d", "--no-deformable"]),
    # additions tried on top of the recipe (not departures from the paper)
    "ema": ("+ a moving average of the weights, validated and kept (--ema-decay 0.995)", ["--ema-decay", "0.995"]),
    "cover_augment": ("+ half the training tiles buried under a simulated cover (--cover-augment 0.5)",
                      ["--cover-augment", "0.5"]),
    "uniform": ("uniform class weights instead of the square-root median-frequency ones (plain cross-entropy)",
                ["--class-weighting", "uniform"]),
}
#: The variants run by default: each departure of the recipe undone.
DEPARTURES = ("recipe", "eq19", "paper_aug", "windows", "30ppd", "deformable", "no_residual")


def main(argv: list[str] | None = None) -> int:
    argv, extra = split_retrain_flags(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene-seed", type=int, default=0, help="synthetic scene (default 0, the demo's)")
    parser.add_argument("--split", default="random", choices=("random", "spatial-block"))
    parser.add_argument("--steps", type=int, default=400, help="training steps of every variant (default 400)")
    parser.add_argument("--genotype", default=None, help="GGMNet's genotype (default: default_genotype(22) at "
                                                         "unit widths 4,8,16)")
    parser.add_argument("--variants", default=",".join(DEPARTURES), help="comma-separated subset of "
                        f"{', '.join(VARIANTS)} (default: the departures, {','.join(DEPARTURES)})")
    parser.add_argument("--out", default="runs/recipe-ablation", help="folder of the runs and the table")
    args = parser.parse_args(argv)

    from ggmnet.datasets import ensure_synthetic_default
    from ggmnet.engine.runio import write_bytes_atomic
    from ggmnet.metrics import percent as pct

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    genotype = args.genotype or default_genotype_file(out)
    data = ensure_synthetic_default(seed=args.scene_seed, split=args.split)
    epochs = max(1, args.steps // 100)
    rows = {}
    for name in args.variants.split(","):
        what, flags = VARIANTS[name]
        base = ["--config", str(RECIPES / "retrain_cpu.yaml"), "--genotype", genotype,
                "--data", str(data), "--out", str(out / name), "--epochs", str(epochs), "--steps-per-epoch", "100",
                "--wandb-mode", "disabled"]
        result = train_and_score([*base, *extra, *flags], splits=("val", "test"))
        rows[name] = {"what": what, "flags": [*extra, *flags], **result}

    def outcrop(scores: dict) -> str:
        return " | ".join(pct(scores[key]) for key in ("pixel_accuracy", "mpa", "fwiou"))

    def cover(scores: dict, key: str) -> str:
        return pct(scores[key]["pixel_accuracy"]) if scores.get(key) else "--"

    recipe = rows.get("recipe")
    lines = [f"Scene seed {args.scene_seed}, {args.split} split, {epochs * 100} steps of 8 tiles each"
             + (f", every run with {' '.join(extra)}" if extra else ""), "",
             "| variant | val PA | val MPA | val FWIoU | val cover PA | test cover PA | minutes | FWIoU vs recipe |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        fwiou = r["val"]["outcrop"]["fwiou"]
        delta = "" if recipe is None or name == "recipe" else f"{100 * (fwiou - recipe['val']['outcrop']['fwiou']):+.1f}"
        lines.append(f"| {name}: {r['what']} | {outcrop(r['val']['outcrop'])} | {cover(r['val'], 'under_cover')} | "
                     f"{cover(r['test'], 'under_cover')} | {r['seconds'] / 60:.1f} | {delta} |")
    first = next(iter(rows.values()))
    c, ct = first["val"], first["test"]
    lines.append(f"| commonest class of the training windows | {outcrop(c['commonest_class'])} | "
                 f"{cover(c, 'commonest_class_under_cover')} | {cover(ct, 'commonest_class_under_cover')} | | |")
    lines.append(f"| nearest outcrop (cover only) | | | | {cover(c, 'nearest_outcrop_baseline')} | "
                 f"{cover(ct, 'nearest_outcrop_baseline')} | | |")
    table = "\n".join(lines)
    print(table)
    write_bytes_atomic(out / "recipe_ablation.md", (table + "\n").encode())
    write_bytes_atomic(out / "recipe_ablation.json", json.dumps(rows, indent=1, default=str).encode())
    return 0
