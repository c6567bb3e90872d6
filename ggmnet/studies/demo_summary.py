"""The demo's summary (``experiments/quickstart.sh``'s last step): the figures a new user reads first.

    python -m ggmnet.studies.demo_summary OUT START_SECONDS
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def auroc(scores: dict[str, Any]) -> str:
    value = scores.get("entropy_error_auroc")
    return "n/a" if value is None else f"{value:.2f}"


def margins(scores: dict[str, Any], rules: Sequence[float]) -> list[str]:
    """``scores``' pixel accuracy minus each rule's, in signed points: ["+5.6", "+2.6"]."""
    return [f"{100 * (scores['pixel_accuracy'] - rule):+.1f}" for rule in rules]


def summary(out: Path, start: float, say: Callable[[str], Any] = print) -> None:
    """Print the demo's figures from the evaluations under ``out``; a step that did not run is left out."""
    def load(folder: str, split: str) -> dict[str, Any] | None:
        path = out / folder / f"evaluation_{split}.json"
        return json.loads(path.read_text()) if path.exists() else None

    paper, blocks, test = load("eval-random", "val"), load("eval-spatial-block", "val"), load("eval-spatial-block", "test")
    if paper:
        o, c = paper["outcrop"], paper["commonest_class"]
        say(f"paper's random split, val outcrop:   MPA {pct(o['mpa'])}  FWIoU {pct(o['fwiou'])}  pixel acc "
            f"{pct(o['pixel_accuracy'])}   (commonest class: FWIoU {pct(c['fwiou'])}; its val windows overlap "
            "training windows)")
    if blocks:
        o, c = blocks["outcrop"], blocks["commonest_class"]
        ratio = o["fwiou"] / c["fwiou"] if c["fwiou"] else float("nan")
        say(f"spatial-block split, val outcrop:    MPA {pct(o['mpa'])}  FWIoU {pct(o['fwiou'])}  pixel acc "
            f"{pct(o['pixel_accuracy'])}   (commonest class: FWIoU {pct(c['fwiou'])}, {ratio:.1f}x less)")
    outcrop, rules = load("eval-outcrop", "test"), None
    if test and test.get("under_cover"):
        u, c, n = test["under_cover"], test["commonest_class_under_cover"], test["nearest_outcrop_baseline"]
        f = test.get("outcrop_prior_under_cover") or {}
        o = (outcrop or {}).get("under_cover") or {}
        of = (outcrop or {}).get("outcrop_prior_under_cover") or {}
        say(f"under the cover, test windows:       pixel acc {pct(u['pixel_accuracy'])} from gravity, "
            f"{pct(f.get('pixel_accuracy'))} with the outcrop prior, {pct(o.get('pixel_accuracy'))} reading the "
            f"outcrop, {pct(of.get('pixel_accuracy'))} reading it with the prior   (commonest class "
            f"{pct(c['pixel_accuracy'])}, nearest outcrop {pct(n['pixel_accuracy'])})")
        rules = (n["pixel_accuracy"], f["pixel_accuracy"]) if f else None  # the two rules it must pass
        if of and rules:
            nearest, prior = margins(of, rules)
            say(f"  reading it with the prior passes the nearest outcrop by {nearest} points and gravity with the "
                f"prior by {prior}")
    if outcrop and outcrop.get("calibration") and outcrop["calibration"].get("under_cover"):
        cal = outcrop["calibration"]
        raw, fit = cal["under_cover"]["raw"], cal["under_cover"]["calibrated"]
        say(f"  its probabilities under the cover: ECE {pct(raw['ece'])}, {pct(fit['ece'])} at temperature "
            f"{cal['temperature']:.2f} (fitted on hidden val outcrop); entropy ranks its errors with AUROC "
            + auroc(fit))
    averaged = load("eval-outcrop-averaged", "test")
    if averaged and rules and averaged.get("calibration", {}).get("under_cover"):
        # the raw probabilities: the temperature fitted on hidden outcrop does not carry to the cover (docs)
        raw = averaged["calibration"]["under_cover"]["raw"]
        o, of = averaged["under_cover"], averaged["outcrop_prior_under_cover"]
        seeds, views = len(averaged.get("members") or [None]), 8 if averaged.get("tta") else 1
        say(f"  averaged over {seeds} seeds x {views} views: {pct(o['pixel_accuracy'])} reading the outcrop, "
            f"{pct(of['pixel_accuracy'])} with the prior ({', '.join(margins(of, rules))}); ECE {pct(raw['ece'])}, "
            f"entropy AUROC {auroc(raw)}")
    depth = out / "eval-spatial-block" / "cover_depth.json"
    if depth.exists():
        rows = json.loads(depth.read_text())["rows"]
        say("  by cover thickness (gravity, with prior; commonest, nearest): " + "; ".join(
            f"{r['bin']} {pct(r['under_cover'])}, {pct(r.get('outcrop_prior_under_cover'))} "
            f"({pct(r['commonest_class_under_cover'])}, {pct(r['nearest_outcrop_baseline'])})" for r in rows))
    say(f"genotype: {out / 'genotype.json'}")
    say(f"map:      {out / 'junggar' / 'prediction.png'}")
    say(f"netCDF:   {out / 'junggar' / 'prediction.nc'}")
    say(f"overview: {out / 'overview.png'}")
    say(f"elapsed:  {(time.time() - start) / 60:.1f} min")


def main(argv: Sequence[str] | None = None) -> int:
    out, start = (sys.argv[1:] if argv is None else argv)
    summary(Path(out), float(start))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
