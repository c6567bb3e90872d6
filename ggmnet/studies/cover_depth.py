"""Accuracy under the cover by cover thickness: how deep the bedrock can be read from gravity.

A synthetic scene knows the cover's thickness at every node (``ggm-data synth`` draws it; the scene is
regenerated here from the ``synth.json`` of its folder, deterministically). This scores a checkpoint's map on
a split's windows, as ``ggm-evaluate`` does under the cover, but per thickness bin, beside the commonest-class
and nearest-outcrop rules on the same nodes; the bins' nodes add up to ``ggm-evaluate``'s under-cover figure.

    python experiments/cover_depth.py --checkpoint runs/quickstart/retrain-spatial-block/checkpoints/best.pt \\
        --data runs/quickstart/data-spatial-block --scene runs/quickstart/raw [--split test] [--bins 0,0.3,1,2]
        [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ggmnet.classes import COVER_INDEX
from ggmnet.datasets.windows import Window
from ggmnet.errors import UserError, cli_entry
from ggmnet.metrics import ConfusionMatrix, markdown_table
from ggmnet.metrics import percent as pct

RULES = (("under_cover", "model"), ("outcrop_prior_under_cover", "model with outcrop prior"),
         ("commonest_class_under_cover", "commonest class"), ("nearest_outcrop_baseline", "nearest outcrop"))


def scores_by_thickness(classes: np.ndarray, label: np.ndarray, bedrock: np.ndarray, thickness_km: np.ndarray,
                        lon: np.ndarray, lat: np.ndarray, windows: Sequence[Window], *, commonest: int,
                        bins_km: Sequence[float], probability: np.ndarray | None = None,
                        frequencies: np.ndarray | None = None) -> list[dict[str, ConfusionMatrix | None]]:
    """Per thickness bin ``[bins_km[i], bins_km[i + 1])`` (the last one open), the under-cover matrices of
    :func:`ggmnet.inference.scoring.score_windows` (model, with the outcrop prior when ``probability`` and
    ``frequencies`` are given, commonest class, nearest outcrop) over the cover nodes whose cover is that
    thick. The nearest-outcrop rule and the prior read each window's outcrop as they do there."""
    from ggmnet.inference.scoring import score_windows

    edges = [*bins_km, np.inf]
    out = []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (thickness_km >= low) & (thickness_km < high)
        matrices = score_windows(classes, label, lon, lat, windows, commonest=commonest,
                                 bedrock=np.where(inside, bedrock, COVER_INDEX).astype(np.uint8),
                                 probability=probability, frequencies=frequencies)
        out.append({key: matrices[key] for key, _ in RULES})
    return out


def scene_thickness(scene_dir: Path, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Cover thickness (km) at the nodes ``lat`` x ``lon`` of the synthetic scene whose ``synth.json`` is in
    ``scene_dir`` (regenerated)."""
    from ggmnet.datasets.synth import SynthConfig, generate_scene

    path = scene_dir / "synth.json"
    if not path.is_file():
        raise UserError(f"--scene {scene_dir}: no synth.json (a folder written by ggm-data synth)")
    scene = generate_scene(SynthConfig.from_dict(json.loads(path.read_text())["config"]))
    ix = np.abs(scene.lon[None, :] - lon[:, None]).argmin(axis=1)
    iy = np.abs(scene.lat[None, :] - lat[:, None]).argmin(axis=1)
    if not (np.allclose(scene.lon[ix], lon, atol=1e-6) and np.allclose(scene.lat[iy], lat, atol=1e-6)):
        raise UserError(f"--scene {scene_dir}: its grid does not hold the dataset's nodes (another scene?)")
    return scene.cover_thickness_km[np.ix_(iy, ix)].astype(np.float64)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a retrain best.pt")
    parser.add_argument("--data", required=True, help="the prepared dataset it is scored on (with bedrock)")
    parser.add_argument("--scene", required=True, help="the synthetic scene's folder (ggm-data synth output)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--bins", default="0,0.3,1,2", help="lower edges of the thickness bins, km")
    parser.add_argument("--out", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    try:
        bins = [float(v) for v in args.bins.split(",")]
    except ValueError:
        bins = []
    if not bins or bins != sorted(bins) or bins[0] != 0:
        raise UserError(f"--bins {args.bins}: expected ascending km from 0, e.g. 0,0.3,1,2")
    rows = run(Path(args.checkpoint), Path(args.data), Path(args.scene), args.split, bins)
    print(f"Under the cover of the {args.split} windows, by cover thickness: pixel accuracy (nodes)\n")
    print(markdown_table(["cover thickness", "nodes", *(name for _, name in RULES)],
                         [[row["bin"], row["nodes"], *(pct(row.get(key)) for key, _ in RULES)] for row in rows]), end="")
    if args.out:
        from ggmnet.engine.runio import git_commit, package_versions, write_json_atomic

        write_json_atomic(args.out, {"checkpoint": args.checkpoint, "data": args.data, "scene": args.scene,
                                     "split": args.split, "bins_km": bins, "rows": rows,
                                     "versions": package_versions(), "git_commit": git_commit()})
    return 0


def run(checkpoint: Path, data: Path, scene: Path, split: str, bins: list[float]) -> list[dict]:
    """The table's rows: per thickness bin its label, its cover nodes and each rule's pixel accuracy there."""
    from ggmnet.inference.evaluate import bedrock_scorer

    model, scorer = bedrock_scorer(checkpoint, data, split)
    grids = scorer.grids
    probability = scorer.probabilities(model)
    thickness = scene_thickness(scene, grids["lon"], grids["lat"])
    per_bin = scores_by_thickness(probability.argmax(axis=0), grids["label"], grids["bedrock"], thickness,
                                  grids["lon"], grids["lat"], scorer.windows, commonest=scorer.commonest,
                                  bins_km=bins, probability=probability, frequencies=scorer.frequencies)
    return [{"bin": f"{low:g}-{high:g} km" if high is not None else f">= {low:g} km",
             "nodes": int(matrices["under_cover"].matrix.sum()),
             **{key: matrices[key].compute()["pixel_accuracy"] for key, _ in RULES if matrices[key] is not None}}
            for low, high, matrices in zip(bins, [*bins[1:], None], per_bin)]
