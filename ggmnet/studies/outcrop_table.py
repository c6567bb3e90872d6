"""The under-the-cover table of docs/under-the-cover.md from the evaluations experiments/outcrop_input.sh wrote.

    python experiments/outcrop_table.py runs/outcrop/s0 runs/outcrop/s1 ...

Per scene folder (``eval-gravity`` and ``eval-outcrop`` holding ``evaluation_test.json`` and
``evaluation_val.json`` of ggm-evaluate): pixel accuracy under the test windows' cover of GGMNet from gravity,
with the outcrop prior, reading the outcrop, and reading it with the outcrop prior, beside the commonest class
and the nearest outcrop; the same on the val windows' hidden outcrop; and the outcrop-reading network's
calibration under the test cover.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ggmnet.metrics import markdown_table, percent


def _load(scene: Path, kind: str, split: str) -> dict:
    path = scene / f"eval-{kind}" / f"evaluation_{split}.json"
    if not path.is_file():
        raise SystemExit(f"{path}: no such file (run experiments/outcrop_input.sh first)")
    return json.loads(path.read_text())


def _acc(results: dict, key: str) -> float | None:
    return (results.get(key) or {}).get("pixel_accuracy")


def row(scene: Path) -> list[str]:
    """One scene's figures as table cells."""
    gravity, outcrop = _load(scene, "gravity", "test"), _load(scene, "outcrop", "test")
    g_val, o_val = _load(scene, "gravity", "val"), _load(scene, "outcrop", "val")
    synth = json.loads((scene / "raw" / "synth.json").read_text())["config"] if (scene / "raw").is_dir() else {}
    name = f"seed {synth.get('seed', '?')}" + (f", units x{synth['unit_scale']:g}"
                                                if synth.get("unit_scale", 1.0) != 1.0 else "")
    reading, fused, nearest, prior = (_acc(outcrop, "under_cover"), _acc(outcrop, "outcrop_prior_under_cover"),
                                      _acc(outcrop, "nearest_outcrop_baseline"), _acc(gravity, "outcrop_prior_under_cover"))
    cal = (outcrop.get("calibration") or {}).get("under_cover") or {}
    fit = cal.get("calibrated") or {}
    margin = ("--" if None in (fused, nearest, prior)
              else f"{100 * (fused - nearest):+.1f} / {100 * (fused - prior):+.1f}")
    auroc = fit.get("entropy_error_auroc")
    return [name, percent(_acc(gravity, "under_cover")), percent(prior), percent(reading), percent(fused),
            percent(_acc(outcrop, "commonest_class_under_cover")), percent(nearest), margin,
            percent(_acc(o_val, "hidden_outcrop")), percent(_acc(o_val, "outcrop_prior_hidden")),
            percent(_acc(g_val, "outcrop_prior_hidden")), percent(_acc(o_val, "nearest_outcrop_hidden")),
            f"{percent((cal.get('raw') or {}).get('ece'))} -> {percent(fit.get('ece'))}",
            "--" if auroc is None else f"{auroc:.2f}"]


def main(argv: list[str] | None = None) -> int:
    scenes = [Path(a) for a in (sys.argv[1:] if argv is None else argv)]
    header = ["scene", "gravity", "gravity + outcrop prior", "reading the outcrop", "reading + prior",
              "commonest class", "nearest outcrop", "reading + prior - nearest / - (gravity + prior)",
              "hidden val outcrop: reading", "reading + prior", "gravity + prior", "nearest",
              "ECE raw -> calibrated (reading)", "entropy AUROC"]
    print(markdown_table(header, [row(scene) for scene in scenes]), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
