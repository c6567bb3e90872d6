"""``ggm-data``: make the synthetic benchmark, prepare a dataset, draw its overview.

Subcommands::

    ggm-data synth   --out DIR [--seed N] [--region W,E,S,N] [difficulty knobs]
    ggm-data prepare --bouguer FILE --labels FILE --out DIR [options]
    ggm-data show    DIR --out FILE.png
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from ggmnet.datasets.processing import CHANNELS, PAD_MODES, ProcessingRecipe
from ggmnet.datasets.synth import SynthConfig
from ggmnet.datasets.windows import PAPER_SCALES
from ggmnet.engine.config import (
    NON_NEGATIVE,
    NON_NEGATIVE_INT,
    NUMBER,
    POSITIVE,
    POSITIVE_INT,
    Config,
    boolean,
    choice,
    option,
)
from ggmnet.engine.runio import write_run_metadata
from ggmnet.errors import UserError, cli_entry

EPILOG = """examples:
  ggm-data synth --out data/synth --seed 0
  ggm-data prepare --bouguer data/synth/bouguer.nc --labels data/synth/labels.nc \\
      --bedrock data/synth/bedrock.nc --out data/synth-prepared
  ggm-data prepare --bouguer WGM2012_Bouguer_ponc_2min.grd --labels geology.png \\
      --label-bounds 65,95,40,55 --out data/paper
  ggm-data prepare --bouguer bouguer.tif --labels labels.tif --out data/mine
  ggm-data prepare --bouguer bouguer.nc --labels geology.gpkg --label-field UNIT \\
      --legend legend.csv --out data/mine
  ggm-data show data/synth-prepared --out overview.png"""


_RECIPE = ProcessingRecipe()


@dataclasses.dataclass
class SynthOptions(SynthConfig):
    """``ggm-data synth``: the scene's :class:`SynthConfig` and where to write it."""

    out: str = option(dataclasses.MISSING, "output folder", metavar="DIR")


@dataclasses.dataclass
class PrepareOptions(Config):
    """``ggm-data prepare`` (see :func:`ggmnet.datasets.prepare.prepare_dataset`)."""

    bouguer: str = option(dataclasses.MISSING, "Bouguer gravity grid in mGal: netCDF (WGM2012/GMT layout x, y, z or "
                                               "lon/lat), a GeoTIFF in any CRS (reprojected onto a lon/lat grid) "
                                               "or an ICGEM .gdf; it should reach --margin-km beyond the region",
                          metavar="FILE")
    labels: str = option(dataclasses.MISSING, "geological map: a label grid (netCDF of codes: Table 1's classes "
                                              "0-9 and 255 = Cenozoic cover, or the units of --legend), a raster "
                                              "in any CRS (GeoTIFF of codes, or of colours in Table 1's palette; "
                                              "a PNG/TIFF without georeferencing needs --label-bounds or a sidecar "
                                              "FILE.json), or a vector map (Shapefile, GeoPackage, GeoJSON; with "
                                              "--label-field)", metavar="FILE")
    out: str = option(dataclasses.MISSING, "output folder for grids.nc, manifest.json and run.json (created; an "
                                           "existing dataset there is replaced only once the new one is complete)",
                      metavar="DIR")
    region: str = option("65,95,40,55", "study area in degrees east/north", metavar="W,E,S,N",
                         shown="the paper's 65,95,40,55")
    height_km: float = option(_RECIPE.height_km, "upward-continuation height of the regional field, km", POSITIVE)
    margin_km: float = option(_RECIPE.margin_km, "data kept around the region for the continuation, km",
                              NON_NEGATIVE)
    pad_mode: str = option(_RECIPE.pad_mode, "padding of the metric grid before the FFT", choice(*PAD_MODES))
    channels: str = option(",".join(_RECIPE.channels), f"fields to compute, comma-separated: residual plus any of "
                                                       f"{', '.join(CHANNELS[1:])} (derivatives in mGal/km, tilt "
                                                       "in radians)", metavar="LIST")
    bedrock: str | None = option(None, "grid of the true bedrock class everywhere (synthetic benchmark) so that "
                                       "predictions under the cover can be scored", metavar="FILE")
    label_bounds: str | None = option(None, "outer edges in degrees of a label image without georeferencing "
                                            "(refused for a file that has its own)", metavar="W,E,S,N",
                                      shown="its sidecar JSON")
    variable: str | None = option(None, "the grid to use where the --bouguer file holds several: a netCDF variable, "
                                        "a raster band (number or description) or an ICGEM column", metavar="NAME",
                                  shown="the only one (netCDF: z first)")
    label_variable: str | None = option(None, "the variable (netCDF), band (raster) or layer (vector map) of "
                                              "--labels where the file holds several", metavar="NAME",
                                        shown="the only one (netCDF: label first)")
    label_field: str | None = option(None, "the attribute of a vector map's polygons that names their unit",
                                     metavar="NAME", shown="none (required for a vector map)")
    legend: str | None = option(None, "CSV with columns unit and class (optional code, colour #rrggbb): the class "
                                      "of each unit of --label-field or code of a label grid/raster; class 'cover' "
                                      "is the Cenozoic cover (255). Classes that are not all Table 1's become the "
                                      "dataset's own class list, in order of first appearance", metavar="FILE.csv",
                                shown="none: units are Table 1's class names or codes")
    unlisted_units: str = option("error", "units of the map that --legend does not name: error (list them with their "
                                          "areas in km2) or ignore (label 255: not learned, not scored)",
                                 choice("error", "ignore"))
    scales: str = option(",".join(map(str, PAPER_SCALES)), "window sizes and sliding steps in degrees",
                         metavar="SIZE:STEP,...", shown="Table 2: 1:1,5:2.5,10:2.5,15:5")
    split: str = option("random", "random: the paper's split (test = outcrop < --test-below, val = random "
                                  "--val-fraction of the rest; overlapping windows leak); spatial-block: val windows "
                                  "lie in held-out --block-deg blocks that no train window touches",
                        choice("random", "spatial-block"))
    val_fraction: float = option(0.15, "share of the non-test windows used for validation", NUMBER)
    test_below: float = option(0.10, "windows whose outcrop share is below this fraction are the test set", NUMBER)
    block_deg: float = option(5.0, "block size in degrees of the spatial-block split", NUMBER)
    seed: int = option(0, "seed of the split", NON_NEGATIVE_INT)
    fill_nan: bool = option(False, "fill NaN nodes of the gravity grid by Laplace interpolation instead of "
                                   "refusing it", boolean)


