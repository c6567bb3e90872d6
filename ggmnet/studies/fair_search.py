"""Does the search pay? The searched genotype against random ones of the same cost, and against a null search.

On each synthetic scene (``ggm-data synth --seed S``, spatial-block split, so that no validation window overlaps a
training one):

1. **The search**: ``nas-search`` with a search recipe, exported (the search's choice, ``best.pt``).
2. **Random genotypes of the same space and cost**: ``count`` genotypes drawn from the search space's prior
   (:meth:`Supernet.sample_genotype`: every choice of every cell uniform, every placement of a branch's
   downsampling layers equally likely, the branches a tree as a searched genotype's are) whose MRFEM costs
   within ``tolerance`` of the searched one's (:func:`~ggmnet.search_space.supernet.genotype_cost`,
   multiply-accumulates with shared cells counted once), rejection-sampled.
3. **A null search**: the same search on the scene with its geological map turned by 180 degrees (a map with
   the statistics of geology that the gravity says nothing about), retrained on the true map: what a search
   finds when its signal is noise.
4. Each genotype retrained with a retrain recipe and ``train_seeds`` training seeds (``retrain`` through
   :func:`ggmnet.studies.trial.train_and_score`; finished runs are found again, interrupted ones resume), scored
   on the validation windows (FWIoU, MPA).
5. **Rank agreement**: the supernet of the search (``best.pt``) scores ``kendall`` of the genotypes with its
   inherited weights (BatchNorm statistics recomputed on training tiles, then the validation windows), and
   Kendall's tau relates that ranking to the genotypes' retrained scores: whether the proxy the search
   selects by ranks architectures as training them does.

The test the search must pass: its mean validation FWIoU over the training seeds above the mean of the random
genotypes' means by at least twice their standard deviation, and above the null search's (with, seed by seed,
the p-value of a one-sided Welch test of that lead).

One search is one draw of the search's own randomness. ``search_seeds`` adds searches and null searches with
other seeds (genotypes ``searched-sN`` and ``null-sN``, retrained like the others), and :func:`summarise` then
sets the searched genotypes against the null ones and the random mean over search seeds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ggmnet.engine.runio import write_json_atomic
from ggmnet.metrics import markdown_table
from ggmnet.search_space.genotype import Genotype
from ggmnet.studies import RECIPES


@dataclass
class FairSearch:
    """The settings of one scene's fair test (module docstring)."""

    scene_seed: int
    out: Path
    search_config: str = str(RECIPES / "search_cpu.yaml")
    retrain_config: str = str(RECIPES / "retrain_cpu.yaml")
    train_seeds: Sequence[int] = (0, 1)
    count: int = 10
    tolerance: float = 0.05
    kendall: int = 8
    search_flags: Sequence[str] = field(default_factory=list)
    #: more search seeds than the first training seed: a search and a null search each (module docstring)
    search_seeds: Sequence[int] = ()

    def __post_init__(self) -> None:
        self.out = Path(self.out)


# --------------------------------------------------------------------------------------------- scenes

def make_scene(seed: int, out: Path, *, null: bool = False) -> Path:
    """The prepared spatial-block dataset of scene ``seed`` under ``out`` (made once); with ``null`` its
    geological map (labels and bedrock) turned by 180 degrees against the gravity."""
    from ggmnet.datasets import cli as data_cli

    raw = out / f"scene{seed}" / "raw"
    if not (raw / "bouguer.nc").is_file():
        data_cli.main(["synth", "--out", str(raw), "--seed", str(seed)])
    labels, bedrock = raw / "labels.nc", raw / "bedrock.nc"
    if null:
        labels, bedrock = (_turned(path, out / f"scene{seed}" / "null-raw" / path.name) for path in (labels, bedrock))
    data = out / f"scene{seed}" / ("null-spatial-block" if null else "spatial-block")
    if not (data / "manifest.json").is_file():
        data_cli.main(["prepare", "--bouguer", str(raw / "bouguer.nc"), "--labels", str(labels), "--bedrock",
                       str(bedrock), "--out", str(data), "--split", "spatial-block", "--seed", str(seed)])
    return data


