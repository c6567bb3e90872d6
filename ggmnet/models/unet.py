"""U-Net baselines (Ronneberger et al. 2015): segmentation-models-pytorch's ``Unet`` on a ResNet encoder.

U-Net is the plain reference network of semantic segmentation and the shape of Table 5's row a, but it has no
Table 6 row, so its encoder is a choice:

* ``unet``: ResNet-34 encoder (24.4 M parameters at 3 input channels and 10 classes), smp's own default and
  the U-Net most segmentation papers compare with; its size sits beside HRNet-W32 (29.5 M), so Table 6's
  largest network has a plain counterpart of the same budget;
* ``unet_resnet18``: ResNet-18 encoder (14.3 M), a lighter reference nearer GGMNet's 10.3 M and cheaper on CPUs.

Both have smp's decoder (five upsampling stages of two 3x3 conv-BN-ReLU each, widths 256, 128, 64, 32, 16,
nearest-neighbour upsampling to the size of each skip, so any input size works) and random weights
(``encoder_weights=None``): every network of the paper was trained from scratch (5.1).

References
----------
Ronneberger, Fischer and Brox (2015), U-Net: Convolutional networks for biomedical image segmentation, MICCAI;
Iakubovskii, segmentation-models-pytorch (smp).
"""

from __future__ import annotations

import torch

from ggmnet.models.base import SegmentationModel
from ggmnet.models.registry import register_model

#: Registered U-Net variants and their smp encoder.
UNET_ENCODERS = {"unet": "resnet34", "unet_resnet18": "resnet18"}


class UNet(SegmentationModel):
    """smp ``Unet`` with a randomly initialised encoder; ``variant`` is a key of :data:`UNET_ENCODERS`."""

    title = "U-Net"

    def __init__(self, in_channels: int, num_classes: int, *, variant: str = "unet") -> None:
        import segmentation_models_pytorch as smp  # imported here: only these baselines need it

        super().__init__(in_channels, num_classes)
        if variant not in UNET_ENCODERS:
            raise ValueError(f"unknown U-Net variant {variant!r} (expected one of {', '.join(UNET_ENCODERS)})")
        self.variant = self.name = variant
        self.net = smp.Unet(encoder_name=UNET_ENCODERS[variant], encoder_weights=None,
                            in_channels=self.in_channels, classes=self.num_classes)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_model
def unet(*, in_channels: int = 3, num_classes: int = 10) -> UNet:
    """U-Net with a ResNet-34 encoder (smp), random weights."""
    return UNet(in_channels, num_classes, variant="unet")


@register_model
def unet_resnet18(*, in_channels: int = 3, num_classes: int = 10) -> UNet:
    """U-Net with a ResNet-18 encoder (smp), random weights."""
    return UNet(in_channels, num_classes, variant="unet_resnet18")
