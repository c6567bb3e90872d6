"""Tiles rendered on the fly from a prepared dataset (``grids.nc`` + ``manifest.json``).

A window of any size is rendered at any tile size straight from the region's grids: continuous fields by
bilinear interpolation, labels by nearest neighbour, never through tiles on disk (536 windows of 2048^2 px
would be 16 MiB per float32 channel each). Tile pixel (0, 0) is the window's north-west corner: rows run
north to south, columns west to east, as a map reads; the first and last pixel centres lie on the window's
edges.

Inputs (``channels``):

* ``"pseudocolour"`` (the paper's input): the residual anomaly normalised to [0, 1] by the dataset's
  2nd and 98th percentiles, then coloured with a 256-entry ``jet`` colour map -> 3 channels in [0, 1].
* ``"physical"``: the residual and whatever derivative channels ``grids.nc`` has, each standardised by its
  mean and standard deviation over the region.

Training augmentation follows section 5.1.1 of the paper; see :class:`TileDataset`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ggmnet.classes import COVER_INDEX
from ggmnet.datasets.cover_sim import bury, hole_thickness, random_thickness
from ggmnet.datasets.geo import node_steps, spacing_km
from ggmnet.datasets.hiding import HIDDEN_SEED, CoverPattern, prior_channels
from ggmnet.datasets.prepare import load_grids, manifest_classes, read_manifest
from ggmnet.datasets.windows import Window, windows_mask
from ggmnet.errors import UserError

#: Physical input channels, in this order, where ``grids.nc`` has them.
PHYSICAL_CHANNELS = ("residual", "vertical_derivative", "horizontal_gradient", "tilt")
CHANNEL_MODES = ("pseudocolour", "physical")

#: Section 5.1.1 of the paper: rotation range (degrees), contrast and brightness factors, noise sd as a share of
#: the image's range. Translation is up to this share of the tile size in x and y.
ROTATION_DEG = (0.0, 180.0)
CONTRAST = (0.5, 1.5)
BRIGHTNESS = (0.8, 1.2)
NOISE_SHARE = (0.01, 0.10)
TRANSLATE_SHARE = 0.1


@functools.cache
def colour_lut(name: str = "jet") -> np.ndarray:
    """A (256, 3) float32 colour table in [0, 1], sampled once from matplotlib's colour map ``name``."""
    import matplotlib

    return np.asarray(matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3], dtype=np.float32)


@functools.cache
def _channel_tables() -> np.ndarray:
    """The colour table as three contiguous (256,) rows, for fast per-channel lookups."""
    return np.ascontiguousarray(colour_lut().T)


def input_channels_from_fields(fields: dict[str, np.ndarray], normalisation: dict[str, dict[str, float]],
                               channels: str) -> np.ndarray:
    """The network input from gridded fields: the transformation used for training tiles.

    Parameters
    ----------
    fields
        ``{name: array (H, W)}``: ``residual`` (mGal) and, for ``"physical"``, any of ``vertical_derivative``,
        ``horizontal_gradient`` (mGal/km), ``tilt`` (radians). Extra entries are ignored.
    normalisation
        The manifest's ``normalisation``: ``{name: {"mean", "std", "p02", "p98"}}``.
    channels
        ``"pseudocolour"``: residual mapped linearly so that p02 -> 0 and p98 -> 1 (clipped), then through
        the 256-entry ``jet`` table (:func:`colour_lut`), 3 channels in [0, 1]. ``"physical"``: each of
        :data:`PHYSICAL_CHANNELS` present in ``fields``, as ``(x - mean) / std``.

    Returns
    -------
    float32 array (C, H, W), in the orientation of the input arrays.
    """
    if channels == "pseudocolour":
        stats = normalisation["residual"]
        lo, hi = float(stats["p02"]), float(stats["p98"])
        scaled = np.subtract(fields["residual"], lo, dtype=np.float32)
        scaled *= np.float32(255.0 / max(hi - lo, 1e-12))
        np.clip(scaled, 0.0, 255.0, out=scaled)
        index = np.rint(scaled, out=scaled).astype(np.intp)
        table = _channel_tables()
        out = np.empty((3, *index.shape), dtype=np.float32)
        for c in range(3):
            np.take(table[c], index, out=out[c])
        return out
    if channels == "physical":
        names = [n for n in PHYSICAL_CHANNELS if n in fields]
        out = np.empty((len(names), *np.shape(fields[names[0]])), dtype=np.float32)
        for c, name in enumerate(names):
            stats = normalisation[name]
            out[c] = (np.asarray(fields[name], dtype=np.float32) - stats["mean"]) / max(stats["std"], 1e-12)
        return out
    raise UserError(f"--channels {channels}: expected one of {', '.join(CHANNEL_MODES)}")


