"""The weighted bootstrapped cross-entropy of Eq. 19 (paper section 5.1.2) and its weights.

Eq. 19 reads ``l = -1/K sum_i w_i 1[p_{i,y_i} < t_K] log p_{i,y_i}``: the K pixels whose true class gets the
lowest posterior ``p_{i,y_i}`` (the hardest pixels, hard example mining, Wu et al. 2016) are kept, and each
kept pixel's cross-entropy is scaled by ``w_i``, the weight of its class (rare strata weigh more) times the
weight of its instance (small connected outcrops weigh more). The weights scale the selected pixels; they do
not take part in the selection, which depends on the posterior alone.

References
----------
Wu, Z., Shen, C. and van den Hengel, A. (2016), Bridging category-level and instance-level semantic image
segmentation, arXiv:1605.06885. Bulo, S. R., Neuhold, G. and Kontschieder, P. (2017), Loss max-pooling for
semantic image segmentation, CVPR.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ggmnet.classes import IGNORE_INDEX

#: Class-weighting formulas known to :func:`class_weights_from_counts`.
CLASS_WEIGHT_METHODS = ("median_frequency", "sqrt_median_frequency", "inverse_frequency", "uniform")
#: How :class:`WeightedBootstrappedCE` picks its K pixels (see its ``selection``).
SELECTIONS = ("posterior", "weighted")


def class_weights_from_counts(counts: Sequence[int] | np.ndarray, *, method: str = "median_frequency",
                              max_weight: float = 10.0) -> torch.Tensor:
    """Per-class loss weights from pixel counts of each class in the training data.

    Parameters
    ----------
    counts
        Labelled (outcrop) pixels of each class, shape ``[k]``, e.g. a manifest's ``class_counts``.
    method
        ``"median_frequency"`` (Eigen and Fergus 2015): ``w_c = median(f) / f_c`` with ``f_c = n_c / sum(n)``
        and the median taken over the classes that occur; ``"sqrt_median_frequency"``: its square root (a milder
        balance: a class 10x rarer than the median weighs 3.2, not 10); ``"inverse_frequency"``: ``w_c = 1 / (m f_c)``
        with ``m`` the number of classes that occur (so that a balanced dataset gets weight 1 everywhere);
        ``"uniform"``: all ones.
    max_weight
        Upper clip of every weight, so that a class with a handful of pixels cannot dominate the loss.

    Returns
    -------
    torch.Tensor
        float32 ``[k]``. A class with zero count gets ``max_weight`` (it is treated as the rarest possible
        class, so its first pixels, e.g. in validation, are not ignored by the loss).
    """
    n = np.asarray(counts, dtype=np.float64)
    if n.ndim != 1 or n.size == 0 or np.any(n < 0) or not np.all(np.isfinite(n)):
        raise ValueError(f"counts must be a non-empty 1-D array of non-negative numbers, got {counts!r}")
    if method not in CLASS_WEIGHT_METHODS:
        raise ValueError(f"unknown class-weight method {method!r}; expected one of {CLASS_WEIGHT_METHODS}")
    if max_weight <= 0:
        raise ValueError(f"max_weight must be positive, got {max_weight}")
    if method == "uniform":
        return torch.ones(n.size, dtype=torch.float32)
    present = n > 0
    weights = np.full(n.size, float(max_weight))
    if present.any():
        freq = n[present] / n[present].sum()
        if method in ("median_frequency", "sqrt_median_frequency"):
            weights[present] = np.median(freq) / freq
            if method == "sqrt_median_frequency":
                weights[present] = np.sqrt(weights[present])
        else:
            weights[present] = 1.0 / (present.sum() * freq)
    return torch.as_tensor(np.minimum(weights, max_weight), dtype=torch.float32)


def _instance_weights_2d(mask: np.ndarray, ignore_index: int, power: float, max_weight: float) -> np.ndarray:
    # One id per instance over all classes (0 = ignored), so sizes and weights are computed per instance and
    # gathered once: the per-pixel work is a label pass per class and one lookup.
    ids = np.zeros(mask.shape, dtype=np.int32)
    offset = 0
    for c in np.flatnonzero(np.bincount(mask.ravel().astype(np.int64))):
        if c == ignore_index:
            continue
        components, count = scipy.ndimage.label(mask == c)
        np.add(ids, components + offset, out=ids, where=components > 0)
        offset += count
    if offset == 0:
        return np.zeros(mask.shape, dtype=np.float32)
    sizes = np.bincount(ids.ravel(), minlength=offset + 1)[1:].astype(np.float64)
    raw = np.minimum((np.median(sizes) / sizes) ** power, max_weight)
    per_instance = np.zeros(offset + 1, dtype=np.float32)
    per_instance[1:] = raw * sizes.sum() / (raw * sizes).sum()
    return per_instance[ids]


def instance_size_weights(mask: np.ndarray | torch.Tensor, *, ignore_index: int = IGNORE_INDEX,
                          power: float = 0.5, max_weight: float = 10.0) -> np.ndarray | torch.Tensor:
    """Pixel weights that favour small instances (connected patches of one class) in a label mask.

    Each class's pixels are split into connected components with ``scipy.ndimage.label`` and 4-connectivity
    (pixels touching only at a corner are separate instances: map units that meet at a corner are usually
    separate bodies). A pixel in a component of ``s`` pixels gets ``min((median / s) ** power, max_weight)``,
    where ``median`` is the median component size over all classes of its image; then the weights of each
    image are scaled to mean 1 over its labelled pixels (so the scaled weights may slightly exceed
    ``max_weight``). Ignored pixels get 0.

    Parameters
    ----------
    mask
        Integer class indices ``[..., H, W]`` (numpy or torch, any device); each trailing ``[H, W]`` is one image.
    ignore_index
        Label of pixels without ground truth (Cenozoic cover).
    power
        Exponent of the size ratio: 0 gives uniform weights, 1 weighs a pixel inversely to its instance's size.
    max_weight
        Upper clip of the unscaled weight.

    Returns
    -------
    numpy.ndarray or torch.Tensor
        float32 ``[..., H, W]``, of the type (and device) of ``mask``.
    """
    is_torch = isinstance(mask, torch.Tensor)
    array = mask.detach().cpu().numpy() if is_torch else np.asarray(mask)
    if array.ndim < 2:
        raise ValueError(f"mask must have shape [..., H, W], got {array.shape}")
    flat = array.reshape(-1, *array.shape[-2:])
    out = np.stack([_instance_weights_2d(m, ignore_index, power, max_weight) for m in flat]).reshape(array.shape)
    return torch.from_numpy(out).to(mask.device) if is_torch else out


class WeightedBootstrappedCE(nn.Module):
    """Weighted bootstrapped cross-entropy (Eq. 19): ``sum over the K hardest pixels of w_i * -log p_{i,y_i}``,
    divided by K.

    Parameters
    ----------
    class_weights
        Float ``[C]`` weight of each class (see :func:`class_weights_from_counts`), or None for all ones.
    top_k_fraction
        K = ceil(top_k_fraction * N), where N is the number of *valid* (not ignored) pixels in the batch.
        The paper takes N as the total pixels of the image; with Cenozoic cover ignored, a K counted over all
        pixels could exceed the labelled ones in a mostly covered tile and the mining would stop selecting,
        so K is counted over the pixels that have ground truth.
    instance_weighting
        When ``forward`` gets no ``pixel_weights``, multiply by :func:`instance_size_weights` of the target.
    ignore_index
        Target value of pixels excluded from the loss.
    instance_power, instance_max_weight
        ``power`` and ``max_weight`` of :func:`instance_size_weights`.
    selection
        ``"posterior"`` (default, Eq. 19 as written): the K pixels with the largest unweighted cross-entropy
        ``-log p_{i,y_i}`` (the lowest posterior of their true class) are kept, then weighted.
        ``"weighted"``: the K largest weighted losses ``w_i * -log p_{i,y_i}`` are kept. With median-frequency
        class weights of up to 10 the weighted ranking keeps mostly the rare classes at the start of
        training, so the common ones get almost no gradient; it is kept as a named variant for comparison.

    Notes
    -----
    ``forward(logits [B, C, h, w], target [B, H, W] int64, pixel_weights [B, H, W] | None) -> scalar``.
    Logits of another size than the target are upsampled bilinearly (``align_corners=False``). The loss is
    computed in float32 even under autocast. Gradient flows only through the kept pixels. Exactly K pixels
    are kept: pixels tied at the threshold are taken in the order ``torch.topk`` returns them.

    Labelling instances costs roughly 0.1-0.3 s of one CPU core per 1024 x 1024 mask, inside the step; to keep
    it off the step, wrap the dataset in :class:`InstanceWeighted` (the loader's workers compute the weights)
    and pass ``batch["pixel_weights"]`` to ``forward``.
    """

    @classmethod
    def for_run(cls, config: Any, class_counts: Sequence[int] | np.ndarray) -> WeightedBootstrappedCE:
        """Eq. 19 as a stage's run sets it (``--class-weighting`` of the training windows' ``class_counts``,
        ``--top-k-fraction``, ``--instance-weighting``)."""
        weights = class_weights_from_counts(np.asarray(class_counts), method=config.class_weighting)
        return cls(weights, top_k_fraction=config.top_k_fraction, instance_weighting=config.instance_weighting)

    def __init__(self, class_weights: torch.Tensor | Sequence[float] | None = None, *,
                 top_k_fraction: float = 0.15, instance_weighting: bool = True,
                 ignore_index: int = IGNORE_INDEX, instance_power: float = 0.5,
                 instance_max_weight: float = 10.0, selection: str = "posterior") -> None:
        super().__init__()
        if not 0.0 < top_k_fraction <= 1.0:
            raise ValueError(f"top_k_fraction must be in (0, 1], got {top_k_fraction}")
        if selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
        self.selection = selection
        weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weights)
        self.top_k_fraction = float(top_k_fraction)
        self.instance_weighting = bool(instance_weighting)
        self.ignore_index = int(ignore_index)
        self.instance_power = float(instance_power)
        self.instance_max_weight = float(instance_max_weight)

    def pixel_weights_for(self, target: torch.Tensor) -> torch.Tensor | None:
        """The instance-size weights ``forward`` would use for ``target`` (None when instance weighting is off).

        Compute them once and pass them to every head's ``forward`` (see :func:`sum_head_losses`).
        """
        if not self.instance_weighting:
            return None
        return instance_size_weights(target, ignore_index=self.ignore_index, power=self.instance_power,
                                     max_weight=self.instance_max_weight)

    def pixel_terms(self, logits: torch.Tensor, target: torch.Tensor, pixel_weights: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-pixel cross-entropy ``-log p_{i,y_i}`` and weight ``w_i`` (both float32 ``[B, H, W]``, 0 where
        ignored) and the valid mask."""
        if logits.ndim != 4 or target.ndim != 3 or logits.shape[0] != target.shape[0]:
            raise ValueError(f"expected logits [B, C, h, w] and target [B, H, W], got {tuple(logits.shape)} "
                             f"and {tuple(target.shape)}")
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits = logits.float()
            if logits.shape[-2:] != target.shape[-2:]:
                logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
            valid = target != self.ignore_index
            safe_target = torch.where(valid, target, torch.zeros_like(target)).long()
            nll = -F.log_softmax(logits, dim=1).gather(1, safe_target.unsqueeze(1)).squeeze(1)
            weights = valid.float()
            if self.class_weights is not None:
                weights = weights * self.class_weights.to(nll.device)[safe_target]
            if pixel_weights is None:
                pixel_weights = self.pixel_weights_for(target)
            if pixel_weights is not None:
                weights = weights * pixel_weights.to(device=nll.device, dtype=torch.float32)
            nll = torch.where(valid, nll, torch.zeros_like(nll))
        return nll, weights, valid

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                pixel_weights: torch.Tensor | None = None) -> torch.Tensor:
        nll, weights, valid = self.pixel_terms(logits, target, pixel_weights)
        nll, weights = nll[valid], weights[valid]
        n = nll.numel()
        if n == 0:
            return logits.sum() * 0.0
        k = min(n, math.ceil(self.top_k_fraction * n))
        losses = weights * nll
        if k == n:
            return losses.sum() / k
        ranking = nll if self.selection == "posterior" else losses
        kept = torch.topk(ranking.detach(), k, sorted=False).indices
        return losses[kept].sum() / k


