"""FasterSeg (Chen et al. 2020), Table 6's NAS baseline: the published searched student in ggmnet's operators.

The architecture is the student that VITA-Group/FasterSeg released (``train/fasterseg/arch_1.pt``), derived
with the repository's own rules (``network_metas`` in ``train/model_seg.py``): the branch pair 1/32 + 1/16
(its accuracy-latency objective beats 1/32 + 1/8), widths from the width logits, operators from the operator
logits, non-downsampling skips removed. FasterSeg's width of a cell at output stride ``s`` is
``round(s * F * w)`` channels for a width ratio ``w``, written below in twelfths; the student's stem and heads
run at 8 twelfths.

Network, for ``[N, in_channels, H, W]``:

1. stem: 3x3 conv-BN-ReLU at stride 2, then two ``conv_2x`` cells at stride 2 (at ``F = 12``: 32, 64 and 64
   channels at 1/2, 1/4 and 1/8);
2. :data:`TRUNK`: three cells shared by both branches (FasterSeg's shared prefix), all at 1/8;
3. :data:`BRANCHES`: the 1/32 branch (7 more cells: 1/16 from its first, 1/32 from its fifth) and the 1/16
   branch (6 more cells: 1/16 from its third); a branch's last cell runs at the head width;
4. per branch, FasterSeg's aggregation from its output stride down to 1/8: a 1x1 conv-BN-ReLU to the head
   width of the next finer stride, bilinear upsampling to the branch's last feature at that stride,
   concatenation with it and a 3x3 conv-BN-ReLU;
5. FFM: the two 1/8 features concatenated and fused by a 1x1 conv-BN-ReLU; head: 3x3 conv-BN-ReLU and a 1x1
   classifier; bilinear upsampling to the input size.

Size. With the release's base width ``F = 12`` (cell widths: trunk 32; 1/32 branch 128, 64, 64, 64, 128, 128,
256; 1/16 branch 32, 32, 64, 64, 192, 128) the network has 3.42 M parameters at 3 input channels and 10
classes. FasterSeg's own count, 4.4 M, adds its two auxiliary heads (0.93 M) and its unused FFM attention
(0.03 M), which ``retrain`` cannot train (see below). Table 6 lists 4.7 M, so that the comparison is at the
paper's size the default is ``F = 14`` (every width x 7/6): 4.65 M parameters. ``base_channels=12`` builds
the released widths exactly.

How FasterSeg's operators become ggmnet's (:data:`FASTERSEG_OPS`; parameter counts are the same in every row):

* ``conv`` -> one ``conv3x3`` cell; ``conv_2x`` -> two ``conv3x3`` cells (the same computation).
* ``conv_downup`` (bilinear 1/2, conv-BN, bilinear x2, ReLU) -> one ``zoomed_conv3x3`` cell (ReLU before the
  upsampling instead of after it); ``conv_2x_downup`` (bilinear 1/2, two convs, bilinear x2) -> two
  ``zoomed_conv3x3`` cells, which resample twice instead of once.
* A cell that halves the resolution: FasterSeg runs the operator at stride 2 (``conv_2x``: first conv at
  stride 2; the ``downup`` operators: bilinear 1/2 and their convs at the new resolution). Here it is the
  ``conv3x3_s2`` downsampling of a ggmnet cell followed by ``skip`` (one-conv operators) or ``conv3x3``
  (two-conv operators): a strided conv instead of bilinear 1/2 and a conv.
* No cell has a residual connection (FasterSeg's cells have none, despite their class names).

Other differences: bilinear resizing with ``align_corners=False`` (FasterSeg: ``True``) and to exact sizes, so
any input size works (FasterSeg needs multiples of 32); the FFM's squeeze-and-excitation convolutions, which
FasterSeg builds but never calls, are left out; so are the auxiliary heads at 1/16 and 1/32 (a 3x3 conv-BN-ReLU
and a 1x1 conv each, 0.93 M parameters at 10 classes) that FasterSeg trains with extra losses of weight 0.2,
because ``retrain`` scores one output with one loss (Eq. 19) for every network; there is no teacher network,
no knowledge distillation, no TensorRT, and training follows this project's schedule (5.1), not FasterSeg's.
Random initialisation.

References
----------
Chen, Gong, Liu, Wang, Yu and Wang (2020), FasterSeg: Searching for faster real-time semantic segmentation,
ICLR. Released architecture: github.com/VITA-Group/FasterSeg, ``train/fasterseg/arch_1.pt``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ggmnet.models.base import SegmentationModel
from ggmnet.models.registry import register_model
from ggmnet.search_space.operations import Cell, ConvNormAct

#: A FasterSeg operator as ggmnet cells ``(op, down)``: (keeping the resolution, halving it).
FASTERSEG_OPS: dict[str, tuple[tuple[tuple[str, str | None], ...], tuple[tuple[str, str | None], ...]]] = {
    "conv": ((("conv3x3", None),), (("skip", "conv3x3_s2"),)),
    "conv_downup": ((("zoomed_conv3x3", None),), (("skip", "conv3x3_s2"),)),
    "conv_2x": ((("conv3x3", None), ("conv3x3", None)), (("conv3x3", "conv3x3_s2"),)),
    "conv_2x_downup": ((("zoomed_conv3x3", None), ("zoomed_conv3x3", None)), (("conv3x3", "conv3x3_s2"),)),
}

#: FasterSeg's base width ``F`` here (the release: 12); see the module docstring for why 14.
BASE_CHANNELS = 14
#: Width ratio of the student's stem, branch ends and heads, in twelfths.
HEAD_TWELFTHS = 8
#: The released student's cells shared by both branches: (FasterSeg operator, output stride, width twelfths).
TRUNK: tuple[tuple[str, int, int], ...] = (("conv_2x", 8, 4), ("conv_2x", 8, 4), ("conv_2x_downup", 8, 4))
#: Each branch's own cells after the trunk, by output stride; the last cell is at the head width.
BRANCHES: dict[int, tuple[tuple[str, int, int], ...]] = {
    32: (("conv_downup", 16, 8), ("conv_2x_downup", 16, 4), ("conv_2x_downup", 16, 4), ("conv_2x_downup", 16, 4),
         ("conv_2x_downup", 32, 4), ("conv_2x_downup", 32, 4), ("conv_2x_downup", 32, HEAD_TWELFTHS)),
    16: (("conv_2x_downup", 8, 4), ("conv_2x", 8, 4), ("conv_2x", 16, 4), ("conv_2x_downup", 16, 4),
         ("conv_2x_downup", 16, 12), ("conv_2x_downup", 16, HEAD_TWELFTHS)),
}


def fasterseg_cell(op: str, c_in: int, c_out: int, *, down: bool) -> nn.Sequential:
    """One FasterSeg cell as ggmnet cells (:data:`FASTERSEG_OPS`): ``c_in -> c_out``, halving ``H x W`` if ``down``."""
    if op not in FASTERSEG_OPS:
        raise ValueError(f"unknown FasterSeg operator {op!r} (expected one of {', '.join(FASTERSEG_OPS)})")
    cells, width = [], c_in
    for ggm_op, ggm_down in FASTERSEG_OPS[op][int(down)]:
        cells.append(Cell(width, c_out, ggm_op, down=ggm_down))
        width = c_out
    return nn.Sequential(*cells)


def fasterseg_width(stride: int, twelfths: int, base_channels: int) -> int:
    """FasterSeg's width of a feature at ``stride`` for a ratio of ``twelfths`` / 12: ``round(stride * F * ratio)``."""
    return int(np.round(stride * base_channels * twelfths / 12))


