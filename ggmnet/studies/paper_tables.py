"""The paper's experiments (Tables 4-7) as one command, at smoke, CPU or paper scale, on both splits.

    python experiments/paper_tables.py --scale smoke|cpu|paper --out DIR [--data-random DIR] [--data-blocks DIR]
        [--splits random,spatial-block] [--depths 16,18,20,22,24] [--gpus N] [--seed 0]

For each split (the paper's random split of overlapping windows, and the spatial-block split where no
validation window overlaps a training one; by default the synthetic default scene prepared both ways):

* **Table 4** (MRFEM depth): at depths 16, 18, 20, 22, 24 a search, the export of its genotype and a retrain
  of GGMNet from it (:mod:`ggmnet.studies.depth_sweep`: NNI's multi-trial engine when nni is installed, a
  plain loop otherwise; with ``--gpus N`` > 1 the same steps through ``torchrun``);
* **Table 5** (ablations a, b, c, d, ours): GGMNet from the depth-22 genotype with each row's components
  (deformable convolutions in rows d and ours, whatever the recipe says);
* **Table 6** (state of the art): GGMNet (Table 5's "ours" run) beside FC-HarDNet-70, FasterSeg, HRNet-W32 and
  U-Net, with parameters, GFLOPs at 1024 px, inference images/s measured here in this run, MPA and FWIoU;
* **Table 7** (per class): GGMNet's accuracy and IoU per class, the paper's figures beside them.

Every network is trained by ``retrain`` with the scale's recipe and scored on the validation windows by
``ggm-evaluate``'s code (:func:`ggmnet.studies.trial.train_and_score`). Outputs: ``DIR/table4.md`` ...
``DIR/table7.md``, ``DIR/results.json`` (every figure with its run folder, seed, budget and machine) and
``DIR/curves.png`` (the validation FWIoU of Table 6's networks per epoch). Rerunning resumes: finished runs
are found and scored again, interrupted ones continue.

Scales (the recipes are ``experiments/*.yaml``):

* ``smoke``: the CPU recipes cut to a few steps of 64 px tiles (timing at 256 px): checks the whole machinery
  (both splits: about 3 minutes on 2 cores, the synthesis of the scene included); its figures mean nothing;
* ``cpu``: ``search_cpu.yaml`` and ``retrain_cpu.yaml`` as the demo runs them (timing at 1024 px): 3 hours for
  both splits on 2 cores (docs/paper-experiments.md has the times of each part);
* ``paper``: ``search_paper.yaml`` and ``retrain_paper.yaml`` (2048 px tiles, 600 epochs) on GPUs; ``--gpus N``
  launches every run through ``torchrun --nproc_per_node N``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from ggmnet.engine.runio import write_json_atomic
from ggmnet.engine.tracking import read_metrics
from ggmnet.errors import UserError, cli_entry
from ggmnet.metrics import markdown_table, percent
from ggmnet.studies import RECIPES, paper
from ggmnet.studies.depth_sweep import load_recipe, run_depth_sweep
from ggmnet.studies.depth_sweep import parse_depths as sweep_depths
from ggmnet.studies.measure import median_time

ABLATION_ROWS = ("a", "b", "c", "d", "ours")
BASELINES = ("fc_hardnet70", "fasterseg", "hrnet_w32", "unet")

SCALES: dict[str, dict[str, Any]] = {
    "smoke": {"search": "search_cpu.yaml", "retrain": "retrain_cpu.yaml", "timing_size": 256,
              "search_flags": ["--epochs", "2", "--warmup-epochs", "1", "--steps-per-epoch", "3", "--tile-size", "64",
                              "--bn-batches", "1", "--batch-size", "4"],
              "retrain_flags": ["--epochs", "2", "--steps-per-epoch", "3", "--tile-size", "64", "--batch-size", "4",
                               "--image-every", "2"]},
    "cpu": {"search": "search_cpu.yaml", "retrain": "retrain_cpu.yaml", "timing_size": 1024,
            "search_flags": [], "retrain_flags": []},
    "paper": {"search": "search_paper.yaml", "retrain": "retrain_paper.yaml", "timing_size": 1024,
              "search_flags": [], "retrain_flags": []},
}


def machine() -> dict[str, Any]:
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


class Runner:
    """Runs (or finds) the trainings of one scale, in this process or through ``torchrun``."""

    def __init__(self, scale: str, out: Path, seed: int, gpus: int, device: str) -> None:
        self.out, self.seed, self.gpus, self.device = out, seed, gpus, device
        self.recipe = SCALES[scale]

    def _flags(self, stage: str, data: str, out: Path, extra: list[str]) -> list[str]:
        recipe = self.recipe[stage]
        flags = ["--config", str(RECIPES / recipe), "--data", data, "--out", str(out),
                 "--seed", str(self.seed), "--wandb-mode", "disabled", *self.recipe[f"{stage}_flags"], *extra]
        return flags + (["--device", self.device] if self.device else [])

    def _torchrun(self, command: str, flags: list[str]) -> None:
        subprocess.run(["torchrun", "--standalone", f"--nproc_per_node={self.gpus}", "--no-python", command, *flags],
                       check=True)

    def search(self, data: str, out: Path, depth: int) -> Path:
        """Search at ``depth`` into ``out/search`` and export ``out/genotype.json`` (skipped when it exists)."""
        from ggmnet.search.cli import build_search_parser
        from ggmnet.search.export import export_genotype
        from ggmnet.search.search import SearchConfig, run_search

        genotype = out / "genotype.json"
        if genotype.is_file():
            return genotype
        flags = self._flags("search", data, out / "search", ["--depth", str(depth)])
        if (out / "search" / "checkpoints" / "last.pt").is_file():
            flags.append("--resume")
        if self.gpus > 1:
            self._torchrun("nas-search", flags)
        else:
            run_search(SearchConfig.from_argv(build_search_parser(), flags))
        export_genotype(genotype, run=out / "search", force=True)
        return genotype

    def retrain(self, data: str, out: Path, extra: list[str]) -> dict[str, Any]:
        """Train (or find) and score one network (:func:`~ggmnet.studies.trial.train_and_score`)."""
        from ggmnet.studies.trial import train_and_score

        flags = self._flags("retrain", data, out, extra)
        if self.gpus > 1 and not (out / "checkpoints" / "last.pt").is_file():
            self._torchrun("retrain", flags)
        return train_and_score(flags, splits=("val",))


def inference_rate(build, size: int, device: str, repeats: int = 3) -> float:
    """Images per second of one ``size`` x ``size`` inference (batch 1, eval mode), the median of ``repeats``."""
    import torch

    model = build().eval().to(device)
    x = torch.rand(1, model.in_channels, size, size, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    with torch.inference_mode():
        return 1.0 / median_time(lambda: model(x), repeats, sync=sync).seconds


def run_split(runner: Runner, split: str, data: str, engine: str,
              depths: tuple[int, ...] = paper.DEPTHS) -> dict[str, Any]:
    """Tables 4-7 of one split (Table 4 at ``depths``, which include 22); returns their rows."""
    root = runner.out / split
    root.mkdir(parents=True, exist_ok=True)
    # Table 4: the depth sweep (NNI or its plain loop); on GPUs, or to finish an interrupted sweep, the same
    # trials (search, export, retrain in depthD/) run here one by one, each resumed where it stopped.
    sweep = root / "depth-sweep"
    table4 = json.loads((sweep / "table4.json").read_text()) if (sweep / "table4.json").is_file() else None
    if table4 is not None and set(depths) <= {row["depth"] for row in table4["rows"]}:
        # A finished sweep that covers the asked-for depths; one of fewer depths (an earlier --depths run)
        # is not reused: the loop below runs the missing depths and finds the finished ones.
        rows4, engine = [row for row in table4["rows"] if row["depth"] in depths], table4["engine"]
    elif runner.gpus == 1 and not any(sweep.glob("depth*")):
        search = load_recipe(RECIPES / runner.recipe["search"], "search")
        retrain = load_recipe(RECIPES / runner.recipe["retrain"], "retrain")
        search.update(_as_values(runner.recipe["search_flags"]), seed=runner.seed, wandb_mode="disabled")
        retrain.update(_as_values(runner.recipe["retrain_flags"]), seed=runner.seed, wandb_mode="disabled")
        if runner.device:
            search["device"] = retrain["device"] = runner.device
        table4 = run_depth_sweep(depths, out=sweep, data=data, search=search, retrain=retrain, engine=engine)
        rows4, engine = table4["rows"], table4["engine"]
    else:
        rows4, engine = [], "loop" if runner.gpus == 1 else f"torchrun x {runner.gpus}"
        for depth in depths:
            trial = sweep / f"depth{depth}"
            genotype = runner.search(data, trial, depth)
            result = runner.retrain(data, trial / "retrain", ["--genotype", str(genotype)])
            rows4.append({"depth": depth, "parameters": result["parameters"], "genotype": str(genotype),
                          "fwiou": result["val"]["outcrop"]["fwiou"], "mpa": result["val"]["outcrop"]["mpa"],
                          "retrain_dir": result["run"], "search_dir": str(trial / "search")})
    genotype = next(r["genotype"] for r in rows4 if r["depth"] == 22)
    # Table 5: the ablations, each row's components as the paper defines them.
    rows5 = {}
    for row in ABLATION_ROWS:
        deformable = "--deformable" if row in ("d", "ours") else "--no-deformable"
        rows5[row] = runner.retrain(data, root / f"ablation-{row}",
                                    ["--genotype", genotype, "--ablation", row, deformable])
    # Table 6: GGMNet (Table 5's "ours") beside the baselines.
    rows6 = {"ggmnet": rows5["ours"]}
    for name in BASELINES:
        rows6[name] = runner.retrain(data, root / f"baseline-{name}", ["--model", name])
    # What Tables 5 and 6's trainings cost, however many invocations ran them (GGMNet counted once).
    seconds = {row["run"]: row["seconds"] for row in (*rows5.values(), *rows6.values())}
    return {"table4": rows4, "table4_engine": engine, "table5": rows5, "table6": rows6, "genotype": genotype,
            "tables56_training_hours": sum(seconds.values()) / 3600}


def _as_values(flags: list[str]) -> dict[str, Any]:
    """``["--epochs", "2", ...]`` as recipe values ``{"epochs": "2", ...}`` (checked by the configs)."""
    return {flags[i][2:].replace("-", "_"): flags[i + 1] for i in range(0, len(flags), 2)}


def sizes_and_speed(results: dict[str, Any], size: int, device: str) -> dict[str, Any]:
    """Parameters, GFLOPs at 1024 px and images/s at ``size`` px of Table 6's networks (measured here).

    One row per network; where the splits trained different networks of one name (GGMNet from each split's
    own search), one row per split, labelled with it, so that no split's scores sit beside another's size.
    """
    from ggmnet.models import build_model, load_model, model_size

    out = {}
    splits = list(results)
    for name in results[splits[0]]["table6"]:
        configs: dict[str, tuple[dict[str, Any], list[str]]] = {}
        for split in splits:
            _, checkpoint = load_model(Path(results[split]["table6"][name]["run"]) / "checkpoints" / "best.pt")
            config = checkpoint["model_config"]
            configs.setdefault(json.dumps(config, sort_keys=True, default=str), (config, []))[1].append(split)
        for config, its_splits in configs.values():
            params, gflops = model_size(lambda config=config: build_model(config), 1024, 3)
            rate = inference_rate(lambda config=config: build_model(config), size, device or "cpu")
            label = name if len(configs) == 1 else f"{name} ({', '.join(its_splits)})"
            out[label] = {"network": name, "splits": its_splits, "parameters_m": params, "gflops_1024": gflops,
                          "images_per_s": rate, "timing_px": size}
    return out


def write_tables(results: dict[str, Any], speed: dict[str, Any], out: Path, scale: str) -> None:
    """``out/table4.md`` .. ``table7.md``: each split's figures beside the paper's."""
    from ggmnet.classes import CLASS_NAMES

    splits = list(results)
    head = f"Scale `{scale}`; validation windows of each split; the paper's figures (real data, GPUs) beside.\n\n"

    def mpa_fwiou(split: str, table: str, row: str) -> tuple[str, str]:
        scores = results[split][table][row]["val"]["outcrop"]
        return percent(scores["mpa"]), percent(scores["fwiou"], digits=2)

    def write(name: str, title: str, header: list[str], rows: list[list[Any]], note: str = "") -> None:
        (out / f"{name}.md").write_text(f"# {title}\n\n{head}{note}" + markdown_table(header, rows))

    header = ["depth"] + [f"{s}: {c}" for s in splits for c in ("params (M)", "MPA (%)", "FWIoU (%)")]
    rows = []
    for depth in sorted({r["depth"] for s in splits for r in results[s]["table4"]}):
        cells = []
        for s in splits:
            row = next((r for r in results[s]["table4"] if r["depth"] == depth), None)
            cells += (["--"] * 3 if row is None else
                      [f"{row['parameters'] / 1e6:.2f}", percent(row["mpa"]), percent(row["fwiou"], digits=2)])
        rows.append([depth, *cells, *paper.TABLE4[depth]])
    write("table4", "Table 4: depth of the MRFEM", header + ["paper: params (M)", "paper: MPA (%)", "paper: FWIoU (%)"],
          rows)

    pair = [f"{s}: {c}" for s in splits for c in ("MPA (%)", "FWIoU (%)")]
    rows = [[row, *(v for s in splits for v in mpa_fwiou(s, "table5", row)), *paper.TABLE5[row]]
            for row in ABLATION_ROWS]
    write("table5", "Table 5: ablation of GGMNet's components", ["row", *pair, "paper: MPA (%)", "paper: FWIoU (%)"],
          rows)

    timing = next(iter(speed.values()))["timing_px"]
    rows = []
    for label, measured in speed.items():
        name = measured["network"]
        cells = [v for s in splits for v in (mpa_fwiou(s, "table6", name) if s in measured["splits"] else ("--", "--"))]
        rows.append([label, f"{measured['parameters_m']:.2f}", f"{measured['gflops_1024']:.1f}",
                     f"{measured['images_per_s']:.2f}", *cells, *paper.TABLE6.get(name, ("--",) * 3)])
    write("table6", "Table 6: GGMNet beside the baselines",
          ["network", "params (M)", "GFLOPs", "images/s", *pair, "paper: params (M)", "paper: MPA (%)",
           "paper: FWIoU (%)"], rows,
          note=f"Parameters and GFLOPs at 1024 px (one forward pass); images/s: one {timing} px inference, batch 1, "
               "measured in this run on this machine.\n\n")

    ggmnet = [results[s]["table6"]["ggmnet"]["val"]["outcrop"] for s in splits]
    rows = [[name, *(percent(v) for g in ggmnet for v in (g["iou"][c], g["accuracy"][c])),
             paper.TABLE7_IOU[c] or "--", paper.TABLE7_ACC[c] or "--"] for c, name in enumerate(CLASS_NAMES)]
    rows.append(["all (FWIoU, MPA)", *(v for s in splits for v in mpa_fwiou(s, "table6", "ggmnet")[::-1]),
                 paper.TABLE4[22][2], paper.TABLE4[22][1]])
    write("table7", "Table 7: GGMNet per class",
          ["class", *[f"{s}: {c}" for s in splits for c in ("IoU (%)", "accuracy (%)")], "paper: IoU (%)",
           "paper: accuracy (%)"], rows)


def plot_curves(results: dict[str, Any], path: Path) -> None:
    """The validation FWIoU of Table 6's networks per epoch, one panel per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, (split, result) in zip(axes[0], results.items()):
        for name, run in result["table6"].items():
            points = [(r["epoch"], r["val/fwiou"]) for r in read_metrics(run["run"]) if r.get("val/fwiou") is not None]
            if points:
                ax.plot(*zip(*points), marker="o", label=name)
        ax.set_title(f"{split} split: validation FWIoU")
        ax.set_xlabel("epoch")
        ax.set_ylabel("FWIoU")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_depths(text: str) -> tuple[int, ...]:
    """``"22,16"`` as ``(16, 22)``: the sweep's depths (integers, none twice), each in 16-24, 22 among them."""
    depths = sweep_depths(text)
    if 22 not in depths or any(d < 16 or d > 24 for d in depths):
        raise UserError(f"--depths {text}: expected depths in 16-24 including 22 (Tables 5-7 use the depth-22 "
                        "genotype)")
    return tuple(sorted(depths))


