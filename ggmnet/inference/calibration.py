"""Whether a map's probabilities can be trusted: temperature scaling, calibration error and error ranking.

A map of the bedrock under the cover is only as useful as its confidence is honest: a geologist needs to know
which parts to trust. Three tools, all on class probabilities ``[K, N]`` of ``N`` scored nodes:

* :func:`fit_temperature`: the temperature ``T`` that minimises the negative log-likelihood of
  ``softmax(log p / T)`` on held-back nodes (Guo et al. 2017, "On calibration of modern neural networks";
  on a map: outcrop hidden from the network, which a real map can give), applied by :func:`temper`;
* :func:`reliability`: the expected calibration error (ECE) over equal-width confidence bins, and the bins
  themselves (a reliability diagram, :func:`plot_reliability`);
* :func:`error_auroc`: how well an uncertainty (the entropy, :func:`entropy`) ranks wrong nodes above right
  ones: the area under the ROC curve (0.5 = chance, 1 = every error more uncertain than every right node).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy import optimize, special, stats

#: Equal-width confidence bins of the expected calibration error.
ECE_BINS = 15
#: Temperatures searched by :func:`fit_temperature`.
TEMPERATURE_RANGE = (0.05, 20.0)


def _log(probability: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(probability, dtype=np.float64), 1e-12, None))


def temper(probability: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log p / T)`` along the first axis: probabilities ``[K, ...]`` at temperature ``T`` (1: as they
    are; above 1 softer, below 1 sharper)."""
    return special.softmax(_log(probability) / float(temperature), axis=0)


def fit_temperature(probability: np.ndarray, truth: np.ndarray) -> float:
    """The temperature minimising the mean negative log-likelihood of ``truth`` ``(N,)`` under
    :func:`temper` of ``probability`` ``[K, N]`` (bounded search over log T in :data:`TEMPERATURE_RANGE`); 1.0
    without nodes."""
    truth = np.asarray(truth, dtype=np.int64)
    if truth.size == 0:
        return 1.0
    logp = _log(probability)

    def nll(log_t: float) -> float:
        z = logp / np.exp(log_t)
        return float(np.mean(special.logsumexp(z, axis=0) - z[truth, np.arange(truth.size)]))

    lo, hi = np.log(TEMPERATURE_RANGE)
    result = optimize.minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(result.x))


def reliability(probability: np.ndarray, truth: np.ndarray, bins: int = ECE_BINS) -> dict[str, Any]:
    """Expected calibration error of the top class: ``sum_b (n_b / N) |accuracy_b - confidence_b|`` over
    ``bins`` equal-width bins of the top probability (a node of confidence exactly ``k / bins`` falls in the
    bin below, 1.0 in the last).

    Returns ``{"ece", "nodes", "bins": [{"low", "high", "nodes", "confidence", "accuracy"}, ...]}`` (empty bins
    with None); ``ece`` None without nodes.
    """
    probability = np.asarray(probability, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.int64)
    confidence = probability.max(axis=0)
    right = probability.argmax(axis=0) == truth
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        inside = index == b
        n = int(inside.sum())
        conf = float(confidence[inside].mean()) if n else None
        acc = float(right[inside].mean()) if n else None
        if n:
            ece += n / truth.size * abs(acc - conf)
        rows.append({"low": b / bins, "high": (b + 1) / bins, "nodes": n, "confidence": conf, "accuracy": acc})
    return {"ece": ece if truth.size else None, "nodes": int(truth.size), "bins": rows}


def entropy(probability: np.ndarray) -> np.ndarray:
    """Shannon entropy ``-sum_k p_k ln p_k`` of probabilities ``[K, ...]`` along the first axis, in nats (0:
    certain; ln K: uniform)."""
    p = np.asarray(probability, dtype=np.float64)
    return -special.xlogy(p, p).sum(axis=0)


def error_auroc(uncertainty: np.ndarray, wrong: np.ndarray) -> float | None:
    """Area under the ROC curve of ``uncertainty`` ``(N,)`` as a detector of ``wrong`` ``(N,)`` nodes: the
    probability that a wrong node is more uncertain than a right one (ties count half; the Mann-Whitney U
    statistic over the product of the counts). None when all nodes are right or all wrong."""
    uncertainty = np.asarray(uncertainty, dtype=np.float64)
    wrong = np.asarray(wrong, dtype=bool)
    n_wrong, n_right = int(wrong.sum()), int((~wrong).sum())
    if n_wrong == 0 or n_right == 0:
        return None
    ranks = stats.rankdata(uncertainty)
    u = ranks[wrong].sum() - n_wrong * (n_wrong + 1) / 2
    return float(u / (n_wrong * n_right))


def summary(probability: np.ndarray, truth: np.ndarray, temperature: float = 1.0) -> dict[str, Any]:
    """Calibration of probabilities ``[K, N]`` against ``truth`` ``(N,)`` as they are (``raw``) and at
    ``temperature`` (``calibrated``): each :func:`reliability`, plus the negative log-likelihood and the
    :func:`error_auroc` of the entropy."""
    out: dict[str, Any] = {"temperature": float(temperature), "nodes": int(np.asarray(truth).size)}
    for name, p in (("raw", np.asarray(probability, dtype=np.float64)), ("calibrated", temper(probability, temperature))):
        rel = reliability(p, truth)
        wrong = p.argmax(axis=0) != truth
        nll = float(-_log(p[truth, np.arange(truth.size)]).mean()) if truth.size else None
        out[name] = {**rel, "nll": nll, "entropy_error_auroc": error_auroc(entropy(p), wrong)}
    return out


def plot_reliability(sets: dict[str, dict[str, Any]], path: str | Path, title: str) -> Path:
    """A reliability diagram: accuracy against confidence per bin for each of ``sets`` (name ->
    :func:`reliability` result), with the diagonal of perfect calibration; written atomically to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ggmnet.engine.runio import atomic_path

    fig, ax = plt.subplots(figsize=(4.6, 4.4), dpi=110)
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect calibration")
    for name, rel in sets.items():
        rows = [r for r in rel["bins"] if r["nodes"]]
        if not rows:
            continue
        ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], marker="o", ms=3,
                label=f"{name} (ECE {100 * rel['ece']:.1f}%)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return path
