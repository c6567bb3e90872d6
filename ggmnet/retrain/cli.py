"""Command-line entry points of the retraining stage: ``retrain``, ``ggm-evaluate`` and ``ggm-predict``."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from typing import Any

from ggmnet.engine.config import (
    BATCH_SIZE,
    DATA,
    DEVICE,
    NUMBER,
    OUT,
    TILE_SIZE,
    Config,
    boolean,
    choice,
    option,
    run_command,
)
from ggmnet.errors import cli_entry
from ggmnet.inference.evaluate import SPLITS, evaluate
from ggmnet.inference.predict import DEFAULT_OVERLAP, DEFAULT_SCALE_DEG, predict_region

RETRAIN_DESCRIPTION = ("Train GGMNet (from a searched genotype) or a baseline from scratch on a prepared "
                       "dataset, validating every epoch (FWIoU, MPA, mIoU, per-class IoU) and checkpointing "
                       "atomically.")
RETRAIN_EPILOG = """\
The defaults are the paper's (section 5.1): 600 epochs, 2048 px tiles cropped to 1024 (unless given, the crop
is min(1024, --tile-size)), 4 tiles per GPU, Adam (lr 1e-3) until the training loss flattens, then SGD
(momentum 0.9, weight decay 5e-4) with a 5-epoch linear warm-up and a tenfold drop every 50 epochs. Run it on
GPUs, e.g.
  torchrun --nproc_per_node=4 -m ggmnet.retrain.cli --genotype genotype.json --data DIR
CPU recipe (see experiments/retrain_cpu.yaml):
  retrain --genotype genotype.json --config experiments/retrain_cpu.yaml
