"""Cost of the search's steps against a derived network's training step.

Times one step on a batch of ``--batch`` images of ``--size`` pixels (cross-entropy on the three heads), and
measures the peak resident memory the step adds, for

* ``arch``: the architecture step (:meth:`ggmnet.search.steps.SearchSteps.arch_step`: the paired estimator,
  widths and residual connections at the midpoint, and the network of the rival paths run too), gradient of the
  loss with respect to the architecture logits only,
* ``weight``: the weight step with the sandwich rule (the largest, the smallest and one random network, the
  last two distilled from the first: ``--sandwich 2``, the CPU recipe's),
* ``single``: one drawn network's weight step (``--sandwich 0``),
* ``derived``: ``GenotypeNetwork(supernet.derive())`` (the architecture the same logits give; the branches'
  common cells computed once), backward to every weight,
* ``soft``: the supernet in ``mode="soft"`` (every candidate computed and mixed), gradient of the logits,

each in its own process (so that peak memories do not mix), after one warm-up step, median of ``--repeats``.
Architecture logits are perturbed (seeded N(0, 1) noise) so that the derived network is a typical one, not
the all-``skip`` network of untrained (uniform) logits; the derived network is built from the genotype file
alone. Prints wall and CPU seconds (CPU time is the steadier figure on a shared machine) and MiB per case and
the ratios to the derived network's step. Defaults: the CPU search recipe (``experiments/search_cpu.yaml``:
depth 22, unit widths 4, 8, 16, batch 8, 128 px tiles); the paper's widths:

    python benchmarks/bench_search_step.py --unit-channels 12,24,48 --size 256 --batch 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ggmnet.models import count_parameters
from ggmnet.search.steps import SearchSteps
from ggmnet.search_space.genotype import Genotype
from ggmnet.search_space.supernet import GenotypeNetwork, Supernet
from ggmnet.studies.measure import median_time, peak_added_mib

CASES = ("arch", "weight", "single", "derived", "soft")


def seeded_supernet(args: argparse.Namespace) -> Supernet:
    """The supernet of the benchmark: seeded weights; architecture logits its initial ones plus N(0, 1) noise."""
    torch.manual_seed(args.seed)
    supernet = Supernet(args.depth, unit_channels=args.unit_channels)
    g = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        for _, p in supernet.named_arch_parameters():
            p.add_(torch.randn(p.shape, generator=g))
    return supernet


def head_losses(logits: list[torch.Tensor], targets: list[torch.Tensor], _weights=None) -> list[torch.Tensor]:
    return [F.cross_entropy(o, t) for o, t in zip(logits, targets)]


def run_case(case: str, args: argparse.Namespace) -> dict[str, float]:
    """Build the case's model, then time its steps and measure the memory they add."""
    device = torch.device(args.device)
    start = time.perf_counter()
    if case == "derived":  # built from the genotype file alone: no supernet in this process's peak memory
        torch.manual_seed(args.seed)
        model = GenotypeNetwork(Genotype.load(args.genotype))
    else:
        model = seeded_supernet(args)
    model = model.to(device).train()
    build_s = time.perf_counter() - start
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    targets = [torch.randint(0, 10, (args.batch, -(-args.size // s), -(-args.size // s)), device=device)
               for s in (8, 16, 32)]
    if case == "derived":
        def step() -> None:
            model.zero_grad(set_to_none=True)
            sum(head_losses(model(x), targets)).backward()
    elif case == "soft":
        def step() -> None:
            torch.autograd.grad(sum(head_losses(model(x, mode="soft"), targets)), model.arch_parameters(),
                                allow_unused=True)
    else:
        steps = SearchSteps(model, model, head_losses, sandwich=2 if case == "weight" else 0, device=device,
                            labelled=lambda _targets: None,
                            weight_opt=torch.optim.SGD(model.weight_parameters(), lr=0.0),
                            arch_opt=torch.optim.Adam(model.arch_parameters(), lr=0.0))
        step = (lambda: steps.arch_step(x, targets)) if case == "arch" else (lambda: steps.weight_step(x, targets))
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    peak = peak_added_mib(step)
    timing = median_time(step, args.repeats, warmup=0, sync=sync)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    return {"seconds": timing.seconds, "cpu_seconds": timing.cpu_seconds, "peak_mib": peak,
            "build_seconds": build_s, "params_m": count_parameters(model) / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=22, help="supernet depth (default 22)")
    parser.add_argument("--unit-channels", type=lambda v: tuple(int(c) for c in v.split(",")), default=(4, 8, 16),
                        help="unit widths at strides 8, 16, 32, comma-separated (default 4,8,16: the CPU recipe)")
    parser.add_argument("--batch", type=int, default=8, help="images per step (default 8: the CPU recipe)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (default 128: the CPU recipe)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per case (default 5)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, logits and data (default 0)")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads per case (default 0: torch's default); 1 is steadier on a shared machine")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {CASES}")
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--genotype", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.case:
        print(json.dumps(run_case(args.case, args)))
        return
    units = ",".join(str(c) for c in args.unit_channels)
    print(f"depth {args.depth}, unit widths {units}, batch {args.batch}, {args.size}x{args.size}, {args.device}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    genotype = seeded_supernet(args).derive()
    print(genotype.summary())
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = genotype.save(Path(tmp) / "genotype.json")
        for case in args.cases.split(","):
            cmd = [sys.executable, __file__, *sys.argv[1:], "--case", case, "--genotype", str(path)]
            r = results[case] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            print(f"{case:>8}: {r['seconds']:8.3f} s/step ({r['cpu_seconds']:.3f} s CPU)  "
                  f"peak +{r['peak_mib']:8.1f} MiB  ({r['params_m']:.1f} M parameters, built in "
                  f"{r['build_seconds']:.1f} s)", flush=True)
    if "derived" in results:
        d = results["derived"]
        for case in ("arch", "weight", "single", "soft"):
            if case in results:
                r = results[case]
                print(f"{case}/derived: time {r['seconds'] / d['seconds']:.2f}x, CPU time "
                      f"{r['cpu_seconds'] / d['cpu_seconds']:.2f}x, memory {r['peak_mib'] / d['peak_mib']:.2f}x")


if __name__ == "__main__":
    main()
