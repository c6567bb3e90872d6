"""Does a paper-scale search step fit one 80 GB GPU? Measured on the CPU at reduced sizes, extrapolated.

The paper's search (``experiments/search_paper.yaml``): depth 22, unit widths 12, 24, 48 (a supernet of about
308 M weights), 1024 px crops, 4 tiles per GPU, the paired estimator. On a GPU a step's memory is the weights,
their gradients and the optimiser's momentum (counted here for all 308 M weights, an upper bound: a step touches
the drawn operators only) plus the activations autograd keeps for the backward pass. This benchmark measures the
latter exactly on the CPU (the bytes of every tensor saved for backward, each storage once, in a fresh process
per size) for the weight step's largest member (the sandwich's largest network; its other members are smaller,
and each is backpropagated before the next runs) and for the architecture step (the paired estimator, its
rival candidates computed without a graph, and the rival paths' network), on ``--batch`` random tiles of each
``--sizes`` side. Activations grow with the pixels of a batch, so a least-squares line through the sizes gives
them at 4 x 1024 x 1024, in float32 and (halved, a rough bound) with mixed precision. The forward
multiply-accumulates of the largest network at 1024 px are counted on the meta device by torch's FLOP counter.

    python benchmarks/bench_paper_search.py                      # sizes 96,128,160,192, batch 2: ~15 minutes
    python benchmarks/bench_paper_search.py --unit-channels 4,8,16  # the CPU recipe's supernet
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
import torch
import torch.nn.functional as F

from ggmnet.search.steps import LARGEST, SearchSteps
from ggmnet.search_space.supernet import GenotypeNetwork, Supernet

GIB = 1024.0


def losses(logits: list[torch.Tensor], target: torch.Tensor, _weights=None) -> list[torch.Tensor]:
    return [F.cross_entropy(F.interpolate(z, size=target.shape[-2:], mode="bilinear"), target) for z in logits]


def saved_mib(fn, parameters) -> float:
    """MiB of the tensors autograd saves for the backward pass while ``fn`` runs (each storage once, the
    ``parameters``' own storages left out): the activation memory of a training step, independent of the
    allocator's caching."""
    own = {p.untyped_storage().data_ptr() for p in parameters}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in own:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values()) / 2**20


def measure(size: int, batch: int, depth: int, units: tuple[int, int, int]) -> dict[str, float]:
    """The activation memory of the weight step's largest member (the sandwich's others are smaller, and each
    is backpropagated before the next runs) and of the architecture step, at ``size``; and the weights."""
    torch.manual_seed(0)
    net = Supernet(depth, unit_channels=units).train()
    with torch.no_grad():
        for p in net.arch_parameters():
            p.add_(torch.randn_like(p))
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 10, (batch, size, size))
    for p in net.arch_parameters():
        p.requires_grad_(False)
    net.pin(**LARGEST)
    weight_step = saved_mib(lambda: sum(losses(net(x, mode="sample"), y)).backward(), net.parameters())
    net.pin()
    steps = SearchSteps(net, net, losses, weight_opt=torch.optim.SGD(net.weight_parameters(), lr=0.0),
                        arch_opt=torch.optim.Adam(net.arch_parameters(), lr=0.0))
    arch_step = saved_mib(lambda: steps.arch_step(x, y), net.parameters())
    weights = sum(p.numel() for p in net.weight_parameters())
    return {"size": size, "batch": batch, "weights_m": weights / 1e6,
            "state_mib": 3 * weights * 4 / 2**20,  # weights, gradients and momentum (float32), all of them
            "weight_step_mib": weight_step, "arch_step_mib": arch_step}


def forward_gmacs(size: int, depth: int, units: tuple[int, int, int]) -> float:
    """Forward multiply-accumulates (G) of the largest network of the space (``Supernet.largest_genotype``:
    widest widths, costliest operators, residual connections, every branch at its resolution) on one ``size``
    tile, stem and heads included: torch's FLOP counter on the meta device (nothing allocated or computed)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        largest = Supernet(depth, unit_channels=units).largest_genotype()
        net = GenotypeNetwork(largest).train()
        x = torch.randn(2, 3, size, size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(x)
    return counter.get_total_flops() / 2e9 / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="96,128,160,192", help="tile sides measured (default 96,128,160,192)")
    parser.add_argument("--batch", type=int, default=2, help="tiles per measured step (default 2)")
    parser.add_argument("--depth", type=int, default=22)
    parser.add_argument("--unit-channels", default="12,24,48", help="default 12,24,48: the paper's widths")
    parser.add_argument("--target-size", type=int, default=1024, help="the paper's crop (default 1024)")
    parser.add_argument("--target-batch", type=int, default=4, help="the paper's tiles per GPU (default 4)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    units = tuple(int(u) for u in args.unit_channels.split(","))
    if args.one is not None:
        print(json.dumps(measure(args.one, args.batch, args.depth, units)))
        return
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--one", str(size)],
                             capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{size:>5} px x {args.batch}: weight step +{row['weight_step_mib']:8.0f} MiB, architecture step "
              f"+{row['arch_step_mib']:8.0f} MiB", flush=True)
    pixels = np.array([r["batch"] * r["size"] ** 2 for r in rows], dtype=float)
    target_pixels = args.target_batch * args.target_size**2
    state = rows[0]["state_mib"]
    print(f"supernet: {rows[0]['weights_m']:.0f} M weights; weights, gradients and momentum {state / GIB:.1f} GiB")
    for key in ("weight_step_mib", "arch_step_mib"):
        slope, intercept = np.polyfit(pixels, [r[key] for r in rows], 1)
        step = slope * target_pixels + intercept
        print(f"{key[:-4].replace('_', ' ')} at {args.target_batch} x {args.target_size} px: {step / GIB:.1f} GiB "
              f"(+{slope * 2**20 / 1e3:.2f} MiB per 1000 pixels); with the state {(step + state) / GIB:.1f} GiB "
              f"in float32, about {(step / 2 + state) / GIB:.1f} GiB with mixed precision (activations halved)")
    print(f"largest network, forward at {args.target_size} px: {forward_gmacs(args.target_size, args.depth, units):.0f} "
          "GMAC per tile")


if __name__ == "__main__":
    main()
