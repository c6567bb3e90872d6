"""Region prediction (paper section 5.4, the Junggar Basin): ``ggm-predict``.

A Bouguer grid and a region become a map of the bedrock class under the cover:

1. the residual anomaly is made with the checkpoint's own processing recipe (``separate_regional``), so the
   network sees the same kind of field it was trained on;
2. the region's node grid is upsampled to the training pixel density. A training window of ``scale_deg``
   degrees was rendered at ``tile_size`` px, about ``scale_deg / tile_size`` degrees per pixel; the node
   spacing is divided by the integer factor ``f >= 1`` nearest to the one giving that pixel size, so every
   node falls on a pixel and an inference tile covers about ``scale_deg`` degrees, as a training window of
   that scale did. The default, 5 degrees, is Table 2's second scale: at 2048 px it is 0.0024 deg/px, 14
   pixels per 2' node. (The 1-degree windows, 84 % of the paper's samples, would need 68 pixels per node,
   250 Mpx for the Junggar Basin.) With ``f = 1`` the model runs on the native node grid. A checkpoint trained
   on fixed-resolution tiles (``pixels_per_degree``) is run at exactly its training density instead, which
   may be a fraction of a pixel per node (0.5 for the CPU recipe's 15 px per degree on a 2' grid);
3. the pixel grid is cut into overlapping square tiles, each rendered on the fly, north up, with the training
   sampler (bilinear between nodes) and the training input transformation (``input_channels_from_fields``);
   the tiles' class probabilities are blended with a separable Hann weight (summed weighted probabilities
   divided by summed weights), so no seam appears where tiles meet;
4. the blended probabilities are kept at the pixels that coincide with the input nodes (interpolated bilinearly
   between pixels at a fractional density), so the outputs lie on the Bouguer grid's own lon/lat nodes inside
   the region.

Outputs: ``prediction.nc`` (CF-1.8: ``class``, ``probability``, ``entropy`` in nats), ``prediction.png``, the
GIS layers of :mod:`ggmnet.inference.gis` and ``run.json`` (``docs/own-data.md`` lists them).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ggmnet.classes import COVER_INDEX, TABLE1, ClassList
from ggmnet.datasets.geo import Region
from ggmnet.datasets.prepare import class_counts
from ggmnet.datasets.processing import ProcessingRecipe, separate_regional
from ggmnet.datasets.readers import read_gravity, read_label_nodes
from ggmnet.engine.device import resolve_device
from ggmnet.engine.runio import atomic_path, prepare_out_dir, require_file, write_run_metadata
from ggmnet.errors import UserError
from ggmnet.inference.calibration import entropy
from ggmnet.inference.ensemble import load_members
from ggmnet.inference.gis import write_gis_outputs
from ggmnet.inference.rules import with_outcrop_prior
from ggmnet.inference.scoring import input_field_names, node_factors, node_spacing_km
from ggmnet.inference.tiling import DEFAULT_OVERLAP, predict_nodes
from ggmnet.models import checkpoint_classes

#: Default window size (degrees) that one tile covers (Table 2's 5-degree scale).
DEFAULT_SCALE_DEG = 5.0


# ------------------------------------------------------------ from a region's node grid to the model's pixels

def upsampling_factors(spacing_deg: tuple[float, float], scale_deg: float, tile_size: int) -> tuple[int, int]:
    """Pixels per node step ``(f_lat, f_lon)`` giving a pixel size close to a training window's.

    ``spacing_deg`` = (dlon, dlat) of the node grid. A window of ``scale_deg`` degrees rendered at
    ``tile_size`` px has ``scale_deg / (tile_size - 1)`` degrees per pixel (first and last pixel on its
    edges); each factor is the nearest integer >= 1 to ``spacing / that``.
    """
    pixel_deg = scale_deg / max(tile_size - 1, 1)
    dlon, dlat = spacing_deg
    return max(1, int(round(dlat / pixel_deg))), max(1, int(round(dlon / pixel_deg)))


# --------------------------------------------------------------------------------------------- outputs

_WGS84_WKT = ('GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],PRIMEM["Greenwich",0],'
              'UNIT["degree",0.0174532925199433],AUTHORITY["EPSG","4326"]]')


def write_prediction_netcdf(path: str | Path, lon: np.ndarray, lat: np.ndarray, probability: np.ndarray, *,
                            attrs: dict[str, Any], classes: np.ndarray | None = None,
                            class_list: ClassList = TABLE1) -> Path:
    """Write ``prediction.nc`` (CF-1.8) atomically and return ``path``.

    ``probability`` ``[K, ny, nx]`` (summing to 1 over K) lies on the ascending nodes ``lon`` (nx,, degrees
    east), ``lat`` (ny,, degrees north); ``attrs`` are extra global attributes (strings or numbers);
    ``classes`` ``(ny, nx)`` is the mapped class when it is not the argmax of ``probability`` (the outcrop
    prior); ``class_list`` names the K classes. Variables: ``lat``, ``lon``, ``class_index`` (K), ``class``
    uint8 (lat, lon) with CF flags, ``probability`` float32 (class_index, lat, lon), ``entropy`` float32
    (lat, lon) in nats, and ``crs``, the WGS 84 grid mapping.
    """
    import netCDF4

    probability = np.asarray(probability, dtype=np.float32)
    num_classes = probability.shape[0]
    names = " ".join(class_list.meanings()[:num_classes])
    with atomic_path(path, suffix=".nc") as tmp, netCDF4.Dataset(tmp, "w", format="NETCDF4") as ds:
        ds.setncatts({
            "Conventions": "CF-1.8",
            "title": "GGMNet bedrock prediction",
            "history": f"{_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')} "
                       + " ".join(sys.argv),
            **attrs,
        })
        ds.createDimension("lat", lat.size)
        ds.createDimension("lon", lon.size)
        ds.createDimension("class_index", num_classes)
        crs = ds.createVariable("crs", "i4")
        crs.setncatts({"grid_mapping_name": "latitude_longitude", "semi_major_axis": 6378137.0,
                       "inverse_flattening": 298.257223563, "crs_wkt": _WGS84_WKT, "spatial_ref": _WGS84_WKT})
        for name, values, units, axis in (("lat", lat, "degrees_north", "Y"), ("lon", lon, "degrees_east", "X")):
            var = ds.createVariable(name, "f8", (name,))
            standard = "latitude" if axis == "Y" else "longitude"
            var.setncatts({"units": units, "standard_name": standard, "long_name": standard, "axis": axis})
            var[:] = values
        index = ds.createVariable("class_index", "u1", ("class_index",))
        index.setncatts({"long_name": "bedrock class index" + (" (Table 1)" if class_list == TABLE1 else ""),
                         "class_names": names, "class_codes": " ".join(class_list.codes[:num_classes])})
        index[:] = np.arange(num_classes, dtype=np.uint8)
        cls = ds.createVariable("class", "u1", ("lat", "lon"), zlib=True, fill_value=False)
        cls.setncatts({"long_name": "most probable bedrock class", "grid_mapping": "crs",
                       "flag_values": np.arange(num_classes, dtype=np.uint8), "flag_meanings": names})
        cls[:] = (np.argmax(probability, axis=0) if classes is None else np.asarray(classes)).astype(np.uint8)
        prob = ds.createVariable("probability", "f4", ("class_index", "lat", "lon"), zlib=True, fill_value=False)
        prob.setncatts({"long_name": "probability of each bedrock class", "units": "1", "grid_mapping": "crs"})
        prob[:] = probability
        ent = ds.createVariable("entropy", "f4", ("lat", "lon"), zlib=True, fill_value=False)
        ent.setncatts({"long_name": "entropy of the class probabilities in nats (0 = certain, ln K = uniform)",
                       "units": "1", "grid_mapping": "crs",
                       "valid_range": np.array([0.0, math.log(num_classes)], dtype=np.float32)})
        ent[:] = entropy(probability).astype(np.float32)
    return Path(path)


def write_prediction_png(path: str | Path, lon: np.ndarray, lat: np.ndarray, classes: np.ndarray,
                         entropy: np.ndarray, *, title: str, cover: np.ndarray | None = None,
                         class_list: ClassList = TABLE1) -> Path:
    """Draw the predicted classes in ``class_list``'s colours, and the entropy, with lon/lat axes, atomically.

    ``classes`` and ``entropy`` (nats) are ``(ny, nx)`` on the nodes ``lon`` (nx,), ``lat`` (ny,) in degrees.
    ``cover`` (optional, bool ``(ny, nx)``): where the geological map shows cover. Its edge is drawn in black
    on both panels, and the mapped outcrop is faded on the class map so that the prediction under the cover
    stands out.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    dlon = lon[1] - lon[0] if lon.size > 1 else 1.0
    dlat = lat[1] - lat[0] if lat.size > 1 else 1.0
    extent = (lon[0] - dlon / 2, lon[-1] + dlon / 2, lat[0] - dlat / 2, lat[-1] + dlat / 2)
    aspect = 1.0 / math.cos(math.radians(float(np.mean(lat))))
    map_height_in = min(max(8.0 * (extent[3] - extent[2]) * aspect / (extent[1] - extent[0]), 2.0), 7.0)
    fig, axes = plt.subplots(2, 1, figsize=(9, 2 * map_height_in + 3.0), constrained_layout=True)
    axes[0].imshow(class_list.colourise(classes), extent=extent, origin="lower", interpolation="nearest",
                   aspect=aspect)
    shown = set(np.unique(classes).tolist())
    handles: list[Any] = [Patch(facecolor=np.asarray(colour) / 255, edgecolor="0.3", label=f"{code} {name}")
                          for k, (code, name, colour) in enumerate(zip(class_list.codes, class_list.names,
                                                                       class_list.colours))
                          if k in shown]
    image = axes[1].imshow(entropy, extent=extent, origin="lower", cmap="magma", aspect=aspect,
                           vmin=0.0, vmax=math.log(class_list.num_classes), interpolation="nearest")
    fig.colorbar(image, ax=axes[1], label=f"entropy (nats; ln {class_list.num_classes} = no preference)",
                 location="bottom", shrink=0.6)
    if cover is not None and np.any(cover) and not np.all(cover):
        mask = np.asarray(cover, dtype=float)
        for ax in axes:
            ax.contour(lon, lat, mask, levels=[0.5], colors="k", linewidths=0.7)
        axes[0].contourf(lon, lat, mask, levels=[-0.5, 0.5], colors=["white"], alpha=0.5)
        handles += [Line2D([], [], color="k", lw=0.7, label="edge of the mapped cover"),
                    Patch(facecolor="white", edgecolor="0.3", alpha=0.5, label="mapped outcrop (faded)")]
    axes[0].legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=4, fontsize=8,
                   frameon=False)
    axes[0].set_title(title)
    axes[1].set_title("uncertainty of the prediction")
    for ax in axes:
        ax.set_xlabel("longitude (degrees east)")
        ax.set_ylabel("latitude (degrees north)")
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


