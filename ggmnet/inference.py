"""A model's map of a whole prepared dataset, scored window by window at the grid nodes.

Fixed-resolution training (``--pixels-per-degree``) sees every window at one ground scale, so its model can map
the whole region in one pass of overlapping tiles (:func:`ggmnet.retrain.predict.predict_nodes`, blended with a
Hann window) and every window can be scored on its own grid nodes: no window is scored without the gravity
around it, and windows of every size are scored alike. Each window is scored on

* ``outcrop``: its labelled nodes (the paper's evaluation; cover, 255, ignored),
* ``under_cover``: its cover nodes against the true bedrock (datasets with a ``bedrock`` grid),

beside two rules that use no gravity, on the same nodes: the **commonest class** of the training windows, and
under the cover the **nearest outcrop** of the window (:func:`nearest_outcrop_baseline`). Overlapping windows
count their shared nodes once per window, as the paper's tiles do.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from ggmnet.classes import COVER_INDEX, NUM_CLASSES
from ggmnet.datasets.grids import KM_PER_DEG
from ggmnet.datasets.windows import Window, window_slices
from ggmnet.metrics import ConfusionMatrix

#: Score sets of :func:`score_windows`, in report order: key and title.
SCORE_SETS = (
    ("outcrop", "Model on the outcrop (labelled pixels)"),
    ("commonest_class", "Commonest class on the outcrop (no gravity)"),
    ("under_cover", "Model under the cover (true bedrock)"),
    ("nearest_outcrop_baseline", "Nearest-outcrop baseline under the cover (no gravity)"),
    ("commonest_class_under_cover", "Commonest class under the cover (no gravity)"),
)


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


def node_spacing_km(lon: np.ndarray, lat: np.ndarray, rows: slice) -> tuple[float, float]:
    """Node spacing (north-south, east-west) in km at the middle latitude of ``rows`` of an ascending grid."""
    dlat = abs(lat[-1] - lat[0]) / max(lat.size - 1, 1)
    dlon = abs(lon[-1] - lon[0]) / max(lon.size - 1, 1)
    mid = math.radians(float(np.mean(lat[rows]))) if lat[rows].size else 0.0
    return dlat * KM_PER_DEG, dlon * KM_PER_DEG * math.cos(mid)


def score_windows(classes: np.ndarray, label: np.ndarray, lon: np.ndarray, lat: np.ndarray,
                  windows: Sequence[Window], *, commonest: int, bedrock: np.ndarray | None = None,
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

    Returns
    -------
    dict
        One :class:`ConfusionMatrix` per key of :data:`SCORE_SETS`; the cover ones are None without bedrock.
    """
    out: dict[str, ConfusionMatrix | None] = {key: None for key, _ in SCORE_SETS}
    for key in ("outcrop", "commonest_class"):
        out[key] = ConfusionMatrix(num_classes)
    if bedrock is not None:
        for key in ("under_cover", "nearest_outcrop_baseline", "commonest_class_under_cover"):
            out[key] = ConfusionMatrix(num_classes)
    for window in windows:
        rows, cols = window_slices(window, lon, lat)
        truth = label[rows, cols].astype(np.int64)
        pred = classes[rows, cols].astype(np.int64)
        rule = np.full_like(truth, commonest)
        out["outcrop"].update(pred, truth)
        out["commonest_class"].update(rule, truth)
        if bedrock is None:
            continue
        hidden = np.where(truth == COVER_INDEX, bedrock[rows, cols].astype(np.int64), COVER_INDEX)
        out["under_cover"].update(pred, hidden)
        out["commonest_class_under_cover"].update(rule, hidden)
        nearest = nearest_outcrop_baseline(truth, fallback=commonest, sampling=node_spacing_km(lon, lat, rows))
        out["nearest_outcrop_baseline"].update(nearest.astype(np.int64), hidden)
    return out


def node_factors(lon: np.ndarray, lat: np.ndarray, pixels_per_degree: float) -> tuple[int, int]:
    """Pixels per node step (rows, columns) nearest to ``pixels_per_degree`` (at least 1)."""
    dlat = abs(lat[-1] - lat[0]) / max(lat.size - 1, 1)
    dlon = abs(lon[-1] - lon[0]) / max(lon.size - 1, 1)
    return max(1, round(dlat * pixels_per_degree)), max(1, round(dlon * pixels_per_degree))


@torch.no_grad()
def map_region(model: nn.Module | Callable[[torch.Tensor], torch.Tensor], grids: dict[str, np.ndarray], *,
               fields: Sequence[str], normalisation: dict[str, Any], channels: str, pixels_per_degree: float,
               tile_size: int, batch_size: int = 4, device: torch.device | str = "cpu",
               prior: np.ndarray | None = None, overlap: float = 0.25) -> np.ndarray:
    """Class probabilities ``[K, ny, nx]`` at every node of ``grids`` (a prepared dataset's grids, latitude
    ascending), by Hann-blended tiles of ``tile_size`` px at about ``pixels_per_degree``.

    ``model`` maps ``[B, C, H, W]`` to logits ``[B, K, H, W]`` (a module is put in eval mode by the caller).
    ``fields`` names the input fields in ``grids`` (``residual`` and derivative channels).
    """
    from ggmnet.retrain.predict import predict_nodes

    lon, lat = grids["lon"], grids["lat"]
    return predict_nodes(model, {name: grids[name] for name in fields}, lon, lat, normalisation=normalisation,
                         channels=channels, factors=node_factors(lon, lat, pixels_per_degree),
                         tile_size=tile_size, overlap=overlap, batch_size=batch_size, device=device,
                         prior=prior)
