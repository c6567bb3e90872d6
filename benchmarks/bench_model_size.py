"""Parameters and FLOPs of GGMNet at MRFEM depths 16-24 beside HRNet-W32 (paper Tables 4 and 6).

GGMNet is built from ``default_genotype(depth)`` (expansion 4 everywhere: a hand-made stand-in for a
searched genotype, so its sizes differ from the paper's searched ones) or from ``--genotype FILE`` for one
searched architecture. FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` on one forward pass in
eval mode (2 FLOPs per multiply-add); torchvision's deformable convolution, which the counter does not
know, is counted (on torchvision's kernel, ``GGMNET_DEFORM_CONV=torchvision``) as the convolution it computes
plus 8 FLOPs per bilinear sample (4 products, 4 sums).

    .venv/bin/python benchmarks/bench_model_size.py [--size 512] [--depths 16 18 20 22 24] [--genotype FILE]
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch
import torchvision  # noqa: F401  (registers torch.ops.torchvision)
from torch.utils.flop_counter import FlopCounterMode

from ggmnet.retrain.deform_conv import KERNEL_ENV
from ggmnet.retrain.ggmnet_model import GGMNet
from ggmnet.retrain.models import create_model
from ggmnet.search_space.genotype import Genotype, default_genotype

#: Table 4 (parameters, M, of the searched GGMNet at each MRFEM depth) and Table 6 (M).
PAPER_TABLE4_PARAMS_M = {16: 4.7, 18: 6.5, 20: 8.6, 22: 10.3, 24: 12.4}
PAPER_TABLE6_PARAMS_M = {"FC-HarDNet-70": 4.1, "FasterSeg": 4.7, "HRNetV1-W32": 28.5, "GGMNet": 10.3}


def deform_conv2d_flop(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of ``torchvision::deform_conv2d``: the convolution plus the bilinear sampling of its columns."""
    n, c_in = input_shape[0], input_shape[1]
    c_out, c_per_group, kh, kw = weight_shape
    positions = n * out_shape[2] * out_shape[3]
    conv = 2 * positions * c_out * c_per_group * kh * kw
    sampling = 8 * positions * c_in * kh * kw
    return conv + sampling


def measure(model: torch.nn.Module, size: int, in_channels: int) -> tuple[float, float, float]:
    """(parameters in M, GFLOPs of one forward pass on 1 x C x size x size, seconds it took)."""
    model.eval()
    params = sum(p.numel() for p in model.parameters()) / 1e6
    x = torch.randn(1, in_channels, size, size)
    counter = FlopCounterMode(display=False,
                              custom_mapping={torch.ops.torchvision.deform_conv2d: deform_conv2d_flop})
    start = time.perf_counter()
    with torch.no_grad(), counter:
        model(x)
    return params, counter.get_total_flops() / 1e9, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="input side, pixels (default 512)")
    parser.add_argument("--depths", type=int, nargs="+", default=[16, 18, 20, 22, 24],
                        help="MRFEM depths of default_genotype (default 16 18 20 22 24)")
    parser.add_argument("--genotype", default=None, help="also measure this searched genotype JSON")
    args = parser.parse_args()
    # Count torchvision's deformable op (the mapping above); the counter does not know the CPU fast path's ops.
    os.environ[KERNEL_ENV] = "torchvision"

    print(f"input 1 x 3 x {args.size} x {args.size}; FLOPs of one forward pass (2 per multiply-add)")
    print(f"{'network':<34} {'params (M)':>10} {'paper (M)':>10} {'GFLOPs':>9} {'GMACs':>8} {'s':>6}")
    rows = [(f"GGMNet default_genotype({d})", GGMNet(default_genotype(d)), PAPER_TABLE4_PARAMS_M.get(d))
            for d in args.depths]
    if args.genotype:
        genotype = Genotype.load(args.genotype)
        rows.append((f"GGMNet {args.genotype} (d{genotype.depth})", GGMNet(genotype),
                     PAPER_TABLE4_PARAMS_M.get(genotype.depth)))
    rows.append(("HRNet-W32 (timm) + seg head", create_model("hrnet_w32", in_channels=3, num_classes=10),
                 PAPER_TABLE6_PARAMS_M["HRNetV1-W32"]))
    for name, model, paper in rows:
        params, gflops, seconds = measure(model, args.size, 3)
        paper_text = "--" if paper is None or math.isnan(paper) else f"{paper:.1f}"
        print(f"{name:<34} {params:>10.2f} {paper_text:>10} {gflops:>9.1f} {gflops / 2:>8.1f} {seconds:>6.1f}")
    print("paper Table 6 parameters (M): " + ", ".join(f"{k} {v}" for k, v in PAPER_TABLE6_PARAMS_M.items()))


if __name__ == "__main__":
    main()
