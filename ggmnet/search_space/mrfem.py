"""The stem (feature encoder) and the derived multi-resolution feature extraction module (MRFEM).

``Stem``: three 3x3 stride-2 conv + BN + ReLU (the paper's feature encoder), returning the 1/2, 1/4 and 1/8
features; ``MRFEM(genotype)``: the three searched branches, each a sequence of ``operations.Cell`` from the
stem's 1/8 feature to output stride 8, 16 or 32. Each branch has its own weights (no prefix sharing), so a
derived network has exactly the cells its genotype lists.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ggmnet.search_space.genotype import Genotype
from ggmnet.search_space.operations import Cell, ConvNormAct


class Stem(nn.Module):
    """Three 3x3 stride-2 conv + BN + ReLU: ``[N, in_channels, H, W]`` -> features at 1/2, 1/4, 1/8.

    Parameters
    ----------
    in_channels
        Input channels (3 for the pseudocolour image).
    channels
        Widths of the three levels.

    Attributes
    ----------
    feature_info
        One dict per level, as timm declares encoder features: ``num_chs`` (width), ``reduction`` (stride
        relative to the input: 2, 4, 8) and ``module`` (the producing submodule's name).
    """

    def __init__(self, in_channels: int, channels: Sequence[int] = (24, 48, 96)) -> None:
        super().__init__()
        widths = [in_channels, *channels]
        self.stages = nn.ModuleList(ConvNormAct(a, b, 3, stride=2) for a, b in zip(widths[:-1], widths[1:]))
        self.feature_info = [{"num_chs": c, "reduction": 2 ** (k + 1), "module": f"stages.{k}"}
                             for k, c in enumerate(channels)]

    @property
    def out_channels(self) -> int:
        """Width of the coarsest (1/8) feature."""
        return self.feature_info[-1]["num_chs"]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x`` ``[N, C, H, W]`` -> ``[f2, f4, f8]``; level k is ``[N, channels[k], ceil(H/2^(k+1)), ...]``."""
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class MRFEM(nn.Module):
    """The derived multi-resolution feature extraction module of a genotype.

    Parameters
    ----------
    genotype
        A genotype (validated here).
    residual
        ``False`` turns off every cell's residual connection, whatever the genotype says (Table 5 rows a-d).

    Attributes
    ----------
    out_channels
        Width of each branch's output (strides 8, 16, 32).
    """

    def __init__(self, genotype: Genotype, *, residual: bool = True) -> None:
        super().__init__()
        genotype.validate()
        self.genotype = genotype
        branches = []
        for spec in genotype.branches:
            c_in, cells = genotype.stem_channels[-1], []
            for cell in spec.cells:
                c_out = cell.channels(genotype.unit_channels)
                cells.append(Cell(c_in, c_out, cell.op, down=cell.down, residual=residual and cell.residual))
                c_in = c_out
            branches.append(nn.Sequential(*cells))
        self.branches = nn.ModuleList(branches)
        self.out_channels = genotype.out_channels()
        self.strides = [b.output_stride for b in genotype.branches]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The stem's 1/8 feature ``[N, stem_channels[-1], h, w]`` -> the three branch outputs.

        Branch k gives ``[N, out_channels[k], ceil(h / 2^k), ceil(w / 2^k)]``: strides 8, 16, 32 of the
        network input.
        """
        return [branch(x) for branch in self.branches]
