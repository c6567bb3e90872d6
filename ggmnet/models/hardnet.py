"""FC-HarDNet-70 (Chao et al. 2019), Table 6's 4.1 M-parameter human-designed baseline, written from its paper.

**Harmonic dense block** (:class:`HarDBlock`). Layer ``k = 1..n`` of a block is a 3x3 conv-BN-ReLU whose input
is the concatenation of the outputs of layers ``k - 2^i`` for every ``i >= 0`` with ``2^i`` dividing ``k``
(layer 0 is the block's input). Its width is ``growth_rate * m^j`` rounded to an even number, with ``j`` the
number of links beyond the first and ``m = 1.7`` (the paper's channel weighting factor): layers that many
later layers read are wider. The block returns the concatenation of its odd-numbered layers and its last layer,
not its input (no global dense connection). :func:`harmonic_links` computes the links and widths.

**FC-HarDNet-70** (:class:`FCHarDNet`), for ``[N, in_channels, H, W]``:

1. stem: 3x3 conv-BN-ReLU to 16 channels at stride 2, 24 channels, 32 channels at stride 2, 48 channels
   (output stride 4);
2. encoder: five HarDBlocks with growth rates 10, 16, 18, 24, 32 and 4, 4, 8, 8, 8 layers at strides 4, 8, 16,
   32, 64, each followed by a 1x1 conv-BN-ReLU transition to 64, 96, 160, 224, 320 channels and, except the
   last, a 2x2 average pooling;
3. decoder: four steps from stride 64 back to 4; each upsamples bilinearly to the size of the encoder's
   block output at the next finer stride, concatenates it, halves the width with a 1x1 conv-BN-ReLU and
   applies a HarDBlock with that encoder block's growth rate and depth;
4. a 1x1 classifier at stride 4, upsampled bilinearly to the input size.

At 3 input channels and 10 classes this has 4.12 M parameters (Table 6: 4.1 M).

Differences from the authors' release: bilinear resizing uses ``align_corners=False`` (the project's
convention) rather than ``True``, and the average pooling uses ``ceil_mode`` so that an odd size ``h`` gives
``ceil(h / 2)`` (the same as the original on even sizes), which makes every input size work. Random
initialisation, as every network of the paper was trained from scratch (5.1).

References
----------
Chao, Kao, Ruan, Huang and Lin (2019), HarDNet: A low memory traffic network, ICCV.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ggmnet.models.base import SegmentationModel
from ggmnet.models.registry import register_model
from ggmnet.search_space.operations import ConvNormAct

#: FC-HarDNet-70: stem widths, then per encoder block (growth rate, layers, transition width).
STEM_CHANNELS = (16, 24, 32, 48)
BLOCKS = ((10, 4, 64), (16, 4, 96), (18, 8, 160), (24, 8, 224), (32, 8, 320))
#: The channel weighting factor ``m`` of every HarDBlock.
CHANNEL_WEIGHT = 1.7


def harmonic_links(num_layers: int, in_channels: int, growth_rate: int,
                   weight: float = CHANNEL_WEIGHT) -> tuple[list[list[int]], list[int]]:
    """The inputs and widths of the ``num_layers`` layers of a HarDBlock of growth rate ``growth_rate`` (the
    width of a layer with a single link) and channel weighting factor ``weight`` (``m``).

    ``links[k]`` lists the layers (0 = the block input) whose outputs layer ``k`` concatenates, nearest last
    (``links[0] == []``); ``widths[k]`` is layer ``k``'s output width (``widths[0] == in_channels``).
    """
    links: list[list[int]] = [[]]
    widths = [in_channels]
    for k in range(1, num_layers + 1):
        sources = [k - 2 ** i for i in range(k.bit_length()) if k % 2 ** i == 0]
        width = growth_rate * weight ** (len(sources) - 1)
        links.append(sources)
        widths.append(int(int(width + 1) / 2) * 2)  # the paper's rounding to an even width
    return links, widths


class HarDBlock(nn.Module):
    """Harmonic dense block: ``[N, in_channels, H, W] -> [N, out_channels, H, W]``, ``out_channels`` the sum of
    the widths of the odd-numbered layers and of the last layer."""

    def __init__(self, in_channels: int, growth_rate: int, num_layers: int) -> None:
        super().__init__()
        self.links, widths = harmonic_links(num_layers, in_channels, growth_rate)
        self.layers = nn.ModuleList(ConvNormAct(sum(widths[j] for j in self.links[k]), widths[k], 3)
                                    for k in range(1, num_layers + 1))
        self.outputs = [k for k in range(1, num_layers + 1) if k % 2 == 1 or k == num_layers]
        self.out_channels = sum(widths[k] for k in self.outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for k, layer in enumerate(self.layers, start=1):
            sources = [features[j] for j in self.links[k]]
            features.append(layer(sources[0] if len(sources) == 1 else torch.cat(sources, dim=1)))
        return torch.cat([features[k] for k in self.outputs], dim=1)


class FCHarDNet(SegmentationModel):
    """FC-HarDNet (Chao et al. 2019): a HarDNet encoder and a U-shaped HarDBlock decoder.

    ``stem_channels``: widths of the four stem convolutions (the first and third at stride 2); ``blocks``: per
    encoder block, (growth rate, layers, width of the 1x1 transition after it). :attr:`feature_info` declares
    each encoder block's output as timm does (``num_chs``, ``reduction``: its stride); the decoder is built
    from it.
    """

    name, title = "fc_hardnet70", "FC-HarDNet"

    def __init__(self, in_channels: int, num_classes: int, *, stem_channels: Sequence[int] = STEM_CHANNELS,
                 blocks: Sequence[tuple[int, int, int]] = BLOCKS) -> None:
        super().__init__(in_channels, num_classes)
        strides = (2, 1, 2, 1)
        widths = [self.in_channels, *stem_channels]
        self.stem = nn.Sequential(*(ConvNormAct(a, b, 3, stride=s)
                                    for a, b, s in zip(widths[:-1], widths[1:], strides)))

        self.encoder = nn.ModuleList()
        self.transitions = nn.ModuleList()
        self.feature_info: list[dict[str, int]] = []
        channels, reduction = widths[-1], 4
        for growth_rate, num_layers, transition in blocks:
            block = HarDBlock(channels, growth_rate, num_layers)
            self.encoder.append(block)
            self.feature_info.append({"num_chs": block.out_channels, "reduction": reduction})
            self.transitions.append(ConvNormAct(block.out_channels, transition, 1))
            channels, reduction = transition, reduction * 2

        self.reducers = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for info, (growth_rate, num_layers, _) in reversed(list(zip(self.feature_info[:-1], blocks[:-1]))):
            merged = channels + info["num_chs"]
            self.reducers.append(ConvNormAct(merged, merged // 2, 1))
            block = HarDBlock(merged // 2, growth_rate, num_layers)
            self.decoder.append(block)
            channels = block.out_channels
        self.classifier = nn.Conv2d(channels, self.num_classes, 1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        skips = []
        for k, (block, transition) in enumerate(zip(self.encoder, self.transitions)):
            if k > 0:
                y = F.avg_pool2d(y, 2, ceil_mode=True)
            y = block(y)
            skips.append(y)
            y = transition(y)
        for reducer, block, skip in zip(self.reducers, self.decoder, reversed(skips[:-1])):
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = block(reducer(torch.cat([y, skip], dim=1)))
        logits = self.classifier(y)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


@register_model
def fc_hardnet70(*, in_channels: int = 3, num_classes: int = 10) -> FCHarDNet:
    """The FC-HarDNet-70 baseline of Table 6 (Chao et al. 2019)."""
    return FCHarDNet(in_channels, num_classes)
