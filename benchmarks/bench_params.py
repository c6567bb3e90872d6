"""Parameter counts of derived networks at the depths of Table 4, beside the paper's figures.

For each depth prints the parameters (millions) of MRFEM alone and of ``GenotypeNetwork`` (stem + MRFEM +
the three search heads) for the hand-designed ``default_genotype`` and for ``--samples`` random genotypes
(``random_genotype``, uniform per choice: mean and range). The paper's counts (Table 4: 4.7, 6.5, 8.6, 10.3,
12.4 M at depths 16-24) are for the whole GGMNet with its searched MRFEM, encoder, ARM, FFM and decoder, so
they compare in trend, not in value. Nothing is tuned to match them:

    python benchmarks/bench_params.py
"""

from __future__ import annotations

import argparse

import numpy as np
from torch import nn

from ggmnet.models import count_parameters
from ggmnet.search_space.genotype import default_genotype, random_genotype
from ggmnet.search_space.mrfem import MRFEM
from ggmnet.search_space.supernet import GenotypeNetwork
from ggmnet.studies import paper


def millions(model: nn.Module) -> float:
    return count_parameters(model) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5, help="random genotypes per depth (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first random genotype (default 0)")
    args = parser.parse_args()
    print(f"{'depth':>5}  {'paper':>6}  {'default MRFEM':>13}  {'default net':>11}  "
          f"{'random MRFEM mean [min, max]':>30}  {'random net mean':>15}")
    for depth in paper.DEPTHS:
        reported = paper.parameters_m(depth)
        g = default_genotype(depth)
        randoms = [random_genotype(depth, seed=args.seed + k) for k in range(args.samples)]
        rand_mrfem = [millions(MRFEM(r)) for r in randoms]
        rand_net = [millions(GenotypeNetwork(r)) for r in randoms]
        spread = f"{np.mean(rand_mrfem):.2f} [{min(rand_mrfem):.2f}, {max(rand_mrfem):.2f}]"
        print(f"{depth:>5}  {reported:>6.1f}  {millions(MRFEM(g)):>13.2f}  {millions(GenotypeNetwork(g)):>11.2f}  "
              f"{spread:>30}  {np.mean(rand_net):>15.2f}")


if __name__ == "__main__":
    main()
