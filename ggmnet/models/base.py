"""The base of every registered network: input width, classes, its checkpoint configuration, the input check."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class SegmentationModel(nn.Module):
    """``forward(x [N, in_channels, H, W]) -> logits [N, num_classes, H, W]`` for any ``H, W >= 1``.

    A subclass sets :attr:`name` (its registered name, :func:`ggmnet.models.register_model`), calls
    ``super().__init__(in_channels, num_classes)``, implements :meth:`logits` and, when its entry point takes
    more than the input width and the classes, extends :meth:`config`.
    """

    #: The registered entry point that rebuilds this network from :meth:`model_config`.
    name: str = ""
    #: The network's name in messages.
    title: str = ""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)

    def config(self) -> dict[str, Any]:
        """The entry point's keyword arguments that rebuild this network."""
        return {"in_channels": self.in_channels, "num_classes": self.num_classes}

    def model_config(self) -> dict[str, Any]:
        """The checkpoint's ``model_config``: enough for :func:`ggmnet.models.build_model`."""
        return {"name": self.name, **self.config()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[N, in_channels, H, W]`` -> logits ``[N, num_classes, H, W]``."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{self.title or type(self).__name__} expects input [N, {self.in_channels}, H, W], "
                             f"got {tuple(x.shape)}")
        return self.logits(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - every subclass has one
        raise NotImplementedError