@dataclasses.dataclass
class ShowOptions(Config):
    """``ggm-data show``."""

    data_dir: str = option(dataclasses.MISSING, "a prepared dataset folder", metavar="DIR", positional=True)
    out: str = option(dataclasses.MISSING, "PNG to write", metavar="FILE.png")
    dpi: int = option(120, "resolution of the PNG, dots per inch", POSITIVE_INT)


def _run_synth(options: SynthOptions) -> None:
    from ggmnet.datasets.synth import synthesize

    config = SynthConfig.from_dict({k: v for k, v in options.to_dict().items() if k != "out"})
    if Path(options.out).exists() and not Path(options.out).is_dir():
        raise UserError(f"--out {options.out}: exists and is not a folder")
    for key, path in synthesize(options.out, config).items():
        logging.getLogger("ggmnet").info("%s: %s", key, path)


def _run_prepare(options: PrepareOptions) -> None:
    from ggmnet.datasets.geo import Region
    from ggmnet.datasets.prepare import prepare_dataset
    from ggmnet.datasets.windows import parse_scales

    channels = tuple(c.strip() for c in options.channels.split(",") if c.strip())
    try:
        recipe = ProcessingRecipe(height_km=options.height_km, margin_km=options.margin_km,
                                  pad_mode=options.pad_mode, channels=channels)
    except UserError as err:
        raise UserError(f"--height-km/--margin-km/--channels: {err}") from None
    prepare_dataset(
        options.bouguer, options.labels, options.out,
        region=Region.parse(options.region, "--region"), recipe=recipe, bedrock=options.bedrock,
        label_bounds=Region.parse(options.label_bounds, "--label-bounds") if options.label_bounds else None,
        scales=parse_scales(options.scales), split=options.split, val_fraction=options.val_fraction,
        test_below=options.test_below, seed=options.seed, fill_nan=options.fill_nan, block_deg=options.block_deg,
        config=options.to_dict(), variable=options.variable, label_variable=options.label_variable,
        label_field=options.label_field, legend=options.legend, unlisted_units=options.unlisted_units)


def _run_show(options: ShowOptions) -> None:
    from ggmnet.datasets.show import show_dataset

    path = show_dataset(options.data_dir, options.out, dpi=options.dpi)
    # Beside the picture under its own name, so that a dataset's or another run's run.json is never replaced.
    write_run_metadata(path.parent, options.to_dict(), seed=None, name=f"{path.name}.run.json")
    logging.getLogger("ggmnet").info("wrote %s", path)


#: Each subcommand: its options, what it does, its one-line help and its description.
COMMANDS = {
    "synth": (SynthOptions, _run_synth, "write a physically based synthetic scene (bouguer.nc, labels.nc, bedrock.nc)",
              "Write a synthetic scene: a random geological map, its Bouguer anomaly (mGal) from a density forward "
              "model, labels with 255 under the cover, and the true bedrock."),
    "prepare": (PrepareOptions, _run_prepare, "make grids.nc + manifest.json (residual anomaly, labels, windows, split)",
                "Separate the regional field (upward continuation), resample the labels onto the gravity nodes, lay "
                "the multi-scale windows (Table 2) over the region and split them."),
    "show": (ShowOptions, _run_show, "draw a prepared dataset: anomalies, labels and windows (PNG)",
             "Draw the Bouguer, regional and residual anomalies (mGal), the labels in Table 1's colours and the "
             "window outlines of each scale into one PNG."),
}


def build_parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and one parser per subcommand (each parsed on its own, with ``--config``)."""
    top = argparse.ArgumentParser(
        prog="ggm-data", description="Make, prepare and look at GGMNet datasets (gravity grids + geology labels).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="command", required=True, metavar="{synth,prepare,show}")
    for name, (_, _, help_text, _) in COMMANDS.items():
        sub.add_parser(name, help=help_text)
    return top, {name: options.parser(f"ggm-data {name}", description, EPILOG)
                 for name, (options, _, _, description) in COMMANDS.items()}


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ggm-data``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    top, parsers = build_parsers()
    if not argv or argv[0] not in parsers:
        top.parse_args(argv)  # -h, a missing or an unknown command: argparse prints and exits
    options_class, run = COMMANDS[argv[0]][:2]
    options = options_class.from_argv(parsers[argv[0]], argv[1:])
    # ggm-data's own lines (the package's log) get its prefix for the run only: a study that calls main
    # in-process keeps its own log format afterwards
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("ggm-data: %(message)s"))
    log = logging.getLogger("ggmnet")
    saved = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        run(options)
    finally:
        log.removeHandler(handler)
        log.setLevel(saved[0])
        log.propagate = saved[1]
    return 0
