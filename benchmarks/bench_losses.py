"""Time the shared yardsticks at training size: instance weights, Eq. 19's loss and the confusion matrix.

Prints seconds per call for a batch of ``--batch`` masks of ``--size`` x ``--size`` pixels with blocky random
geology (``--blocks`` instances a side, 10 classes, a band of cover). Run on the device used for training:

    python benchmarks/bench_losses.py --device cuda --size 1024 --batch 8
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import torch

from ggmnet.engine.device import resolve_device
from ggmnet.losses import WeightedBootstrappedCE, class_weights_from_counts, instance_size_weights
from ggmnet.metrics import ConfusionMatrix
from ggmnet.studies.measure import median_time


def seconds(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median seconds of ``fn`` over ``repeats`` calls after one untimed call (CUDA synchronised)."""
    return median_time(fn, repeats, sync=torch.cuda.synchronize if device.type == "cuda" else None).seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--size", type=int, default=512, help="mask side in pixels (default 512)")
    parser.add_argument("--batch", type=int, default=4, help="masks per batch (default 4)")
    parser.add_argument("--blocks", type=int, default=32, help="instances along a side (default 32)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per figure (default 3)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    rng = np.random.default_rng(0)
    cell = max(1, args.size // args.blocks)
    coarse = rng.integers(0, 10, size=(args.batch, args.blocks, args.blocks))
    mask = np.kron(coarse, np.ones((cell, cell), dtype=np.int64))[:, : args.size, : args.size]
    mask[:, : args.size // 10] = 255
    target = torch.from_numpy(np.ascontiguousarray(mask)).to(device)
    logits = torch.randn(args.batch, 10, args.size, args.size, device=device, requires_grad=True)
    crit = WeightedBootstrappedCE(class_weights_from_counts(np.arange(1, 11))).to(device)
    weights = crit.pixel_weights_for(target)
    pred = logits.detach().argmax(1)

    def loss_step() -> None:
        crit(logits, target, weights).backward()

    def confusion() -> None:
        ConfusionMatrix().update(pred, target)

    print(f"device {device}, batch {args.batch} x {args.size}^2, {args.blocks}^2 instances a mask")
    print(f"instance_size_weights: {seconds(lambda: instance_size_weights(mask), device, args.repeats):.4f} s"
          f" per batch (CPU)")
    print(f"loss forward+backward (weights given): {seconds(loss_step, device, args.repeats):.4f} s per batch")
    print(f"confusion update: {seconds(confusion, device, args.repeats):.4f} s per batch")


if __name__ == "__main__":
    main()