def tile_coordinates(window: Window, tile_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of ``window`` rendered at ``tile_size`` px: ``lon`` west to east and ``lat``
    north to south, each (tile_size,) degrees, first and last on the window's edges."""
    return (np.linspace(window.west, window.east, tile_size),
            np.linspace(window.north, window.south, tile_size))


def _fractional_index(nodes: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Positions of ``coords`` in the regular ascending ``nodes`` in units of node spacing, clipped to the grid.
    Positions within 1e-6 of a node snap onto it, so tiles on the grid's nodes reproduce it exactly."""
    step = (nodes[-1] - nodes[0]) / max(nodes.size - 1, 1)
    pos = (coords - nodes[0]) / step if nodes.size > 1 else np.zeros_like(coords)
    snapped = np.rint(pos)
    pos = np.where(np.abs(pos - snapped) < 1e-6, snapped, pos)
    return np.clip(pos, 0.0, nodes.size - 1)


def sample_bilinear(values: np.ndarray, lon: np.ndarray, lat: np.ndarray,
                    lon_t: np.ndarray, lat_t: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of ``values`` (ny, nx) on nodes ``lon`` (nx,), ``lat`` (ny,) onto the tensor
    grid ``lat_t`` (H,) x ``lon_t`` (W,); returns float32 (H, W). Separable: columns first, then rows."""
    fx = _fractional_index(lon, lon_t)
    fy = _fractional_index(lat, lat_t)
    ix = np.minimum(np.floor(fx).astype(np.intp), max(lon.size - 2, 0))
    iy = np.minimum(np.floor(fy).astype(np.intp), max(lat.size - 2, 0))
    wx = (fx - ix).astype(np.float32)
    wy = (fy - iy).astype(np.float32)[:, None]
    rows = np.unique(np.concatenate([iy, np.minimum(iy + 1, lat.size - 1)]))
    block = np.asarray(values, dtype=np.float32)[rows]
    x1 = np.minimum(ix + 1, lon.size - 1)
    across = block[:, ix] * (1.0 - wx) + block[:, x1] * wx
    local = np.searchsorted(rows, iy)
    local1 = np.searchsorted(rows, np.minimum(iy + 1, lat.size - 1))
    return across[local] * (1.0 - wy) + across[local1] * wy


def _on_grid(lon: np.ndarray, lat: np.ndarray, lon_t: np.ndarray, lat_t: np.ndarray) -> np.ndarray:
    """(H, W) bool: which pixels of the tensor grid ``lat_t`` x ``lon_t`` lie within half a node of the grid."""
    half_x, half_y = (0.5 * abs(step) for step in node_steps(lon, lat))
    in_x = (lon_t >= lon[0] - half_x) & (lon_t <= lon[-1] + half_x)
    in_y = (lat_t >= lat[0] - half_y) & (lat_t <= lat[-1] + half_y)
    return in_y[:, None] & in_x[None, :]


def sample_nearest(values: np.ndarray, lon: np.ndarray, lat: np.ndarray,
                   lon_t: np.ndarray, lat_t: np.ndarray) -> np.ndarray:
    """Nearest-node sampling of ``values`` (ny, nx) onto ``lat_t`` (H,) x ``lon_t`` (W,); keeps the dtype."""
    ix = np.rint(_fractional_index(lon, lon_t)).astype(np.intp)
    iy = np.rint(_fractional_index(lat, lat_t)).astype(np.intp)
    return np.asarray(values)[:, ix][iy]  # columns, then whole rows: several times faster than np.ix_


def augment_photometric(image: torch.Tensor, rng: np.random.Generator, *, pseudocolour: bool) -> torch.Tensor:
    """Brightness (0.8-1.2), contrast (0.5-1.5) and Gaussian noise (sd 1-10 % of the range) on ``image``
    [C, H, W]. Pseudo-colour images use torchvision's brightness and contrast and stay in [0, 1]; physical
    channels get the same factors as ``b * (m + c * (x - m))`` about each channel's tile mean ``m``."""
    brightness = float(rng.uniform(*BRIGHTNESS))
    contrast = float(rng.uniform(*CONTRAST))
    noise_share = float(rng.uniform(*NOISE_SHARE))
    noise = torch.from_numpy(rng.standard_normal(tuple(image.shape), dtype=np.float32))
    if pseudocolour:
        image = TF.adjust_contrast(TF.adjust_brightness(tv_tensors.Image(image), brightness), contrast)
        image = image.as_subclass(torch.Tensor)
        spread = float(image.max() - image.min())
        return (image + noise * (noise_share * spread)).clamp_(0.0, 1.0)
    mean = image.mean(dim=(1, 2), keepdim=True)
    image = brightness * (mean + contrast * (image - mean))
    spread = image.amax(dim=(1, 2), keepdim=True) - image.amin(dim=(1, 2), keepdim=True)
    return image + noise * (noise_share * spread)


def augment_geometry(image: torch.Tensor, masks: Sequence[torch.Tensor],
                     rng: np.random.Generator) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Random horizontal and vertical flips (p = 0.5 each), rotation by 0-180 degrees and translation up to
    10 % of the size, applied with the same parameters to ``image`` [C, H, W] (bilinear, exposed pixels 0)
    and each of ``masks`` [1, H, W] uint8 (nearest, exposed pixels 255 so that they are ignored)."""
    size = image.shape[-1]
    hflip, vflip = rng.random(2) < 0.5
    angle = float(rng.uniform(*ROTATION_DEG))
    shift = [int(round(v)) for v in rng.uniform(-TRANSLATE_SHARE, TRANSLATE_SHARE, size=2) * size]
    img = tv_tensors.Image(image)
    out_masks = [tv_tensors.Mask(m) for m in masks]
    if hflip:
        img, out_masks = TF.horizontal_flip(img), [TF.horizontal_flip(m) for m in out_masks]
    if vflip:
        img, out_masks = TF.vertical_flip(img), [TF.vertical_flip(m) for m in out_masks]
    img = TF.affine(img, angle=angle, translate=shift, scale=1.0, shear=[0.0, 0.0],
                    interpolation=InterpolationMode.BILINEAR, fill=0.0)
    out_masks = [TF.affine(m, angle=angle, translate=shift, scale=1.0, shear=[0.0, 0.0], fill=COVER_INDEX)
                 for m in out_masks]
    return img.as_subclass(torch.Tensor), [m.as_subclass(torch.Tensor) for m in out_masks]


def d4_view(x: torch.Tensor, turns: int, flip: bool) -> torch.Tensor:
    """``x`` (``[..., H, W]``) turned by ``turns`` quarter turns, then with ``flip`` its columns mirrored: one of the
    eight symmetries of the square, an exact pixel permutation."""
    x = torch.rot90(x, turns, dims=(-2, -1))
    return x.flip(-1) if flip else x


def augment_d4(image: torch.Tensor, masks: Sequence[torch.Tensor],
               rng: np.random.Generator) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One of the eight symmetries of the square (:func:`d4_view`: rotation by k x 90 degrees, then a horizontal
    flip with p = 0.5), the same for ``image`` [C, H, W] and each of ``masks`` [1, H, W]."""
    k = int(rng.integers(4))
    flip = bool(rng.random() < 0.5)
    return d4_view(image, k, flip), [d4_view(m, k, flip) for m in masks]


def centred_coordinates(lon0: float, lat0: float, size: int, pixels_per_degree: float
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of a ``size`` px square tile at ``pixels_per_degree`` centred on (lon0, lat0):
    ``lon`` west to east and ``lat`` north to south, each (size,) degrees."""
    offsets = (np.arange(size) - 0.5 * (size - 1)) / float(pixels_per_degree)
    return lon0 + offsets, lat0 - offsets


#: Seed of the cover nodes whose bedrock :func:`cover_answers` gives (the same for every run on a dataset).
WELLS_SEED = 20241207


def cover_answers(label: np.ndarray, bedrock: np.ndarray, share: float, radius: float = 0.0) -> np.ndarray:
    """uint8 (ny, nx): the true bedrock at a ``share`` of the cover's grid nodes (each node kept with that
    probability, drawn with :data:`WELLS_SEED`; every node at 1), 255 elsewhere and on the outcrop: what wells
    under the cover would tell, on a synthetic scene that knows the bedrock. With ``radius`` (grid nodes), each
    well's class is also carried to the cover within that distance of it, the nearest well's where they meet, as
    a geologist would extend a well (right or wrong)."""
    cover = np.asarray(label) == COVER_INDEX
    wells = cover.copy()
    if share < 1:
        wells &= np.random.default_rng(WELLS_SEED).random(cover.shape) < share
    answer = np.where(wells, bedrock, COVER_INDEX).astype(np.uint8)
    if radius > 0 and wells.any() and share < 1:
        distance, (rows, cols) = ndimage.distance_transform_edt(~wells, return_indices=True)
        answer = np.where(cover & (distance <= radius), answer[rows, cols], COVER_INDEX).astype(np.uint8)
    return answer


class TileDataset(torch.utils.data.Dataset):
    """Windows of a prepared dataset rendered as tiles.

    Parameters
    ----------
    data_dir
        Folder with ``grids.nc`` and ``manifest.json`` (``ggm-data prepare``).
    split
        ``"train"``, ``"val"``, ``"test"`` or a list of them.
    tile_size
        Pixels per side a window is rendered at (the paper: 2048).
    crop_size
        Pixels per side of the returned tile (the paper trains on random 1024 crops of 2048 tiles); a random
        crop with ``augment``, else the central crop. None: the whole tile. Only the cropped pixels are
        rendered, which gives the same pixels as rendering the tile and cropping it.
    augment
        ``"paper"`` (or True), section 5.1.1: random crop, horizontal and vertical flips (p = 0.5 each),
        rotation by 0-180 degrees and translation up to 10 % of the size (image exposed corners 0, mask corners
        255 so they are ignored), contrast 0.5-1.5 and brightness 0.8-1.2 (``ColorJitter``'s operations on
        pseudo-colour; on physical channels the same multiplicative factors about the tile mean), Gaussian
        noise of sd 1-10 % of the tile's range. Photometric changes come before the geometric ones so that
        exposed corners stay 0. Parameters come from a generator seeded by (seed, epoch, index): a resumed run
        sees the same stream.
        ``"d4"``: the random crop (or random centre), then one of the eight flips and right-angle rotations
        (:func:`augment_d4`): the field's values and the pixel grid are kept exactly. ``"none"`` (or False): no
        augmentation, central crops.
    pixels_per_degree
        None (the paper): every window is rendered at ``tile_size`` px, whatever its size in degrees. A number:
        *fixed-resolution* tiles of ``tile_size`` px at this ground resolution (e.g. 30 = one pixel per 2'
        node), one per window, centred on the window (a uniformly random point of it with augmentation), so
        every tile shows the same ground scale and the windows become areas to sample from. The mask then
        holds the labels of the pixels inside any window of ``split`` (255 elsewhere and outside the region),
        so nothing outside the split's own windows is learned or scored. ``crop_size`` must be None.
    channels
        ``"pseudocolour"`` or ``"physical"`` (see :func:`input_channels_from_fields`).
    geology_prior
        Append K + 2 channels (:func:`ggmnet.datasets.hiding.prior_channels`): one-hot of the nearest known
        outcrop's class (K), known/unknown (1) and the distance to known outcrop (1). With ``augment``, the
        outcrop under the cover of another part of the map is hidden (one-hot and known set to 0:
        :class:`ggmnet.datasets.hiding.CoverPattern`, so holes have the real cover's shapes, sizes and share),
        and ``mask`` is 255 everywhere except the hidden pixels. Without ``hide_outcrop`` nothing is hidden and
        ``mask`` is the label grid as usual: the cover is the unknown part and ``bedrock`` its answer.
    seed
        Seed of the augmentation stream.
    return_bedrock
        Add ``bedrock`` (int64 [H, W], true classes under the cover too) to each item; the dataset must have it.
    hide_outcrop
        With ``geology_prior``: hide outcrop and score only it (default: with ``augment``). Validation hides
        without augmenting: the same pixels every time (seeded by the item).
    cover_augment
        With ``augment``: the probability that a tile's residual anomaly is replaced by the same bedrock's
        under a random simulated cover (:func:`ggmnet.datasets.cover_sim.bury` with a
        :func:`~ggmnet.datasets.cover_sim.random_thickness` map; the labels are unchanged), drawn before the
        other augmentations. Pseudo-colour input only. Default 0: never.
    bedrock_targets
        The share of the cover's grid nodes whose true bedrock is also scored inside the split's windows
        (synthetic datasets only; 0: none, 1: every node; between: that share of the nodes, drawn once per
        dataset as wells would sample it, :func:`cover_answers`): ``mask`` then holds the bedrock class on those
        cover pixels, besides the outcrop (or, with ``geology_prior`` and hiding, the hidden outcrop) it holds
        otherwise. The input is unchanged: the cover stays unknown to the outcrop channels. A measure of what the
        data can teach under the cover; a real map has no answer there beyond its wells.
    well_radius
        With ``bedrock_targets`` below 1: each well's class also answers the cover within this many grid nodes of
        it (:func:`cover_answers`). Default 0: the well's node only.
    bury_hidden
        With ``augment``, ``geology_prior`` and ``hide_outcrop``: the probability that a tile's hidden outcrop
        is drawn before the other augmentations and its residual anomaly buried there under a cover that
        thickens from the hole's edge (:func:`ggmnet.datasets.cover_sim.hole_thickness`), so that the ground
        the network fills looks like the covered ground it will fill. Pseudo-colour input only. Default 0.

    Items are dicts: ``image`` float32 [C, H, W], ``mask`` int64 [H, W] (255 = ignore), optional ``bedrock``,
    ``window`` (int id). Attributes: ``windows``, ``in_channels``, ``num_classes``, ``class_counts`` (int64
    (K,): outcrop pixels of each class over the selected windows, at tile resolution, for class weights),
    ``manifest``.
    """

    def __init__(self, data_dir: str | os.PathLike, split: str | Sequence[str], *, tile_size: int = 2048,
                 crop_size: int | None = None, augment: bool | str = False, channels: str = "pseudocolour",
                 geology_prior: bool = False, seed: int = 0, return_bedrock: bool = False,
                 pixels_per_degree: float | None = None, cover_augment: float = 0.0,
                 hide_outcrop: bool | None = None, bury_hidden: float = 0.0, bedrock_targets: float = 0.0,
                 well_radius: float = 0.0) -> None:
        self.data_dir = Path(data_dir)
        self.manifest = read_manifest(self.data_dir)
        names = [split] if isinstance(split, str) else list(split)
        known = {w["split"] for w in self.manifest["windows"]} | {"train", "val", "test"}
        bad = [n for n in names if n not in known]
        if bad:
            raise UserError(f"split {', '.join(bad)}: expected train, val or test")
        # The options are trusted: a stage's RunConfig has checked them (this is the data layer).
        if isinstance(augment, bool):
            augment = "paper" if augment else "none"
        entries = [w for w in self.manifest["windows"] if w["split"] in names]
        if not entries:
            raise UserError(f"{self.data_dir / 'manifest.json'}: no windows in split {'+'.join(names)}")
        self.windows = [Window.from_dict(w) for w in entries]
        variables = self.manifest["variables"]
        if (return_bedrock or bedrock_targets) and "bedrock" not in variables:
            raise UserError(f"{self.data_dir}: the dataset has no bedrock grid (only synthetic datasets do)")
        self.split = names
        self.tile_size = int(tile_size)
        self.crop_size = int(crop_size) if crop_size is not None else None
        self.pixels_per_degree = None if pixels_per_degree is None else float(pixels_per_degree)
        self.augmentation = augment
        self.augment = augment != "none"
        self.cover_augment = float(cover_augment) if self.augment else 0.0
        self.channels = channels
        self.geology_prior = bool(geology_prior)
        self.hide_outcrop = self.augment if hide_outcrop is None else bool(hide_outcrop)
        self.bury_hidden = float(bury_hidden) if self.augment and self.geology_prior and self.hide_outcrop else 0.0
        self.seed = int(seed)
        self.return_bedrock = bool(return_bedrock)
        self.bedrock_targets = float(bedrock_targets)
        self.well_radius = float(well_radius)
        # The epoch lives in shared memory: DataLoader workers (persistent ones too) hold copies of this
        # dataset, and set_epoch in the main process must reach them all.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self.normalisation = self.manifest["normalisation"]
        self.fields = ["residual"] if channels == "pseudocolour" else [
            n for n in PHYSICAL_CHANNELS if n in variables]
        data_channels = 3 if channels == "pseudocolour" else len(self.fields)
        #: the dataset's class list (manifest.json), Table 1 by default
        self.classes = manifest_classes(self.manifest)
        self.num_classes = self.classes.num_classes
        self.in_channels = data_channels + (self.num_classes + 2 if self.geology_prior else 0)
        self.class_counts = self._class_counts(entries)
        self._grids: dict[str, np.ndarray] | None = None
        self._in_split: np.ndarray | None = None
        self._grids_pid: int | None = None
        self._cover: CoverPattern | None = None

    def _class_counts(self, entries: list[dict[str, Any]]) -> np.ndarray:
        """Outcrop pixels per class over the selected windows, each window's node counts scaled to its tile
        (fixed-resolution tiles: to the window's area at ``pixels_per_degree``)."""
        total = np.zeros(self.num_classes, dtype=np.float64)
        for w in entries:
            counts = np.asarray(w["class_counts"], dtype=np.float64)
            pixels = (self.tile_size ** 2 if self.pixels_per_degree is None
                      else (float(w["scale_deg"]) * self.pixels_per_degree) ** 2)
            total += counts * (pixels / max(int(w["nodes"]), 1))
        return np.rint(total).astype(np.int64)

    @classmethod
    def for_run(cls, config: Any, data_dir: str | os.PathLike, split: str, *, train: bool,
                **changes: Any) -> TileDataset:
        """The training (``train``: random crops, the run's augmentation) or validation tiles of a stage's run, with
        the run's tile size, ground scale, input channels, outcrop input and seed (a checked configuration);
        ``changes`` replace any of these arguments."""
        options = {"tile_size": config.tile_size, "channels": config.channels, "seed": config.seed,
                   "pixels_per_degree": config.pixels_per_degree, "geology_prior": config.geology_prior}
        if train:
            options.update(crop_size=config.crop_size, augment=config.augment,
                           cover_augment=getattr(config, "cover_augment", 0.0),
                           bury_hidden=getattr(config, "bury_hidden", 0.0),
                           bedrock_targets=getattr(config, "bedrock_targets", 0.0),
                           well_radius=getattr(config, "well_radius", 0.0))
        else:
            options.update(crop_size=None, augment=False, hide_outcrop=True)
        return cls(data_dir, split, **{**options, **changes})

    def __len__(self) -> int:
        return len(self.windows)

    @property
    def epoch(self) -> int:
        """The augmentation stream in use (see :meth:`set_epoch`)."""
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch`` (call before each epoch, as with DistributedSampler,
        and before iterating the loader). It reaches the loader's worker processes, persistent ones too."""
        self._epoch.fill_(int(epoch))

    def _load(self) -> dict[str, np.ndarray]:
        """The grids this dataset needs, read once per process (so each DataLoader worker has its own)."""
        if self._grids is None or self._grids_pid != os.getpid():
            names = [*self.fields, "label"] + (["bedrock"] if self.return_bedrock or self.bedrock_targets else [])
            self._grids = load_grids(self.data_dir, names)
            if self.bedrock_targets:
                self._grids["cover_answer"] = cover_answers(self._grids["label"], self._grids["bedrock"],
                                                            self.bedrock_targets, self.well_radius)
            self._grids_pid = os.getpid()
            if self.geology_prior:
                self._cover = CoverPattern(self._grids["label"])
            if self.pixels_per_degree is not None:
                self._in_split = windows_mask(self.windows, self._grids["lon"], self._grids["lat"])
        return self._grids

    def render(self, index: int, rows: slice | None = None, cols: slice | None = None, *,
               coordinates: tuple[np.ndarray, np.ndarray] | None = None,
               cover_km: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Render window ``index`` at ``tile_size`` (optionally only tile rows/cols ``rows``, ``cols``), or the
        pixels at ``coordinates`` = (lon (W,), lat (H,)), without augmentation: ``image`` (C, H, W) float32
        data channels, ``label`` and optional ``bedrock`` (H, W) uint8. Fixed-resolution datasets set
        ``label`` to 255 outside the split's windows and outside the grid. ``cover_km`` (H, W): bury the
        tile's bedrock under a cover this thick (km, :func:`ggmnet.datasets.cover_sim.bury`)."""
        grids = self._load()
        if coordinates is None:
            lon_t, lat_t = tile_coordinates(self.windows[index], self.tile_size)
            lon_t = lon_t[cols] if cols is not None else lon_t
            lat_t = lat_t[rows] if rows is not None else lat_t
        else:
            lon_t, lat_t = coordinates
        lon, lat = grids["lon"], grids["lat"]
        fields = {n: sample_bilinear(grids[n], lon, lat, lon_t, lat_t) for n in self.fields}
        if cover_km is not None:  # the tile's bedrock seen through a simulated cover (cover_sim)
            dy, dx = spacing_km(lon_t, lat_t)
            fields["residual"] = bury(fields["residual"], cover_km, dx, dy,
                                      regional_height_km=float(self.manifest["recipe"]["height_km"]))
        region = self._in_region(lon_t, lat_t)
        out = {"image": input_channels_from_fields(fields, self.normalisation, self.channels),
               "label": self._labels(lon_t, lat_t, region)}
        if self.return_bedrock:
            out["bedrock"] = sample_nearest(grids["bedrock"], lon, lat, lon_t, lat_t)
        if self.bedrock_targets:  # the bedrock where the split's windows are covered and answered, 255 elsewhere
            answer = sample_nearest(grids["cover_answer"], lon, lat, lon_t, lat_t)
            out["cover_target"] = np.where(region, answer, np.uint8(COVER_INDEX)).astype(np.uint8)
        return out

    def _in_region(self, lon_t: np.ndarray, lat_t: np.ndarray) -> np.ndarray:
        """(H, W) bool: the pixels inside the split's windows and the grid (every pixel of a window's own tile)."""
        grids = self._load()
        if self._in_split is None:
            return np.ones((lat_t.size, lon_t.size), dtype=bool)
        lon, lat = grids["lon"], grids["lat"]
        return sample_nearest(self._in_split, lon, lat, lon_t, lat_t) & _on_grid(lon, lat, lon_t, lat_t)

    def _labels(self, lon_t: np.ndarray, lat_t: np.ndarray, region: np.ndarray | None = None) -> np.ndarray:
        """The label grid at the pixels (fixed-resolution datasets: 255 outside the split's windows and the grid;
        ``region``: :meth:`_in_region` of these pixels, when the caller has it)."""
        grids = self._load()
        label = sample_nearest(grids["label"], grids["lon"], grids["lat"], lon_t, lat_t)
        region = self._in_region(lon_t, lat_t) if region is None else region
        return np.where(region, label, np.uint8(COVER_INDEX))

    def _sample_coordinates(self, index: int, rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates of item ``index``: its window's tile cropped at a random (augmenting) or central
        place, or a fixed-resolution tile centred on a random (augmenting) or the central point of the window."""
        window = self.windows[index]
        if self.pixels_per_degree is None:
            size = self.crop_size or self.tile_size
            if rng is not None:
                r0, c0 = (int(v) for v in rng.integers(0, self.tile_size - size + 1, size=2))
            else:
                r0 = c0 = (self.tile_size - size) // 2
            lon_t, lat_t = tile_coordinates(window, self.tile_size)
            return lon_t[c0:c0 + size], lat_t[r0:r0 + size]
        if rng is not None:
            lon0, lat0 = rng.uniform(window.west, window.east), rng.uniform(window.south, window.north)
        else:
            lon0, lat0 = 0.5 * (window.west + window.east), 0.5 * (window.south + window.north)
        return centred_coordinates(float(lon0), float(lat0), self.tile_size, self.pixels_per_degree)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)]) if self.augment else None
        lon_t, lat_t = self._sample_coordinates(index, rng)
        cover = None
        if rng is not None and self.cover_augment > 0 and rng.random() < self.cover_augment:
            cover = random_thickness((lat_t.size, lon_t.size), rng)
        hidden = None  # drawn here (before the other augmentations) only to bury it
        if rng is not None and self.bury_hidden > 0 and rng.random() < self.bury_hidden:
            hidden = self._hide(self._labels(lon_t, lat_t) != COVER_INDEX, self.windows[index], rng)
            buried = hole_thickness(hidden, rng)
            cover = buried if cover is None else np.maximum(cover, buried)
        tile = self.render(index, coordinates=(lon_t, lat_t), cover_km=cover)
        image = torch.from_numpy(tile["image"])
        masks = [torch.from_numpy(tile["label"])[None]]
        if self.return_bedrock:
            masks.append(torch.from_numpy(tile["bedrock"])[None])
        if self.bedrock_targets:
            masks.append(torch.from_numpy(tile["cover_target"])[None])
        if hidden is not None:
            masks.append(torch.from_numpy(hidden.astype(np.uint8))[None])
        if self.augmentation == "paper":
            image = augment_photometric(image, rng, pseudocolour=self.channels == "pseudocolour")
            image, masks = augment_geometry(image, masks, rng)
        elif self.augmentation == "d4":
            image, masks = augment_d4(image, masks, rng)
        label = masks[0][0].to(torch.int64)
        item: dict[str, Any] = {"window": self.windows[index].id}
        if self.geology_prior:
            known = label != COVER_INDEX
            hidden_t = None
            if hidden is not None:  # drawn and buried above, turned with the tile since (fill value 255: not hidden)
                hidden_t = masks[-1][0] == 1
            elif self.hide_outcrop:  # without augmentation, the same outcrop is hidden for every run
                hide_rng = rng if rng is not None else np.random.default_rng([HIDDEN_SEED, int(index)])
                hidden_t = torch.from_numpy(self._hide(known.numpy(), self.windows[index], hide_rng))
            if hidden_t is not None:
                known = known & ~hidden_t
                label = torch.where(hidden_t, label, torch.full_like(label, COVER_INDEX))
            shown = torch.where(known, masks[0][0].long(), COVER_INDEX).numpy().astype(np.uint8)
            image = torch.cat([image, torch.from_numpy(prior_channels(shown, self.num_classes))])
        if self.bedrock_targets:  # scored beside the (hidden) outcrop; the input still shows it as unknown
            target = masks[1 + self.return_bedrock][0].to(torch.int64)
            label = torch.where(target != COVER_INDEX, target, label)
        item["image"] = image.to(torch.float32).contiguous()
        item["mask"] = label.contiguous()
        if self.return_bedrock:
            item["bedrock"] = masks[1][0].to(torch.int64).contiguous()
        return item

    def _hide(self, known: np.ndarray, window: Window, rng: np.random.Generator) -> np.ndarray:
        """A (H, W) bool map of outcrop pixels to hide: those under the cover of another part of the map."""
        lon = self._grids["lon"]
        spacing_deg = abs(lon[1] - lon[0]) if lon.size > 1 else 1.0
        px_per_deg = self.pixels_per_degree or self.tile_size / window.scale_deg
        return self._cover.hide(known, rng, scale=px_per_deg * spacing_deg)