def parse_splits(text: str) -> list[str]:
    """``"random,spatial-block"`` as a list; an unknown or repeated split is a one-line :class:`UserError`."""
    from ggmnet.datasets.prepare import SPLIT_METHODS

    splits = text.split(",")
    if not set(splits) <= set(SPLIT_METHODS) or len(set(splits)) != len(splits):
        raise UserError(f"--splits {text}: expected {' or '.join(SPLIT_METHODS)}, or both comma-separated")
    return splits


def run_paper_tables(scale: str, out: str | Path, *, splits: list[str], depths: tuple[int, ...], seed: int = 0,
                     gpus: int = 1, device: str | None = None, engine: str = "auto", data_random: str | None = None,
                     data_blocks: str | None = None) -> Path:
    """Tables 4-7 at ``scale`` on ``splits``: trains (or finds) every run and writes the tables, ``results.json``
    and ``curves.png`` to ``out`` (returned)."""
    from ggmnet.datasets import ensure_synthetic_default

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    runner = Runner(scale, out, seed, gpus, device)
    data = {"random": data_random, "spatial-block": data_blocks}
    results = {}
    for split in splits:
        folder = data[split] or str(ensure_synthetic_default(split=split))
        results[split] = run_split(runner, split, folder, engine, depths)
    speed = sizes_and_speed(results, SCALES[scale]["timing_size"], device or "cpu")
    write_tables(results, speed, out, scale)
    plot_curves(results, out / "curves.png")
    write_json_atomic(out / "results.json", {
        "scale": scale, "seed": seed, "budget": SCALES[scale], "gpus": gpus, "machine": machine(),
        "hours": (time.perf_counter() - start) / 3600, "results": results, "table6_speed": speed})
    return out


