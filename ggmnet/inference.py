"""A model's map of a whole prepared dataset, scored window by window at the grid nodes.

Fixed-resolution training (``--pixels-per-degree``) sees every window at one ground scale, so its model can map
the whole region in one pass of overlapping tiles (:func:`ggmnet.retrain.predict.predict_nodes`, blended with a
Hann window) and every window can be scored on its own grid nodes: no window is scored without the gravity
around it, and windows of every size are scored alike. Each window is scored on

* ``outcrop``: its labelled nodes (the paper's evaluation; cover, 255, ignored),
* ``under_cover``: its cover nodes against the true bedrock (datasets with a ``bedrock`` grid),
* ``hidden_outcrop``: outcrop withheld from what is known (the outcrop under the cover of another part of the
  map, :class:`ggmnet.datasets.hiding.CoverPattern`, the same nodes for every run): the fill-in task that a
  real map can score too. For a network that reads the outcrop (``--geology-prior``) it is the score a
  validation selects by, since the visible outcrop is its input,

beside two rules that use no gravity, on the same nodes: the **commonest class** of the training windows, and
for the fill-in tasks the **nearest outcrop** (:func:`nearest_outcrop_baseline`). The network is also scored
**with the outcrop prior** (:func:`with_outcrop_prior`): its probabilities read together with the classes
exposed around each node. The rules, the prior and a network that reads the outcrop all read the same outcrop:
that of the scored split's windows (:func:`score_fill`). Overlapping windows count their shared nodes once per
window, as the paper's tiles do.

The tiled prediction itself (overlapping tiles, Hann blending, node grids upsampled to the training pixel
size: :func:`predict_tiled`, :func:`predict_nodes`) and the nearest-outcrop rule live here, so that
``ggm-predict``, ``ggm-evaluate`` and a stage's validation use one implementation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn
from tqdm import tqdm

from ggmnet.classes import COVER_INDEX, NUM_CLASSES
from ggmnet.datasets.grids import spacing_km
from ggmnet.datasets.hiding import HIDDEN_SEED, CoverPattern, prior_channels
from ggmnet.datasets.tiles import input_channels_from_fields, sample_bilinear, sample_nearest
from ggmnet.datasets.windows import Window, window_slices, windows_mask
from ggmnet.errors import UserError
from ggmnet.metrics import ConfusionMatrix

#: Score sets of :func:`score_windows`, in report order: key and title.
SCORE_SETS = (
    ("outcrop", "Model on the outcrop (labelled pixels)"),
    ("commonest_class", "Commonest class on the outcrop (no gravity)"),
    ("under_cover", "Model under the cover (true bedrock)"),
    ("outcrop_prior_under_cover", "Model with the outcrop prior under the cover (gravity and the windows' outcrop)"),
    ("nearest_outcrop_baseline", "Nearest-outcrop baseline under the cover (no gravity)"),
    ("commonest_class_under_cover", "Commonest class under the cover (no gravity)"),
    ("hidden_outcrop", "Model on hidden outcrop (withheld under the cover of another place)"),
    ("outcrop_prior_hidden", "Model with the outcrop prior on hidden outcrop"),
    ("nearest_outcrop_hidden", "Nearest-outcrop baseline on hidden outcrop (no gravity)"),
    ("commonest_class_hidden", "Commonest class on hidden outcrop (no gravity)"),
)

#: The four score sets of a fill-in task (:func:`score_fill`) under the cover and on hidden outcrop: the model,
#: the model with the outcrop prior, the nearest outcrop, the commonest class.
FILL_SETS = {"cover": ("under_cover", "outcrop_prior_under_cover", "nearest_outcrop_baseline",
                       "commonest_class_under_cover"),
             "hidden": ("hidden_outcrop", "outcrop_prior_hidden", "nearest_outcrop_hidden", "commonest_class_hidden")}


def nearest_outcrop_baseline(labels: np.ndarray, *, fallback: int,
                             sampling: Sequence[float] | None = None) -> np.ndarray:
    """Extend each outcrop label into the cover: every cover pixel takes the class of the nearest outcrop pixel.

    Parameters
    ----------
    labels : np.ndarray
        ``(H, W)`` class indices, 255 = cover. Only these labels are used (never a bedrock grid).
    fallback : int
        Class given to every pixel when ``labels`` has no outcrop pixel at all (e.g. the dataset's most
        common outcrop class, also label information).
    sampling : sequence of float, optional
        Pixel size along (rows, columns), e.g. in km, so that "nearest" is measured on the ground.

    Returns
    -------
    np.ndarray
        ``(H, W)`` class indices without 255; equal to ``labels`` on the outcrop. Ties between two outcrop
        pixels at the same distance go to whichever ``distance_transform_edt`` returns.
    """
    labels = np.asarray(labels)
    cover = labels == COVER_INDEX
    if cover.all():
        return np.full_like(labels, fallback)
    rows, cols = ndimage.distance_transform_edt(cover, sampling=sampling, return_distances=False,
                                                return_indices=True)
    return labels[rows, cols]


#: The outcrop prior's settings (:func:`with_outcrop_prior`): Gaussian length in km, weight of its log, and the
#: pseudo-count of the regional class frequencies. Chosen on synthetic scene seed 2 among lengths 10-80 km,
#: weights 0.5-2 and pseudo-counts 0.01-0.5 (``experiments/outcrop_prior.py``) and checked on seeds 0 and 1.
OUTCROP_PRIOR_LENGTH_KM = 20.0
OUTCROP_PRIOR_WEIGHT = 0.5
OUTCROP_PRIOR_PSEUDO_COUNT = 0.01


def outcrop_prior(labels: np.ndarray, frequencies: np.ndarray, *, sampling: Sequence[float],
                  length_km: float = OUTCROP_PRIOR_LENGTH_KM,
                  pseudo_count: float = OUTCROP_PRIOR_PSEUDO_COUNT) -> np.ndarray:
    """Class probabilities at every pixel from the outcrop around it, without gravity: ``[K, H, W]``.

    ``q_c(x) = (S_c(x) + a f_c) / (sum_k S_k(x) + a)``, where ``S_c`` is the outcrop of class ``c`` smoothed
    by a Gaussian of standard deviation ``length_km`` (``scipy.ndimage.gaussian_filter``, zero outside the
    array, so ``sum_k S_k`` is the Gaussian-weighted share of outcrop nearby), ``f`` the regional class
    frequencies and ``a`` the pseudo-count: near outcrop ``q`` is the mix of the classes exposed there, far
    from any it tends to ``f``.

    Parameters
    ----------
    labels
        ``(H, W)`` class indices, 255 = cover (only these labels are read).
    frequencies
        ``(K,)`` class frequencies (e.g. the training windows' outcrop), summing to 1.
    sampling
        Pixel size along (rows, columns) in km.
    length_km, pseudo_count
        The Gaussian's standard deviation (km) and ``a``.
    """
    labels = np.asarray(labels)
    frequencies = np.asarray(frequencies, dtype=np.float64)
    sigma = (length_km / sampling[0], length_km / sampling[1])
    smoothed = np.stack([ndimage.gaussian_filter((labels == k).astype(np.float64), sigma, mode="constant")
                         for k in range(frequencies.size)])
    return (smoothed + pseudo_count * frequencies[:, None, None]) / (smoothed.sum(axis=0) + pseudo_count)


def training_class_frequencies(manifest: dict[str, Any]) -> np.ndarray:
    """``(K,)`` share of each class among the outcrop nodes of a prepared dataset's training windows (of the
    whole dataset when they have none; zeros without any outcrop): label information only, the commonest-class
    rule's and the outcrop prior's."""
    counts = np.zeros(len(manifest["class_counts"]), dtype=np.int64)
    for w in manifest["windows"]:
        if w["split"] == "train":
            counts += np.asarray(w["class_counts"], dtype=np.int64)
    counts = counts if counts.any() else np.asarray(manifest["class_counts"], dtype=np.int64)
    return counts / max(int(counts.sum()), 1)


def with_outcrop_prior(probability: np.ndarray, labels: np.ndarray, frequencies: np.ndarray, *,
                       sampling: Sequence[float], length_km: float = OUTCROP_PRIOR_LENGTH_KM,
                       weight: float = OUTCROP_PRIOR_WEIGHT,
                       pseudo_count: float = OUTCROP_PRIOR_PSEUDO_COUNT) -> np.ndarray:
    """The network's classes under the cover read together with the outcrop around it: ``(H, W)`` indices.

    On the cover each pixel takes ``argmax_c log p_c + weight * log q_c``, ``p`` the network's probabilities
    (from gravity) and ``q`` :func:`outcrop_prior`; on the outcrop it keeps the network's class, so outcrop
    scores are unchanged. It uses what a geologist extending the map would (the labels, never the bedrock):
    :func:`nearest_outcrop_baseline` is the same information without gravity.

    Parameters
    ----------
    probability
        ``[K, H, W]`` the network's class probabilities.
    labels
        ``(H, W)`` class indices, 255 = cover.
    frequencies, sampling, length_km, pseudo_count
        As :func:`outcrop_prior`.
    weight
        Exponent of the prior (0: the network alone).
    """
    probability = np.asarray(probability, dtype=np.float64)
    classes = probability.argmax(axis=0)
    cover = np.asarray(labels) == COVER_INDEX
    if not cover.any():
        return classes
    prior = outcrop_prior(labels, frequencies, sampling=sampling, length_km=length_km, pseudo_count=pseudo_count)
    fused = (np.log(np.clip(probability, 1e-12, None)) + weight * np.log(np.clip(prior, 1e-12, None))).argmax(axis=0)
    return np.where(cover, fused, classes)


# --------------------------------------------------------------------------------------------------------------
# Tiled prediction
# --------------------------------------------------------------------------------------------------------------

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
    dlon = (lon[-1] - lon[0]) / max(lon.size - 1, 1)
    dlat = (lat[-1] - lat[0]) / max(lat.size - 1, 1)

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


# --------------------------------------------------------------------------------------------------------------
# Window scores
# --------------------------------------------------------------------------------------------------------------

def node_spacing_km(lon: np.ndarray, lat: np.ndarray, rows: slice) -> tuple[float, float]:
    """Node spacing (north-south, east-west) in km of a grid, at the middle latitude of its ``rows`` (a window's):
    :func:`ggmnet.datasets.grids.spacing_km`."""
    return spacing_km(lon, lat, at_lat=float(np.mean(lat[rows])) if lat[rows].size else 0.0)


def grown_slices(window: Window, lon: np.ndarray, lat: np.ndarray) -> tuple[slice, slice]:
    """The node slices of ``window`` grown by its own size on every side (clipped to the grid): where the
    no-gravity rules look for the outcrop they extend into the window."""
    size = window.scale_deg
    grown = Window(window.id, 3 * size, window.west - size, window.east + size, window.south - size,
                   window.north + size)
    return window_slices(grown, lon, lat)


def score_fill(classes: np.ndarray, truth: np.ndarray, known: np.ndarray, lon: np.ndarray, lat: np.ndarray,
               windows: Sequence[Window], *, commonest: int, probability: np.ndarray | None = None,
               frequencies: np.ndarray | None = None,
               num_classes: int = NUM_CLASSES) -> tuple[ConfusionMatrix, ConfusionMatrix | None,
                                                        ConfusionMatrix, ConfusionMatrix]:
    """Scores of filling in what the map does not show (the cover, or hidden outcrop), window by window.

    Parameters
    ----------
    classes
        ``(ny, nx)`` the model's class at each node.
    truth
        ``(ny, nx)`` the true class where it is scored, 255 elsewhere (the bedrock under the cover, or the
        hidden outcrop's labels).
    known
        ``(ny, nx)`` the outcrop the rules (and a network conditioned on the outcrop) read, 255 = unknown.
        Each window's rules read it over the window grown by its own size on every side
        (:func:`grown_slices`), with node spacings in km at the window's middle latitude.
    commonest, probability, frequencies
        As :func:`score_windows`.

    Returns
    -------
    tuple
        Confusion matrices of the model, the model with the outcrop prior (None without ``probability`` or
        ``frequencies``), the nearest outcrop and the commonest class, over every window's scored nodes.
    """
    model, nearest_cm, rule_cm = (ConfusionMatrix(num_classes) for _ in range(3))
    fused_cm = ConfusionMatrix(num_classes) if probability is not None and frequencies is not None else None
    for window in windows:
        rows, cols = window_slices(window, lon, lat)
        target = truth[rows, cols].astype(np.int64)
        if not np.any(target != COVER_INDEX):
            continue
        model.update(classes[rows, cols].astype(np.int64), target)
        rule_cm.update(np.full_like(target, commonest), target)
        grown_rows, grown_cols = grown_slices(window, lon, lat)
        inner = (slice(rows.start - grown_rows.start, rows.stop - grown_rows.start),
                 slice(cols.start - grown_cols.start, cols.stop - grown_cols.start))
        seen = known[grown_rows, grown_cols]
        sampling = node_spacing_km(lon, lat, rows)
        nearest = nearest_outcrop_baseline(seen, fallback=commonest, sampling=sampling)[inner]
        nearest_cm.update(nearest.astype(np.int64), target)
        if fused_cm is not None:
            fused = with_outcrop_prior(probability[:, grown_rows, grown_cols], seen, frequencies,
                                       sampling=sampling)[inner]
            fused_cm.update(fused.astype(np.int64), target)
    return model, fused_cm, nearest_cm, rule_cm


def score_windows(classes: np.ndarray, label: np.ndarray, lon: np.ndarray, lat: np.ndarray,
                  windows: Sequence[Window], *, commonest: int, bedrock: np.ndarray | None = None,
                  probability: np.ndarray | None = None, frequencies: np.ndarray | None = None,
                  known: np.ndarray | None = None,
                  num_classes: int = NUM_CLASSES) -> dict[str, ConfusionMatrix | None]:
    """Confusion matrices of a class map over ``windows``, beside the no-gravity rules, at the grid nodes.

    Parameters
    ----------
    classes
        ``(ny, nx)`` predicted class at each node (latitude ascending, like ``lat``).
    label
        ``(ny, nx)`` outcrop labels, 255 = cover.
    lon, lat
        Node coordinates (ascending degrees).
    windows
        The windows to score; each contributes the nodes inside it.
    commonest
        The commonest outcrop class of the training windows (the commonest-class rule).
    bedrock
        ``(ny, nx)`` true class everywhere, or None (then the cover is not scored).
    probability, frequencies
        ``[K, ny, nx]`` the network's probabilities and ``(K,)`` the training windows' class frequencies: with
        both (and ``bedrock``), ``outcrop_prior_under_cover`` scores :func:`with_outcrop_prior`.
    known
        ``(ny, nx)`` the outcrop the rules read under the cover (:func:`score_fill`); default: the labels of
        ``windows`` (255 outside them), the outcrop a network conditioned on it is given.

    Returns
    -------
    dict
        One :class:`ConfusionMatrix` per key of :data:`SCORE_SETS`; the cover ones are None without bedrock,
        ``outcrop_prior_under_cover`` also without ``probability``, the hidden-outcrop ones always (see
        :meth:`WindowScorer.score`).
    """
    out: dict[str, ConfusionMatrix | None] = {key: None for key, _ in SCORE_SETS}
    for key in ("outcrop", "commonest_class"):
        out[key] = ConfusionMatrix(num_classes)
    for window in windows:
        rows, cols = window_slices(window, lon, lat)
        truth = label[rows, cols].astype(np.int64)
        out["outcrop"].update(classes[rows, cols].astype(np.int64), truth)
        out["commonest_class"].update(np.full_like(truth, commonest), truth)
    if bedrock is not None:
        if known is None:
            known = np.where(windows_mask(windows, lon, lat), label, COVER_INDEX)
        target = np.where(label == COVER_INDEX, bedrock, COVER_INDEX)
        out.update(zip(FILL_SETS["cover"], score_fill(classes, target, known, lon, lat, windows, commonest=commonest,
                                                      probability=probability, frequencies=frequencies,
                                                      num_classes=num_classes)))
    return out


def node_factors(lon: np.ndarray, lat: np.ndarray, pixels_per_degree: float) -> tuple[float, float]:
    """Pixels per node step (rows, columns) at ``pixels_per_degree``: e.g. 1 on a 2' grid at 30 px per degree,
    0.5 at 15; within 1e-6 of a whole number it is that number."""
    def snap(value: float) -> float:
        return float(round(value)) if abs(value - round(value)) < 1e-6 and round(value) >= 1 else value

    dlat = abs(lat[-1] - lat[0]) / max(lat.size - 1, 1)
    dlon = abs(lon[-1] - lon[0]) / max(lon.size - 1, 1)
    return snap(dlat * pixels_per_degree), snap(dlon * pixels_per_degree)


class WindowScorer:
    """Scores of a network on a split's windows at the grid nodes of a prepared dataset (fixed-resolution runs).

    The network maps the whole region once (:func:`predict_nodes` at ``pixels_per_degree``); each window of
    ``split`` is then scored on its nodes by :func:`score_windows`, beside the commonest class of the training
    windows (label information only) and, under the cover, the nearest-outcrop rule.

    Parameters
    ----------
    data_dir
        The prepared dataset.
    split
        ``train``, ``val`` or ``test``.
    pixels_per_degree, tile_size, channels
        The training tiles' resolution, size and input.
    normalisation
        The input statistics (default: the dataset's; a checkpoint passes its own).
    geology_prior
        Append the prior channels, from the labels of the split's windows (nothing else is known to a run).
    batch_size, device
        Tiles per forward pass and where the network runs.
    """

    def __init__(self, data_dir: str | Path, split: str, *, pixels_per_degree: float, tile_size: int,
                 channels: str, normalisation: dict[str, Any] | None = None, geology_prior: bool = False,
                 batch_size: int = 4, device: torch.device | str = "cpu") -> None:
        from ggmnet.datasets.prepare import load_grids, read_manifest
        from ggmnet.datasets.tiles import PHYSICAL_CHANNELS

        manifest = read_manifest(data_dir)
        self.windows = [Window(int(w["id"]), float(w["scale_deg"]), float(w["west"]), float(w["east"]),
                               float(w["south"]), float(w["north"]))
                        for w in manifest["windows"] if w["split"] == split]
        if not self.windows:
            raise UserError(f"{Path(data_dir) / 'manifest.json'}: no windows in split {split}")
        variables = manifest["variables"]
        self.fields = ["residual"] if channels == "pseudocolour" else [n for n in PHYSICAL_CHANNELS if n in variables]
        self.has_bedrock = "bedrock" in variables
        self.grids = load_grids(data_dir, [*self.fields, "label", *(["bedrock"] if self.has_bedrock else [])])
        #: the training windows' outcrop class frequencies: the commonest-class rule and the prior's far field
        self.frequencies = training_class_frequencies(manifest)
        self.commonest = int(np.argmax(self.frequencies))
        lon, lat, label = self.grids["lon"], self.grids["lat"], self.grids["label"]
        #: the outcrop of the split's windows (255 elsewhere): what the rules read, and the outcrop input of a
        #: network conditioned on it (nothing else is known to a run)
        #: the nodes inside the split's windows
        self.inside = windows_mask(self.windows, lon, lat)
        self.known = np.where(self.inside, label, COVER_INDEX).astype(np.uint8)
        #: the known outcrop withheld for the hidden-outcrop scores: what lies under the map's cover moved
        #: elsewhere (:class:`ggmnet.datasets.hiding.CoverPattern`), the same nodes for every run
        self.hidden = CoverPattern(label).hide(self.known != COVER_INDEX, np.random.default_rng(HIDDEN_SEED))
        self.geology_prior = bool(geology_prior)
        #: the score set a validation selects by: the outcrop, or for a network that reads the outcrop, the
        #: hidden outcrop (the visible outcrop is its input)
        self.headline = "hidden_outcrop" if self.geology_prior else "outcrop"
        self.options = {"normalisation": normalisation or manifest["normalisation"], "channels": channels,
                        "tile_size": int(tile_size), "batch_size": int(batch_size), "device": device}
        self.factors = node_factors(lon, lat, pixels_per_degree)

    def probabilities(self, model: nn.Module, prior: np.ndarray | None = None) -> np.ndarray:
        """float32 ``[K, ny, nx]``: the network's blended class probabilities at every node of the region; a
        network conditioned on the outcrop reads ``prior`` (default: :attr:`known`)."""
        lon, lat = self.grids["lon"], self.grids["lat"]
        if self.geology_prior and prior is None:
            prior = self.known
        return predict_nodes(model, {name: self.grids[name] for name in self.fields}, lon, lat,
                             factors=self.factors, prior=prior if self.geology_prior else None, **self.options)

    def predict(self, model: nn.Module) -> dict[str, np.ndarray]:
        """The network's probabilities ``map`` (with every known outcrop) and ``hidden`` (with the hidden
        outcrop withheld; the same array for a network that does not read the outcrop)."""
        probability = self.probabilities(model)
        hidden = (self.probabilities(model, np.where(self.hidden, COVER_INDEX, self.known).astype(np.uint8))
                  if self.geology_prior else probability)
        return {"map": probability, "hidden": hidden}

    def score(self, model: nn.Module) -> tuple[dict[str, ConfusionMatrix | None], float | None]:
        """:meth:`score_predictions` of :meth:`predict`."""
        return self.score_predictions(self.predict(model))

    def score_predictions(self, predictions: dict[str, np.ndarray]
                          ) -> tuple[dict[str, ConfusionMatrix | None], float | None]:
        """:func:`score_windows` of the network's map over the split's windows, the hidden-outcrop scores
        (:func:`score_fill` of the map made with the hidden outcrop withheld), and the mean negative log
        probability of the true class over the headline's nodes (the validation loss)."""
        probability = predictions["map"]
        label, lon, lat = self.grids["label"], self.grids["lon"], self.grids["lat"]
        common = {"commonest": self.commonest, "frequencies": self.frequencies, "num_classes": probability.shape[0]}
        matrices = score_windows(np.argmax(probability, axis=0), label, lon, lat, self.windows,
                                 bedrock=self.grids.get("bedrock"), probability=probability, known=self.known,
                                 **common)
        hidden = predictions["hidden"]
        truth = np.where(self.hidden, label, COVER_INDEX)
        matrices.update(zip(FILL_SETS["hidden"], score_fill(
            np.argmax(hidden, axis=0), truth, np.where(self.hidden, COVER_INDEX, self.known), lon, lat,
            self.windows, probability=hidden, **common)))
        scored = self.hidden if self.geology_prior else self.known != COVER_INDEX
        source = hidden if self.geology_prior else probability
        truth = np.where(scored, label, 0).astype(np.int64)
        p = np.take_along_axis(source, truth[None], axis=0)[0][scored]
        nll = float(-np.log(np.clip(p, 1e-12, None)).mean()) if p.size else None
        return matrices, nll


#: Scores of the other score sets a region validation logs beside the outcrop ones: (key, score, name).
BESIDE = (("commonest_class", "fwiou", "val/commonest_fwiou"),
          ("commonest_class", "pixel_accuracy", "val/commonest_pixel_accuracy"),
          ("under_cover", "pixel_accuracy", "val/cover_pixel_accuracy"),
          ("outcrop_prior_under_cover", "pixel_accuracy", "val/cover_outcrop_prior_pixel_accuracy"),
          ("commonest_class_under_cover", "pixel_accuracy", "val/cover_commonest_pixel_accuracy"),
          ("nearest_outcrop_baseline", "pixel_accuracy", "val/cover_nearest_outcrop_pixel_accuracy"),
          ("outcrop", "fwiou", "val/outcrop_fwiou"),
          ("hidden_outcrop", "pixel_accuracy", "val/hidden_pixel_accuracy"),
          ("outcrop_prior_hidden", "pixel_accuracy", "val/hidden_outcrop_prior_pixel_accuracy"),
          ("nearest_outcrop_hidden", "pixel_accuracy", "val/hidden_nearest_outcrop_pixel_accuracy"))


def region_validation(scorer: WindowScorer, network: nn.Module, holder: Any) -> dict[str, Any]:
    """A stage's validation by :meth:`WindowScorer.score`: the headline scores (the outcrop's; a network that
    reads the outcrop: the hidden outcrop's) plus ``loss`` (mean negative log probability at the same nodes)
    and ``beside`` (the :data:`BESIDE` scalars); sets ``holder.confusion``.
    The network is left in eval mode (a stage puts it back in training mode before its next step)."""
    network.eval()
    matrices, nll = scorer.score(network)
    scores = matrices[scorer.headline].compute()
    scores["loss"] = nll
    scores["beside"] = {name: (matrices[key].compute()[score] if matrices[key] is not None else None)
                        for key, score, name in BESIDE}
    holder.confusion = matrices[scorer.headline].matrix.copy()
    return scores
