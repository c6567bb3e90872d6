"""Command-line entry points of the search stage: ``nas-search`` and ``nas-export``."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from collections.abc import Sequence

from ggmnet.configuration import add_config_argument, namespace_to_config, optional_int, parse_with_config
from ggmnet.errors import cli_entry
from ggmnet.runio import write_run_metadata

SEARCH_EPILOG = """\
The defaults are the paper's scale (depth 22, 2048 px tiles cropped to 1024, 4 tiles per GPU, 50 epochs of
which 20 warm up the weights); run it on GPUs, e.g.
  torchrun --nproc_per_node=4 --no-python nas-search --config experiments/search_paper.yaml
CPU recipe (about ten minutes and 4 GB of memory on two cores, see experiments/search_cpu.yaml):
  nas-search --depth 22 --config experiments/search_cpu.yaml
The run folder gets run.json, genotype.json (derived after every epoch, with provenance), genotype_best.json
(best validation FWIoU), checkpoints/last.pt and best.pt (the whole supernet with its optimiser state:
about 2 GB each at depth 22), metrics.jsonl and the architecture heatmaps (images/arch_*.png).
Interrupt at any time and rerun with --resume (and the same --out) to continue.
"""


def build_search_parser() -> argparse.ArgumentParser:
    """The ``nas-search`` argument parser (defaults from :class:`ggmnet.search.search.SearchConfig`)."""
    from ggmnet.search.search import SearchConfig

    d = SearchConfig()
    p = argparse.ArgumentParser(
        prog="nas-search", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=SEARCH_EPILOG,
        description="Search the multi-resolution feature extraction module (MRFEM) of GGMNet with a "
                    "differentiable supernet (Gumbel-softmax sampling, first-order alternating updates).",
    )
    p.add_argument("--depth", type=int, default=d.depth,
                   help=f"cells per branch of the MRFEM, 2..64; the paper searches 16..24 (others warn). "
                        f"Default: {d.depth}.")
    p.add_argument("--unit-channels", type=_int_triple, default=d.unit_channels, metavar="U8,U16,U32",
                   help="unit widths at strides 8, 16, 32; a cell of width expansion e has e x unit channels, "
                        "so expansion 8 at 1/8 gives the encoder's 96. Smaller units give a lighter supernet "
                        f"(the CPU recipe uses 4,8,16). Default: {','.join(map(str, d.unit_channels))}.")
    p.add_argument("--data", default=d.data, metavar="DIR",
                   help="prepared dataset folder (ggm-data prepare output). Default: the synthetic default "
                        "dataset, built on first use under $GGMNET_DATA or ~/.cache/ggmnet.")
    p.add_argument("--out", default=d.out, metavar="DIR",
                   help="run folder. Default: a new runs/search/depthD-DATE-TIME (with --resume: the newest "
                        "run there).")
    p.add_argument("--epochs", type=int, default=d.epochs,
                   help=f"total epochs, warm-up included. Default: {d.epochs}.")
    p.add_argument("--warmup-epochs", type=int, default=d.warmup_epochs,
                   help=f"leading epochs that train the weights only, on sampled architectures. "
                        f"Default: {d.warmup_epochs}.")
    p.add_argument("--steps-per-epoch", type=optional_int, default=d.steps_per_epoch, metavar="N",
                   help="steps per epoch (a weight step, plus an architecture step after the warm-up). "
                        "Default: none = one pass over this process's share of the weights' half.")
    p.add_argument("--tile-size", type=int, default=d.tile_size, metavar="PX",
                   help=f"side of a rendered window tile, pixels, a multiple of 32. Default: {d.tile_size}.")
    p.add_argument("--crop-size", type=optional_int, default=d.crop_size, metavar="PX",
                   help=f"side of the random training crop, pixels, a multiple of 32 (none: whole tiles); "
                        f"validation uses whole tiles. Default: {d.crop_size}.")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"tiles per step and per process. Default: {d.batch_size}.")
    p.add_argument("--val-tiles", type=optional_int, default=d.val_tiles, metavar="N",
                   help="validation tiles scored every epoch (a fixed seeded choice). Default: none = all.")
    p.add_argument("--lr-weights", type=float, default=d.lr_weights,
                   help=f"initial learning rate of the weights (SGD, momentum {d.momentum}, cosine decay). "
                        f"Default: {d.lr_weights}.")
    p.add_argument("--lr-arch", type=float, default=d.lr_arch,
                   help=f"learning rate of the architecture logits (Adam, betas 0.5/0.999). Default: {d.lr_arch}.")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay,
                   help=f"weight decay of the weights. Default: {d.weight_decay}.")
    p.add_argument("--momentum", type=float, default=d.momentum,
                   help=f"SGD momentum of the weights. Default: {d.momentum}.")
    p.add_argument("--grad-clip", type=float, default=d.grad_clip,
                   help=f"maximum global norm of the weights' gradient. Default: {d.grad_clip}.")
    p.add_argument("--tau-start", type=float, default=d.tau_start,
                   help=f"Gumbel-softmax temperature during the warm-up. Default: {d.tau_start}.")
    p.add_argument("--tau-end", type=float, default=d.tau_end,
                   help=f"temperature at the last epoch (geometric annealing per epoch). Default: {d.tau_end}.")
    p.add_argument("--cost-weight", type=float, default=d.cost_weight,
                   help=f"weight of the expected cost (MACs per pixel) in the architecture loss; 0 searches "
                        f"for accuracy only, as the paper. Default: {d.cost_weight}.")
    p.add_argument("--top-k-fraction", type=float, default=d.top_k_fraction,
                   help=f"K/N of the bootstrapped cross-entropy (Eq. 19). Default: {d.top_k_fraction}.")
    p.add_argument("--channels", choices=("pseudocolour", "physical"), default=d.channels,
                   help=f"network input: the paper's pseudo-colour image of the residual anomaly, or the "
                        f"normalised physical channels. Default: {d.channels}.")
    p.add_argument("--seed", type=int, default=d.seed,
                   help=f"seed of the data split, the sampling and the initial weights. Default: {d.seed}.")
    p.add_argument("--device", default=d.device,
                   help=f"auto (CUDA when available), cpu, cuda or cuda:N. Default: {d.device}.")
    p.add_argument("--num-workers", type=int, default=d.num_workers,
                   help=f"data-loading worker processes per process. Default: {d.num_workers}.")
    p.add_argument("--no-amp", dest="amp", action="store_false", default=d.amp,
                   help="disable mixed precision on CUDA (never used on CPU). Default: enabled.")
    p.add_argument("--resume", action="store_true", default=d.resume,
                   help="continue the run in --out (or the newest under runs/search) from its last checkpoint.")
    p.add_argument("--wandb-mode", choices=("online", "offline", "disabled"), default=d.wandb_mode,
                   help="Weights & Biases mode. Default: online with credentials, else offline (local copies "
                        "of everything logged are always written to the run folder).")
    add_config_argument(p)
    return p


def _int_triple(text: str) -> tuple[int, int, int]:
    try:
        values = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected three positive integers such as 12,24,48")
    return values  # type: ignore[return-value]


def _setup_logging() -> None:
    rank = int(os.environ.get("RANK", "0") or 0)
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format="%(message)s")


@cli_entry
def search_main(argv: Sequence[str] | None = None) -> int:
    """``nas-search``: run or resume an architecture search; prints the run folder."""
    parser = build_search_parser()
    args = parse_with_config(parser, argv)
    _setup_logging()
    from ggmnet.search.search import SearchConfig, run_search

    values = namespace_to_config(args)
    names = {f.name for f in dataclasses.fields(SearchConfig)}
    config = SearchConfig(**{k: v for k, v in values.items() if k in names}).check()
    run_dir = run_search(config)
    if int(os.environ.get("RANK", "0") or 0) == 0:
        print(f"search run: {run_dir}\ngenotype:   {run_dir / 'genotype.json'}")
    return 0


def build_export_parser() -> argparse.ArgumentParser:
    """The ``nas-export`` argument parser."""
    p = argparse.ArgumentParser(
        prog="nas-export",
        description="Derive the searched architecture from a search checkpoint and write it as a genotype "
                    "JSON (validated, written atomically), then print its summary.",
    )
    p.add_argument("genotype", metavar="GENOTYPE.json", help="genotype file to write.")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--run", metavar="DIR",
                        help="search run folder (its checkpoints/last.pt). Default: the newest run under "
                             "runs/search.")
    source.add_argument("--checkpoint", metavar="FILE",
                        help="a search checkpoint, e.g. RUN/checkpoints/best.pt for the epoch of best "
                             "validation FWIoU.")
    p.add_argument("--force", action="store_true",
                   help="overwrite an existing genotype file that differs. Default: refuse.")
    return p


@cli_entry
def export_main(argv: Sequence[str] | None = None) -> int:
    """``nas-export``: write the genotype of a search run and print its summary."""
    args = build_export_parser().parse_args(argv)
    from pathlib import Path

    from ggmnet.search.export import export_genotype

    genotype, source, written = export_genotype(args.genotype, run=args.run, checkpoint=args.checkpoint,
                                                force=args.force)
    out = Path(args.genotype)
    if written:
        write_run_metadata(out.parent, {**namespace_to_config(args), "checkpoint": str(source)}, seed=None,
                           name=f"{out.stem}.run.json")
    print(genotype.summary())
    fwiou = genotype.provenance.get("metrics", {}).get("fwiou")
    print(f"{'wrote' if written else 'unchanged'} {out} (from {source}, epoch {genotype.provenance.get('epoch')}, "
          f"val FWIoU {'n/a' if fwiou is None else f'{100 * fwiou:.1f}%'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(search_main())
