"""GGMNet (paper section 4, Figure 3): encoder, searched MRFEM, ARM, FFM and a deformable U-shaped decoder.

Data flow for an input ``[N, C_in, H, W]``:

1. **Feature encoder** (4.1): :class:`~ggmnet.search_space.mrfem.Stem`, three 3x3 stride-2 conv-BN-ReLU
   blocks giving features at 1/2, 1/4 and 1/8 of the input size (24, 48 and 96 channels by default).
2. **MRFEM** (4.2): the searched three-branch module (:class:`~ggmnet.search_space.mrfem.MRFEM`) applied
   to the 1/8 feature; it returns one feature per branch at strides 8, 16 and 32.
3. **Attention Refinement Module** (4.3, BiSeNet): each branch output is multiplied by a channel attention
   vector (global average pool -> 1x1 conv -> sigmoid, as section 4.3 describes it; BiSeNet's BatchNorm on
   the pooled vector is left out: at the small batches of CPU training it normalises one value per tile and
   channel to about +-1, so the attention would ignore the tile's content and differ between training and
   evaluation).
4. **Feature Fusion Module** (4.4, BiSeNet, Figure 3C): the branches are upsampled bilinearly to 1/8 and
   concatenated; a 1x1 conv-BN-ReLU projects them to the encoder's 1/8 width, then a channel weight vector
   (global pool -> 1x1 conv -> ReLU -> 1x1 conv -> sigmoid) re-weights them: ``x + x * w``. Without the FFM
   (ablations a and b) only the concatenation and the 1x1 conv-BN-ReLU remain.
5. **Segmentation head** (4.5): upsample 1/8 -> 1/4, concatenate the encoder's 1/4 feature (long skip),
   3x3 deformable conv + BN + ReLU; the same at 1/2 with the encoder's 1/2 feature, and at full size with
   the input image itself as the skip (4.4: "integrate the original image information into the output
   feature map"); then a 1x1 classifier to ``num_classes`` logits. Without deformable convolution
   (ablations a-c) the 3x3 convolutions are ordinary ones.

Every upsampling goes to the exact size of the feature it meets, so any input size works, including sizes
that are not multiples of 8 (the stride-2 stages give ``ceil(H/2)``).

References
----------
Liu et al. (2024), GGMNet; Yu et al. (2018), BiSeNet: Bilateral segmentation network for real-time semantic
segmentation, ECCV; Dai et al. (2017), Deformable convolutional networks, ICCV.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ggmnet.models.base import SegmentationModel
from ggmnet.models.deform_conv import DeformConv2d
from ggmnet.models.registry import register_model
from ggmnet.search_space.genotype import Genotype
from ggmnet.search_space.mrfem import MRFEM, Stem
from ggmnet.search_space.operations import ConvNormAct

#: The switch settings of Table 5's rows: a is the U-shaped baseline, b-d add one component each.
ABLATIONS: dict[str, dict[str, bool]] = {
    "a": {"arm": False, "ffm": False, "deformable": False, "residual": False},
    "b": {"arm": True, "ffm": False, "deformable": False, "residual": False},
    "c": {"arm": True, "ffm": True, "deformable": False, "residual": False},
    "d": {"arm": True, "ffm": True, "deformable": True, "residual": False},
    "ours": {"arm": True, "ffm": True, "deformable": True, "residual": True},
}


def _upsample_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Bilinear resize of ``x`` ``[N, C, h, w]`` to the spatial size of ``like`` (no-op when equal)."""
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class AttentionRefinement(nn.Module):
    """The Attention Refinement Module (section 4.3, Figure 3B): ``x * sigmoid(conv1x1(avgpool(x)))``, without
    BiSeNet's BatchNorm (module docstring); ``[N, C, H, W] -> [N, C, H, W]``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class FeatureFusion(nn.Module):
    """Fusion of the branch features at 1/8: concatenation, 1x1 conv-BN-ReLU to ``out_channels``, then with
    ``attention`` BiSeNet's Feature Fusion Module (Figure 3C): ``x + x * w``, with
    ``w = sigmoid(conv1x1(relu(conv1x1(avgpool(x)))))`` through a bottleneck ``reduction`` times narrower."""

    def __init__(self, in_channels: int, out_channels: int, *, attention: bool = True, reduction: int = 4) -> None:
        super().__init__()
        self.project = ConvNormAct(in_channels, out_channels, 1)
        hidden = max(out_channels // reduction, 1)
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(out_channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1),
            nn.Sigmoid(),
        ) if attention else None

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """``features``: tensors ``[N, C_i, h, w]`` of one size -> ``[N, out_channels, h, w]``."""
        x = self.project(torch.cat(features, dim=1))
        if self.attention is None:
            return x
        return x + x * self.attention(x)


class DeformConvNormAct(nn.Module):
    """3x3 deformable convolution + BN + ReLU, ``[N, C_in, H, W] -> [N, C_out, H, W]``.

    The offsets (two per kernel tap) come from an ordinary 3x3 convolution of the input whose weights and bias
    start at zero, so the layer starts as a plain 3x3 conv-BN-ReLU and learns to deform its sampling grid from
    there (Dai et al. 2017).
    """

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int = 3) -> None:
        super().__init__()
        self.offset = nn.Conv2d(in_channels, 2 * kernel_size * kernel_size, kernel_size, padding=kernel_size // 2)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.conv = DeformConv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x, self.offset(x))))


class DecoderStage(nn.Module):
    """One step of the head: upsample to the skip's size, concatenate the skip, 3x3 conv-BN-ReLU.

    ``forward(x [N, C_in, h, w], skip [N, C_skip, H, W]) -> [N, C_out, H, W]``; the convolution is
    deformable (:class:`DeformConvNormAct`) or ordinary.
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, *, deformable: bool) -> None:
        super().__init__()
        c = in_channels + skip_channels
        self.conv = DeformConvNormAct(c, out_channels) if deformable else ConvNormAct(c, out_channels, 3)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([_upsample_to(x, skip), skip], dim=1))


