"""Several networks, or one seen eight ways, read as one: averaged class probabilities.

Two ways to get better probabilities from networks already trained (Lakshminarayanan et al. 2017, "Simple and
scalable predictive uncertainty estimation using deep ensembles"; test-time augmentation):

* **members**: checkpoints of the same recipe trained with other seeds (``retrain --seed``); their class
  probabilities are averaged. Where the members disagree the mean is less confident, which is what a map's
  confidence should say;
* **test-time augmentation** (``tta``): each network also sees every tile turned by 0, 90, 180 and 270 degrees,
  each with and without a mirror flip (the eight symmetries of the square, as ``--augment d4`` trains with);
  the eight predictions are turned back and averaged. Every input channel is a scalar field on the map (the
  residual anomaly or its colours, derivative magnitudes, the tilt, the outcrop classes and the distance to
  them), so turning the tile turns the question and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ggmnet.datasets.tiles import d4_view
from ggmnet.engine.runio import file_sha256, require_file
from ggmnet.errors import UserError
from ggmnet.models import checkpoint_classes, load_model

#: The eight symmetries of the square: quarter turns, then a mirror flip of the columns.
D4 = tuple((turns, flip) for turns in range(4) for flip in (False, True))
#: What a member's checkpoint must share with the main one (its ``data`` block): the same input, read the same way.
SHARED_INPUT = ("channels", "pixels_per_degree", "tile_size", "geology_prior", "normalisation", "recipe")


def _unview(x: torch.Tensor, turns: int, flip: bool) -> torch.Tensor:
    """The inverse of :func:`~ggmnet.datasets.tiles.d4_view`: the prediction of a view put back in place."""
    x = x.flip(-1) if flip else x
    return torch.rot90(x, -turns, dims=(-2, -1))


class MeanProbabilities(nn.Module):
    """The mean class probabilities of ``members`` (each over the :data:`D4` views with ``tta``), as ``log``.

    A module like any network: ``forward`` returns ``log(mean softmax)`` ``[B, K, H, W]``, so its ``softmax``
    (what the tiled prediction applies) and ``argmax`` are the mean's. One member without ``tta`` gives that
    member's probabilities unchanged.
    """

    def __init__(self, members: Sequence[nn.Module], *, tta: bool = False) -> None:
        super().__init__()
        if not members:
            raise ValueError("MeanProbabilities needs at least one member")
        self.members = nn.ModuleList(members)
        if hasattr(members[0], "num_classes"):
            self.num_classes = members[0].num_classes
        self.views = D4 if tta else D4[:1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for member in self.members:
            for turns, flip in self.views:
                p = torch.softmax(_unview(member(d4_view(x, turns, flip)).float(), turns, flip), dim=1)
                total = p if total is None else total + p
        mean = total / (len(self.members) * len(self.views))
        return torch.log(mean.clamp_min(torch.finfo(mean.dtype).tiny))


def load_members(checkpoint: str | Path, members: Sequence[str | Path] = (), *, tta: bool = False
                 ) -> tuple[nn.Module, dict[str, Any], list[dict[str, str]]]:
    """The network of ``checkpoint`` (with ``members`` or ``tta``: their :class:`MeanProbabilities`), the main
    checkpoint, and a record of every member (``checkpoint`` path and ``sha256``, the main one first).

    A member must be a retrain checkpoint with the main one's classes and input (:data:`SHARED_INPUT`);
    otherwise a one-line :class:`UserError` names it and what differs.
    """
    model, ckpt = load_model(checkpoint, map_location="cpu")
    record = [{"checkpoint": str(Path(checkpoint).resolve()), "sha256": file_sha256(checkpoint)}]
    if not members and not tta:
        return model, ckpt, record
    networks = [model]
    classes = list(checkpoint_classes(ckpt, model).names)
    for path in members:
        require_file(path, "--members", "a retrain checkpoint (.pt)")
        member, member_ckpt = load_model(path, map_location="cpu")
        if list(checkpoint_classes(member_ckpt, member).names) != classes:
            raise UserError(f"--members {path}: its classes are not those of {checkpoint}")
        differ = [key for key in SHARED_INPUT if member_ckpt["data"].get(key) != ckpt["data"].get(key)]
        if differ:
            raise UserError(f"--members {path}: its input ({', '.join(differ)}) differs from {checkpoint}'s; "
                            f"expected a checkpoint of the same recipe and dataset (another --seed)")
        networks.append(member)
        record.append({"checkpoint": str(Path(path).resolve()), "sha256": file_sha256(path)})
    return MeanProbabilities(networks, tta=tta).eval(), ckpt, record
