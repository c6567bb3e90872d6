"""The outcrop input of a network that reads the outcrop (:func:`prior_channels`), and outcrop hidden under
the map's own cover pattern: the task that teaches it to fill the cover, and the validation that scores it
where a real map can be scored.

A network that takes the outcrop geology as input (``--geology-prior``) learns to fill the cover by filling
outcrop that was hidden from it. What it learns depends on the shape of the holes: small round holes teach
interpolation between close outcrop, which the nearest-outcrop rule already does. Here the holes are the
cover of another part of the same map (:class:`CoverPattern`): the map's cover mask (255 on the label grid),
flipped, shifted by a random offset (wrapping round the grid) and resampled to the tile's scale. Holes then
have the real cover's shapes, sizes and share, the large basins included, and hidden outcrop lies as far
from visible outcrop as the real cover's nodes do. (The cover of a large region is mostly one connected
area, so its components alone would not serve as holes.)

:meth:`CoverPattern.hide` draws the holes of one training tile, or of a whole split's outcrop for the
validation on hidden outcrop, which needs nothing a real geological map lacks.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ggmnet.classes import COVER_INDEX, NUM_CLASSES

#: Seed of the outcrop a validation hides (:attr:`ggmnet.inference.scoring.WindowScorer.hidden`, and validation tiles
#: without augmentation): every run and checkpoint scored on a dataset's split hides the same outcrop.
HIDDEN_SEED = 20240


class CoverPattern:
    """The cover mask of a label grid, as a source of holes to lay over outcrop.

    Parameters
    ----------
    label
        ``(ny, nx)`` class indices with 255 = cover (a prepared dataset's ``label`` grid).
    within
        Optional ``(ny, nx)`` bool: the part of the grid that is mapped (cover outside it does not count).

    Attributes
    ----------
    cover
        ``(ny, nx)`` bool, the cover.
    share
        The cover's share of the mapped nodes (the expected share of outcrop that :meth:`hide` hides).
    """

    def __init__(self, label: np.ndarray, within: np.ndarray | None = None) -> None:
        cover = np.asarray(label) == COVER_INDEX
        mapped = np.ones_like(cover) if within is None else np.asarray(within, dtype=bool)
        self.cover = cover & mapped
        self.share = float(self.cover.sum() / max(int(mapped.sum()), 1))

    def draw(self, rng: np.random.Generator, shape: tuple[int, int], scale: float = 1.0) -> np.ndarray:
        """A ``shape`` bool array of the cover of a random place: the mask flipped at random in each
        direction (and transposed, for a square ``shape``), read from a random offset with wrap-around at
        ``scale`` pixels per node (nearest node)."""
        cover = self.cover
        if rng.random() < 0.5:
            cover = cover[::-1]
        if rng.random() < 0.5:
            cover = cover[:, ::-1]
        if shape[0] == shape[1] and rng.random() < 0.5:
            cover = cover.T
        ny, nx = cover.shape
        r0, c0 = int(rng.integers(ny)), int(rng.integers(nx))
        rows = (r0 + np.floor(np.arange(shape[0]) / scale).astype(np.intp)) % ny
        cols = (c0 + np.floor(np.arange(shape[1]) / scale).astype(np.intp)) % nx
        return cover[rows][:, cols]

    def hide(self, known: np.ndarray, rng: np.random.Generator, scale: float = 1.0, tries: int = 20) -> np.ndarray:
        """``(H, W)`` bool: the pixels of ``known`` under the cover of a random place (:meth:`draw`), at
        ``scale`` pixels per node (a training tile at 15 px per degree on a 2' grid: 0.5). A place whose cover
        hides none of ``known`` is drawn again, up to ``tries`` places (a tile with nothing hidden teaches and
        scores nothing). About :attr:`share` of ``known`` on average."""
        known = np.asarray(known, dtype=bool)
        hidden = np.zeros_like(known)
        if not (known.any() and self.cover.any()):
            return hidden
        for _ in range(tries):
            hidden = known & self.draw(rng, known.shape, scale)
            if hidden.any():
                break
        return hidden


#: Pixels per unit of the distance channel of :func:`prior_channels`, and its ceiling (in those units).
PRIOR_DISTANCE_PX = 32.0
PRIOR_DISTANCE_MAX = 4.0


def prior_channels(labels: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """The outcrop input of a network that reads the outcrop (``--geology-prior``), from a tile's labels
    ``(H, W)`` (255 = unknown), as :class:`~ggmnet.datasets.tiles.TileDataset` and prediction append them: float32
    ``[K + 2, H, W]``:

    * ``0..K-1``: one-hot of the **nearest known outcrop's class** at every pixel (the known class itself on
      known outcrop; the nearest-outcrop rule's map elsewhere, so the network starts from that rule's
      answer), all zero in a tile without outcrop;
    * ``K``: known (1) or unknown (0);
    * ``K + 1``: the distance to the nearest known outcrop, in units of :data:`PRIOR_DISTANCE_PX` pixels,
      capped at :data:`PRIOR_DISTANCE_MAX` (the cap everywhere in a tile without outcrop), so the network
      can weigh the extended class by how far it was carried.
    """
    labels = np.asarray(labels)
    unknown = labels == COVER_INDEX
    out = np.zeros((num_classes + 2, *labels.shape), dtype=np.float32)
    if unknown.all():
        out[num_classes + 1] = PRIOR_DISTANCE_MAX
        return out
    distance, (rows, cols) = ndimage.distance_transform_edt(unknown, return_distances=True, return_indices=True)
    nearest = labels[rows, cols]
    out[:num_classes] = nearest[None] == np.arange(num_classes)[:, None, None]
    out[num_classes] = ~unknown
    out[num_classes + 1] = np.minimum(distance / PRIOR_DISTANCE_PX, PRIOR_DISTANCE_MAX)
    return out
