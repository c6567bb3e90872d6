"""Command-line entry point of the retraining stage: ``retrain``."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import warnings
from collections.abc import Sequence

from ggmnet.configuration import add_config_argument, namespace_to_config, optional_int, parse_with_config
from ggmnet.errors import cli_entry

RETRAIN_EPILOG = """\
The defaults are the paper's (section 5.1): 600 epochs, 2048 px tiles cropped to 1024, 4 tiles per GPU, Adam
(lr 1e-3) until the training loss flattens, then SGD (momentum 0.9, weight decay 5e-4) with a 5-epoch linear
warm-up and a tenfold drop every 50 epochs. Run it on GPUs, e.g.
  torchrun --nproc_per_node=4 -m ggmnet.retrain.cli --genotype genotype.json --data DIR
CPU recipe (see experiments/retrain_cpu.yaml):
  retrain --genotype genotype.json --config experiments/retrain_cpu.yaml
Table 5's ablations: --ablation a|b|c|d|ours; Table 6's baselines and U-Nets: --model NAME (no genotype; input
channels and classes from the dataset), e.g. --model fasterseg.
The run folder gets run.json, genotype.json, checkpoints/last.pt (every epoch) and best.pt (best validation
FWIoU; the file ggm-evaluate and ggm-predict take), curves.png, metrics.jsonl, tables/ and images/.
Interrupt at any time and rerun with --resume (and the same --out) to continue exactly where it stopped.
"""


def build_retrain_parser() -> argparse.ArgumentParser:
    """The ``retrain`` argument parser (defaults from :class:`ggmnet.retrain.train.RetrainConfig`)."""
    from ggmnet.retrain.ggmnet_model import ABLATIONS
    from ggmnet.retrain.models import list_models
    from ggmnet.retrain.train import DEFAULT_PLATEAU_PATIENCE, RetrainConfig

    d = RetrainConfig()
    p = argparse.ArgumentParser(
        prog="retrain", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=RETRAIN_EPILOG,
        description="Train GGMNet (from a searched genotype) or a baseline from scratch on a prepared dataset, "
                    "validating every epoch (FWIoU, MPA, mIoU, per-class IoU) and checkpointing atomically.",
    )
    p.add_argument("--genotype", default=d.genotype, metavar="FILE.json",
                   help="genotype of the searched MRFEM (nas-export output); required for --model ggmnet "
                        "unless resuming. Its in_channels and num_classes must match the dataset's input.")
    p.add_argument("--data", default=d.data, metavar="DIR",
                   help="prepared dataset folder (ggm-data prepare output). Default: the synthetic default "
                        "dataset, built on first use under $GGMNET_DATA or ~/.cache/ggmnet.")
    p.add_argument("--out", default=d.out, metavar="DIR",
                   help="run folder. Default: a new runs/retrain/MODEL-DATE-TIME (with --resume: the newest run "
                        "there).")
    p.add_argument("--model", choices=list_models(), default=d.model,
                   help="network: ggmnet (from --genotype) or a baseline trained from scratch ("
                        f"{', '.join(m for m in list_models() if m != 'ggmnet')}; fc_hardnet70, fasterseg and "
                        f"hrnet_w32 are Table 6's). Default: {d.model}.")
    p.add_argument("--ablation", choices=tuple(ABLATIONS), default=d.ablation,
                   help="Table 5's row for ggmnet: a = U-shaped baseline, b = +attention refinement, "
                        "c = +feature fusion, d = +deformable convolution, ours = +residual connections. "
                        f"Default: {d.ablation}.")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"total epochs. Default: {d.epochs}.")
    p.add_argument("--steps-per-epoch", type=optional_int, default=d.steps_per_epoch, metavar="N",
                   help="optimiser steps per epoch. Default: none = one pass over this process's share of the "
                        "training windows.")
    p.add_argument("--tile-size", type=int, default=d.tile_size, metavar="PX",
                   help=f"pixels per side a window is rendered at. Default: {d.tile_size}.")
    p.add_argument("--crop-size", type=optional_int, default=d.crop_size, metavar="PX",
                   help=f"side of the random training crop, pixels (none: whole tiles); validation scores whole "
                        f"tiles. Default: {d.crop_size}.")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"tiles per step and per process, at least 2. Default: {d.batch_size}.")
    p.add_argument("--val-tiles", type=optional_int, default=d.val_tiles, metavar="N",
                   help="validation tiles scored every epoch (a fixed seeded choice). Default: none = all.")
    p.add_argument("--lr", type=float, default=d.lr,
                   help=f"Adam's learning rate, and SGD's starting one after the switch. Default: {d.lr}.")
    p.add_argument("--switch-epoch", type=optional_int, default=d.switch_epoch, metavar="N",
                   help="switch from Adam to SGD before epoch N (0-based: N Adam epochs); exclusive with "
                        "--plateau-patience. Default: none = by the plateau rule.")
    p.add_argument("--plateau-patience", type=optional_int, default=d.plateau_patience, metavar="N",
                   help="switch to SGD once the epoch training loss has improved by less than "
                        f"--plateau-threshold for N epochs in a row. Default: none = {DEFAULT_PLATEAU_PATIENCE} "
                        "unless --switch-epoch is given.")
    p.add_argument("--plateau-threshold", type=float, default=d.plateau_threshold,
                   help=f"relative improvement of the epoch training loss below which an epoch counts as flat. "
                        f"Default: {d.plateau_threshold}.")
    p.add_argument("--top-k-fraction", type=float, default=d.top_k_fraction,
                   help=f"K/N of the bootstrapped cross-entropy (Eq. 19). Default: {d.top_k_fraction}.")
    p.add_argument("--channels", choices=("pseudocolour", "physical"), default=d.channels,
                   help=f"network input: the paper's pseudo-colour image of the residual anomaly, or the "
                        f"normalised physical channels. Default: {d.channels}.")
    p.add_argument("--geology-prior", action=argparse.BooleanOptionalAction, default=d.geology_prior,
                   help="append the known outcrop classes (11 channels) to the input. Default: off.")
    p.add_argument("--seed", type=int, default=d.seed,
                   help=f"seed of the initial weights, the data order and the augmentation. Default: {d.seed}.")
    p.add_argument("--device", default=d.device,
                   help=f"auto (CUDA when available), cpu, cuda or cuda:N. Default: {d.device}.")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=d.amp,
                   help="mixed precision on CUDA (bfloat16 where supported, else float16 with loss scaling); "
                        "never used on CPU. Default: on.")
    p.add_argument("--num-workers", type=int, default=d.num_workers,
                   help=f"data-loading worker processes per process. Default: {d.num_workers}.")
    p.add_argument("--image-every", type=int, default=d.image_every, metavar="N",
                   help=f"log validation pictures (with predicted and true masks) and the confusion matrix every "
                        f"N epochs and after the last. Default: {d.image_every}.")
    p.add_argument("--val-images", type=int, default=d.val_images, metavar="N",
                   help=f"validation tiles pictured each time. Default: {d.val_images}.")
    p.add_argument("--resume", action="store_true", default=d.resume,
                   help="continue the run in --out (or the newest under runs/retrain) from its last checkpoint; "
                        "--genotype may then be left out.")
    p.add_argument("--wandb-mode", choices=("online", "offline", "disabled"), default=d.wandb_mode,
                   help="Weights & Biases mode. Default: online with credentials, else offline (local copies "
                        "of everything logged are always written to the run folder).")
    add_config_argument(p)
    return p


def _setup_logging() -> None:
    rank = int(os.environ.get("RANK", "0") or 0)
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format="%(message)s")
    warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"


@cli_entry
def train_main(argv: Sequence[str] | None = None) -> int:
    """``retrain``: run or resume a retrain run; prints a one-line summary."""
    parser = build_retrain_parser()
    args = parse_with_config(parser, argv)
    _setup_logging()
    from ggmnet.retrain.train import RetrainConfig, format_summary, run_retrain

    values = namespace_to_config(args)
    names = {f.name for f in dataclasses.fields(RetrainConfig)}
    config = RetrainConfig(**{k: v for k, v in values.items() if k in names}).check()
    summary = run_retrain(config)
    if int(os.environ.get("RANK", "0") or 0) == 0:
        print(format_summary(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(train_main())
