"""Build a prepared dataset: ``grids.nc`` (the region's fields and labels) and ``manifest.json``.

Everything is read and checked before anything is written: the gravity grid must cover the region, the labels
(and bedrock) must cover the region's nodes. The residual is made with :func:`separate_regional` (section 3.3:
upward continuation to 10 km, residual = Bouguer - regional). The windows of Table 2 are laid over the region
and split into train/val/test (see :mod:`ggmnet.datasets.windows`). Outputs are renamed into place only when
complete, the manifest last, so an interrupted run leaves any earlier dataset in ``out_dir`` whole.
:func:`read_manifest` and :func:`load_grids` read a prepared dataset back.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np

from ggmnet.classes import COVER_INDEX, NUM_CLASSES, TABLE1, ClassList, class_list
from ggmnet.datasets.geo import PAPER_REGION, GeoGrid, Region, node_steps
from ggmnet.datasets.processing import ProcessingRecipe, separate_regional
from ggmnet.datasets.readers import read_gravity, read_label_nodes
from ggmnet.datasets.windows import (
    PAPER_SCALES,
    Scale,
    make_windows,
    outcrop_fraction,
    overlap_report,
    split_random,
    split_spatial_blocks,
    window_slices,
)
from ggmnet.engine.runio import atomic_path, file_sha256, prepare_out_dir, write_run_metadata
from ggmnet.errors import UserError

log = logging.getLogger(__name__)

#: Format name and version written into ``manifest.json``.
DATASET_FORMAT = "ggmnet-dataset"
DATASET_VERSION = 1

SPLIT_METHODS = ("random", "spatial-block")

#: Long names and units of the continuous variables of ``grids.nc``.
FIELD_ATTRS = {
    "bouguer": ("Bouguer gravity anomaly", "mGal"),
    "regional": ("regional gravity anomaly (Bouguer anomaly continued upward)", "mGal"),
    "residual": ("residual gravity anomaly (Bouguer minus regional)", "mGal"),
    "vertical_derivative": ("first vertical derivative of the residual anomaly", "mGal/km"),
    "horizontal_gradient": ("total horizontal gradient of the residual anomaly", "mGal/km"),
    "tilt": ("tilt angle of the residual anomaly", "radians"),
}


def field_statistics(values: np.ndarray) -> dict[str, float]:
    """``mean``, ``std``, ``p02`` and ``p98`` of a field over its finite nodes (the field's units)."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    p02, p98 = np.percentile(finite, [2.0, 98.0])
    return {"mean": float(finite.mean()), "std": float(finite.std()), "p02": float(p02), "p98": float(p98)}


def class_counts(labels: np.ndarray, num_classes: int = NUM_CLASSES) -> list[int]:
    """Number of nodes of each class 0..K-1 in ``labels`` (cover and other values not counted)."""
    return np.bincount(np.asarray(labels, dtype=np.uint8).ravel(), minlength=256)[:num_classes].astype(int).tolist()


def manifest_classes(manifest: dict[str, Any]) -> ClassList:
    """The class list of a prepared dataset: its manifest's ``classes``, or Table 1 for a dataset made before
    class lists were recorded."""
    return class_list(manifest.get("classes"), len(manifest.get("class_counts") or [0] * NUM_CLASSES),
                      source="manifest.json classes")


def _check_covers(grid: GeoGrid, region: Region, path: Path) -> None:
    extent = grid.extent
    if not extent.overlaps(region):
        raise UserError(f"--region {region}: does not overlap the gravity grid {path} (which covers {extent})")
    if not grid.covers(region):
        raise UserError(f"{path} covers {extent} but --region needs {region}; choose a region inside the grid")


def prepare_dataset(bouguer: str | os.PathLike, labels: str | os.PathLike, out_dir: str | os.PathLike, *,
                    region: Region = PAPER_REGION, recipe: ProcessingRecipe | None = None,
                    bedrock: str | os.PathLike | None = None, label_bounds: Region | None = None,
                    scales: Sequence[Scale] = PAPER_SCALES, split: str = "random", val_fraction: float = 0.15,
                    test_below: float = 0.10, seed: int = 0, fill_nan: bool = False,
                    block_deg: float = 5.0, config: dict[str, Any] | None = None, variable: str | None = None,
                    label_variable: str | None = None, label_field: str | None = None,
                    legend: str | os.PathLike | None = None, unlisted_units: str = "error") -> Path:
    """Make ``out_dir/grids.nc``, ``out_dir/manifest.json`` and ``out_dir/run.json`` (see docs/design.md);
    returns ``out_dir`` as a Path.

    Parameters
    ----------
    bouguer
        Gravity grid in mGal: netCDF (WGM2012 layout or a variant), a GeoTIFF in any CRS or an ICGEM ``.gdf``
        (:func:`ggmnet.datasets.readers.read_gravity`). It should reach ``recipe.margin_km`` beyond the region for
        a good regional field.
    labels
        Geological map (:func:`ggmnet.datasets.readers.read_label_nodes`): a label grid (netCDF), a raster of
        codes or colours (GeoTIFF in any CRS; PNG/TIFF with ``label_bounds`` or a sidecar JSON) or a vector map
        (Shapefile, GeoPackage, GeoJSON; ``label_field``); resampled onto the gravity nodes by majority.
    out_dir
        Output folder (created; an existing dataset there is replaced only by a complete new one).
    region
        The study area in degrees; its nodes of the gravity grid become the dataset's nodes.
    recipe
        How to separate the regional field (default: ``ProcessingRecipe()``, 10 km upward continuation).
    bedrock
        Optional grid of the true classes everywhere (synthetic benchmark), variable ``bedrock``.
    scales, split, val_fraction, test_below, seed, block_deg
        Windows (Table 2) and their split: ``"random"`` (the paper) or ``"spatial-block"`` (held-out blocks of
        ``block_deg`` degrees, no val/train overlap).
    fill_nan
        Fill NaN nodes of the gravity grid instead of refusing it.
    config
        The resolved command-line configuration for ``run.json`` (default: these arguments).
    variable, label_variable
        The gravity grid's variable or band, and the map's variable, band or layer, where a file holds several.
    label_field, legend, unlisted_units
        A vector map's unit field; the legend CSV (units or codes -> classes; it sets the dataset's class list,
        recorded in the manifest); ``"error"`` or ``"ignore"`` for units the legend does not name.
    """
    recipe = recipe if recipe is not None else ProcessingRecipe()
    if split not in SPLIT_METHODS:
        raise UserError(f"--split {split}: expected one of {', '.join(SPLIT_METHODS)}")
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"--val-fraction {val_fraction}: expected a fraction in [0, 1)")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir}: exists and is not a folder")
    bouguer, labels = Path(bouguer), Path(labels)

    log.info("reading %s", bouguer)
    gravity = read_gravity(bouguer, fill_nan=fill_nan, variable=variable)
    _check_covers(gravity, region, bouguer)
    nodes = gravity.subset(region)
    log.info("reading %s", labels)
    label_values, classes = read_label_nodes(labels, nodes.lon, nodes.lat, bounds=label_bounds,
                                             variable=label_variable, field=label_field, legend=legend,
                                             unlisted=unlisted_units)
    if classes != TABLE1:
        log.info("classes (%d, from %s): %s", classes.num_classes, legend, ", ".join(classes.names))
    bedrock_values = None
    if bedrock is not None:
        bedrock = Path(bedrock)
        bedrock_values, _ = read_label_nodes(bedrock, nodes.lon, nodes.lat, classes=classes)
        if (bedrock_values == COVER_INDEX).any():
            raise UserError(f"--bedrock {bedrock}: has cover (255) nodes in the region (expected a class 0-9 "
                            f"everywhere)")

    windows = make_windows(region, scales)
    if not windows:
        raise UserError(f"--scales {','.join(map(str, scales))}: no window fits inside --region {region}")

    log.info("separating the regional field (upward continuation to %g km, %g km margin)",
             recipe.height_km, recipe.margin_km)
    fields = separate_regional(gravity, region, recipe)
    lon, lat = np.asarray(fields["lon"]), np.asarray(fields["lat"])
    if lon.shape != nodes.lon.shape or lat.shape != nodes.lat.shape:
        raise RuntimeError("separate_regional returned other nodes than the region's")
    names = [n for n in FIELD_ATTRS if n in fields]

    region_labels = GeoGrid(lon, lat, label_values, name="label", units="")
    outcrop = [outcrop_fraction(w, region_labels) for w in windows]
    if split == "random":
        splits = split_random(windows, outcrop, seed, val_fraction=val_fraction, test_below=test_below)
        dropped = 0
    else:
        splits, dropped = split_spatial_blocks(windows, outcrop, seed, val_fraction=val_fraction,
                                               test_below=test_below, block_deg=block_deg)
    window_entries = []
    for w, s, f in zip(windows, splits, outcrop):
        rows, cols = window_slices(w, lon, lat)
        block = label_values[rows, cols]
        window_entries.append({**w.to_dict(), "split": s, "outcrop_fraction": round(f, 6),
                               "nodes": int(block.size), "class_counts": class_counts(block, len(classes))})

    inputs = {"bouguer": bouguer, "labels": labels, "bedrock": bedrock, "legend": legend}
    sources = {key: {"path": str(Path(path).resolve()), "sha256": file_sha256(path)}
               for key, path in inputs.items() if path is not None}
    manifest = {
        "format": DATASET_FORMAT,
        "version": DATASET_VERSION,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "region": region.to_dict(),
        "shape": [int(lat.size), int(lon.size)],
        "spacing_deg": [float(step) for step in node_steps(lon, lat)],
        "recipe": recipe.to_dict(),
        "margin_km": {k: float(v) for k, v in dict(fields["margin_km"]).items()},
        "sources": sources,
        "variables": [*names, "label", *(["bedrock"] if bedrock_values is not None else [])],
        "normalisation": {n: field_statistics(fields[n]) for n in names},
        "classes": classes.to_dict(),
        "class_counts": class_counts(label_values, len(classes)),
        "outcrop_fraction": float(np.mean(label_values != COVER_INDEX)),
        "split": {
            "method": split, "seed": int(seed), "val_fraction": float(val_fraction),
            "test_outcrop_below": float(test_below),
            **({"block_deg": float(block_deg), "dropped_windows": int(dropped)} if split != "random" else {}),
            "counts": {s: splits.count(s) for s in ("train", "val", "test", "unused") if s in splits},
            "overlap": overlap_report(windows, splits),
        },
        "scales": [{"size_deg": s.size_deg, "step_deg": s.step_deg} for s in scales],
        "windows": window_entries,
    }

    out_dir = prepare_out_dir(out_dir)
    log.info("writing %s", out_dir / "grids.nc")
    # Both files are written in full under temporary names first; then grids.nc and the manifest are renamed
    # into place (the inner context exits first), so a failure leaves the previous dataset as it was.
    with atomic_path(out_dir / "manifest.json") as manifest_tmp, atomic_path(out_dir / "grids.nc") as grids_tmp:
        write_grids_nc(grids_tmp, lon, lat, {n: fields[n] for n in names}, label_values, bedrock_values,
                       recipe=recipe, region=region, sources=sources, classes=classes)
        manifest_tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    run_config = config if config is not None else {
        "bouguer": str(bouguer), "labels": str(labels), "out": str(out_dir), "region": str(region),
        "recipe": recipe.to_dict(), "bedrock": str(bedrock) if bedrock is not None else None,
        "label_bounds": str(label_bounds) if label_bounds is not None else None,
        "scales": ",".join(map(str, scales)), "split": split, "val_fraction": val_fraction,
        "test_below": test_below, "fill_nan": fill_nan, "block_deg": block_deg, "variable": variable,
        "label_variable": label_variable, "label_field": label_field,
        "legend": str(legend) if legend is not None else None, "unlisted_units": unlisted_units}
    write_run_metadata(out_dir, run_config, seed=seed)
    log.info("dataset in %s: %d windows (%s)", out_dir, len(windows),
             ", ".join(f"{k} {v}" for k, v in manifest["split"]["counts"].items()))
    return out_dir