Table 5's ablations: --ablation a|b|c|d|ours; Table 6's baselines and U-Nets: --model NAME (no genotype; input
channels and classes from the dataset), e.g. --model fasterseg.
The run folder gets run.json, genotype.json, checkpoints/last.pt (every epoch, the whole state for --resume)
and best.pt (the model of the best validation FWIoU; the file ggm-evaluate and ggm-predict take),
curves.png, metrics.jsonl, tables/ and images/.
Interrupt at any time and rerun with --resume (and the same --out) to continue exactly where it stopped.
"""


def paths(value: Any) -> tuple[str, ...]:
    """File paths, from a sequence or comma-separated text (empty: none)."""
    items = [str(v) for v in value] if isinstance(value, (list, tuple)) else str(value).split(",")
    return tuple(item.strip() for item in items if item.strip())


def build_retrain_parser() -> argparse.ArgumentParser:
    """The ``retrain`` argument parser: a flag per option of :class:`ggmnet.retrain.train.RetrainConfig`."""
    from ggmnet.retrain.train import RetrainConfig

    return RetrainConfig.parser("retrain", RETRAIN_DESCRIPTION, RETRAIN_EPILOG)


@cli_entry
def train_main(argv: Sequence[str] | None = None) -> int:
    """``retrain``: run or resume a retrain run; prints a one-line summary."""
    from ggmnet.retrain.train import RetrainConfig, format_summary, run_retrain

    return run_command(RetrainConfig, build_retrain_parser(), argv, run_retrain, format_summary)


@dataclasses.dataclass
class NetworkOptions(Config):
    """The network that ``ggm-evaluate`` and ``ggm-predict`` read: a checkpoint, and what to average it with
    (:mod:`ggmnet.inference.ensemble`)."""

    checkpoint: str = option(dataclasses.MISSING, "retrain checkpoint (best.pt or last.pt): the model, its "
                                                  "processing recipe and normalisation", metavar="FILE")
    members: tuple[str, ...] = option((), "more checkpoints of the same recipe and dataset (retrained with other "
                                          "--seed values) whose probabilities are averaged with --checkpoint's: "
                                          "better-calibrated probabilities", paths, metavar="FILE,FILE",
                                      shown="none")
    tta: bool = option(False, "test-time augmentation: average each network over the eight flips and right-angle "
                              "turns of every tile (8x the prediction time)", boolean)


@dataclasses.dataclass
class EvaluateOptions(NetworkOptions):
    """The options of ``ggm-evaluate`` (see :func:`ggmnet.inference.evaluate.evaluate`)."""

    data: str | None = DATA.field(None, shown="the checkpoint's training dataset (the synthetic default if it was "
                                              "trained on that)")
    split: str = option("val", "windows to score", choice(*SPLITS))
    tile_size: int | None = TILE_SIZE.field(None, shown="the checkpoint's tile size")
    device: str = DEVICE.field("auto")
    out: str | None = OUT.field(None, shown="the checkpoint's run folder (RUN of RUN/checkpoints/X.pt)")
    batch_size: int = BATCH_SIZE.field(1)


def build_evaluate_parser() -> argparse.ArgumentParser:
    """The ``ggm-evaluate`` argument parser."""
    return EvaluateOptions.parser(
        "ggm-evaluate",
        "Score a retrained checkpoint on a dataset split: MPA, FWIoU, mIoU, per-class IoU and "
                    "accuracy on the outcrop, and, on a dataset with a bedrock grid, under the cover beside a "
                    "nearest-outcrop baseline. Writes evaluation_<split>.json and .md and prints the Markdown.")


@cli_entry
def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """``ggm-evaluate``: score a checkpoint and print the report."""
    options = EvaluateOptions.from_argv(build_evaluate_parser(), argv)
    results = evaluate(options.checkpoint, options.data, options.split, tile_size=options.tile_size,
                       device=options.device, out_dir=options.out, batch_size=options.batch_size,
                       config=options.to_dict(), members=options.members, tta=options.tta)
    print(results["report"], end="")
    print(f"written: {results['paths']['json']}, {results['paths']['markdown']}")
    return 0


@dataclasses.dataclass
class PredictOptions(NetworkOptions):
    """The options of ``ggm-predict`` (see :func:`ggmnet.inference.predict.predict_region`)."""

    bouguer: str = option(dataclasses.MISSING, "Bouguer anomaly grid in mGal (WGM2012/GMT netCDF, GeoTIFF in any "
                                               "CRS, or ICGEM .gdf); must cover --region, ideally with the "
                                               "recipe's margin (500 km by default) around it", metavar="FILE")
    region: str = option(dataclasses.MISSING, "region to predict, degrees (e.g. 80,92,43,48 for the Junggar Basin)",
                         metavar="W,E,S,N")
    out: str = OUT.field()
    tile_size: int | None = TILE_SIZE.field(None, shown="the checkpoint's tile size")
    overlap: float = option(DEFAULT_OVERLAP, "share of a tile overlapping its neighbour, in [0, 1)", NUMBER)
    scale_deg: float | None = option(
        None, "degrees one tile covers, as a training window of that size rendered at the tile size: the node "
              "spacing is divided by the nearest integer to spacing*(tile-1)/scale (at least 1)", NUMBER,
        metavar="DEG", shown=f"the checkpoint's --pixels-per-degree when it has one, else {DEFAULT_SCALE_DEG:g}")
    device: str = DEVICE.field("auto")
    batch_size: int = BATCH_SIZE.field(1)
    labels: str | None = option(None, "geological map (as ggm-data prepare reads it: label grid, GeoTIFF, or "
                                      "a vector map with --label-field): outlines the cover on the map and "
                                      "gives the merged map (merged_class.tif: the mapped outcrop kept, the "
                                      "cover predicted); required for a geology-prior model", metavar="FILE")
    outcrop_prior: bool = option(False, "map the cover by reading the network's probabilities together with the "
                                        "outcrop classes of --labels around each node (needs --labels)", boolean)
    fill_nan: bool = option(False, "fill NaN holes in the Bouguer grid instead of refusing it", boolean)
    variable: str | None = option(None, "the grid to use where the --bouguer file holds several (netCDF variable, "
                                        "raster band number or description, ICGEM column)", metavar="NAME",
                                  shown="the only one")
    label_variable: str | None = option(None, "the variable, band or layer of --labels where it holds several",
                                        metavar="NAME", shown="the only one")
    label_field: str | None = option(None, "the attribute of a vector map's polygons that names their unit",
                                     metavar="NAME", shown="none (required for a vector map)")
    legend: str | None = option(None, "CSV with columns unit and class: the class of each unit or code of --labels "
                                      "(cover = 255); its classes must be the checkpoint's", metavar="FILE.csv",
                                shown="none: the map's codes are the checkpoint's class indices")
    unlisted_units: str = option("error", "units of --labels that --legend does not name: error or ignore (255)",
                                 choice("error", "ignore"))


def build_predict_parser() -> argparse.ArgumentParser:
    """The ``ggm-predict`` argument parser."""
    return PredictOptions.parser(
        "ggm-predict",
        "Predict the bedrock classes of a region from a Bouguer gravity grid with a retrained "
                    "checkpoint; writes prediction.nc (CF-1.8), prediction.png, Cloud-Optimised GeoTIFFs of the "
                    "class, probabilities and entropy, a GeoPackage of the predicted units (with --labels also "
                    "the merged map) and run.json in --out.")


@cli_entry
def predict_main(argv: Sequence[str] | None = None) -> int:
    """``ggm-predict``: map a region and print the files written."""
    values = PredictOptions.from_argv(build_predict_parser(), argv).to_dict()
    paths = predict_region(out_dir=values.pop("out"), **values)  # the options are predict_region's arguments
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(train_main())
