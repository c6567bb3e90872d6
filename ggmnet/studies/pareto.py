"""Accuracy against speed: searched networks at several cost targets beside the hand-designed baselines.

On one synthetic scene (spatial-block split): the untargeted search of :mod:`ggmnet.studies.fair_search` (its
runs are reused), searches of the same recipe at each cost target, each genotype retrained with the train seeds,
and Table 6's baselines (FC-HarDNet-70, FasterSeg, HRNet-W32, U-Net) retrained with the same recipe. Every
network's CPU latency at 1024 x 1024 (batch 1, evaluation mode) is measured in one process, in interleaved
rounds, so that the machine's drift falls on all of them alike; its parameters and GFLOPs are counted on the
meta device. Writes ``pareto.json``, ``pareto.md`` and ``pareto.png`` (validation FWIoU against latency).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ggmnet.engine.runio import write_json_atomic
from ggmnet.metrics import markdown_table
from ggmnet.studies import RECIPES
from ggmnet.studies.fair_search import make_scene, retrain, search

BASELINES = ("fc_hardnet70", "fasterseg", "hrnet_w32", "unet")


@dataclass
class Pareto:
    """The settings of the study (module docstring); ``targets`` are ``--cost-target`` values."""

    scene_seed: int
    root: Path
    targets: Sequence[str] = ("0.03", "0.02", "0.01")
    train_seeds: Sequence[int] = (0, 1)
    baseline_seeds: Sequence[int] = (0,)
    baselines: Sequence[str] = BASELINES
    search_config: str = str(RECIPES / "search_cpu.yaml")
    retrain_config: str = str(RECIPES / "retrain_cpu.yaml")
    size: int = 1024
    rounds: int = 3

    def __post_init__(self) -> None:
        self.root = Path(self.root)


def latencies(checkpoints: dict[str, Path], size: int, rounds: int) -> dict[str, float]:
    """Median seconds of one ``size`` inference (batch 1) of each checkpoint's network on the CPU, measured in
    ``rounds`` interleaved rounds (each round times every network once, after one warm-up pass each)."""
    import torch

    from ggmnet.models import load_model
    from ggmnet.studies.measure import interleaved_medians

    models = {name: load_model(path)[0].eval() for name, path in checkpoints.items()}
    inputs = {name: torch.rand(1, model.in_channels, size, size) for name, model in models.items()}
    with torch.inference_mode():
        return interleaved_medians({name: lambda m=model, x=inputs[name]: m(x) for name, model in models.items()},
                                   rounds)


def run_scene(plan: Pareto) -> dict[str, Any]:
    """The study (module docstring); writes its files under ``root/scene{seed}/pareto`` and returns its rows."""
    from ggmnet.models import build_model, load_model, model_size
    from ggmnet.search_space.supernet import genotype_cost

    scene = plan.root / f"scene{plan.scene_seed}"
    data = make_scene(plan.scene_seed, plan.root)
    out = scene / "pareto"
    networks: dict[str, dict[str, Any]] = {}
    genotypes = {"searched": search(data, scene / "searched", plan.search_config, plan.train_seeds[0])}
    for target in plan.targets:
        genotypes[f"target {target}"] = search(data, out / f"target-{target}", plan.search_config,
                                               plan.train_seeds[0], ["--cost-target", str(target)])
    for name, genotype in genotypes.items():
        folder = scene if name == "searched" else out  # the untargeted runs are the fair test's
        rows = [retrain(genotype, name.replace(" ", "-"), data, folder, seed, plan.retrain_config)
                for seed in plan.train_seeds]
        networks[f"ggmnet ({name})"] = {"rows": rows, "mrfem_gmac": genotype_cost(genotype) * plan.size**2 / 1e9,
                                        "cost_target": genotype.provenance.get("cost", {}).get("target_fraction_of_largest")}
    for model in plan.baselines:
        networks[model] = {"rows": [retrain(model, model, data, out, seed, plan.retrain_config)
                                    for seed in plan.baseline_seeds]}
    best = {name: Path(net["rows"][0]["run"]) / "checkpoints" / "best.pt" for name, net in networks.items()}
    seconds = latencies(best, plan.size, plan.rounds)
    for name, net in networks.items():
        config = load_model(best[name])[1]["model_config"]
        params, gflops = model_size(lambda c=config: build_model(c), plan.size, 3)
        net.update({"fwiou": float(np.mean([r["fwiou"] for r in net["rows"]])),
                    "fwiou_seeds": [r["fwiou"] for r in net["rows"]],
                    "mpa": float(np.mean([r["mpa"] for r in net["rows"]])), "parameters_m": params,
                    "gflops": gflops, "seconds": seconds[name]})
    result = {"scene_seed": plan.scene_seed, "size": plan.size, "networks": networks,
              "settings": {"targets": list(plan.targets), "train_seeds": list(plan.train_seeds),
                           "baseline_seeds": list(plan.baseline_seeds), "search_config": plan.search_config,
                           "retrain_config": plan.retrain_config}}
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "pareto.json", result)
    (out / "pareto.md").write_text(table(result) + "\n", encoding="utf-8")
    plot(result, out / "pareto.png")
    return result


def table(result: dict[str, Any]) -> str:
    """The Pareto table in Markdown (validation FWIoU and MPA in %, latency in seconds per 1024 px image)."""
    rows = []
    for name, net in sorted(result["networks"].items(), key=lambda item: item[1]["seconds"]):
        seeds = ", ".join(f"{100 * f:.1f}" for f in net["fwiou_seeds"])
        target, mrfem = net.get("cost_target"), net.get("mrfem_gmac")
        rows.append([name, "--" if target is None else f"{100 * target:.3g} %", "--" if mrfem is None else f"{mrfem:.2f}",
                     f"{net['parameters_m']:.2f}", f"{net['gflops']:.1f}", f"{net['seconds']:.2f}",
                     f"{100 * net['fwiou']:.1f} ({seeds})", f"{100 * net['mpa']:.1f}"])
    return markdown_table(["network", "cost target (of the largest)", "MRFEM GMAC at 1024 px", "parameters (M)",
                           "GFLOPs at 1024 px", "CPU s per 1024 px image", "val FWIoU (seeds)", "val MPA"],
                          rows).rstrip("\n")


def plot(result: dict[str, Any], path: Path) -> None:
    """Validation FWIoU (the seeds' mean, a bar from the lowest to the highest seed) against CPU latency: each
    network a point, the GGMNets in one colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, net in result["networks"].items():
        seeds = [100 * f for f in net["fwiou_seeds"]]
        mean = 100 * net["fwiou"]
        ggmnet = name.startswith("ggmnet")
        ax.errorbar(net["seconds"], mean, yerr=[[mean - min(seeds)], [max(seeds) - mean]], capsize=3,
                    fmt="o" if ggmnet else "s", color="tab:blue" if ggmnet else None,
                    label="GGMNet, searched" if name == "ggmnet (searched)" else None if ggmnet else name)
        if ggmnet:
            ax.annotate(name.removeprefix("ggmnet "), (net["seconds"], mean), textcoords="offset points",
                        xytext=(5, 0), fontsize=7, va="center")
    ax.set_xscale("log")
    ax.set_xlabel(f"CPU seconds per {result['size']} px image (batch 1)")
    ax.set_ylabel("validation FWIoU (%), spatial-block split")
    ax.set_title(f"scene {result['scene_seed']}: accuracy against latency")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
