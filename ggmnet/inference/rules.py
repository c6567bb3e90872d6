"""The no-gravity rules a geologist would use, and the outcrop prior: maps from the labels alone.

* :func:`nearest_outcrop_baseline`: every cover pixel takes the class of the nearest outcrop;
* :func:`outcrop_prior`: class probabilities from the outcrop around each pixel; :func:`with_outcrop_prior`
  reads a network's probabilities together with it;
* :func:`training_class_frequencies`: the commonest-class rule's frequencies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from ggmnet.classes import COVER_INDEX


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