# --------------------------------------------------------------------------------------- the whole prediction

def map_title(region: Region | str, checkpoint: str | Path, *, members: int = 0, tta: bool = False,
              outcrop_prior: bool = False) -> str:
    """The map's title: the region and what made the map (the checkpoint, the seeds and views averaged with it,
    the outcrop prior)."""
    what = Path(checkpoint).name
    if members:
        what += f" averaged with {members} other seed{'s' if members > 1 else ''}"
    if tta:
        what += ", 8 views of each tile"
    if outcrop_prior:
        what += "; cover read with the outcrop prior"
    return f"GGMNet prediction, {region} ({what})"


def predict_region(checkpoint: str | Path, bouguer: str | Path, region: Region | str, out_dir: str | Path, *,
                   tile_size: int | None = None, overlap: float = DEFAULT_OVERLAP,
                   scale_deg: float | None = None, device: str = "auto", batch_size: int = 1,
                   labels: str | Path | None = None, outcrop_prior: bool = False, fill_nan: bool = False,
                   progress: bool = True, variable: str | None = None, label_variable: str | None = None,
                   label_field: str | None = None, legend: str | Path | None = None,
                   unlisted_units: str = "error", members: Sequence[str | Path] = (),
                   tta: bool = False) -> dict[str, Path]:
    """Predict the bedrock classes over ``region`` of a Bouguer grid and write the map files.

    Parameters
    ----------
    checkpoint : str or Path
        A retrain checkpoint (``best.pt``/``last.pt``) holding the model, its recipe and normalisation.
    bouguer : str or Path
        Bouguer anomaly grid (mGal): netCDF (WGM2012/GMT), GeoTIFF in any CRS or ICGEM ``.gdf``
        (:func:`ggmnet.datasets.readers.read_gravity`); it must cover ``region`` (and ideally the recipe's
        margin around it).
    region : Region or str
        ``W,E,S,N`` in degrees.
    out_dir : str or Path
        Output folder (created).
    tile_size : int, optional
        Inference tile edge in px; default the checkpoint's training tile size.
    overlap : float
        Share of a tile overlapping its neighbour, in [0, 1).
    scale_deg : float, optional
        Window size in degrees that one tile covers: sets the pixel size (see the module docstring). Default:
        the checkpoint's ``pixels_per_degree`` when it was trained on fixed-resolution tiles (the network sees
        the ground scale it was trained at), else :data:`DEFAULT_SCALE_DEG`.
    device, batch_size, progress
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; tiles per forward pass; show a progress bar over the tiles.
    labels : str or Path, optional
        Geological map (any the dataset preparation reads: :func:`ggmnet.datasets.readers.read_label_nodes`)
        used to outline the cover on the PNG, for the merged map, and as the geology prior when the model
        was trained with one (then required). Its codes or units name the checkpoint's classes.
    outcrop_prior : bool
        Map the cover nodes by :func:`ggmnet.inference.rules.with_outcrop_prior`: the network's probabilities read
        together with the outcrop classes of ``labels`` around each node (far from outcrop, the region's
        outcrop class frequencies). Needs ``labels``. ``prediction.nc``'s ``probability`` stays the network's.
    fill_nan : bool
        Fill NaN holes in the Bouguer grid instead of refusing it.
    variable, label_variable, label_field, legend, unlisted_units
        As ``ggm-data prepare``'s: the grid of a file with several, a vector map's unit field, the legend
        CSV (its classes must be the checkpoint's) and what to do with units it does not name.
    members, tta
        Average the probabilities of more checkpoints of the same recipe and dataset, and/or of each network over
        the eight flips and turns of every tile (:mod:`ggmnet.inference.ensemble`).

    Returns
    -------
    dict[str, Path]
        ``{"netcdf": DIR/prediction.nc, "png": DIR/prediction.png, "run": DIR/run.json}`` and the layers of
        :func:`ggmnet.inference.gis.write_gis_outputs` (``class_tif``, ``probability_tif``, ``entropy_tif``,
        ``units_gpkg``; with ``labels`` ``merged_tif`` and ``merged_source_tif``).
    """
    region = Region.parse(region, option="--region") if isinstance(region, str) else region
    _check_options(overlap, scale_deg, tile_size, batch_size)
    require_file(checkpoint, "--checkpoint", "a retrain checkpoint (.pt)")
    bouguer = require_file(bouguer, "--bouguer", "a Bouguer gravity grid (.nc/.grd)")
    label_path = require_file(labels, "--labels", "a label grid or image") if labels is not None else None
    dev = resolve_device(device)
    model, ckpt, networks = load_members(checkpoint, members, tta=tta)
    data = ckpt["data"]
    class_list = checkpoint_classes(ckpt, model)
    tile = int(tile_size or data["tile_size"])
    grid = read_gravity(bouguer, fill_nan=fill_nan, variable=variable)
    if not grid.covers(region):
        raise UserError(f"--region {region}: outside the Bouguer grid {bouguer} (its nodes span "
                        f"{grid.node_region})")
    if data.get("geology_prior") and label_path is None:
        raise UserError(f"--labels: required, the checkpoint {checkpoint} was trained with the geology prior")
    if outcrop_prior and label_path is None:
        raise UserError("--outcrop-prior: needs --labels, the geological map whose outcrop it reads")
    ppd = data.get("pixels_per_degree")
    dlon, dlat = grid.spacing_deg()
    if scale_deg is None and ppd is not None:
        factors = node_factors(np.array([0.0, dlon]), np.array([0.0, dlat]), ppd)
        density = f"{checkpoint}: its {ppd:g} px per degree"
    else:
        scale_deg = DEFAULT_SCALE_DEG if scale_deg is None else scale_deg
        factors = upsampling_factors((dlon, dlat), scale_deg, tile)
        density = f"--scale-deg {scale_deg:g}"
    if max(factors) >= tile:
        raise UserError(f"{density}: a {tile}-px tile would span less than one node step of "
                        f"{bouguer} ({max(dlon, dlat):g} deg); expected a larger window")
    fields = separate_regional(grid, region, ProcessingRecipe.from_dict(data["recipe"]))
    lon, lat = np.asarray(fields["lon"]), np.asarray(fields["lat"])
    node_labels = None
    if label_path is not None:
        node_labels, _ = read_label_nodes(label_path, lon, lat, variable=label_variable, field=label_field,
                                          legend=legend, unlisted=unlisted_units, classes=class_list)
    out = prepare_out_dir(out_dir)
    inputs = {name: np.asarray(fields[name]) for name in input_field_names(data["channels"], fields)}
    probability = predict_nodes(model, inputs, lon, lat,
                                normalisation=data["normalisation"], channels=data["channels"], factors=factors,
                                tile_size=tile, overlap=overlap, batch_size=batch_size, device=dev,
                                prior=node_labels if data.get("geology_prior") else None, progress=progress)

    classes = np.argmax(probability, axis=0)
    if outcrop_prior and node_labels is not None:
        counts = np.asarray(class_counts(node_labels, class_list.num_classes), dtype=np.float64)  # none: the network
        classes = with_outcrop_prior(probability, node_labels, counts / max(counts.sum(), 1.0),
                                     sampling=node_spacing_km(lon, lat, slice(None)))

    sha = networks[0]["sha256"]
    attrs = {
        "checkpoint": str(Path(checkpoint).resolve()),
        "checkpoint_sha256": sha,
        "model_config": json.dumps(ckpt["model_config"]),
        "recipe": json.dumps(data["recipe"]),
        "input_channels": str(data["channels"]),
        "bouguer": str(bouguer.resolve()),
        "region": str(region),
        "pixel_size_deg": f"{dlat / factors[0]:.6g} (lat) x {dlon / factors[1]:.6g} (lon)",
        "pixels_per_degree": "none" if ppd is None else ppd,
        "tile_size_px": tile,
        "tile_overlap": overlap,
        "scale_deg": "none" if scale_deg is None else scale_deg,
        "outcrop_prior": "yes: class under the cover read with the outcrop of the labels" if outcrop_prior else "no",
        "members": json.dumps(networks),
        "test_time_augmentation": "yes: the mean over the eight flips and turns of every tile" if tta else "no",
    }
    nc_path = write_prediction_netcdf(out / "prediction.nc", lon, lat, probability, attrs=attrs, classes=classes,
                                      class_list=class_list)
    png_path = write_prediction_png(
        out / "prediction.png", lon, lat, classes, entropy(probability),
        title=map_title(region, checkpoint, members=len(networks) - 1, tta=tta, outcrop_prior=outcrop_prior),
        cover=None if node_labels is None else node_labels == COVER_INDEX, class_list=class_list,
    )
    gis_paths = write_gis_outputs(out, lon, lat, probability, classes, class_list, labels=node_labels,
                                  entropy=entropy(probability), title=f"GGMNet prediction, {region}")
    config = {"checkpoint": str(checkpoint), "bouguer": str(bouguer), "region": str(region), "out": str(out),
              "tile_size": tile, "overlap": overlap, "scale_deg": scale_deg, "device": str(dev),
              "batch_size": batch_size, "labels": None if labels is None else str(labels),
              "outcrop_prior": outcrop_prior, "fill_nan": fill_nan, "variable": variable,
              "label_variable": label_variable, "label_field": label_field,
              "legend": None if legend is None else str(legend), "unlisted_units": unlisted_units,
              "members": [str(m) for m in members], "tta": tta}
    run_path = write_run_metadata(out, config, seed=None, extra={
        "checkpoint_sha256": sha, "members": networks, "upsampling_factors": list(factors),
        "margin_km": fields.get("margin_km"),
    })
    return {"netcdf": nc_path, "png": png_path, **gis_paths, "run": run_path}


def _check_options(overlap: float, scale_deg: float | None, tile_size: int | None, batch_size: int) -> None:
    if not 0.0 <= overlap < 1.0:
        raise UserError(f"--overlap {overlap}: expected a fraction in [0, 1)")
    if scale_deg is not None and not (math.isfinite(scale_deg) and scale_deg > 0):
        raise UserError(f"--scale-deg {scale_deg}: expected a positive window size in degrees")
    if tile_size is not None and tile_size < 8:
        raise UserError(f"--tile-size {tile_size}: expected at least 8 px")
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: expected at least 1")
