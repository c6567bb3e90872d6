"""Deformable convolution on the CPU: the fast path against torchvision's kernel, alone and inside GGMNet.

(a) The op alone at the sizes of GGMNet's three deformable decoder layers for a ``--size`` tile (144 -> 48
channels at 1/4 of the tile, 72 -> 24 at 1/2, 27 -> 24 at full size; 3x3, padding 1), batch ``--batch``, offsets
N(0, 2 px), no mask: seconds of a forward pass (inference mode; median of ``--repeats`` after a warm-up) and of
forward + backward (gradients for input, offsets and weight; median of ``--backward-repeats``), fast path against
``torchvision.ops.deform_conv2d``.

(b) One inference (batch 1, eval mode, ``torch.inference_mode``) of a ``--size`` tile: depth-``--depth`` GGMNet
from ``default_genotype`` (random weights; the offset convolutions drawn with std 0.01 so that the samples move)
on the fast path and on torchvision's kernel (``GGMNET_DEFORM_CONV=torchvision``), GGMNet without deformable
convolution (Table 5's row c switches, residual cells kept) and HRNet-W32 (timm). The four run in turn, round by
round, so that a shared machine's load falls on all alike; median of ``--repeats`` after a warm-up; the ratio
fast GGMNet / HRNet-W32. Then the peak resident memory of one inference of each above the resident size before
it, in a fresh process each (Linux).

Timings are printed, never asserted; compare ratios measured in one run.

    .venv/bin/python benchmarks/bench_deform.py [--size 512] [--batch 2] [--repeats 3] [--part op|network|all]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable

import torch
import torchvision

from ggmnet.models import create_model
from ggmnet.models.deform_conv import deform_conv2d, using_kernel
from ggmnet.models.ggmnet import GGMNet
from ggmnet.search_space.genotype import default_genotype
from ggmnet.studies.measure import bench_parser, interleaved_medians, peak_added_mib

NETWORKS = ("GGMNet fast path", "GGMNet torchvision kernel", "GGMNet without deformable", "HRNet-W32")


OPS: dict[str, Callable[..., torch.Tensor]] = {
    "fast": lambda x, offset, weight: deform_conv2d(x, offset, weight, padding=1),
    "torchvision": lambda x, offset, weight: torchvision.ops.deform_conv2d(x, offset, weight, padding=(1, 1)),
}


def forward_case(op: Callable[..., torch.Tensor], tensors: tuple[torch.Tensor, ...]) -> Callable[[], None]:
    def run() -> None:
        with torch.inference_mode():
            op(*tensors)
    return run


def forward_backward_case(op: Callable[..., torch.Tensor], tensors: tuple[torch.Tensor, ...],
                          upstream: torch.Tensor) -> Callable[[], None]:
    leaves = [t.detach().requires_grad_() for t in tensors]

    def run() -> None:
        op(*leaves).backward(upstream)
    return run


def op_benchmark(size: int, batch: int, repeats: int, backward_repeats: int) -> None:
    print(f"(a) the op alone: batch {batch}, offsets N(0, 2 px), no mask; seconds (median), speed-up")
    print(f"{'layer':<26} {'fwd fast':>9} {'fwd tv':>9} {'x':>6} {'f+b fast':>9} {'f+b tv':>9} {'x':>6}")
    gen = torch.Generator().manual_seed(0)
    for c_in, c_out, side in ((144, 48, -(-size // 4)), (72, 24, -(-size // 2)), (27, 24, size)):
        tensors = (torch.randn(batch, c_in, side, side, generator=gen),
                   torch.randn(batch, 18, side, side, generator=gen) * 2.0,
                   torch.randn(c_out, c_in, 3, 3, generator=gen) / (3.0 * c_in ** 0.5))
        upstream = torch.randn(batch, c_out, side, side, generator=gen)
        fwd = interleaved_medians({name: forward_case(op, tensors) for name, op in OPS.items()}, repeats)
        both = interleaved_medians({name: forward_backward_case(op, tensors, upstream) for name, op in OPS.items()},
                       backward_repeats, warmup=False)
        print(f"{f'{c_in} -> {c_out}, {side} x {side}':<26} {fwd['fast']:>9.3f} {fwd['torchvision']:>9.3f} "
              f"{fwd['torchvision'] / fwd['fast']:>6.1f} {both['fast']:>9.3f} {both['torchvision']:>9.3f} "
              f"{both['torchvision'] / both['fast']:>6.1f}", flush=True)


def build(name: str, depth: int) -> tuple[torch.nn.Module, str]:
    """The network ``name`` of :data:`NETWORKS` in eval mode, and the kernel it runs on."""
    torch.manual_seed(0)
    genotype = default_genotype(depth)
    if name == "HRNet-W32":
        return create_model("hrnet_w32").eval(), "auto"
    if name == "GGMNet without deformable":
        return GGMNet(genotype, arm=True, ffm=True, deformable=False, residual=True).eval(), "auto"
    model = GGMNet(genotype).eval()
    for param_name, param in model.named_parameters():
        if ".offset." in param_name:
            torch.nn.init.normal_(param, std=0.01)
    return model, "torchvision" if name == "GGMNet torchvision kernel" else "auto"


def inference(model: torch.nn.Module, kernel_name: str, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        with using_kernel(kernel_name), torch.inference_mode():
            model(x)
    return run


def peak_memory_mib(name: str, depth: int, size: int) -> float:
    """Peak resident memory of one inference above the resident size before it, MiB (this process)."""
    model, kernel_name = build(name, depth)
    x = torch.randn(1, 3, size, size)
    return peak_added_mib(inference(model, kernel_name, x))


def network_benchmark(size: int, depth: int, repeats: int, memory: bool) -> None:
    print(f"(b) one {size} x {size} inference, batch 1, eval, inference mode; depth-{depth} default genotype")
    models = {name: build(name, depth) for name in NETWORKS}
    x = torch.randn(1, 3, size, size)
    seconds = interleaved_medians({name: inference(model, k, x) for name, (model, k) in models.items()}, repeats)
    peaks = {}
    if memory:
        for name in NETWORKS:
            out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--peak-memory-of", name,
                                  "--threads", str(torch.get_num_threads())], check=True, capture_output=True, text=True)
            peaks[name] = float(out.stdout.split()[-1])
    print(f"{'network':<28} {'s (median)':>10} {'/ HRNet':>8} {'peak MiB':>9}")
    for name in NETWORKS:
        peak = f"{peaks[name]:>9,.0f}" if name in peaks else f"{'--':>9}"
        print(f"{name:<28} {seconds[name]:>10.3f} {seconds[name] / seconds['HRNet-W32']:>8.2f} {peak}")
    fast, hrnet = seconds["GGMNet fast path"], seconds["HRNet-W32"]
    print(f"fast GGMNet / HRNet-W32 = {fast / hrnet:.2f} ({'no slower' if fast <= hrnet else 'slower'}); "
          f"deformable layers: {fast - seconds['GGMNet without deformable']:.3f} s fast, "
          f"{seconds['GGMNet torchvision kernel'] - seconds['GGMNet without deformable']:.3f} s torchvision")


def main() -> None:
    parser = bench_parser(__doc__, size=(int, 512, "tile side, pixels"), depth=(int, 22, "MRFEM depth of the genotype"),
                          batch=(int, 2, "batch of the op benchmark"), repeats=(int, 3, "timed rounds after the warm-up"),
                          threads=(int, 0, "torch CPU threads (0: torch's default)"))
    parser.add_argument("--backward-repeats", type=int, default=1,
                        help="timed forward + backward rounds of the op, no warm-up (default 1: torchvision's "
                             "takes tens of seconds at 512)")
    parser.add_argument("--part", choices=("op", "network", "all"), default="all", help="what to run (default all)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes of (b)")
    parser.add_argument("--peak-memory-of", choices=NETWORKS, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.peak_memory_of:
        print(f"{peak_memory_mib(args.peak_memory_of, args.depth, args.size):.1f}")
        return
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.1f}")
    if args.part in ("op", "all"):
        op_benchmark(args.size, args.batch, args.repeats, args.backward_repeats)
    if args.part in ("network", "all"):
        network_benchmark(args.size, args.depth, args.repeats, not args.no_memory)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
