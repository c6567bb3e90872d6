"""Training throughput (images/s) and peak memory of GGMNet's training step (or a registered baseline's).

One step is what ``retrain`` does per batch: forward (under autocast on CUDA with ``--amp``), Eq. 19's loss
(with its instance weights, computed on the CPU from the mask), backward and an Adam step, on random tiles and
masks. On the CPU the figures are for a small size (default batch 2 of 256^2); on CUDA the paper's size is
measured as well (batch 4 of 1024^2 crops with AMP). Peak memory: ``torch.cuda.max_memory_allocated`` on CUDA,
the process's peak resident set (``VmHWM``) on the CPU.

    .venv/bin/python benchmarks/bench_train.py [--depth 22] [--ablation ours] [--model ggmnet|NAME]
        [--steps 3] [--cpu-size 256] [--cpu-batch 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from ggmnet.engine.device import autocast_for, make_grad_scaler
from ggmnet.losses import WeightedBootstrappedCE
from ggmnet.models import create_model, list_models
from ggmnet.models.ggmnet import ABLATIONS, GGMNet
from ggmnet.search_space.genotype import default_genotype
from ggmnet.studies.measure import bench_parser, peak_resident_mib


def build(args: argparse.Namespace) -> torch.nn.Module:
    if args.model != "ggmnet":
        return create_model(args.model, in_channels=3, num_classes=10)
    return GGMNet(default_genotype(args.depth), **ABLATIONS[args.ablation])


def bench(args: argparse.Namespace, device: torch.device, size: int, batch: int, amp: bool) -> None:
    torch.manual_seed(0)
    model = build(args).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = make_grad_scaler(device, amp)
    criterion = WeightedBootstrappedCE().to(device)
    x = torch.rand(batch, 3, size, size, device=device)
    # Masks of square patches (instance weighting labels connected components, as with real labels).
    blocks = torch.randint(0, 10, (batch, size // 32 + 1, size // 32 + 1))
    mask = blocks.repeat_interleave(32, 1).repeat_interleave(32, 2)[:, :size, :size].to(device)

    def step() -> None:
        with autocast_for(device, amp):
            logits = model(x)
        loss = criterion(logits, mask)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        peak = f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB GPU (max allocated)"
    else:
        peak = f"{peak_resident_mib() / 1024:.2f} GiB RSS (process peak)"
    name = args.model if args.model != "ggmnet" else f"ggmnet depth {args.depth} ablation {args.ablation}"
    print(f"{name} on {device} ({torch.get_num_threads()} threads)" if device.type == "cpu" else
          f"{name} on {torch.cuda.get_device_name(device)}", end="")
    print(f": batch {batch} x {size}^2{' AMP ' + str(torch.get_autocast_dtype('cuda')) if amp else ''}: "
          f"{args.steps * batch / seconds:.2f} images/s, {seconds / args.steps:.2f} s/step, peak {peak}")


def main() -> None:
    parser = bench_parser(__doc__, depth=(int, 22, "MRFEM depth of default_genotype"), steps=(int, 3, "timed steps"),
                          warmup=(int, 1, "untimed steps first"), cpu_size=(int, 256, "CPU tile side, pixels"),
                          cpu_batch=(int, 2, "CPU batch"), gpu_size=(int, 1024, "CUDA tile side, pixels"),
                          gpu_batch=(int, 4, "CUDA batch (the paper's)"))
    parser.add_argument("--model", choices=list_models(), default="ggmnet",
                        help="registered network (default ggmnet, from default_genotype(--depth))")
    parser.add_argument("--ablation", choices=tuple(ABLATIONS), default="ours")
    parser.add_argument("--skip-cpu", action="store_true", help="measure CUDA only")
    args = parser.parse_args()
    if not args.skip_cpu:
        bench(args, torch.device("cpu"), args.cpu_size, args.cpu_batch, amp=False)
    if torch.cuda.is_available():
        device = torch.device("cuda")
        bench(args, device, args.gpu_size, args.gpu_batch, amp=True)
        bench(args, device, args.gpu_size, args.gpu_batch, amp=False)
    else:
        print("no CUDA device: the paper-size (1024^2, AMP) figures need one")


if __name__ == "__main__":
    main()
