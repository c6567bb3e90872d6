"""Tiled prediction of a whole region: overlapping tiles, Hann blending, node grids upsampled to the training
pixel size (:func:`predict_tiled`, :func:`predict_nodes`); one implementation for ``ggm-predict``,
``ggm-evaluate`` and a stage's validation.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ggmnet.classes import NUM_CLASSES
from ggmnet.datasets.geo import node_steps
from ggmnet.datasets.hiding import prior_channels
from ggmnet.datasets.tiles import input_channels_from_fields, sample_bilinear, sample_nearest

#: Default share of a tile that overlaps its neighbour.
DEFAULT_OVERLAP = 0.25

#: A tile renderer: ``render(row0, col0, size) -> float32 [C, size, size]`` for pixel rows ``row0..row0+size-1``
#: and columns ``col0..col0+size-1`` (pixels past the image's edge repeat the edge).
TileRenderer = Callable[[int, int, int], np.ndarray]


def tile_origins(length: int, tile: int, overlap: float) -> list[int]:
    """First pixel of each tile along an axis of ``length`` pixels.

    Tiles of ``tile`` px advance by ``round(tile * (1 - overlap))`` px; the last one is moved back to end at the
    edge, so every pixel is covered and no tile sticks out (a single tile at 0 when ``length <= tile``).
    """
    if length <= tile:
        return [0]
    stride = max(1, int(round(tile * (1.0 - overlap))))
    return [*range(0, length - tile, stride), length - tile]


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


def node_field_renderer(fields: dict[str, np.ndarray], lon: np.ndarray, lat: np.ndarray,
                        factors: tuple[float, float], normalisation: dict, channels: str,
                        prior: np.ndarray | None = None, num_classes: int = NUM_CLASSES) -> TileRenderer:
    """A :data:`TileRenderer` for fields on a node grid resampled at ``factors`` = (f_lat, f_lon) pixels per node
    step (integers upsample, fractions such as 0.5 downsample).

    As in training tiles (:class:`ggmnet.datasets.tiles.TileDataset`), pixel rows run north to south and
    columns west to east: pixel ``(r, c)`` lies at latitude ``lat[-1] - r dlat / f_lat`` and longitude
    ``lon[0] + c dlon / f_lon``. Each field (ny, nx) on the nodes ``lon`` (nx,), ``lat`` (ny,) is sampled
    there with the training sampler (bilinear, edges repeated beyond the grid), then turned into the network
    input by :func:`ggmnet.datasets.tiles.input_channels_from_fields`. ``prior`` (optional, uint8 ``(ny, nx)``
    class indices, 255 = cover) appends the geology-prior channels of :func:`prior_channels`, from each
    pixel's nearest node as training does.
    """
    fy, fx = factors
    dlon, dlat = node_steps(lon, lat)

    def render(row0: int, col0: int, size: int) -> np.ndarray:
        lon_t = lon[0] + np.arange(col0, col0 + size) * (dlon / fx)
        lat_t = lat[-1] - np.arange(row0, row0 + size) * (dlat / fy)
        tile = {name: sample_bilinear(values, lon, lat, lon_t, lat_t) for name, values in fields.items()}
        image = input_channels_from_fields(tile, normalisation, channels)
        if prior is not None:
            image = np.concatenate([image, prior_channels(sample_nearest(prior, lon, lat, lon_t, lat_t),
                                                          num_classes)])
        return image

    return render


def predict_nodes(model: nn.Module, fields: dict[str, np.ndarray], lon: np.ndarray, lat: np.ndarray, *,
                  normalisation: dict, channels: str, factors: tuple[float, float], tile_size: int,
                  overlap: float = DEFAULT_OVERLAP, batch_size: int = 1, device: torch.device | str = "cpu",
                  prior: np.ndarray | None = None, progress: bool = False) -> np.ndarray:
    """Class probabilities on a node grid: render north-up tiles of the resampled grid, blend, read the nodes.

    ``fields`` (ny, nx) on nodes ``lon`` (nx,), ``lat`` (ny,) ascending, resampled at ``factors`` =
    (f_lat, f_lon) pixels per node step (see :func:`node_field_renderer` and :func:`predict_tiled` for the other
    arguments). With whole factors every node is a pixel and only those pixels are kept; otherwise the
    blended probabilities of the whole pixel grid are interpolated bilinearly at the nodes.
    Returns float32 ``[K, ny, nx]`` with latitude ascending, like the input.
    """
    whole = tuple(int(round(f)) for f in factors)
    render = node_field_renderer(fields, lon, lat, factors, normalisation, channels, prior=prior,
                                 num_classes=int(getattr(model, "num_classes", NUM_CLASSES)))
    if all(f >= 1 and abs(f - w) < 1e-6 for f, w in zip(factors, whole)):
        shape = ((lat.size - 1) * whole[0] + 1, (lon.size - 1) * whole[1] + 1)
        north_up = predict_tiled(model, render, shape, tile_size=tile_size, overlap=overlap, step=whole,
                                 batch_size=batch_size, device=device, progress=progress)
    else:
        rows = np.arange(lat.size) * float(factors[0])
        cols = np.arange(lon.size) * float(factors[1])
        shape = (int(math.floor(rows[-1] + 1e-6)) + 1, int(math.floor(cols[-1] + 1e-6)) + 1)
        pixels = predict_tiled(model, render, shape, tile_size=tile_size, overlap=overlap,
                               batch_size=batch_size, device=device, progress=progress)
        north_up = interpolate_bilinear(pixels, rows, cols)
    return np.ascontiguousarray(north_up[:, ::-1])


def interpolate_bilinear(values: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``values`` ``[K, H, W]`` interpolated bilinearly at fractional pixel positions ``rows`` (h,) x ``cols`` (w,),
    clipped to the array; returns float32 ``[K, h, w]``."""
    def corners(pos: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip(pos, 0.0, n - 1)
        low = np.minimum(np.floor(pos).astype(np.intp), max(n - 2, 0))
        return low, np.minimum(low + 1, n - 1), (pos - low).astype(np.float32)

    r0, r1, wr = corners(np.asarray(rows, dtype=np.float64), values.shape[1])
    c0, c1, wc = corners(np.asarray(cols, dtype=np.float64), values.shape[2])
    across = values[:, :, c0] * (1.0 - wc) + values[:, :, c1] * wc
    return (across[:, r0] * (1.0 - wr)[:, None] + across[:, r1] * wr[:, None]).astype(np.float32)