def write_grids_nc(path: str | os.PathLike, lon: np.ndarray, lat: np.ndarray, fields: dict[str, np.ndarray],
                   label: np.ndarray, bedrock: np.ndarray | None, *, recipe: ProcessingRecipe, region: Region,
                   sources: dict[str, Any], classes: ClassList = TABLE1) -> None:
    """Write the CF netCDF ``grids.nc``: ``lat`` (ny,), ``lon`` (nx,) ascending degrees; float32 ``fields``
    (ny, nx) with units; uint8 ``label`` (and ``bedrock``) with ``flag_values``/``flag_meanings`` of
    ``classes``."""
    meanings = classes.flag_meanings()
    flag_values = np.asarray(classes.valid_labels, dtype=np.uint8)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.Conventions = "CF-1.8"
        ds.title = "ggmnet prepared dataset: gravity anomalies and bedrock labels"
        ds.source = json.dumps(sources)
        ds.region = str(region)
        ds.processing_recipe = json.dumps(recipe.to_dict())
        ds.history = f"{_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')} ggm-data prepare"
        for name, values, units, axis in (("lat", lat, "degrees_north", "Y"), ("lon", lon, "degrees_east", "X")):
            ds.createDimension(name, values.size)
            var = ds.createVariable(name, "f8", (name,))
            var.standard_name = "latitude" if name == "lat" else "longitude"
            var.long_name = var.standard_name
            var.units = units
            var.axis = axis
            var[:] = values
        for name, values in fields.items():
            long_name, units = FIELD_ATTRS[name]
            var = ds.createVariable(name, "f4", ("lat", "lon"), zlib=True, complevel=1)
            var.long_name = long_name
            var.units = units
            var[:] = np.asarray(values, dtype=np.float32)
        table = " (Table 1)" if classes == TABLE1 else ""
        for name, values, long_name in (("label", label, f"bedrock class at outcrop{table}, 255 = cover"),
                                        ("bedrock", bedrock, "true bedrock class everywhere (synthetic)")):
            if values is None:
                continue
            var = ds.createVariable(name, "u1", ("lat", "lon"), zlib=True, complevel=1)
            var.long_name = long_name
            var.flag_values = flag_values
            var.flag_meanings = meanings
            var[:] = np.asarray(values, dtype=np.uint8)