class InstanceWeighted(Dataset):
    """A dataset of dict items (e.g. ``TileDataset``) whose items gain ``"pixel_weights"``: float32 ``[H, W]``
    :func:`instance_size_weights` of ``item[key]``, computed in the DataLoader's worker processes.
    """

    def __init__(self, dataset: Dataset, *, key: str = "mask", ignore_index: int = IGNORE_INDEX,
                 power: float = 0.5, max_weight: float = 10.0) -> None:
        self.dataset = dataset
        self.key = key
        self.ignore_index = ignore_index
        self.power = power
        self.max_weight = max_weight

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        item = dict(self.dataset[index])
        item["pixel_weights"] = instance_size_weights(item[self.key], ignore_index=self.ignore_index,
                                                      power=self.power, max_weight=self.max_weight)
        return item

    def __getattr__(self, name: str) -> Any:
        # expose the wrapped dataset's attributes (in_channels, num_classes, class_counts...)
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


def sum_head_losses(criterion: WeightedBootstrappedCE, logits_list: Sequence[torch.Tensor],
                    target: torch.Tensor, weights: Sequence[float] | None = None,
                    pixel_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted sum of ``criterion`` over several heads' logits against one target (the search's heads).

    The instance weights are computed once from ``target`` (unless given) and shared by all heads.
    ``weights`` defaults to 1 for every head.
    """
    if not logits_list:
        raise ValueError("logits_list is empty")
    weights = [1.0] * len(logits_list) if weights is None else list(weights)
    if len(weights) != len(logits_list):
        raise ValueError(f"{len(weights)} head weights for {len(logits_list)} heads")
    if pixel_weights is None:
        pixel_weights = criterion.pixel_weights_for(target)
    return sum(w * criterion(logits, target, pixel_weights) for w, logits in zip(weights, logits_list))
