"""The search space: the one operator library, the genotype (the contract), the derived MRFEM and the supernet."""

from ggmnet.search_space.genotype import (
    BranchSpec,
    CellSpec,
    Genotype,
    GenotypeError,
    default_genotype,
    random_genotype,
)
from ggmnet.search_space.mrfem import MRFEM, Stem
from ggmnet.search_space.operations import (
    CELL_OPS,
    DOWN_OPS,
    EXPANSIONS,
    STRIDES,
    UNIT_CHANNELS,
    Cell,
    build_op,
)
from ggmnet.search_space.supernet import GenotypeNetwork, SegHead, Supernet, macs_per_pixel

__all__ = [
    "CELL_OPS", "DOWN_OPS", "EXPANSIONS", "STRIDES", "UNIT_CHANNELS", "BranchSpec", "Cell", "CellSpec",
    "Genotype", "GenotypeError", "GenotypeNetwork", "MRFEM", "SegHead", "Stem", "Supernet", "build_op",
    "default_genotype", "macs_per_pixel", "random_genotype",
]