# ------------------------------------------------------------------------------------------------ command line

@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--scale", choices=tuple(SCALES), required=True, help="smoke, cpu or paper")
    parser.add_argument("--out", required=True, help="output folder (runs, tables, results.json)")
    parser.add_argument("--data-random", default=None, help="dataset with the paper's random split "
                                                            "(default: the synthetic default, prepared so)")
    parser.add_argument("--data-blocks", default=None, help="the same with the spatial-block split (default: the "
                                                            "synthetic default, prepared so)")
    parser.add_argument("--splits", default="random,spatial-block", help="splits to run (default both)")
    parser.add_argument("--depths", default=",".join(map(str, paper.DEPTHS)),
                        help="Table 4's MRFEM depths, comma-separated, 22 among them (Tables 5-7 use its genotype; "
                             "default 16,18,20,22,24)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--gpus", type=int, default=1, help="processes per run through torchrun (default 1: "
                                                            "in this process)")
    parser.add_argument("--device", default=None, help="device of every run (default: the recipe's)")
    parser.add_argument("--engine", default="auto", choices=("auto", "nni", "loop"),
                        help="Table 4's sweep engine (default auto: NNI when installed)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = run_paper_tables(args.scale, args.out, splits=parse_splits(args.splits), depths=parse_depths(args.depths),
                           seed=args.seed, gpus=args.gpus, device=args.device, engine=args.engine,
                           data_random=args.data_random, data_blocks=args.data_blocks)
    for name in ("table4", "table5", "table6", "table7"):
        print((out / f"{name}.md").read_text())
    print(f"paper_tables: {out}/table4.md .. table7.md, results.json, curves.png "
          f"({(time.perf_counter() - start) / 60:.1f} min)")
    return 0
