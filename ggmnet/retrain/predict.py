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
   250 Mpx for the Junggar Basin.) With ``f = 1`` the model runs on the native node grid;
3. the pixel grid is cut into overlapping square tiles, each rendered on the fly, north up, with the training
   sampler (bilinear between nodes) and the training input transformation (``input_channels_from_fields``);
   the tiles' class probabilities are blended with a separable Hann weight (summed weighted probabilities
   divided by summed weights), so no seam appears where tiles meet;
4. the blended probabilities are kept at the pixels that coincide with the input nodes, so the outputs lie on
   the Bouguer grid's own lon/lat nodes inside the region.

Outputs: ``prediction.nc`` (CF-1.8: ``class``, ``probability``, ``entropy`` in nats), ``prediction.png`` (a map in
Table 1's palette, optionally with the mapped cover outlined) and ``run.json``.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import special
from torch import nn
from tqdm import tqdm

from ggmnet.classes import CLASS_CODES, CLASS_COLOURS, CLASS_NAMES, COVER_INDEX, NUM_CLASSES, colourise
from ggmnet.datasets.grids import Region, read_gravity_grid, read_labels, resample_labels
from ggmnet.datasets.processing import ProcessingRecipe, separate_regional
from ggmnet.datasets.tiles import (
    PHYSICAL_CHANNELS,
    input_channels_from_fields,
    sample_bilinear,
    sample_nearest,
)
from ggmnet.engine.device import resolve_device
from ggmnet.engine.runio import atomic_path, file_sha256, prepare_out_dir, require_file, write_run_metadata
from ggmnet.errors import UserError
from ggmnet.retrain.models import load_model

#: Default window size (degrees) that one tile covers (Table 2's 5-degree scale).
DEFAULT_SCALE_DEG = 5.0
#: Default share of a tile that overlaps its neighbour.
DEFAULT_OVERLAP = 0.25

#: A tile renderer: ``render(row0, col0, size) -> float32 [C, size, size]`` for pixel rows ``row0..row0+size-1``
#: and columns ``col0..col0+size-1`` (pixels past the image's edge repeat the edge).
TileRenderer = Callable[[int, int, int], np.ndarray]


# --------------------------------------------------------------------------------------------------------------
# Tiling and blending
# --------------------------------------------------------------------------------------------------------------

def tile_origins(length: int, tile: int, overlap: float) -> list[int]:
    """First pixel of each tile along an axis of ``length`` pixels.

    Tiles of ``tile`` px advance by ``round(tile * (1 - overlap))`` px; the last one is moved back to end at the
    edge, so every pixel is covered and no tile sticks out (a single tile at 0 when ``length <= tile``).
    """
    if length <= tile:
        return [0]
    stride = max(1, int(round(tile * (1.0 - overlap))))
    origins = list(range(0, length - tile, stride))
    origins.append(length - tile)
    return origins


def blend_window(tile: int) -> np.ndarray:
    """Hann weight of a tile's pixels along one axis: ``sin^2(pi (i + 1/2) / tile)``, float64 ``(tile,)``.

    Largest in the middle, where the network sees context on all sides, small but positive at the edges, so
    the summed weight is positive everywhere. Shifted by half a tile, two windows sum to exactly 1.
    """
    i = np.arange(tile, dtype=np.float64)
    return np.sin(np.pi * (i + 0.5) / tile) ** 2


def array_renderer(image: np.ndarray | torch.Tensor) -> TileRenderer:
    """A :data:`TileRenderer` cutting tiles from an in-memory image ``[C, H, W]`` (edge pixels repeated)."""
    image = np.asarray(image, dtype=np.float32)

    def render(row0: int, col0: int, size: int) -> np.ndarray:
        rows = np.minimum(np.arange(row0, row0 + size), image.shape[1] - 1)
        cols = np.minimum(np.arange(col0, col0 + size), image.shape[2] - 1)
        return image[:, rows[:, None], cols[None, :]]

    return render


@torch.inference_mode()
def predict_tiled(model: nn.Module, render: TileRenderer, shape: tuple[int, int], *, tile_size: int,
                  overlap: float = DEFAULT_OVERLAP, step: tuple[int, int] = (1, 1), batch_size: int = 1,
                  device: torch.device | str = "cpu", progress: bool = False) -> np.ndarray:
    """Class probabilities over an image of ``shape`` = (H, W) px, by overlapping tiles and Hann blending.

    Parameters
    ----------
    model : nn.Module
        Maps ``[B, C, tile, tile]`` to logits ``[B, K, tile, tile]``; run in eval mode.
    render : callable
        ``render(row0, col0, tile) -> [C, tile, tile]`` float32 input of a tile (see :data:`TileRenderer`).
    shape : (int, int)
        Image height and width in pixels.
    tile_size : int
        Tile edge in pixels; an image smaller than a tile is predicted as one tile with its edge repeated.
    overlap : float
        Share of a tile overlapping its neighbour, in [0, 1).
    step : (int, int)
        Keep every ``step[0]``-th row and ``step[1]``-th column (pixels ``0, step, 2 step, ...``); only those
        are accumulated, so the memory is ``K * ceil(H / step[0]) * ceil(W / step[1])`` floats.
    batch_size : int
        Tiles per forward pass.
    device : torch.device or str
        Where the model runs.
    progress : bool
        Show a tqdm bar over the tiles.

    Returns
    -------
    np.ndarray
        float32 ``[K, ceil(H / step[0]), ceil(W / step[1])]``: at each kept pixel, the sum over tiles of
        ``weight * softmax(logits)`` divided by the sum of the weights (so the probabilities sum to 1).
    """
    height, width = shape
    sy, sx = step
    out_h, out_w = -(-height // sy), -(-width // sx)
    window = blend_window(tile_size).astype(np.float32)
    origins = [(y0, x0) for y0 in tile_origins(height, tile_size, overlap)
               for x0 in tile_origins(width, tile_size, overlap)]
    model.eval().to(device)
    acc: np.ndarray | None = None
    wsum = np.zeros((out_h, out_w), dtype=np.float32)
    with tqdm(total=len(origins), desc="tiles", unit="tile", disable=not progress, leave=False) as bar:
        for first in range(0, len(origins), batch_size):
            batch = origins[first:first + batch_size]
            inputs = torch.from_numpy(np.stack([render(y0, x0, tile_size) for y0, x0 in batch])).to(device)
            probs = torch.softmax(model(inputs).float(), dim=1).cpu().numpy()
            if acc is None:
                acc = np.zeros((probs.shape[1], out_h, out_w), dtype=np.float32)
            for (y0, x0), prob in zip(batch, probs):
                # Kept pixels of this tile: global rows/cols that are multiples of the step, inside the image.
                ly = np.arange((-y0) % sy, min(tile_size, height - y0), sy)
                lx = np.arange((-x0) % sx, min(tile_size, width - x0), sx)
                oy, ox = (y0 + ly[0]) // sy, (x0 + lx[0]) // sx
                weight = window[ly][:, None] * window[lx][None, :]
                acc[:, oy:oy + ly.size, ox:ox + lx.size] += prob[:, ly[:, None], lx[None, :]] * weight
                wsum[oy:oy + ly.size, ox:ox + lx.size] += weight
            bar.update(len(batch))
    return acc / wsum


def entropy_nats(probability: np.ndarray) -> np.ndarray:
    """Shannon entropy ``-sum_k p_k ln p_k`` over the first axis, in nats (0: certain; ln K: uniform)."""
    p = np.asarray(probability, dtype=np.float64)
    return -special.xlogy(p, p).sum(axis=0)


# --------------------------------------------------------------------------------------------------------------
# From a region's node grid to the model's pixels
# --------------------------------------------------------------------------------------------------------------

def upsampling_factors(spacing_deg: tuple[float, float], scale_deg: float, tile_size: int) -> tuple[int, int]:
    """Pixels per node step ``(f_lat, f_lon)`` giving a pixel size close to a training window's.

    ``spacing_deg`` = (dlon, dlat) of the node grid. A window of ``scale_deg`` degrees rendered at
    ``tile_size`` px has ``scale_deg / (tile_size - 1)`` degrees per pixel (first and last pixel on its
    edges); each factor is the nearest integer >= 1 to ``spacing / that``.
    """
    pixel_deg = scale_deg / max(tile_size - 1, 1)
    dlon, dlat = spacing_deg
    return max(1, int(round(dlat / pixel_deg))), max(1, int(round(dlon / pixel_deg)))


def node_field_renderer(fields: dict[str, np.ndarray], lon: np.ndarray, lat: np.ndarray,
                        factors: tuple[int, int], normalisation: dict, channels: str,
                        prior: np.ndarray | None = None) -> TileRenderer:
    """A :data:`TileRenderer` for fields on a node grid upsampled by integer ``factors`` = (f_lat, f_lon).

    As in training tiles (:class:`ggmnet.datasets.tiles.TileDataset`), pixel rows run north to south and
    columns west to east: pixel ``(r, c)`` lies at latitude ``lat[-1] - r dlat / f_lat`` and longitude
    ``lon[0] + c dlon / f_lon``. Each field (ny, nx) on the nodes ``lon`` (nx,), ``lat`` (ny,) is sampled
    there with the training sampler (bilinear, edges repeated beyond the grid), then turned into the network
    input by :func:`ggmnet.datasets.tiles.input_channels_from_fields`. ``prior`` (optional, uint8 ``(ny, nx)``
    class indices, 255 = cover) appends the geology-prior channels of :func:`prior_channels`, from each
    pixel's nearest node as training does.
    """
    fy, fx = factors
    dlon = (lon[-1] - lon[0]) / max(lon.size - 1, 1)
    dlat = (lat[-1] - lat[0]) / max(lat.size - 1, 1)

    def render(row0: int, col0: int, size: int) -> np.ndarray:
        lon_t = lon[0] + np.arange(col0, col0 + size) * (dlon / fx)
        lat_t = lat[-1] - np.arange(row0, row0 + size) * (dlat / fy)
        tile = {name: sample_bilinear(values, lon, lat, lon_t, lat_t) for name, values in fields.items()}
        image = input_channels_from_fields(tile, normalisation, channels)
        if prior is not None:
            image = np.concatenate([image, prior_channels(sample_nearest(prior, lon, lat, lon_t, lat_t))])
        return image

    return render


def prior_channels(labels: np.ndarray) -> np.ndarray:
    """Geology-prior channels of a label array ``(H, W)``, as :class:`~ggmnet.datasets.tiles.TileDataset`
    appends them: one-hot of the 10 outcrop classes, then the known mask; float32 ``[11, H, W]``, cover
    (255) zero in all eleven."""
    labels = np.asarray(labels)
    onehot = (labels[None] == np.arange(NUM_CLASSES)[:, None, None]).astype(np.float32)
    known = (labels != COVER_INDEX).astype(np.float32)[None]
    return np.concatenate([onehot, known])


def predict_nodes(model: nn.Module, fields: dict[str, np.ndarray], lon: np.ndarray, lat: np.ndarray, *,
                  normalisation: dict, channels: str, factors: tuple[int, int], tile_size: int,
                  overlap: float = DEFAULT_OVERLAP, batch_size: int = 1, device: torch.device | str = "cpu",
                  prior: np.ndarray | None = None, progress: bool = False) -> np.ndarray:
    """Class probabilities on a node grid: render north-up tiles of the upsampled grid, blend, keep the nodes.

    ``fields`` (ny, nx) on nodes ``lon`` (nx,), ``lat`` (ny,) ascending, upsampled by ``factors`` =
    (f_lat, f_lon) (see :func:`node_field_renderer` and :func:`predict_tiled` for the other arguments).
    Returns float32 ``[K, ny, nx]`` with latitude ascending, like the input.
    """
    shape = ((lat.size - 1) * factors[0] + 1, (lon.size - 1) * factors[1] + 1)
    render = node_field_renderer(fields, lon, lat, factors, normalisation, channels, prior=prior)
    north_up = predict_tiled(model, render, shape, tile_size=tile_size, overlap=overlap, step=factors,
                             batch_size=batch_size, device=device, progress=progress)
    return np.ascontiguousarray(north_up[:, ::-1])


# --------------------------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------------------------

_WGS84_WKT = ('GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],PRIMEM["Greenwich",0],'
              'UNIT["degree",0.0174532925199433],AUTHORITY["EPSG","4326"]]')


def write_prediction_netcdf(path: str | Path, lon: np.ndarray, lat: np.ndarray, probability: np.ndarray, *,
                            attrs: dict[str, Any]) -> Path:
    """Write ``prediction.nc`` (CF-1.8) atomically.

    Parameters
    ----------
    path : str or Path
        Destination.
    lon, lat : np.ndarray
        Ascending node coordinates, degrees east ``(nx,)`` and north ``(ny,)``.
    probability : np.ndarray
        ``[K, ny, nx]`` class probabilities (summing to 1 over K).
    attrs : dict
        Extra global attributes (strings or numbers), e.g. the checkpoint and the recipe.

    Returns
    -------
    Path
        ``path``. Variables: ``lat``, ``lon`` (coordinate variables), ``class_index`` (K), ``class`` uint8
        (lat, lon) = argmax of ``probability`` with CF flags, ``probability`` float32 (class_index, lat, lon),
        ``entropy`` float32 (lat, lon) in nats, and ``crs``, the WGS 84 grid mapping.
    """
    import netCDF4

    probability = np.asarray(probability, dtype=np.float32)
    num_classes = probability.shape[0]
    names = " ".join(n.lower() for n in CLASS_NAMES[:num_classes])
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
        index.setncatts({"long_name": "bedrock class index (Table 1)", "class_names": names,
                         "class_codes": " ".join(CLASS_CODES[:num_classes])})
        index[:] = np.arange(num_classes, dtype=np.uint8)
        cls = ds.createVariable("class", "u1", ("lat", "lon"), zlib=True, fill_value=False)
        cls.setncatts({"long_name": "most probable bedrock class", "grid_mapping": "crs",
                       "flag_values": np.arange(num_classes, dtype=np.uint8), "flag_meanings": names})
        cls[:] = np.argmax(probability, axis=0).astype(np.uint8)
        prob = ds.createVariable("probability", "f4", ("class_index", "lat", "lon"), zlib=True, fill_value=False)
        prob.setncatts({"long_name": "probability of each bedrock class", "units": "1", "grid_mapping": "crs"})
        prob[:] = probability
        ent = ds.createVariable("entropy", "f4", ("lat", "lon"), zlib=True, fill_value=False)
        ent.setncatts({"long_name": "entropy of the class probabilities in nats (0 = certain, ln K = uniform)",
                       "units": "1", "grid_mapping": "crs",
                       "valid_range": np.array([0.0, math.log(num_classes)], dtype=np.float32)})
        ent[:] = entropy_nats(probability).astype(np.float32)
    return Path(path)


def write_prediction_png(path: str | Path, lon: np.ndarray, lat: np.ndarray, classes: np.ndarray,
                         entropy: np.ndarray, *, title: str, cover: np.ndarray | None = None) -> Path:
    """Draw the predicted classes in Table 1's palette, and the entropy, with lon/lat axes, atomically.

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
    axes[0].imshow(colourise(classes), extent=extent, origin="lower", interpolation="nearest", aspect=aspect)
    shown = set(np.unique(classes).tolist())
    handles: list[Any] = [Patch(facecolor=np.asarray(colour) / 255, edgecolor="0.3", label=f"{code} {name}")
                          for k, (code, name, colour) in enumerate(zip(CLASS_CODES, CLASS_NAMES, CLASS_COLOURS))
                          if k in shown]
    image = axes[1].imshow(entropy, extent=extent, origin="lower", cmap="magma", aspect=aspect,
                           vmin=0.0, vmax=math.log(NUM_CLASSES), interpolation="nearest")
    fig.colorbar(image, ax=axes[1], label="entropy (nats; ln 10 = no preference)", location="bottom",
                 shrink=0.6)
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


# --------------------------------------------------------------------------------------------------------------
# The whole prediction
# --------------------------------------------------------------------------------------------------------------

def _input_fields(channels: str, fields: dict[str, Any]) -> dict[str, np.ndarray]:
    """The fields the input transformation reads: the residual, plus the derivative channels for physical."""
    names = ["residual"] if channels == "pseudocolour" else [n for n in PHYSICAL_CHANNELS if n in fields]
    return {name: np.asarray(fields[name]) for name in names}


def predict_region(checkpoint: str | Path, bouguer: str | Path, region: Region | str, out_dir: str | Path, *,
                   tile_size: int | None = None, overlap: float = DEFAULT_OVERLAP,
                   scale_deg: float = DEFAULT_SCALE_DEG, device: str = "auto", batch_size: int = 1,
                   labels: str | Path | None = None, fill_nan: bool = False,
                   progress: bool = True) -> dict[str, Path]:
    """Predict the bedrock classes over ``region`` of a Bouguer grid and write the map files.

    Parameters
    ----------
    checkpoint : str or Path
        A retrain checkpoint (``best.pt``/``last.pt``) holding the model, its recipe and normalisation.
    bouguer : str or Path
        Bouguer anomaly grid (mGal), WGM2012/GMT layout; it must cover ``region`` (and ideally the recipe's
        margin around it).
    region : Region or str
        ``W,E,S,N`` in degrees.
    out_dir : str or Path
        Output folder (created).
    tile_size : int, optional
        Inference tile edge in px; default the checkpoint's training tile size.
    overlap : float
        Share of a tile overlapping its neighbour, in [0, 1).
    scale_deg : float
        Window size in degrees that one tile covers: sets the pixel size (see the module docstring).
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    batch_size : int
        Tiles per forward pass.
    labels : str or Path, optional
        Geological map (labels.nc or a palette image with bounds) used to outline the cover on the PNG, and
        as the geology prior when the model was trained with one (then required).
    fill_nan : bool
        Fill NaN holes in the Bouguer grid instead of refusing it.
    progress : bool
        Show a progress bar over the tiles.

    Returns
    -------
    dict[str, Path]
        ``{"netcdf": DIR/prediction.nc, "png": DIR/prediction.png, "run": DIR/run.json}``.
    """
    region = Region.parse(region, option="--region") if isinstance(region, str) else region
    _check_options(overlap, scale_deg, tile_size, batch_size)
    require_file(checkpoint, "--checkpoint", "a retrain checkpoint (.pt)")
    bouguer = require_file(bouguer, "--bouguer", "a Bouguer gravity grid (.nc/.grd)")
    label_path = require_file(labels, "--labels", "a label grid or image") if labels is not None else None
    dev = resolve_device(device)
    model, ckpt = load_model(checkpoint, map_location="cpu")
    data = ckpt["data"]
    tile = int(tile_size or data["tile_size"])
    grid = read_gravity_grid(bouguer, fill_nan=fill_nan)
    if not grid.covers(region):
        raise UserError(f"--region {region}: outside the Bouguer grid {bouguer} (its nodes span "
                        f"{grid.node_region})")
    if data.get("geology_prior") and label_path is None:
        raise UserError(f"--labels: required, the checkpoint {checkpoint} was trained with the geology prior")
    factors = upsampling_factors(grid.spacing_deg(), scale_deg, tile)
    if max(factors) >= tile:
        raise UserError(f"--scale-deg {scale_deg:g}: a {tile}-px tile would span less than one node step of "
                        f"{bouguer} ({max(grid.spacing_deg()):g} deg); expected a larger window")
    fields = separate_regional(grid, region, ProcessingRecipe.from_dict(data["recipe"]))
    lon, lat = np.asarray(fields["lon"]), np.asarray(fields["lat"])
    node_labels = None
    if label_path is not None:
        node_labels = resample_labels(read_labels(label_path), lon, lat, method="mode")
    out = prepare_out_dir(out_dir)
    probability = predict_nodes(model, _input_fields(data["channels"], fields), lon, lat,
                                normalisation=data["normalisation"], channels=data["channels"], factors=factors,
                                tile_size=tile, overlap=overlap, batch_size=batch_size, device=dev,
                                prior=node_labels if data.get("geology_prior") else None, progress=progress)

    dlon, dlat = grid.spacing_deg()
    sha = file_sha256(checkpoint)
    attrs = {
        "checkpoint": str(Path(checkpoint).resolve()),
        "checkpoint_sha256": sha,
        "model_config": json.dumps(ckpt["model_config"]),
        "recipe": json.dumps(data["recipe"]),
        "input_channels": str(data["channels"]),
        "bouguer": str(bouguer.resolve()),
        "region": str(region),
        "pixel_size_deg": f"{dlat / factors[0]:.6g} (lat) x {dlon / factors[1]:.6g} (lon)",
        "tile_size_px": tile,
        "tile_overlap": overlap,
        "scale_deg": scale_deg,
    }
    nc_path = write_prediction_netcdf(out / "prediction.nc", lon, lat, probability, attrs=attrs)
    png_path = write_prediction_png(
        out / "prediction.png", lon, lat, np.argmax(probability, axis=0), entropy_nats(probability),
        title=f"GGMNet prediction, {region} ({Path(checkpoint).name})",
        cover=None if node_labels is None else node_labels == COVER_INDEX,
    )
    config = {"checkpoint": str(checkpoint), "bouguer": str(bouguer), "region": str(region), "out": str(out),
              "tile_size": tile, "overlap": overlap, "scale_deg": scale_deg, "device": str(dev),
              "batch_size": batch_size, "labels": None if labels is None else str(labels), "fill_nan": fill_nan}
    run_path = write_run_metadata(out, config, seed=None, extra={
        "checkpoint_sha256": sha, "upsampling_factors": list(factors),
        "margin_km": fields.get("margin_km"),
    })
    return {"netcdf": nc_path, "png": png_path, "run": run_path}


def _check_options(overlap: float, scale_deg: float, tile_size: int | None, batch_size: int) -> None:
    if not 0.0 <= overlap < 1.0:
        raise UserError(f"--overlap {overlap}: expected a fraction in [0, 1)")
    if not (math.isfinite(scale_deg) and scale_deg > 0):
        raise UserError(f"--scale-deg {scale_deg}: expected a positive window size in degrees")
    if tile_size is not None and tile_size < 8:
        raise UserError(f"--tile-size {tile_size}: expected at least 8 px")
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: expected at least 1")
