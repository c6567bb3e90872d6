"""HRNetV1-W32 (Wang et al. 2020), Table 6's 28.5 M-parameter baseline: timm's backbone with a light head.

timm's ``hrnet_w32`` (``features_only``, random initialisation) returns its four parallel branches: 32, 64, 128
and 256 channels at strides 4, 8, 16 and 32 (``feature_location=""``: HRNet's own features rather than the
classifier's widened ones). The head (HRNetV2's segmentation head) upsamples them bilinearly to stride 4,
concatenates them, applies a 1x1 conv-BN-ReLU and a 1x1 classifier, and upsamples the logits to the input size.
At 3 input channels and 10 classes: 29.5 M parameters (Table 6: 28.5 M).

HRNet's fusion layers upsample by exact factors of 2, so its input must be a multiple of 32 in both directions:
any other input is padded at the bottom and right by repeating its edge pixels, and the logits are cropped
back to the input size.

References
----------
Wang et al. (2020), Deep high-resolution representation learning for visual recognition, TPAMI.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ggmnet.models.base import SegmentationModel
from ggmnet.models.registry import register_model
from ggmnet.search_space.operations import ConvNormAct

#: HRNet's input sides must be multiples of this (its coarsest stride).
HRNET_STRIDE = 32


class HRNetSegmentation(SegmentationModel):
    """HRNetV1-W32 (timm ``hrnet_w32``, ``features_only``, random weights) with a light segmentation head."""

    name, title = "hrnet_w32", "HRNet"

    def __init__(self, in_channels: int, num_classes: int) -> None:
        import timm  # imported here: only this baseline needs it, and it takes seconds to import

        super().__init__(in_channels, num_classes)
        self.backbone = timm.create_model("hrnet_w32", pretrained=False, features_only=True,
                                          in_chans=self.in_channels, feature_location="", out_indices=(1, 2, 3, 4))
        width = sum(self.backbone.feature_info.channels())
        self.fuse = ConvNormAct(width, width, 1)
        self.classifier = nn.Conv2d(width, self.num_classes, 1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % HRNET_STRIDE, -width % HRNET_STRIDE
        padded = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x
        features = self.backbone(padded)
        size = features[0].shape[-2:]
        up = [features[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False)
                              for f in features[1:]]
        logits = self.classifier(self.fuse(torch.cat(up, dim=1)))
        logits = F.interpolate(logits, size=padded.shape[-2:], mode="bilinear", align_corners=False)
        return logits[..., :height, :width]


@register_model
def hrnet_w32(*, in_channels: int = 3, num_classes: int = 10) -> HRNetSegmentation:
    """The HRNetV1-W32 baseline of Table 6 (timm backbone, random weights)."""
    return HRNetSegmentation(in_channels, num_classes)