def _turned(path: Path, out: Path) -> Path:
    """``path``'s label grid turned by 180 degrees (both axes reversed), written to ``out`` once."""
    from ggmnet.datasets.geo import GeoGrid
    from ggmnet.datasets.labels import read_label_grid, write_label_grid

    if not out.is_file():
        grid = read_label_grid(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_label_grid(out, GeoGrid(grid.lon, grid.lat, grid.values[::-1, ::-1].copy(), name=grid.name, units="",
                                      registration=grid.registration), variable=grid.name)
    return out


# --------------------------------------------------------------------------------------------- stages

def search(data: Path, out: Path, config: str, seed: int, flags: Sequence[str] = ()) -> Genotype:
    """Run (or resume, or find) a search on ``data`` and export its choice to ``out/genotype.json``."""
    from ggmnet.search.cli import build_search_parser
    from ggmnet.search.export import export_genotype
    from ggmnet.search.search import SearchConfig, run_search

    run = out / "search"
    genotype = out / "genotype.json"
    if not genotype.is_file():
        argv = ["--config", config, "--data", str(data), "--out", str(run), "--seed", str(seed),
                "--wandb-mode", "disabled", *flags]
        if (run / "checkpoints" / "last.pt").is_file():
            argv.append("--resume")
        run_search(SearchConfig.from_argv(build_search_parser(), argv))
        export_genotype(genotype, run=run)
    return Genotype.load(genotype)


def matched_random_genotypes(searched: Genotype, count: int, *, tolerance: float, seed: int = 0,
                             max_draws: int = 200_000) -> list[Genotype]:
    """``count`` genotypes from the prior of ``searched``'s search space (depth, widths, channels) whose MRFEM
    costs within ``tolerance`` of ``searched``'s, drawn from a seeded generator (rejection sampling)."""
    from ggmnet.search_space.supernet import Supernet, genotype_cost

    space = Supernet(searched.depth, num_classes=searched.num_classes, in_channels=searched.in_channels,
                     stem_channels=searched.stem_channels, unit_channels=searched.unit_channels)
    target = genotype_cost(searched)
    rng = np.random.default_rng(seed)
    found = []
    for _ in range(max_draws):
        genotype = space.sample_genotype(rng)
        if abs(genotype_cost(genotype) / target - 1.0) <= tolerance:
            found.append(genotype)
            if len(found) == count:
                return found
    raise RuntimeError(f"only {len(found)} of {count} random genotypes within {tolerance:.0%} of the searched "
                       f"genotype's cost in {max_draws} draws")


def retrain(genotype: Genotype | str, name: str, data: Path, out: Path, seed: int, config: str) -> dict[str, Any]:
    """Train and score ``genotype``, or the registered model of that name (a baseline), in ``out/runs/NAME-seedS``
    (``retrain`` with ``config``, training seed ``seed``)."""
    from ggmnet.studies.trial import train_and_score

    if isinstance(genotype, str):
        network = ["--model", genotype]
    else:
        path = out / "genotypes" / f"{name}.json"
        if not path.is_file():
            genotype.save(path)
        network = ["--genotype", str(path)]
    result = train_and_score(["--config", config, *network, "--data", str(data), "--seed", str(seed),
                              "--out", str(out / "runs" / f"{name}-seed{seed}"), "--wandb-mode", "disabled"])
    return {"genotype": name, "seed": seed, "fwiou": result["val"]["outcrop"]["fwiou"],
            "mpa": result["val"]["outcrop"]["mpa"], "parameters": result["parameters"], "run": result["run"]}


def supernet_scores(checkpoint: Path, genotypes: Sequence[Genotype], data: Path) -> list[float]:
    """Validation FWIoU of each genotype with the supernet's inherited weights (BatchNorm recomputed)."""
    import torch

    from ggmnet.datasets.tiles import TileDataset
    from ggmnet.inference.scoring import WindowScorer
    from ggmnet.search.export import load_search_checkpoint
    from ggmnet.search.search import batchnorm_tiles, build_supernet, fuse_heads, recalibrate_batchnorm

    state = load_search_checkpoint(checkpoint)
    config = state["config"]
    supernet = build_supernet(state["supernet_config"])
    supernet.load_state_dict(state["supernet"])
    common = {"tile_size": config["tile_size"], "channels": config["channels"], "seed": config["seed"],
              "pixels_per_degree": config["pixels_per_degree"]}
    plain = TileDataset(data, "train", crop_size=config["crop_size"], augment=False, **common)
    batches = batchnorm_tiles(plain, seed=config["seed"] + 1, tiles=16, batch_size=4)
    scorer = WindowScorer(data, "val", pixels_per_degree=config["pixels_per_degree"], tile_size=config["tile_size"],
                          channels=config["channels"], batch_size=config["batch_size"])
    scores = []
    for genotype in genotypes:
        subnet = supernet.subnet(genotype)
        recalibrate_batchnorm(subnet, batches, subnet)

        class Fused(torch.nn.Module):
            def forward(self, x: torch.Tensor, net: torch.nn.Module = subnet) -> torch.Tensor:
                return fuse_heads(net(x), x.shape[-2:])

        fused = Fused().eval()
        subnet.eval()
        with torch.no_grad():
            matrices, _ = scorer.score(fused)
        scores.append(float(matrices["outcrop"].compute()["fwiou"]))
    return scores


# --------------------------------------------------------------------------------------------- the test

def run_scene(plan: FairSearch) -> dict[str, Any]:
    """The fair test on one scene (module docstring); writes ``OUT/fair_search.json`` and returns it."""
    out = plan.out
    data = make_scene(plan.scene_seed, out.parent)
    null_data = make_scene(plan.scene_seed, out.parent, null=True)
    searched = search(data, out / "searched", plan.search_config, plan.train_seeds[0], plan.search_flags)
    null = search(null_data, out / "null", plan.search_config, plan.train_seeds[0], plan.search_flags)
    randoms = matched_random_genotypes(searched, plan.count, tolerance=plan.tolerance, seed=plan.scene_seed)
    candidates = {"searched": searched, "null": null, **{f"random{k + 1}": g for k, g in enumerate(randoms)}}
    more_seeds = [k for k in plan.search_seeds if k != plan.train_seeds[0]]
    for k in more_seeds:
        candidates[f"searched-s{k}"] = search(data, out / f"searched-s{k}", plan.search_config, k, plan.search_flags)
        candidates[f"null-s{k}"] = search(null_data, out / f"null-s{k}", plan.search_config, k, plan.search_flags)
    rows = [retrain(genotype, name, data, out, seed, plan.retrain_config)
            for name, genotype in candidates.items() for seed in plan.train_seeds]
    ranked = ["searched", *[f"random{k + 1}" for k in range(min(plan.kendall, plan.count + 1) - 1)]]
    proxy = supernet_scores(out / "searched" / "search" / "checkpoints" / "best.pt",
                            [candidates[n] for n in ranked], data)
    from ggmnet.search_space.supernet import genotype_cost

    result = summarise(plan.scene_seed, rows, kendall=(ranked, proxy))
    result["cost"] = {name: genotype_cost(g) for name, g in candidates.items()}
    result["settings"] = {"search_config": plan.search_config, "retrain_config": plan.retrain_config,
                          "count": plan.count, "tolerance": plan.tolerance, "search_flags": list(plan.search_flags),
                          "search_seeds": [plan.train_seeds[0], *more_seeds]}
    write_json_atomic(out / "fair_search.json", result)
    return result


def summarise(scene_seed: int, rows: Sequence[dict[str, Any]], *,
              kendall: tuple[Sequence[str], Sequence[float]] | None = None) -> dict[str, Any]:
    """The test's figures from its retrained ``rows`` (genotype, seed, fwiou, mpa): each genotype's mean over
    its seeds, the random genotypes' mean and standard deviation, the searched genotype's margin over them in
    standard deviations and whether it passes; with ``kendall`` (genotype names and the supernet's scores of
    them) Kendall's tau against their retrained means."""
    from scipy.stats import kendalltau, ttest_ind

    names = list(dict.fromkeys(r["genotype"] for r in rows))
    means = {n: float(np.mean([r["fwiou"] for r in rows if r["genotype"] == n])) for n in names}
    mpas = {n: float(np.mean([r["mpa"] for r in rows if r["genotype"] == n])) for n in names}
    random_means = np.array([means[n] for n in names if n.startswith("random")])
    nan = float("nan")
    sd = float(random_means.std(ddof=1)) if random_means.size > 1 else nan
    result = {"scene_seed": scene_seed, "train_seeds": sorted({r["seed"] for r in rows}), "rows": list(rows),
              "mean_fwiou": means, "mean_mpa": mpas,
              "random_mean": float(random_means.mean()) if random_means.size else nan, "random_sd": sd,
              "kendall": None}
    searched = means.get("searched", nan)
    result["margin_in_sd"] = float((searched - result["random_mean"]) / sd) if sd > 0 else nan
    result["beats_random_by_2sd"] = bool(searched >= result["random_mean"] + 2 * sd)
    result["beats_null"] = bool(searched > means.get("null", float("inf")))
    # seed by seed: a one-sided Welch test that the searched genotype's runs score above the null search's
    runs = {n: [r["fwiou"] for r in rows if r["genotype"] == n] for n in ("searched", "null")}
    result["null_p_value"] = (float(ttest_ind(runs["searched"], runs["null"], equal_var=False,
                                              alternative="greater").pvalue)
                              if min(len(v) for v in runs.values()) > 1 else None)
    result["over_search_seeds"] = _over_search_seeds(means, result["random_mean"], sd)
    if kendall is not None:
        ranked, proxy = kendall
        tau = kendalltau(proxy, [means[n] for n in ranked])
        result["kendall"] = {"genotypes": list(ranked), "supernet_fwiou": list(proxy),
                             "retrained_fwiou": [means[n] for n in ranked], "tau": float(tau.statistic),
                             "p_value": float(tau.pvalue)}
    return result


def _search_kind(name: str) -> tuple[str, int] | None:
    """``("searched" | "null", k)`` of a search's genotype name (``searched``: k = -1, the first search seed;
    ``searched-sK``: k = K), None for another genotype."""
    for kind in ("searched", "null"):
        if name == kind:
            return kind, -1
        if name.startswith(f"{kind}-s") and name[len(kind) + 2:].isdigit():
            return kind, int(name[len(kind) + 2:])
    return None


def _over_search_seeds(means: dict[str, float], random_mean: float, sd: float) -> dict[str, Any] | None:
    """With more than one search seed: each seed's searched and null genotypes' means, their means, the
    searched genotypes' lead over the random mean in its standard deviations, and a one-sided Welch test of the
    searched genotypes over the null ones (the search seeds as samples)."""
    from scipy.stats import ttest_ind

    kinds = {n: _search_kind(n) for n in means}
    searched = [means[n] for n, k in kinds.items() if k and k[0] == "searched"]
    null = [means[n] for n, k in kinds.items() if k and k[0] == "null"]
    if len(searched) < 2:
        return None
    mean = float(np.mean(searched))
    return {"searched": searched, "null": null, "searched_mean": mean,
            "null_mean": float(np.mean(null)) if null else None,
            "margin_in_sd": float((mean - random_mean) / sd) if sd > 0 else float("nan"),
            "null_p_value": (float(ttest_ind(searched, null, equal_var=False, alternative="greater").pvalue)
                             if len(null) > 1 else None)}


def finished_rows(out: Path) -> list[dict[str, Any]]:
    """The retrained and scored runs under ``out/runs`` (``NAME-seedS/eval/evaluation_val.json``), as
    :func:`retrain` returns them: what an unfinished test has so far."""
    rows = []
    for path in sorted(Path(out).glob("runs/*-seed*/eval/evaluation_val.json")):
        name, _, seed = path.parent.parent.name.rpartition("-seed")
        scores = json.loads(path.read_text(encoding="utf-8"))["outcrop"]
        rows.append({"genotype": name, "seed": int(seed), "fwiou": scores["fwiou"], "mpa": scores["mpa"],
                     "run": str(path.parent.parent)})

    def place(row: dict[str, Any]) -> tuple[int, int, int]:
        name = row["genotype"]
        kind = _search_kind(name)
        if kind is not None:  # the searches first, by seed, then the null searches
            return (0 if kind[0] == "searched" else 1), kind[1], row["seed"]
        return 2, int(name.removeprefix("random")), row["seed"]

    return sorted(rows, key=place)


def rescored(scene_seed: int, out: Path) -> dict[str, Any]:
    """The test's figures from every finished run under ``out`` (training seeds added after the test too), with
    what ``out/fair_search.json`` stored beside them (costs, settings) and Kendall's tau from the supernet's
    stored scores against the new means; without that file (an unfinished test), the runs so far."""
    path = out / "fair_search.json"
    stored = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    kendall = stored.get("kendall")
    return {**stored, **summarise(scene_seed, finished_rows(out), kendall=(
        kendall["genotypes"], kendall["supernet_fwiou"]) if kendall else None)}


def _pct(value: float | None) -> str:
    """A fraction as a percentage with one decimal, "--" where there is no figure."""
    return "--" if value is None or np.isnan(value) else f"{100 * value:.1f}"


def search_seed_table(results: Sequence[dict[str, Any]]) -> str:
    """Where a scene has more than one search seed: each searched and null genotype's mean validation FWIoU (%,
    mean over training seeds), their means, the searched genotypes' lead over the random mean (its SD) and the
    Welch p-value of searched over null across search seeds; an empty string otherwise."""
    rows = []
    for r in results:
        seeds = r.get("over_search_seeds")
        if not seeds:
            continue
        by = {kind: {} for kind in ("searched", "null")}
        for name, value in r["mean_fwiou"].items():
            kind = _search_kind(name)
            if kind is not None:
                by[kind[0]][kind[1]] = value
        order = sorted(set(by["searched"]) | set(by["null"]))
        label = {k: ("first" if k < 0 else str(k)) for k in order}
        rows.append([r["scene_seed"], ", ".join(f"{label[k]}: {_pct(by['searched'].get(k))}" for k in order),
                     ", ".join(f"{label[k]}: {_pct(by['null'].get(k))}" for k in order),
                     f"{_pct(seeds['searched_mean'])} / {_pct(seeds['null_mean'])}",
                     "--" if np.isnan(seeds["margin_in_sd"]) else f"{seeds['margin_in_sd']:+.1f}",
                     "--" if seeds["null_p_value"] is None else f"{seeds['null_p_value']:.2f}"])
    if not rows:
        return ""
    return markdown_table(["scene", "searched, by search seed", "null search, by search seed",
                           "mean searched / null", "searched mean over random (SD)", "p (searched above null)"],
                          rows).rstrip("\n")


def table(results: Sequence[dict[str, Any]]) -> str:
    """The fair test's Markdown table over scenes (validation FWIoU and MPA in %, mean over training seeds; "--"
    where an unfinished test has no figure yet)."""
    rows = []
    for r in results:
        seeds = ", ".join(_pct(x["fwiou"]) for x in r["rows"] if x["genotype"] == "searched")
        randoms = [v for k, v in r["mean_fwiou"].items() if k.startswith("random")]
        random_mpa = [v for k, v in r["mean_mpa"].items() if k.startswith("random")]
        spread = (f"{_pct(r['random_mean'])} +- {_pct(r['random_sd'])} ({_pct(min(randoms))}-{_pct(max(randoms))}), "
                  f"{len(randoms)}" if randoms else "--")
        kendall = r.get("kendall")
        rows.append([r["scene_seed"], f"{_pct(r['mean_fwiou'].get('searched'))} ({seeds})",
                     _pct(r["mean_mpa"].get("searched")), spread, _pct(np.mean(random_mpa)) if random_mpa else "--",
                     _pct(r["mean_fwiou"].get("null")) + (f" (p {r['null_p_value']:.2f})"
                                                         if r.get("null_p_value") is not None else ""),
                     "--" if np.isnan(r["margin_in_sd"]) else f"{r['margin_in_sd']:+.1f}",
                     f"{kendall['tau']:+.2f} (p {kendall['p_value']:.2f}; {len(kendall['genotypes'])})" if kendall
                     else "--"])
    return markdown_table(["scene", "searched: FWIoU (seeds)", "MPA", "random: FWIoU mean +- SD (range), n", "MPA",
                           "null search: FWIoU (p, searched above it)", "margin over random (SD)",
                           "Kendall tau, supernet vs retrained (genotypes)"], rows).rstrip("\n")
