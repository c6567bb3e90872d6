"""The one operator library of the search space (Table 3), used by the supernet and by derived networks.

Cell operators (stride 1, ``c_in -> c_out``):

* ``skip``: identity; a 1x1 conv + BN projection when the input width differs from the output width.
* ``conv3x3``, ``conv5x5``: conv (no bias) + BatchNorm + ReLU.
* ``zoomed_conv3x3``, ``zoomed_conv5x5``: bilinear downsampling by 2, conv + BN + ReLU, bilinear upsampling
  back to the input's exact size (Chen et al., 2019: a quarter of the MACs, twice the receptive field).

Downsampling operators (stride 2): ``conv3x3_s2`` (3x3 conv stride 2 + BN + ReLU) and ``maxpool`` (3x3 max-pool
stride 2, then a 1x1 conv + BN + ReLU when the width changes). Both map an ``H x W`` map to
``ceil(H/2) x ceil(W/2)``.

Width sampling without copies. Every module that holds weights is built at its maximal width and runs at a
smaller active width: its convolution slices ``weight[:out_channels, :in_channels]`` (the input width is read
from the input tensor, the output width is ``forward``'s ``out_channels``, default the maximal one), and its
BatchNorm (:class:`SlicedBatchNorm2d`) is one ``BatchNorm2d`` at the maximal width whose first ``c`` channels
(affine parameters and running statistics) normalise a map of ``c`` channels. Running at width ``c`` is thus
the maximal layer with its channels beyond ``c`` masked out after the BatchNorm, so every width trains the
same affine parameters (a BatchNorm per width would see only its share of the updates), and the statistics a
narrower network sees are recomputed before it is validated (the search's BatchNorm recalibration). The
supernet builds each module with ``widths=`` the widths it may run at; a derived network builds it at its
exact width (``widths=None``: no spare weights), under the same parameter names but for the BatchNorm's key,
which is the width it was built at (``bn.bns["48"]``), so a derived network takes its weights from the
supernet by slicing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: Cell operators (stride 1), Table 3.
CELL_OPS = ("skip", "conv3x3", "conv5x5", "zoomed_conv3x3", "zoomed_conv5x5")
#: Downsampling operators (stride 2) of a cell that moves its branch to a coarser resolution.
DOWN_OPS = ("conv3x3_s2", "maxpool")
#: Width expansions: a cell's width is ``expansion * unit_channels[stride]``.
EXPANSIONS = (2, 4, 6, 8)
#: Unit width of the branches at output strides 8, 16, 32 (``STRIDES``).
UNIT_CHANNELS = (12, 24, 48)
#: Output strides of the three resolution branches, relative to the network input.
STRIDES = (8, 16, 32)


class SlicedBatchNorm2d(nn.Module):
    """One ``BatchNorm2d`` at the widest of ``widths``; a map of ``c`` channels uses its first ``c`` channels.

    Its state is held under ``bns[str(widest)]`` (the key a derived network's exact BatchNorm has), and in
    training the running statistics of the first ``c`` channels are updated in place.

    Parameters
    ----------
    widths
        The widths (channel counts) this layer may normalise; a derived network passes one.
    """

    def __init__(self, widths: Sequence[int]) -> None:
        super().__init__()
        self.widths = tuple(sorted(set(int(w) for w in widths)))
        self.bns = nn.ModuleDict({str(self.widths[-1]): nn.BatchNorm2d(self.widths[-1])})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` ``[N, C, H, W]`` with the first ``C`` channels of the BatchNorm."""
        c = x.shape[1]
        if c not in self.widths:
            raise ValueError(f"SlicedBatchNorm2d: no width {c} (has {self.widths})")
        bn = self.bns[str(self.widths[-1])]
        if c == bn.num_features:
            return bn(x)
        training = bn.training or bn.running_mean is None
        if bn.training and bn.track_running_stats:
            bn.num_batches_tracked.add_(1)
        momentum = 0.0 if bn.momentum is None else bn.momentum
        if bn.training and bn.momentum is None:  # cumulative average, as BatchNorm2d computes it
            momentum = 1.0 / float(bn.num_batches_tracked)
        return F.batch_norm(x, bn.running_mean[:c] if bn.running_mean is not None else None,
                            bn.running_var[:c] if bn.running_var is not None else None,
                            bn.weight[:c], bn.bias[:c], training, momentum, bn.eps)


class ConvNormAct(nn.Module):
    """k x k convolution (no bias) + BatchNorm + optional ReLU, runnable at a smaller active width.

    Parameters
    ----------
    c_in, c_out
        Maximal input and output widths (the exact ones in a derived network).
    kernel_size
        Odd kernel size; padding ``kernel_size // 2`` keeps ``H x W`` at stride 1, gives ``ceil(H/2)`` at 2.
    stride
        1 or 2.
    relu
        Apply a ReLU after the BatchNorm.
    widths
        Output widths the layer may run at (sliced BatchNorm); ``None`` means exactly ``c_out``.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, *, stride: int = 1, relu: bool = True,
                 widths: Sequence[int] | None = None) -> None:
        super().__init__()
        widths = (c_out,) if widths is None else tuple(widths)
        if max(widths) > c_out:
            raise ValueError(f"ConvNormAct: widths {widths} exceed c_out={c_out}")
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)
        self.bn = SlicedBatchNorm2d(widths)
        self.relu = relu

    @property
    def out_channels(self) -> int:
        """The maximal (derived: exact) output width."""
        return self.conv.out_channels

    def forward(self, x: torch.Tensor, out_channels: int | None = None) -> torch.Tensor:
        """``x`` ``[N, c, H, W]`` (any ``c <= c_in``) -> ``[N, out_channels, H', W']``."""
        out = self.conv.out_channels if out_channels is None else out_channels
        weight = self.conv.weight
        if out != weight.shape[0] or x.shape[1] != weight.shape[1]:
            weight = weight[:out, : x.shape[1]]
        y = self.bn(F.conv2d(x, weight, None, self.conv.stride, self.conv.padding))
        return F.relu(y) if self.relu else y


class Skip(nn.Module):
    """Identity; a 1x1 conv + BN (+ ReLU with ``relu``) projection when the input width differs from the
    active output width.

    Built with ``widths`` (supernet) the projection always exists and is used only when the widths differ;
    built exactly (``widths=None``) it exists only when ``c_in != c_out``.
    """

    name = "skip"

    def __init__(self, c_in: int, c_out: int, *, widths: Sequence[int] | None = None, relu: bool = False) -> None:
        super().__init__()
        self.c_out = c_out
        needs_projection = widths is not None or c_in != c_out
        self.proj = ConvNormAct(c_in, c_out, 1, relu=relu, widths=widths) if needs_projection else None

    def forward(self, x: torch.Tensor, out_channels: int | None = None) -> torch.Tensor:
        """``x`` ``[N, c, H, W]`` -> ``[N, out_channels, H, W]`` (``x`` itself when the widths agree)."""
        out = self.c_out if out_channels is None else out_channels
        if x.shape[1] == out:
            return x
        if self.proj is None:
            raise ValueError(f"{self.name}: input width {x.shape[1]} differs from {out} and there is no projection")
        return self.proj(x, out)


class ZoomedConv(nn.Module):
    """Bilinear downsampling by 2, k x k conv + BN + ReLU, bilinear upsampling to the input's exact size.

    The downsampled size is ``ceil(H/2) x ceil(W/2)`` (so odd sizes, and 1, work); bilinear with
    ``align_corners=False`` both ways.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, *,
                 widths: Sequence[int] | None = None) -> None:
        super().__init__()
        self.conv = ConvNormAct(c_in, c_out, kernel_size, widths=widths)

    def forward(self, x: torch.Tensor, out_channels: int | None = None) -> torch.Tensor:
        """``x`` ``[N, c, H, W]`` -> ``[N, out_channels, H, W]``."""
        h, w = x.shape[-2:]
        z = F.interpolate(x, size=((h + 1) // 2, (w + 1) // 2), mode="bilinear", align_corners=False)
        z = self.conv(z, out_channels)
        return F.interpolate(z, size=(h, w), mode="bilinear", align_corners=False)


class MaxPoolDown(Skip):
    """``maxpool``: 3x3 max-pool stride 2 (padding 1), then :class:`Skip` with a ReLU after its projection."""

    name = "maxpool"

    def __init__(self, c_in: int, c_out: int, *, widths: Sequence[int] | None = None) -> None:
        super().__init__(c_in, c_out, widths=widths, relu=True)

    def forward(self, x: torch.Tensor, out_channels: int | None = None) -> torch.Tensor:
        """``x`` ``[N, c, H, W]`` -> ``[N, out_channels, ceil(H/2), ceil(W/2)]``."""
        return super().forward(F.max_pool2d(x, kernel_size=3, stride=2, padding=1), out_channels)


def build_op(name: str, c_in: int, c_out: int, *, widths: Sequence[int] | None = None) -> nn.Module:
    """Build the operator ``name`` (one of ``CELL_OPS`` or ``DOWN_OPS``) mapping ``c_in -> c_out`` channels.

    Every operator's ``forward(x, out_channels=None)`` takes ``x`` ``[N, c, H, W]`` with ``c <= c_in``;
    cell operators keep ``H x W``, downsampling operators give ``ceil(H/2) x ceil(W/2)``.

    Parameters
    ----------
    name
        Operator name.
    c_in, c_out
        Input and output widths (maximal ones when ``widths`` is given).
    widths
        Output widths the operator may run at (supernet); ``None`` builds it at exactly ``c_out``.
    """
    if name == "skip":
        return Skip(c_in, c_out, widths=widths)
    if name in ("conv3x3", "conv5x5"):
        return ConvNormAct(c_in, c_out, int(name[-1]), widths=widths)
    if name in ("zoomed_conv3x3", "zoomed_conv5x5"):
        return ZoomedConv(c_in, c_out, int(name[-1]), widths=widths)
    if name == "conv3x3_s2":
        return ConvNormAct(c_in, c_out, 3, stride=2, widths=widths)
    if name == "maxpool":
        return MaxPoolDown(c_in, c_out, widths=widths)
    raise ValueError(f"unknown operator {name!r} (expected one of {', '.join(CELL_OPS + DOWN_OPS)})")


class Cell(nn.Module):
    """One cell of a derived branch: ``y = op(d(x))``, plus ``shortcut(d(x))`` when ``residual``.

    ``d`` is the downsampling operator ``down`` (``c_in -> c_out`` at stride 2) when the cell moves its branch
    to a coarser resolution, else the identity; ``op`` then maps ``c_out -> c_out`` (after a ``down``) or
    ``c_in -> c_out``. The shortcut is the identity when the widths agree, else a 1x1 conv + BN.

    Parameters
    ----------
    c_in, c_out
        Input and output widths.
    op
        A cell operator of ``CELL_OPS``.
    down
        A downsampling operator of ``DOWN_OPS``, or ``None`` for a cell that keeps the resolution.
    residual
        Add the residual connection.
    """

    def __init__(self, c_in: int, c_out: int, op: str, *, down: str | None = None,
                 residual: bool = False) -> None:
        super().__init__()
        if op not in CELL_OPS:
            raise ValueError(f"unknown cell operator {op!r} (expected one of {', '.join(CELL_OPS)})")
        if down is not None and down not in DOWN_OPS:
            raise ValueError(f"unknown downsampling operator {down!r} (expected one of {', '.join(DOWN_OPS)})")
        self.down = build_op(down, c_in, c_out) if down is not None else None
        mid = c_out if down is not None else c_in
        self.op = build_op(op, mid, c_out)
        self.residual = residual
        self.shortcut = ConvNormAct(mid, c_out, 1, relu=False) if residual and mid != c_out else None
        self.out_channels = c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[N, c_in, H, W]`` -> ``[N, c_out, H', W']`` with ``H' = ceil(H/2)`` after a ``down``."""
        if self.down is not None:
            x = self.down(x)
        y = self.op(x)
        if self.residual:
            y = y + (x if self.shortcut is None else self.shortcut(x))
        return y
