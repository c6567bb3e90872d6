"""A model's map of a whole prepared dataset, scored window by window at the grid nodes.

Fixed-resolution training (``--pixels-per-degree``) sees every window at one ground scale, so its model can map
the whole region in one pass of overlapping tiles (:func:`ggmnet.inference.tiling.predict_nodes`) and every
window can be scored on its own grid nodes: no window is scored without the gravity around it, and windows of
every size are scored alike. Each window is scored on

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
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ggmnet.classes import COVER_INDEX, NUM_CLASSES
from ggmnet.datasets.geo import node_steps, spacing_km
from ggmnet.datasets.hiding import HIDDEN_SEED, CoverPattern
from ggmnet.datasets.tiles import PHYSICAL_CHANNELS
from ggmnet.datasets.windows import Window, window_slices, windows_mask
from ggmnet.errors import UserError
from ggmnet.inference.rules import nearest_outcrop_baseline, training_class_frequencies, with_outcrop_prior
from ggmnet.inference.tiling import predict_nodes
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
#: The matrices of a fill-in task in the order of :data:`FILL_SETS` (the prior's None when not scored).
FillMatrices = tuple[ConfusionMatrix, ConfusionMatrix | None, ConfusionMatrix, ConfusionMatrix]


def input_field_names(channels: str, available: Collection[str]) -> list[str]:
    """The fields the input transformation reads: the residual, plus the derivative channels for ``physical``."""
    return ["residual"] if channels == "pseudocolour" else [n for n in PHYSICAL_CHANNELS if n in available]


def node_spacing_km(lon: np.ndarray, lat: np.ndarray, rows: slice) -> tuple[float, float]:
    """Node spacing (north-south, east-west) in km of a grid, at the middle latitude of its ``rows`` (a window's):
    :func:`ggmnet.datasets.geo.spacing_km`."""
    return spacing_km(lon, lat, at_lat=float(np.mean(lat[rows])) if lat[rows].size else 0.0)


def grown_slices(window: Window, lon: np.ndarray, lat: np.ndarray) -> tuple[slice, slice]:
    """The node slices of ``window`` grown by its own size on every side (clipped to the grid): where the
    no-gravity rules look for the outcrop they extend into the window."""
    size = window.scale_deg
    grown = Window(window.id, 3 * size, window.west - size, window.east + size, window.south - size,
                   window.north + size)
    return window_slices(grown, lon, lat)


class FillScores:
    """The four confusion matrices of a fill-in task (the cover, or hidden outcrop), added to window by window:
    the model, the model with the outcrop prior (only with ``with_prior``), the nearest outcrop and the commonest
    class. One accumulator for every scoring path: a region's windows (:func:`score_fill`) and a paper-style
    checkpoint's tiles (:func:`ggmnet.inference.evaluate.score_model`)."""

    def __init__(self, num_classes: int, *, with_prior: bool) -> None:
        self.model, self.nearest, self.commonest = (ConfusionMatrix(num_classes) for _ in range(3))
        self.prior = ConfusionMatrix(num_classes) if with_prior else None

    def add(self, classes: np.ndarray, target: np.ndarray, seen: np.ndarray, *, commonest: int,
            sampling: Sequence[float] | None, inner: tuple[slice, slice] = (slice(None), slice(None)),
            probability: np.ndarray | None = None, frequencies: np.ndarray | None = None) -> None:
        """Add one window: ``classes`` and ``target`` (255 where not scored) on its nodes; ``seen`` the outcrop
        the rules read (255 = unknown) over the window and its surroundings, of which ``inner`` is the window;
        ``probability`` ``[K, ...]`` over the same surroundings for the outcrop prior; ``sampling`` the node
        spacing (e.g. km)."""
        target = np.asarray(target).astype(np.int64)
        self.model.update(np.asarray(classes).astype(np.int64), target)
        self.commonest.update(np.full_like(target, commonest), target)
        nearest = nearest_outcrop_baseline(seen, fallback=commonest, sampling=sampling)[inner]
        self.nearest.update(nearest.astype(np.int64), target)
        if self.prior is not None:
            fused = with_outcrop_prior(probability, seen, frequencies, sampling=sampling or (1.0, 1.0))[inner]
            self.prior.update(fused.astype(np.int64), target)

    def matrices(self) -> FillMatrices:
        """In the order of :data:`FILL_SETS`: model, with the prior, nearest outcrop, commonest class."""
        return self.model, self.prior, self.nearest, self.commonest


def score_fill(classes: np.ndarray, truth: np.ndarray, known: np.ndarray, lon: np.ndarray, lat: np.ndarray,
               windows: Sequence[Window], *, commonest: int, probability: np.ndarray | None = None,
               frequencies: np.ndarray | None = None, num_classes: int = NUM_CLASSES) -> FillMatrices:
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
        :meth:`FillScores.matrices` over every window's scored nodes (the prior's None without ``probability``
        or ``frequencies``).
    """
    fill = FillScores(num_classes, with_prior=probability is not None and frequencies is not None)
    for window in windows:
        rows, cols = window_slices(window, lon, lat)
        target = truth[rows, cols]
        if not np.any(target != COVER_INDEX):
            continue
        grown_rows, grown_cols = grown_slices(window, lon, lat)
        inner = (slice(rows.start - grown_rows.start, rows.stop - grown_rows.start),
                 slice(cols.start - grown_cols.start, cols.stop - grown_cols.start))
        fill.add(classes[rows, cols], target, known[grown_rows, grown_cols], commonest=commonest,
                 sampling=node_spacing_km(lon, lat, rows), inner=inner,
                 probability=None if fill.prior is None else probability[:, grown_rows, grown_cols],
                 frequencies=frequencies)
    return fill.matrices()


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
    out.update(outcrop=ConfusionMatrix(num_classes), commonest_class=ConfusionMatrix(num_classes))
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

    dlon, dlat = node_steps(lon, lat)
    return snap(abs(dlat) * pixels_per_degree), snap(abs(dlon) * pixels_per_degree)


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

        manifest = read_manifest(data_dir)
        self.windows = [Window.from_dict(w) for w in manifest["windows"] if w["split"] == split]
        if not self.windows:
            raise UserError(f"{Path(data_dir) / 'manifest.json'}: no windows in split {split}")
        variables = manifest["variables"]
        self.fields = input_field_names(channels, variables)
        self.has_bedrock = "bedrock" in variables
        self.grids = load_grids(data_dir, [*self.fields, "label", *(["bedrock"] if self.has_bedrock else [])])
        #: the training windows' outcrop class frequencies: the commonest-class rule and the prior's far field
        self.frequencies = training_class_frequencies(manifest)
        self.commonest = int(np.argmax(self.frequencies))
        lon, lat, label = self.grids["lon"], self.grids["lat"], self.grids["label"]
        #: the nodes inside the split's windows
        self.inside = windows_mask(self.windows, lon, lat)
        #: the outcrop of the split's windows (255 elsewhere): what the rules read, and the outcrop input of a
        #: network conditioned on it (nothing else is known to a run)
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

    @classmethod
    def for_run(cls, config: Any, data_dir: str | Path, device: torch.device | str) -> WindowScorer | None:
        """The validation scorer of a stage's run (its ``--pixels-per-degree``, tile size, input channels,
        outcrop input and batch), or None for a paper-style run, which validates on tiles."""
        if config.pixels_per_degree is None:
            return None
        return cls(data_dir, "val", pixels_per_degree=config.pixels_per_degree, tile_size=config.tile_size,
                   channels=config.channels, geology_prior=config.geology_prior, batch_size=config.batch_size,
                   device=device)

    def validate(self, network: nn.Module) -> tuple[dict[str, Any], np.ndarray]:
        """A stage's validation: the headline scores (the outcrop's; a network that reads the outcrop: the hidden
        outcrop's) plus ``loss`` (mean negative log probability at the same nodes) and ``beside`` (the
        :data:`BESIDE` scalars), and the headline confusion matrix. The network is left in eval mode (a stage puts
        it back in training mode before its next step)."""
        network.eval()
        matrices, nll = self.score(network)
        scores = matrices[self.headline].compute()
        scores["loss"] = nll
        scores["beside"] = {name: (matrices[key].compute()[score] if matrices[key] is not None else None)
                            for key, score, name in BESIDE}
        return scores, matrices[self.headline].matrix.copy()

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