def read_manifest(data_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``DIR/manifest.json`` of a prepared dataset."""
    path = Path(data_dir) / "manifest.json"
    if not path.is_file():
        raise UserError(f"{path}: no such file (expected a dataset made by 'ggm-data prepare')")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != DATASET_FORMAT:
        raise UserError(f"{path}: not a ggmnet dataset manifest (expected format '{DATASET_FORMAT}')")
    if manifest.get("version") != DATASET_VERSION:
        raise UserError(f"{path}: dataset version {manifest.get('version')} (expected {DATASET_VERSION})")
    return manifest


def load_grids(data_dir: str | os.PathLike, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Load variables of ``DIR/grids.nc`` into memory: ``lon`` (nx,), ``lat`` (ny,) ascending degrees and each
    of ``names`` (all data variables if None) as (ny, nx): float32 fields (mGal, mGal/km, radians), uint8
    ``label``/``bedrock``."""
    path = Path(data_dir) / "grids.nc"
    if not path.is_file():
        raise UserError(f"{path}: no such file (expected a dataset made by 'ggm-data prepare')")
    try:
        with netCDF4.Dataset(path) as ds:
            ds.set_auto_mask(False)
            wanted = [n for n in ds.variables if n not in ("lon", "lat")] if names is None else list(names)
            missing = [n for n in wanted if n not in ds.variables]
            if missing:
                raise UserError(f"{path}: no variable(s) {', '.join(missing)}")
            out = {"lon": np.asarray(ds["lon"][:], dtype=np.float64),
                   "lat": np.asarray(ds["lat"][:], dtype=np.float64)}
            for name in wanted:
                out[name] = np.ascontiguousarray(ds[name][:])
    except OSError as err:
        raise UserError(f"{path}: not a readable netCDF file ({err})") from None
    return out
