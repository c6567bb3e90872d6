"""Accuracy under the cover of the outcrop prior's settings: how its defaults were chosen, rerunnable.

The outcrop prior (:func:`ggmnet.inference.rules.with_outcrop_prior`) reads a network's probabilities under the cover
together with the outcrop classes around each node. Its three settings (Gaussian length, weight, pseudo-count)
were chosen with this script on synthetic scene seed 2 and then only checked on seeds 0 and 1
(docs/under-the-cover.md). It maps the region once with a checkpoint, then scores every setting of the grid on
the cover nodes of a split's windows (against the true bedrock, so a synthetic dataset is needed), beside the
network alone, the commonest class and the nearest outcrop.

    python experiments/outcrop_prior.py --checkpoint RUN/checkpoints/best.pt --data DATASET [--split test]
        [--lengths 10,20,40,80] [--weights 0.5,1,2] [--pseudo-counts 0.01,0.1,0.5] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

from ggmnet.classes import COVER_INDEX
from ggmnet.errors import UserError, cli_entry
from ggmnet.metrics import markdown_table


def floats(text: str, option: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or any(not np.isfinite(v) or v < 0 for v in values):
        raise UserError(f"{option} {text}: expected comma-separated non-negative numbers, e.g. 10,20,40")
    return values


def grid_scores(checkpoint: Path, data: Path, split: str, settings: list[tuple[float, float, float]]) -> dict:
    """Pixel accuracy under the cover of the ``split`` windows for each (length km, weight, pseudo-count)."""
    from ggmnet.datasets.windows import window_slices
    from ggmnet.inference.evaluate import bedrock_scorer
    from ggmnet.inference.rules import with_outcrop_prior
    from ggmnet.inference.scoring import node_spacing_km, score_windows

    model, scorer = bedrock_scorer(checkpoint, data, split)
    g = scorer.grids
    probability = scorer.probabilities(model)
    rules = score_windows(probability.argmax(axis=0), g["label"], g["lon"], g["lat"], scorer.windows,
                          commonest=scorer.commonest, bedrock=g["bedrock"])
    crops = []
    for window in scorer.windows:
        rows, cols = window_slices(window, g["lon"], g["lat"])
        label = g["label"][rows, cols]
        if (label == COVER_INDEX).any():
            crops.append((probability[:, rows, cols], label, g["bedrock"][rows, cols],
                          node_spacing_km(g["lon"], g["lat"], rows)))
    out = {name: rules[key].compute()["pixel_accuracy"] for key, name in (
        ("under_cover", "network"), ("commonest_class_under_cover", "commonest class"),
        ("nearest_outcrop_baseline", "nearest outcrop"))}
    out["settings"] = []
    for length, weight, pseudo in settings:
        hits = total = 0
        for p, label, bedrock, sampling in crops:
            fused = with_outcrop_prior(p, label, scorer.frequencies, sampling=sampling, length_km=length,
                                       weight=weight, pseudo_count=pseudo)
            cover = label == COVER_INDEX
            hits += int((fused[cover] == bedrock[cover]).sum())
            total += int(cover.sum())
        out["settings"].append({"length_km": length, "weight": weight, "pseudo_count": pseudo,
                                "pixel_accuracy": hits / max(total, 1)})
    return out


@cli_entry
def main(argv: list[str] | None = None) -> int:
    from ggmnet.inference import rules

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a fixed-resolution retrain best.pt")
    parser.add_argument("--data", required=True, help="the prepared dataset it is scored on (with bedrock)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--lengths", default="10,20,40,80", help="Gaussian lengths, km")
    parser.add_argument("--weights", default="0.5,1,2", help="weights of the prior's log")
    parser.add_argument("--pseudo-counts", default="0.01,0.1,0.5", help="pseudo-counts of the regional frequencies")
    parser.add_argument("--out", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    settings = list(itertools.product(floats(args.lengths, "--lengths"), floats(args.weights, "--weights"),
                                      floats(args.pseudo_counts, "--pseudo-counts")))
    result = grid_scores(Path(args.checkpoint), Path(args.data), args.split, settings)
    default = (rules.OUTCROP_PRIOR_LENGTH_KM, rules.OUTCROP_PRIOR_WEIGHT, rules.OUTCROP_PRIOR_PSEUDO_COUNT)
    print(f"Under the cover of the {args.split} windows: network {100 * result['network']:.1f}%, commonest class "
          f"{100 * result['commonest class']:.1f}%, nearest outcrop {100 * result['nearest outcrop']:.1f}%\n")
    print(markdown_table(["length (km)", "weight", "pseudo-count", "pixel accuracy (%)"], [
        [f"{r['length_km']:g}", f"{r['weight']:g}", f"{r['pseudo_count']:g}"
         + (" (default)" if (r["length_km"], r["weight"], r["pseudo_count"]) == default else ""),
         f"{100 * r['pixel_accuracy']:.1f}"] for r in sorted(result["settings"], key=lambda r: -r["pixel_accuracy"])]),
        end="")
    if args.out:
        from ggmnet.engine.runio import git_commit, package_versions, write_json_atomic

        write_json_atomic(args.out, {"checkpoint": args.checkpoint, "data": args.data, "split": args.split,
                                     **result, "versions": package_versions(), "git_commit": git_commit()})
    return 0
