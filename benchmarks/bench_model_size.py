"""Parameters and FLOPs of GGMNet at MRFEM depths 16-24 and of every registered baseline (paper Tables 4 and 6).

GGMNet is built from ``default_genotype(depth)`` (expansion 4 everywhere: a hand-made stand-in for a
searched genotype, so its sizes differ from the paper's searched ones) or from ``--genotype FILE`` for one
searched architecture; every other model of ``list_models()`` at its defaults, beside Table 6's parameter
count where it has a row. All at 3 input channels and 10 classes. FLOPs come from
``torch.utils.flop_counter.FlopCounterMode`` on one forward pass in eval mode (2 FLOPs per multiply-add), run
on PyTorch's meta device (shapes only, no arithmetic: a second per network at any size); torchvision's
deformable convolution, which the counter does not know, is counted (on torchvision's kernel,
``GGMNET_DEFORM_CONV=torchvision``) as the convolution it computes plus 8 FLOPs per bilinear sample (4 products,
4 sums).

    .venv/bin/python benchmarks/bench_model_size.py [--size 1024] [--depths 16 18 20 22 24] [--genotype FILE]
"""

from __future__ import annotations

import argparse
import math

from ggmnet.models import create_model, list_models, model_size
from ggmnet.models.ggmnet import GGMNet
from ggmnet.search_space.genotype import Genotype, default_genotype
from ggmnet.studies import paper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="input side, pixels (default 1024, the paper's crop)")
    parser.add_argument("--depths", type=int, nargs="+", default=list(paper.DEPTHS),
                        help="MRFEM depths of default_genotype (default 16 18 20 22 24)")
    parser.add_argument("--genotype", default=None, help="also measure this searched genotype JSON")
    args = parser.parse_args()

    print(f"input 1 x 3 x {args.size} x {args.size}; FLOPs of one forward pass (2 per multiply-add)")
    print(f"{'network':<40} {'params (M)':>10} {'paper (M)':>10} {'ratio':>6} {'GFLOPs':>9} {'GMACs':>8}")
    rows = [(f"GGMNet default_genotype({d}), Table 4", lambda d=d: GGMNet(default_genotype(d)),
             paper.parameters_m(d)) for d in args.depths]
    if args.genotype:
        genotype = Genotype.load(args.genotype)
        rows.append((f"GGMNet {args.genotype} (d{genotype.depth})", lambda: GGMNet(genotype),
                     paper.parameters_m(genotype.depth)))
    for name in list_models():
        if name != "ggmnet":
            label = f"{name} ({paper.TABLE6_NAMES[name]}, Table 6)" if name in paper.TABLE6_NAMES else name
            rows.append((label, lambda name=name: create_model(name, in_channels=3, num_classes=10),
                         paper.TABLE6.get(name, (None,))[0]))
    for label, build, reported in rows:
        params, gflops = model_size(build, args.size, 3)
        known = reported is not None and not math.isnan(reported)
        paper_text, ratio = (f"{reported:.1f}", f"{params / reported:.2f}") if known else ("--", "--")
        print(f"{label:<40} {params:>10.2f} {paper_text:>10} {ratio:>6} {gflops:>9.1f} {gflops / 2:>8.1f}")
    if args.genotype:
        parts: dict[str, float] = {}
        _, gflops = model_size(lambda: GGMNet(genotype), args.size, 3, breakdown=parts)
        print(f"the searched MRFEM of {args.genotype}: {parts['mrfem']:.1f} of GGMNet's {gflops:.1f} GFLOPs "
              f"({parts['mrfem'] / gflops:.1%}); halving it would make GGMNet at most "
              f"{gflops / (gflops - parts['mrfem'] / 2):.2f}x as fast")
    print("paper Table 6 parameters (M): " + ", ".join(f"{paper.TABLE6_NAMES[k]} {v[0]}"
                                                       for k, v in paper.TABLE6.items()))


if __name__ == "__main__":
    main()
