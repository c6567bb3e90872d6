"""Segmentation scores of section 5.2: MPA (Eq. 20), IoU (Eq. 21), FWIoU (Eq. 22), from a confusion matrix.

A class absent from the ground truth has no accuracy and no IoU (None, shown as "--" like the Archean in the
paper's Table 7): it is left out of the means instead of counting as 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from ggmnet.classes import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES


def _as_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def pair_counts(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray, num_classes: int,
                ignore_index: int) -> np.ndarray:
    """int64 ``[k, k]`` counts of (target, pred) pairs; both int64, both torch (one device) or both NumPy.

    Ignored pixels get the extra code ``k * k`` rather than being masked out: no boolean indexing, one
    bincount, and on a GPU a single transfer of ``k * k`` counts.
    """
    k = num_classes
    lib = torch if isinstance(pred, torch.Tensor) else np
    valid = target != ignore_index
    t_valid = lib.where(valid, target, 0)
    if (pred.numel() if lib is torch else pred.size) > 0:
        t_min, t_max, p_min, p_max = (int(v) for v in (t_valid.min(), t_valid.max(), pred.min(), pred.max()))
        if min(t_min, p_min) < 0 or max(t_max, p_max) >= k:
            raise ValueError(f"class indices must lie in [0, {k}) or, in the target, equal ignore_index "
                             f"{ignore_index}")
    codes = lib.where(valid, t_valid * k + pred, k * k).reshape(-1)
    counts = lib.bincount(codes, minlength=k * k + 1)[: k * k]
    if lib is torch:
        counts = counts.cpu().numpy()
    return counts.reshape(k, k).astype(np.int64)


class ConfusionMatrix:
    """Pixel counts ``p_ij`` of ground-truth class i predicted as class j, accumulated over batches.

    Parameters
    ----------
    num_classes
        k, the number of classes; predictions and targets are indices in ``[0, k)``.
    ignore_index
        Target value of pixels that are skipped (Cenozoic cover).
    """

    def __init__(self, num_classes: int = NUM_CLASSES, ignore_index: int = IGNORE_INDEX) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self._matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    @property
    def matrix(self) -> np.ndarray:
        """int64 ``[k, k]``: rows are ground truth, columns are predictions."""
        return self._matrix

    def reset(self) -> None:
        """Zero all counts."""
        self._matrix[:] = 0

    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """Add the pixels of one batch.

        Parameters
        ----------
        pred
            Predicted class indices, any shape (e.g. ``[B, H, W]``), integer; torch (any device) or numpy.
        target
            Ground-truth indices of the same shape; pixels equal to ``ignore_index`` are skipped.
        """
        # GPU tensors are counted where they are; CPU tensors go through NumPy, faster there.
        on_gpu = [x.device for x in (pred, target) if isinstance(x, torch.Tensor) and x.device.type != "cpu"]
        if on_gpu:
            p, t = (torch.as_tensor(x, device=on_gpu[0]).long() for x in (pred, target))
        else:
            p, t = (_as_numpy(x).astype(np.int64, copy=False) for x in (pred, target))
        if tuple(p.shape) != tuple(t.shape):
            raise ValueError(f"pred {tuple(p.shape)} and target {tuple(t.shape)} differ in shape")
        self._matrix += pair_counts(p, t, self.num_classes, self.ignore_index)

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix's counts into this one (same k); returns self."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes} classes into {self.num_classes}")
        self._matrix += other.matrix
        return self

    def all_reduce(self) -> ConfusionMatrix:
        """Sum the counts over all ranks when torch.distributed is initialised (a no-op otherwise); returns self.

        Every rank must call it. With the NCCL backend the counts travel on the current CUDA device.
        """
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
            counts = torch.as_tensor(self._matrix, dtype=torch.int64, device=device)
            dist.all_reduce(counts, op=dist.ReduceOp.SUM)
            self._matrix = counts.cpu().numpy().astype(np.int64)
        return self

    def compute(self) -> dict[str, Any]:
        """Scores as fractions in [0, 1].

        Returns
        -------
        dict
            ``pixel_accuracy`` (sum p_ii / sum p_ij), ``mpa`` (Eq. 20, mean over classes present in the ground
            truth of p_ii / sum_j p_ij), ``miou`` (mean IoU over the same classes), ``fwiou`` (Eq. 22,
            sum_i w_i IoU_i with w_i the ground-truth frequency of class i), ``iou`` and ``accuracy`` (lists of
            k, None for a class absent from the ground truth), ``support`` (list of k ground-truth pixel
            counts) and ``pixels`` (their sum). The scalar scores are None when no pixel was counted.
        """
        m = self._matrix.astype(np.float64)
        support = m.sum(axis=1)
        predicted = m.sum(axis=0)
        tp = np.diag(m)
        total = support.sum()
        present = support > 0
        accuracy = np.divide(tp, support, out=np.zeros_like(tp), where=present)
        union = support + predicted - tp
        iou = np.divide(tp, union, out=np.zeros_like(tp), where=present)
        scores: dict[str, Any] = {
            "pixel_accuracy": None, "mpa": None, "miou": None, "fwiou": None,
            "iou": [float(v) if ok else None for v, ok in zip(iou, present)],
            "accuracy": [float(v) if ok else None for v, ok in zip(accuracy, present)],
            "support": [int(v) for v in self._matrix.sum(axis=1)],
            "pixels": int(self._matrix.sum()),
        }
        if total > 0:
            scores["pixel_accuracy"] = float(tp.sum() / total)
            scores["mpa"] = float(accuracy[present].mean())
            scores["miou"] = float(iou[present].mean())
            scores["fwiou"] = float((support[present] / total * iou[present]).sum())
        return scores


def percent(value: float | None, unit: str = "", digits: int = 1) -> str:
    """A score in [0, 1] as a percentage with ``digits`` decimals (then ``unit``), ``--`` when not available
    (None)."""
    return "--" if value is None else f"{100.0 * value:.{digits}f}{unit}"


def markdown_table(header: Sequence[object], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table: ``header`` and ``rows`` (each cell formatted with ``str``), ending in a newline."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def format_table7(scores: dict[str, Any], class_names: Sequence[str] = CLASS_NAMES, *,
                  overall_label: str = "Overall") -> str:
    """A Markdown table shaped like the paper's Table 7, from :meth:`ConfusionMatrix.compute`'s scores.

    Rows: the share of each class in the ground truth, IoU and MPA (per-class accuracy), all in percent;
    columns: the classes, then the overall figure (FWIoU in the IoU row and MPA in the MPA row, as the paper
    does). A class absent from the ground truth shows "--".
    """
    names = list(class_names)
    if len(names) != len(scores["iou"]):
        raise ValueError(f"{len(names)} class names for {len(scores['iou'])} classes")
    total = sum(scores["support"])
    shares = [s / total if total else None for s in scores["support"]]
    rows = [
        ["percentage (%)", *[percent(v) for v in shares], ""],
        ["IoU (%)", *[percent(v) for v in scores["iou"]], percent(scores["fwiou"])],
        ["MPA (%)", *[percent(v) for v in scores["accuracy"]], percent(scores["mpa"])],
    ]
    return markdown_table(["Stratum/Lithology", *names, overall_label], rows)
