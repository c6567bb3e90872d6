"""The under-the-cover table of docs/under-the-cover.md from the evaluations experiments/outcrop_input.sh wrote.

    python experiments/outcrop_table.py runs/outcrop/s0 runs/outcrop/s1 ...

Per scene folder (``eval-gravity`` and ``eval-outcrop`` holding ``evaluation_test.json`` and
``evaluation_val.json`` of ggm-evaluate): pixel accuracy under the test windows' cover of GGMNet from gravity,
with the outcrop prior, reading the outcrop, and reading it with the outcrop prior, beside the commonest class
and the nearest outcrop; the same on the val windows' hidden outcrop; and the outcrop-reading network's
calibration under the test cover. Where other training seeds were evaluated too (``SEED=N bash
experiments/outcrop_input.sh``: ``eval-<kind>-seedN``), each cell is the mean over the seeds with every seed's
value in brackets.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ggmnet.metrics import markdown_table


def _load(scene: Path, kind: str, split: str, suffix: str = "") -> dict:
    path = scene / f"eval-{kind}{suffix}" / f"evaluation_{split}.json"
    if not path.is_file():
        raise SystemExit(f"{path}: no such file (run experiments/outcrop_input.sh first)")
    return json.loads(path.read_text())


def _acc(results: dict, key: str) -> float | None:
    return (results.get(key) or {}).get("pixel_accuracy")


def seed_suffixes(scene: Path) -> list[str]:
    """The training seeds evaluated in ``scene``: ``""`` (seed 0) and each ``-seedN`` whose gravity and outcrop
    evaluations are both there."""
    found = sorted(p.name.removeprefix("eval-outcrop") for p in scene.glob("eval-outcrop-seed*"))
    return ["", *(s for s in found if (scene / f"eval-gravity{s}").is_dir())]


def _cell(values: list[float | None], fmt=lambda v: f"{100 * v:.1f}") -> str:
    """The mean of one figure over the seeds, and each seed's value in brackets where they differ."""
    if any(v is None for v in values):
        return "--"
    mean = fmt(sum(values) / len(values))
    return mean if len(set(values)) == 1 else f"{mean} ({', '.join(fmt(v) for v in values)})"


def row(scene: Path) -> list[str]:
    """One scene's figures as table cells: means over the training seeds evaluated (:func:`seed_suffixes`)."""
    synth = json.loads((scene / "raw" / "synth.json").read_text())["config"] if (scene / "raw").is_dir() else {}
    name = f"seed {synth.get('seed', '?')}" + (f", units x{synth['unit_scale']:g}"
                                                if synth.get("unit_scale", 1.0) != 1.0 else "")
    figures: dict[str, list] = {}
    for suffix in seed_suffixes(scene):
        gravity, outcrop = _load(scene, "gravity", "test", suffix), _load(scene, "outcrop", "test", suffix)
        g_val, o_val = _load(scene, "gravity", "val", suffix), _load(scene, "outcrop", "val", suffix)
        cal = (outcrop.get("calibration") or {}).get("under_cover") or {}
        fused, nearest, prior = (_acc(outcrop, "outcrop_prior_under_cover"), _acc(outcrop, "nearest_outcrop_baseline"),
                                 _acc(gravity, "outcrop_prior_under_cover"))
        seed = {"gravity": _acc(gravity, "under_cover"), "prior": prior, "reading": _acc(outcrop, "under_cover"),
                "fused": fused, "commonest": _acc(outcrop, "commonest_class_under_cover"), "nearest": nearest,
                "over_nearest": None if None in (fused, nearest) else fused - nearest,
                "over_prior": None if None in (fused, prior) else fused - prior,
                "hidden": _acc(o_val, "hidden_outcrop"), "hidden_fused": _acc(o_val, "outcrop_prior_hidden"),
                "hidden_prior": _acc(g_val, "outcrop_prior_hidden"), "hidden_nearest": _acc(o_val, "nearest_outcrop_hidden"),
                "ece_raw": (cal.get("raw") or {}).get("ece"), "ece_cal": (cal.get("calibrated") or {}).get("ece"),
                "auroc": (cal.get("calibrated") or {}).get("entropy_error_auroc")}
        for key, value in seed.items():
            figures.setdefault(key, []).append(value)

    def signed(v: float) -> str:
        return f"{100 * v:+.1f}"

    return [name, *(_cell(figures[k]) for k in ("gravity", "prior", "reading", "fused", "commonest", "nearest")),
            f"{_cell(figures['over_nearest'], signed)} / {_cell(figures['over_prior'], signed)}",
            *(_cell(figures[k]) for k in ("hidden", "hidden_fused", "hidden_prior", "hidden_nearest")),
            f"{_cell(figures['ece_raw'])} -> {_cell(figures['ece_cal'])}", _cell(figures["auroc"], lambda v: f"{v:.2f}")]


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
