"""The stem (feature encoder) and the derived multi-resolution feature extraction module (MRFEM).

``Stem``: three 3x3 stride-2 conv + BN + ReLU (the paper's feature encoder), returning the 1/2, 1/4 and 1/8
features; ``MRFEM(genotype)``: the three searched branches, each a sequence of ``operations.Cell`` from the
stem's 1/8 feature to output stride 8, 16 or 32. Branches whose first cells are the same share them (one
module, computed once): a searched genotype's branches form a tree, and its branches split where they
downsample (``Genotype.cell_owners``).
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
    share_cells
        Branches share the cells of their common prefix (:meth:`Genotype.cell_owners`): one module, computed
        once, held by the first branch that has it. ``False`` gives every branch its own copies (the layout of
        checkpoints written before sharing).

    Attributes
    ----------
    branches
        Per branch, its own cells keyed by layer (``branches[1]["5"]``: cell 5 of the 1/16 branch): the names
        of an unshared MRFEM, less the cells a branch takes from another.
    out_channels
        Width of each branch's output (strides 8, 16, 32).
    owners
        ``owners[b][i]``: the branch that computes cell i of branch b.
    """

    def __init__(self, genotype: Genotype, *, residual: bool = True, share_cells: bool = True) -> None:
        super().__init__()
        genotype.validate()
        self.genotype = genotype
        self.share_cells = bool(share_cells)
        self.owners = genotype.cell_owners() if share_cells else [[b] * genotype.depth
                                                                   for b in range(len(genotype.branches))]
        self.branches = nn.ModuleList()
        for b, spec in enumerate(genotype.branches):
            c_in, cells = genotype.stem_channels[-1], nn.ModuleDict()
            for i, cell in enumerate(spec.cells):
                c_out = cell.channels(genotype.unit_channels)
                if self.owners[b][i] == b:
                    cells[str(i)] = Cell(c_in, c_out, cell.op, down=cell.down, residual=residual and cell.residual)
                c_in = c_out
            self.branches.append(cells)
        self.out_channels = genotype.out_channels()
        # branch b starts after its first shared_len[b] cells, from the output its owner keeps for it
        self.shared_len = [sum(o != b for o in row) for b, row in enumerate(self.owners)]
        self._kept = {(self.owners[b][n - 1], n - 1) for b, n in enumerate(self.shared_len) if n}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The stem's 1/8 feature ``[N, stem_channels[-1], h, w]`` -> the three branch outputs.

        Branch k gives ``[N, out_channels[k], ceil(h / 2^k), ceil(w / 2^k)]``: strides 8, 16, 32 of the
        network input. A shared cell is computed once.
        """
        kept: dict[tuple[int, int], torch.Tensor] = {}
        outputs = []
        for b, branch in enumerate(self.branches):
            start = self.shared_len[b]
            y = x if start == 0 else kept[(self.owners[b][start - 1], start - 1)]
            for i in range(start, self.genotype.depth):
                y = branch[str(i)](y)
                if (b, i) in self._kept:
                    kept[(b, i)] = y
            outputs.append(y)
        return outputs