class _Path(nn.Module):
    """A sequence of FasterSeg cells from stride ``start``; remembers the last feature at every stride."""

    def __init__(self, cells: tuple[tuple[str, int, int], ...], c_in: int, start: int, base_channels: int) -> None:
        super().__init__()
        self.cells = nn.ModuleList()
        self.strides = []
        stride = start
        for op, out_stride, twelfths in cells:
            if out_stride not in (stride, 2 * stride):
                raise ValueError(f"FasterSeg cell {op} goes from stride {stride} to {out_stride}")
            c_out = fasterseg_width(out_stride, twelfths, base_channels)
            self.cells.append(fasterseg_cell(op, c_in, c_out, down=out_stride != stride))
            self.strides.append(out_stride)
            c_in, stride = c_out, out_stride
        self.out_channels = c_in

    def forward(self, x: torch.Tensor, last: dict[int, torch.Tensor]) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Run the cells on ``x``; return their output and ``last`` updated with the last output at each stride."""
        last = dict(last)
        for cell, stride in zip(self.cells, self.strides):
            x = cell(x)
            last[stride] = x
        return x, last


class _Aggregation(nn.Module):
    """FasterSeg's head of one branch: from its output stride down to 1/8, one refinement per octave."""

    def __init__(self, stride: int, width: dict[int, int], base_channels: int) -> None:
        super().__init__()
        self.steps = []
        self.reduce = nn.ModuleList()
        self.refine = nn.ModuleList()
        while stride > 8:
            finer = stride // 2
            head, head_finer = (fasterseg_width(s, HEAD_TWELFTHS, base_channels) for s in (stride, finer))
            self.steps.append(finer)
            self.reduce.append(ConvNormAct(head, head_finer, 1))
            self.refine.append(ConvNormAct(head_finer + width[finer], head_finer, 3))
            stride = finer

    def forward(self, x: torch.Tensor, last: dict[int, torch.Tensor]) -> torch.Tensor:
        for finer, reduce, refine in zip(self.steps, self.reduce, self.refine):
            skip = last[finer]
            y = F.interpolate(reduce(x), size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = refine(torch.cat([y, skip], dim=1))
        return x


class FasterSeg(SegmentationModel):
    """FasterSeg's released student network (module docstring), built from ggmnet cells."""

    name, title = "fasterseg", "FasterSeg"

    def __init__(self, in_channels: int, num_classes: int, *, base_channels: int = BASE_CHANNELS) -> None:
        super().__init__(in_channels, num_classes)
        self.base_channels = int(base_channels)
        f = self.base_channels
        # FasterSeg doubles the stem's 1/2 and 1/4 widths.
        c2, c4, c8 = (fasterseg_width(s, HEAD_TWELFTHS, f) * m for s, m in ((2, 2), (4, 2), (8, 1)))
        self.stem = nn.Sequential(
            ConvNormAct(self.in_channels, c2, 3, stride=2),
            fasterseg_cell("conv_2x", c2, c4, down=True),
            fasterseg_cell("conv_2x", c4, c8, down=True),
        )
        self.trunk = _Path(TRUNK, c8, 8, f)
        self.branches = nn.ModuleList(_Path(cells, self.trunk.out_channels, self.trunk.strides[-1], f)
                                      for cells in BRANCHES.values())
        self.aggregations = nn.ModuleList()
        for out_stride, branch in zip(BRANCHES, self.branches):
            # The width of the branch's last feature at each stride (the aggregation's skips).
            widths = {stride: cell[-1].out_channels for path in (self.trunk, branch)
                      for cell, stride in zip(path.cells, path.strides)}
            self.aggregations.append(_Aggregation(out_stride, widths, f))
        fused = fasterseg_width(8, HEAD_TWELFTHS, f) * len(BRANCHES)
        self.fusion = ConvNormAct(fused, fused, 1)
        self.head = ConvNormAct(fused, fused, 3)
        self.classifier = nn.Conv2d(fused, self.num_classes, 1)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "base_channels": self.base_channels}

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        stem = self.stem(x)
        shared, last_shared = self.trunk(stem, {8: stem})
        features = []
        for branch, aggregation in zip(self.branches, self.aggregations):
            out, last = branch(shared, last_shared)
            features.append(aggregation(out, last))
        logits = self.classifier(self.head(self.fusion(torch.cat(features, dim=1))))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


@register_model
def fasterseg(*, in_channels: int = 3, num_classes: int = 10, base_channels: int = BASE_CHANNELS) -> FasterSeg:
    """The FasterSeg baseline of Table 6: the released student at base width ``base_channels`` (release: 12)."""
    return FasterSeg(in_channels, num_classes, base_channels=base_channels)