class GGMNet(SegmentationModel):
    """The geological-geophysical mapping network (Figure 3A), built from a searched genotype.

    Parameters
    ----------
    genotype
        The searched architecture: ``in_channels``, ``num_classes``, ``stem_channels`` and the three MRFEM
        branches.
    arm, ffm, deformable, residual
        Table 5's switches: Attention Refinement Modules on the branches, the Feature Fusion Module, deformable
        convolutions in the head, and the residual connections of the MRFEM cells (passed to ``MRFEM``).
        :data:`ABLATIONS` lists the combinations of Table 5's rows.
    share_cells
        The MRFEM branches share the cells of their common prefix (``MRFEM``); ``False`` is the layout of
        checkpoints written before sharing (their ``model_config`` has no ``share_cells``).
    """

    name, title = "ggmnet", "GGMNet"

    def __init__(self, genotype: Genotype, *, arm: bool = True, ffm: bool = True, deformable: bool = True,
                 residual: bool = True, share_cells: bool = True) -> None:
        genotype.validate()
        super().__init__(genotype.in_channels, genotype.num_classes)
        self.genotype = genotype
        self.switches = {"arm": bool(arm), "ffm": bool(ffm), "deformable": bool(deformable),
                         "residual": bool(residual)}

        self.encoder = Stem(self.in_channels, channels=tuple(genotype.stem_channels))
        widths = {info["reduction"]: info["num_chs"] for info in self.encoder.feature_info}
        self.share_cells = bool(share_cells)
        self.mrfem = MRFEM(genotype, residual=residual, share_cells=share_cells)
        branch_widths = list(self.mrfem.out_channels)
        self.arms = nn.ModuleList(AttentionRefinement(c) for c in branch_widths) if arm else None
        self.fusion = FeatureFusion(sum(branch_widths), widths[8], attention=ffm)
        self.decoder = nn.ModuleList([
            DecoderStage(widths[8], widths[4], widths[4], deformable=deformable),
            DecoderStage(widths[4], widths[2], widths[2], deformable=deformable),
            DecoderStage(widths[2], self.in_channels, widths[2], deformable=deformable),
        ])
        self.classifier = nn.Conv2d(widths[2], self.num_classes, 1)

    def config(self) -> dict[str, Any]:
        return {"genotype": self.genotype.to_dict(), **self.switches, "share_cells": self.share_cells}

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        f2, f4, f8 = self.encoder(x)
        branches = list(self.mrfem(f8))
        if self.arms is not None:
            branches = [arm(b) for arm, b in zip(self.arms, branches)]
        y = self.fusion([_upsample_to(b, f8) for b in branches])
        for stage, skip in zip(self.decoder, (f4, f2, x)):
            y = stage(y, skip)
        return self.classifier(y)


@register_model
def ggmnet(*, genotype: Genotype | Mapping[str, Any], arm: bool = True, ffm: bool = True,
           deformable: bool = True, residual: bool = True, share_cells: bool = True) -> GGMNet:
    """GGMNet from a genotype (a :class:`Genotype` or its dict), Table 5's switches and whether the MRFEM
    branches share the cells of their common prefix."""
    if not isinstance(genotype, Genotype):
        genotype = Genotype.from_dict(genotype)
    return GGMNet(genotype, arm=arm, ffm=ffm, deformable=deformable, residual=residual, share_cells=share_cells)
