"""``ggm-data``: make the synthetic benchmark, prepare a dataset, draw its overview.

Subcommands::

    ggm-data synth   --out DIR [--seed N] [--region W,E,S,N] [difficulty knobs]
    ggm-data prepare --bouguer FILE --labels FILE --out DIR [options]
    ggm-data show    DIR --out FILE.png
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from ggmnet.engine.config import add_config_argument, namespace_to_config, parse_with_config
from ggmnet.engine.runio import write_run_metadata
from ggmnet.errors import UserError, cli_entry

EPILOG = """examples:
  ggm-data synth --out data/synth --seed 0
  ggm-data prepare --bouguer data/synth/bouguer.nc --labels data/synth/labels.nc \\
      --bedrock data/synth/bedrock.nc --out data/synth-prepared
  ggm-data prepare --bouguer WGM2012_Bouguer_ponc_2min.grd --labels geology.png \\
      --label-bounds 65,95,40,55 --out data/paper
  ggm-data show data/synth-prepared --out overview.png"""


def _add_prepare_arguments(p: argparse.ArgumentParser) -> None:
    from ggmnet.datasets.processing import CHANNELS, PAD_MODES, ProcessingRecipe
    from ggmnet.datasets.windows import PAPER_SCALES

    d = ProcessingRecipe()
    p.add_argument("--bouguer", type=Path, metavar="FILE",
                   help="Bouguer gravity grid, netCDF in mGal (WGM2012/GMT layout x, y, z or lon/lat); it should "
                        "reach --margin-km beyond the region. Required.")
    p.add_argument("--labels", type=Path, metavar="FILE",
                   help="label grid (netCDF, classes 0-9 of Table 1, 255 = Cenozoic cover) or label image "
                        "(PNG/TIFF in Table 1's colours, with --label-bounds or a sidecar FILE.json). Required.")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="output folder for grids.nc, manifest.json and run.json (created; an existing dataset "
                        "there is replaced only once the new one is complete). Required.")
    p.add_argument("--region", default="65,95,40,55", metavar="W,E,S,N",
                   help="study area in degrees east/north (default: the paper's 65,95,40,55)")
    p.add_argument("--height-km", type=float, default=d.height_km,
                   help=f"upward-continuation height of the regional field, km (default {d.height_km:g})")
    p.add_argument("--margin-km", type=float, default=d.margin_km,
                   help=f"data kept around the region for the continuation, km (default {d.margin_km:g})")
    p.add_argument("--pad-mode", choices=PAD_MODES, default=d.pad_mode,
                   help=f"padding of the metric grid before the FFT (default {d.pad_mode})")
    p.add_argument("--channels", default=",".join(d.channels), metavar="LIST",
                   help=f"fields to compute, comma-separated: residual plus any of {', '.join(CHANNELS[1:])} "
                        f"(derivatives in mGal/km, tilt in radians; default residual)")
    p.add_argument("--bedrock", type=Path, default=None, metavar="FILE",
                   help="grid of the true bedrock class everywhere (synthetic benchmark) so that predictions "
                        "under the cover can be scored (default: none)")
    p.add_argument("--label-bounds", default=None, metavar="W,E,S,N",
                   help="outer edges in degrees of a label image (default: its sidecar JSON)")
    p.add_argument("--scales", default=",".join(map(str, PAPER_SCALES)), metavar="SIZE:STEP,...",
                   help="window sizes and sliding steps in degrees (default Table 2: 1:1,5:2.5,10:2.5,15:5)")
    p.add_argument("--split", choices=("random", "spatial-block"), default="random",
                   help="random: the paper's split (test = outcrop < --test-below, val = random "
                        "--val-fraction of the rest; overlapping windows leak); spatial-block: val windows lie "
                        "in held-out --block-deg blocks that no train window touches (default random)")
    p.add_argument("--val-fraction", type=float, default=0.15,
                   help="share of the non-test windows used for validation (default 0.15)")
    p.add_argument("--test-below", type=float, default=0.10,
                   help="windows whose outcrop share is below this fraction are the test set (default 0.10)")
    p.add_argument("--block-deg", type=float, default=5.0,
                   help="block size in degrees of the spatial-block split (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    p.add_argument("--fill-nan", action="store_true",
                   help="fill NaN nodes of the gravity grid by Laplace interpolation instead of refusing it")
    add_config_argument(p)


def build_parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and one parser per subcommand (each parsed on its own, with ``--config``)."""
    from ggmnet.datasets.synth import add_synth_arguments

    top = argparse.ArgumentParser(
        prog="ggm-data", description="Make, prepare and look at GGMNet datasets (gravity grids + geology labels).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="command", required=True, metavar="{synth,prepare,show}")
    synth = sub.add_parser(
        "synth", help="write a physically based synthetic scene (bouguer.nc, labels.nc, bedrock.nc)",
        description="Write a synthetic scene: a random geological map, its Bouguer anomaly (mGal) from a "
                    "density forward model, labels with 255 under the cover, and the true bedrock.")
    synth.add_argument("--out", type=Path, metavar="DIR", help="output folder. Required.")
    add_synth_arguments(synth)
    add_config_argument(synth)
    prepare = sub.add_parser(
        "prepare", help="make grids.nc + manifest.json (residual anomaly, labels, windows, split)",
        description="Separate the regional field (upward continuation), resample the labels onto the "
                    "gravity nodes, lay the multi-scale windows (Table 2) over the region and split them.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_prepare_arguments(prepare)
    show = sub.add_parser(
        "show", help="draw a prepared dataset: anomalies, labels and windows (PNG)",
        description="Draw the Bouguer, regional and residual anomalies (mGal), the labels in Table 1's "
                    "colours and the window outlines of each scale into one PNG.")
    show.add_argument("data_dir", type=Path, metavar="DIR", help="a prepared dataset folder")
    show.add_argument("--out", type=Path, metavar="FILE.png", help="PNG to write. Required.")
    show.add_argument("--dpi", type=int, default=120, help="resolution of the PNG, dots per inch (default 120)")
    return top, {"synth": synth, "prepare": prepare, "show": show}


def _require(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        if getattr(args, name) is None:
            raise UserError(f"--{name.replace('_', '-')} is required")


def _run_synth(args: argparse.Namespace) -> None:
    from ggmnet.datasets.synth import config_from_args, synthesize

    _require(args, "out")
    config = config_from_args(args)
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UserError(f"--out {args.out}: exists and is not a folder")
    paths = synthesize(args.out, config)
    for key, path in paths.items():
        logging.getLogger("ggmnet").info("%s: %s", key, path)


def _run_prepare(args: argparse.Namespace) -> None:
    from ggmnet.datasets.grids import Region
    from ggmnet.datasets.prepare import prepare_dataset
    from ggmnet.datasets.processing import ProcessingRecipe
    from ggmnet.datasets.windows import parse_scales

    _require(args, "bouguer", "labels", "out")
    channels = tuple(c.strip() for c in str(args.channels).split(",") if c.strip())
    try:
        recipe = ProcessingRecipe(height_km=float(args.height_km), margin_km=float(args.margin_km),
                                  pad_mode=args.pad_mode, channels=channels)
    except UserError as err:
        raise UserError(f"--height-km/--margin-km/--channels: {err}") from None
    prepare_dataset(
        args.bouguer, args.labels, args.out,
        region=Region.parse(str(args.region), "--region"), recipe=recipe, bedrock=args.bedrock,
        label_bounds=Region.parse(str(args.label_bounds), "--label-bounds") if args.label_bounds else None,
        scales=parse_scales(str(args.scales)), split=args.split, val_fraction=float(args.val_fraction),
        test_below=float(args.test_below), seed=int(args.seed), fill_nan=bool(args.fill_nan),
        block_deg=float(args.block_deg), config=namespace_to_config(args))


def _run_show(args: argparse.Namespace) -> None:
    from ggmnet.datasets.show import show_dataset

    _require(args, "out")
    path = show_dataset(args.data_dir, args.out, dpi=int(args.dpi))
    # Beside the picture under its own name, so that a dataset's or another run's run.json is never replaced.
    write_run_metadata(path.parent, namespace_to_config(args), seed=None, name=f"{path.name}.run.json")
    logging.getLogger("ggmnet").info("wrote %s", path)


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ggm-data``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    top, commands = build_parsers()
    if not argv or argv[0] not in commands:
        top.parse_args(argv)  # -h, a missing or an unknown command: argparse prints and exits
    args = parse_with_config(commands[argv[0]], argv[1:])
    logging.basicConfig(level=logging.INFO, format="ggm-data: %(message)s", stream=sys.stderr)
    {"synth": _run_synth, "prepare": _run_prepare, "show": _run_show}[argv[0]](args)
    return 0
