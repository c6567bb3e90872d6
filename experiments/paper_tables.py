"""The paper's experiments (Tables 4-7) as one command, at smoke, CPU or paper scale, on both splits.

    python experiments/paper_tables.py --scale smoke|cpu|paper --out DIR [--data-random DIR] [--data-blocks DIR]
        [--splits random,spatial-block] [--depths 16,18,20,22,24] [--gpus N] [--seed 0]

For each split (the paper's random split of overlapping windows, and the spatial-block split where no
validation window overlaps a training one; by default the synthetic default scene prepared both ways):

* **Table 4** (MRFEM depth): at depths 16, 18, 20, 22, 24 a search, the export of its genotype and a retrain
  of GGMNet from it (``experiments/nni_depth_sweep.py``: NNI's multi-trial engine when nni is installed, a
  plain loop otherwise; with ``--gpus N`` > 1 the same steps through ``torchrun``);
* **Table 5** (ablations a, b, c, d, ours): GGMNet from the depth-22 genotype with each row's components
  (deformable convolutions in rows d and ours, whatever the recipe says);
* **Table 6** (state of the art): GGMNet (Table 5's "ours" run) beside FC-HarDNet-70, FasterSeg, HRNet-W32 and
  U-Net, with parameters, GFLOPs at 1024 px, inference images/s measured here in this run, MPA and FWIoU;
* **Table 7** (per class): GGMNet's accuracy and IoU per class, the paper's figures beside them.

Every network is trained by ``retrain`` with the scale's recipe and scored on the validation windows by
``ggm-evaluate``'s code (:func:`ggmnet.retrain.study.train_and_score`). Outputs: ``DIR/table4.md`` ...
``DIR/table7.md``, ``DIR/results.json`` (every figure with its run folder, seed, budget and machine) and
``DIR/curves.png`` (the validation FWIoU of Table 6's networks per epoch). Rerunning resumes: finished runs
are found and scored again, interrupted ones continue.

Scales (the recipes are ``experiments/*.yaml``):

* ``smoke``: the CPU recipes cut to a few steps of 64 px tiles (timing at 256 px): checks the whole machinery
  (both splits: about 3 minutes on 2 cores, the synthesis of the scene included); its figures mean nothing;
* ``cpu``: ``search_cpu.yaml`` and ``retrain_cpu.yaml`` as the demo runs them (timing at 1024 px). On 2 cores
  Tables 5-7 (``--depths 22``) took 67 and 76 minutes for the spatial-block and random splits (a retrain about
  3 minutes, the deformable rows d and ours and HRNet-W32 11-14, the U-Net 6-7); each further depth of Table 4
  adds about 4.5 minutes (3 hours for the whole study, both splits);
* ``paper``: ``search_paper.yaml`` and ``retrain_paper.yaml`` (2048 px tiles, 600 epochs) on GPUs; ``--gpus N``
  launches every run through ``torchrun --nproc_per_node N``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ggmnet.errors import UserError, cli_entry

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))

DEPTHS = (16, 18, 20, 22, 24)
ABLATION_ROWS = ("a", "b", "c", "d", "ours")
BASELINES = ("fc_hardnet70", "fasterseg", "hrnet_w32", "unet")
#: Paper figures: Table 5 (MPA, FWIoU), Table 6 (parameters M, MPA, FWIoU), Table 7 (IoU %, accuracy % per class).
PAPER_TABLE5 = {"a": (48.38, 32.3), "b": (52.5, 36.5), "c": (56.2, 38.1), "d": (60.4, 40.3), "ours": (63.1, 42.88)}
PAPER_TABLE6 = {"fc_hardnet70": (4.1, 46.1, 30.1), "fasterseg": (4.7, 51.56, 37.8), "hrnet_w32": (28.5, 57.1, 39.9),
                "ggmnet": (10.3, 63.1, 42.88)}
PAPER_TABLE7_IOU = (None, 22.8, 28.2, 20.3, 22.4, 50.3, 61.1, 15.3, 15.9, 40.4)
PAPER_TABLE7_ACC = (None, 55.8, 62.5, 51.4, 53.6, 82.7, 90.2, 46.8, 48.6, 76.3)

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


def pct(value: float | None, digits: int = 1) -> str:
    return "--" if value is None else f"{100 * value:.{digits}f}"


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
        self.scale, self.out, self.seed, self.gpus, self.device = scale, out, seed, gpus, device
        self.recipe = SCALES[scale]

    def _flags(self, stage: str, data: str, out: Path, extra: list[str]) -> list[str]:
        recipe = self.recipe[stage]
        flags = ["--config", str(REPO / "experiments" / recipe), "--data", data, "--out", str(out),
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
        """Train (or find) and score one network (:func:`~ggmnet.retrain.study.train_and_score`)."""
        from ggmnet.retrain.study import train_and_score

        flags = self._flags("retrain", data, out, extra)
        if self.gpus > 1 and not (out / "checkpoints" / "last.pt").is_file():
            self._torchrun("retrain", flags)
        return train_and_score(flags, splits=("val",))


def inference_rate(build, size: int, device: str, repeats: int = 3) -> float:
    """Images per second of one ``size`` x ``size`` inference (batch 1, eval mode), the median of ``repeats``."""
    import torch

    model = build().eval().to(device)
    x = torch.rand(1, model.in_channels, size, size, device=device)
    times = []
    with torch.inference_mode():
        for k in range(repeats + 1):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(x)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if k:
                times.append(time.perf_counter() - start)
    return 1.0 / statistics.median(times)


def run_split(runner: Runner, split: str, data: str, engine: str,
              depths: tuple[int, ...] = DEPTHS) -> dict[str, Any]:
    """Tables 4-7 of one split (Table 4 at ``depths``, which include 22); returns their rows."""
    from nni_depth_sweep import load_recipe, run_depth_sweep

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
        search = load_recipe(REPO / "experiments" / runner.recipe["search"], "search")
        retrain = load_recipe(REPO / "experiments" / runner.recipe["retrain"], "retrain")
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
    from ggmnet.retrain.models import build_model, load_model, model_size

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
    from ggmnet.classes import CLASS_NAMES

    splits = list(results)
    head = f"Scale `{scale}`; validation windows of each split; the paper's figures (real data, GPUs) beside.\n"
    lines = ["# Table 4: depth of the MRFEM", "", head,
             "| depth | " + " | ".join(f"{s}: params (M) | {s}: MPA (%) | {s}: FWIoU (%)" for s in splits)
             + " | paper: params (M) | paper: MPA (%) | paper: FWIoU (%) |",
             "|---|" + "---|---|---|" * len(splits) + "---|---|---|"]
    paper4 = {16: (4.7, 50.9, 36.8), 18: (6.5, 55.3, 38.33), 20: (8.6, 59.8, 40.31), 22: (10.3, 63.1, 42.88),
              24: (12.4, 61.5, 41.12)}
    depths = sorted({r["depth"] for s in splits for r in results[s]["table4"]})
    for depth in depths:
        cells = []
        for s in splits:
            row = next((r for r in results[s]["table4"] if r["depth"] == depth), None)
            if row is None:
                cells.append("-- | -- | --")
                continue
            cells.append(f"{row['parameters'] / 1e6:.2f} | {pct(row['mpa'])} | {pct(row['fwiou'], 2)}")
        p = paper4[depth]
        lines.append(f"| {depth} | " + " | ".join(cells) + f" | {p[0]} | {p[1]} | {p[2]} |")
    (out / "table4.md").write_text("\n".join(lines) + "\n")

    lines = ["# Table 5: ablation of GGMNet's components", "", head,
             "| row | " + " | ".join(f"{s}: MPA (%) | {s}: FWIoU (%)" for s in splits)
             + " | paper: MPA (%) | paper: FWIoU (%) |", "|---|" + "---|---|" * len(splits) + "---|---|"]
    for row in ABLATION_ROWS:
        cells = [f"{pct(results[s]['table5'][row]['val']['outcrop']['mpa'])} | "
                 f"{pct(results[s]['table5'][row]['val']['outcrop']['fwiou'], 2)}" for s in splits]
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {PAPER_TABLE5[row][0]} | {PAPER_TABLE5[row][1]} |")
    (out / "table5.md").write_text("\n".join(lines) + "\n")

    timing = next(iter(speed.values()))["timing_px"]
    lines = ["# Table 6: GGMNet beside the baselines", "", head,
             f"Parameters and GFLOPs at 1024 px (one forward pass); images/s: one {timing} px inference, batch 1, "
             "measured in this run on this machine.", "",
             "| network | params (M) | GFLOPs | images/s | " + " | ".join(f"{s}: MPA (%) | {s}: FWIoU (%)" for s in splits)
             + " | paper: params (M) | paper: MPA (%) | paper: FWIoU (%) |",
             "|---|---|---|---|" + "---|---|" * len(splits) + "---|---|---|"]
    for label, measured in speed.items():
        name = measured["network"]
        cells = [f"{pct(results[s]['table6'][name]['val']['outcrop']['mpa'])} | "
                 f"{pct(results[s]['table6'][name]['val']['outcrop']['fwiou'], 2)}"
                 if s in measured["splits"] else "-- | --" for s in splits]
        paper = PAPER_TABLE6.get(name, ("--", "--", "--"))
        lines.append(f"| {label} | {measured['parameters_m']:.2f} | {measured['gflops_1024']:.1f} | "
                     f"{measured['images_per_s']:.2f} | " + " | ".join(cells) + f" | {paper[0]} | {paper[1]} | {paper[2]} |")
    (out / "table6.md").write_text("\n".join(lines) + "\n")

    lines = ["# Table 7: GGMNet per class", "", head,
             "| class | " + " | ".join(f"{s}: IoU (%) | {s}: accuracy (%)" for s in splits)
             + " | paper: IoU (%) | paper: accuracy (%) |", "|---|" + "---|---|" * len(splits) + "---|---|"]
    for c, name in enumerate(CLASS_NAMES):
        cells = []
        for s in splits:
            scores = results[s]["table6"]["ggmnet"]["val"]["outcrop"]
            cells.append(f"{pct(scores['iou'][c])} | {pct(scores['accuracy'][c])}")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {PAPER_TABLE7_IOU[c] or '--'} | "
                     f"{PAPER_TABLE7_ACC[c] or '--'} |")
    lines.append("| all (FWIoU, MPA) | " + " | ".join(
        f"{pct(results[s]['table6']['ggmnet']['val']['outcrop']['fwiou'], 2)} | "
        f"{pct(results[s]['table6']['ggmnet']['val']['outcrop']['mpa'])}" for s in splits) + " | 42.88 | 63.1 |")
    (out / "table7.md").write_text("\n".join(lines) + "\n")


def plot_curves(results: dict[str, Any], path: Path) -> None:
    """The validation FWIoU of Table 6's networks per epoch, one panel per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, (split, result) in zip(axes[0], results.items()):
        for name, run in result["table6"].items():
            rows = [json.loads(line) for line in (Path(run["run"]) / "metrics.jsonl").read_text().splitlines()]
            points = [(r["epoch"], r["val/fwiou"]) for r in rows if r.get("val/fwiou") is not None]
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
    from nni_depth_sweep import parse_depths as sweep_depths

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
    parser.add_argument("--depths", default=",".join(map(str, DEPTHS)),
                        help="Table 4's MRFEM depths, comma-separated, 22 among them (Tables 5-7 use its genotype; "
                             "default 16,18,20,22,24)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--gpus", type=int, default=1, help="processes per run through torchrun (default 1: "
                                                            "in this process)")
    parser.add_argument("--device", default=None, help="device of every run (default: the recipe's)")
    parser.add_argument("--engine", default="auto", choices=("auto", "nni", "loop"),
                        help="Table 4's sweep engine (default auto: NNI when installed)")
    args = parser.parse_args(argv)
    depths, splits = parse_depths(args.depths), parse_splits(args.splits)

    from ggmnet.datasets import ensure_synthetic_default
    from ggmnet.engine.runio import write_json_atomic

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    runner = Runner(args.scale, out, args.seed, args.gpus, args.device)
    data = {"random": args.data_random, "spatial-block": args.data_blocks}
    results = {}
    for split in splits:
        folder = data[split] or str(ensure_synthetic_default(split=split))
        results[split] = run_split(runner, split, folder, args.engine, depths)
    speed = sizes_and_speed(results, SCALES[args.scale]["timing_size"], args.device or "cpu")
    write_tables(results, speed, out, args.scale)
    plot_curves(results, out / "curves.png")
    write_json_atomic(out / "results.json", {
        "scale": args.scale, "seed": args.seed, "budget": SCALES[args.scale], "gpus": args.gpus,
        "machine": machine(), "hours": (time.perf_counter() - start) / 3600, "results": results, "table6_speed": speed})
    for name in ("table4", "table5", "table6", "table7"):
        print((out / f"{name}.md").read_text())
    print(f"paper_tables: {out}/table4.md .. table7.md, results.json, curves.png "
          f"({(time.perf_counter() - start) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
