"""The under-the-cover table of docs/under-the-cover.md from the evaluations experiments/outcrop_input.sh wrote.

    python experiments/outcrop_table.py runs/outcrop/s0 runs/outcrop/s1 ...
    python experiments/outcrop_table.py --reader outcrop-bedrock runs/outcrop/s0 ...

Per scene folder (``eval-gravity`` and ``eval-outcrop`` holding ``evaluation_test.json`` and
``evaluation_val.json`` of ggm-evaluate): pixel accuracy under the test windows' cover of GGMNet from gravity,
with the outcrop prior, reading the outcrop, and reading it with the outcrop prior, beside the commonest class
and the nearest outcrop; the same on the val windows' hidden outcrop; and the outcrop-reading network's
calibration under the test cover. ``--reader KIND`` reads another outcrop reader's evaluations
(``eval-KIND``, e.g. ``outcrop-bedrock``: retrained with ``--bedrock-targets``) in place of ``eval-outcrop``,
beside the same gravity network. Where other training seeds were evaluated too (``SEED=N bash
experiments/outcrop_input.sh``: ``eval-<kind>-seedN``), each cell is the mean over the seeds with every seed's
value in brackets.

Where the outcrop reader was also evaluated with averaged probabilities (``eval-outcrop-tta`` and
``eval-outcrop-tta-seedN``: each seed over the eight flips and turns of every tile, averaged over the seeds in
the table; ``eval-outcrop-members``: seeds 0 and 1; ``eval-outcrop-averaged``: both,
which ``SEED=1 bash experiments/outcrop_input.sh`` writes), a second table sets them beside one network (the
mean over the seeds): pixel accuracy under the test cover, with the prior, and the calibration there.
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


def _calibration(results: dict, which: str, score: str) -> float | None:
    """``score`` of the ``which`` (``raw`` or ``calibrated``) probabilities under the test cover."""
    return (((results.get("calibration") or {}).get("under_cover") or {}).get(which) or {}).get(score)


def seed_suffixes(scene: Path, reader: str = "outcrop") -> list[str]:
    """The training seeds evaluated in ``scene``: ``""`` (seed 0) and each ``-seedN`` whose gravity and
    ``reader`` evaluations are both there."""
    found = sorted(p.name.removeprefix(f"eval-{reader}") for p in scene.glob(f"eval-{reader}-seed*"))
    return ["", *(s for s in found if (scene / f"eval-gravity{s}").is_dir())]


def _cell(values: list[float | None], fmt=lambda v: f"{100 * v:.1f}") -> str:
    """The mean of one figure over the seeds, and each seed's value in brackets where they differ."""
    if any(v is None for v in values):
        return "--"
    mean = fmt(sum(values) / len(values))
    return mean if len(set(values)) == 1 else f"{mean} ({', '.join(fmt(v) for v in values)})"


def scene_name(scene: Path) -> str:
    """``seed S`` (and ``units xF``) of the synthetic scene in ``scene/raw``."""
    synth = json.loads((scene / "raw" / "synth.json").read_text())["config"] if (scene / "raw").is_dir() else {}
    return f"seed {synth.get('seed', '?')}" + (f", units x{synth['unit_scale']:g}"
                                               if synth.get("unit_scale", 1.0) != 1.0 else "")


def row(scene: Path, reader: str = "outcrop") -> list[str]:
    """One scene's figures as table cells: means over the training seeds evaluated (:func:`seed_suffixes`), the
    outcrop reader's from ``eval-<reader>``."""
    name = scene_name(scene)
    figures: dict[str, list] = {}
    for suffix in seed_suffixes(scene, reader):
        gravity, outcrop = _load(scene, "gravity", "test", suffix), _load(scene, reader, "test", suffix)
        g_val, o_val = _load(scene, "gravity", "val", suffix), _load(scene, reader, "val", suffix)
        fused, nearest, prior = (_acc(outcrop, "outcrop_prior_under_cover"), _acc(outcrop, "nearest_outcrop_baseline"),
                                 _acc(gravity, "outcrop_prior_under_cover"))
        seed = {"gravity": _acc(gravity, "under_cover"), "prior": prior, "reading": _acc(outcrop, "under_cover"),
                "fused": fused, "commonest": _acc(outcrop, "commonest_class_under_cover"), "nearest": nearest,
                "over_nearest": None if None in (fused, nearest) else fused - nearest,
                "over_prior": None if None in (fused, prior) else fused - prior,
                "hidden": _acc(o_val, "hidden_outcrop"), "hidden_fused": _acc(o_val, "outcrop_prior_hidden"),
                "hidden_prior": _acc(g_val, "outcrop_prior_hidden"), "hidden_nearest": _acc(o_val, "nearest_outcrop_hidden"),
                "ece_raw": _calibration(outcrop, "raw", "ece"), "ece_cal": _calibration(outcrop, "calibrated", "ece"),
                "auroc": _calibration(outcrop, "calibrated", "entropy_error_auroc")}
        for key, value in seed.items():
            figures.setdefault(key, []).append(value)

    def signed(v: float) -> str:
        return f"{100 * v:+.1f}"

    return [name, *(_cell(figures[k]) for k in ("gravity", "prior", "reading", "fused", "commonest", "nearest")),
            f"{_cell(figures['over_nearest'], signed)} / {_cell(figures['over_prior'], signed)}",
            *(_cell(figures[k]) for k in ("hidden", "hidden_fused", "hidden_prior", "hidden_nearest")),
            f"{_cell(figures['ece_raw'])} -> {_cell(figures['ece_cal'])}", _cell(figures["auroc"], lambda v: f"{v:.2f}")]


#: The averaged evaluations of the outcrop reader (:mod:`ggmnet.inference.ensemble`), as ``eval-outcrop-<name>``.
AVERAGED = {"tta": "8 views", "members": "2 seeds", "averaged": "2 seeds x 8 views"}


def averaging_row(scene: Path) -> list[str] | None:
    """One scene's outcrop reader as one network (the mean over the seeds) beside its averaged evaluations, or
    None when ``scene`` has none of them."""
    found = [name for name in AVERAGED if (scene / f"eval-outcrop-{name}").is_dir()]
    if not found:
        return None
    suffixes = seed_suffixes(scene)
    runs = {"one": [_load(scene, "outcrop", "test", suffix) for suffix in suffixes],
            **{name: [_load(scene, f"outcrop-{name}", "test", suffix) for suffix in suffixes
                      if (scene / f"eval-outcrop-{name}{suffix}").is_dir()] for name in found}}

    figures = ((lambda r: _acc(r, "under_cover"), "{:.1f}", 100),
               (lambda r: _acc(r, "outcrop_prior_under_cover"), "{:.1f}", 100),
               (lambda r: _calibration(r, "raw", "ece"), "{:.1f}", 100),
               (lambda r: _calibration(r, "calibrated", "ece"), "{:.1f}", 100),
               (lambda r: _calibration(r, "raw", "entropy_error_auroc"), "{:.2f}", 1))
    cells = []
    for figure, fmt, scale in figures:
        parts = []
        for name in ("one", *AVERAGED):
            values = [figure(r) for r in runs.get(name, [])]
            parts.append("--" if not values or None in values else fmt.format(scale * sum(values) / len(values)))
        cells.append(" / ".join(parts))
    return [scene_name(scene), *cells]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    reader = "outcrop"
    if args[:1] == ["--reader"]:
        if len(args) < 2:
            raise SystemExit("--reader: expected the name of an outcrop reader's evaluations (eval-NAME), e.g. outcrop-bedrock")
        reader, args = args[1], args[2:]
    scenes = [Path(a) for a in args]
    header = ["scene", "gravity", "gravity + outcrop prior", "reading the outcrop", "reading + prior",
              "commonest class", "nearest outcrop", "reading + prior - nearest / - (gravity + prior)",
              "hidden val outcrop: reading", "reading + prior", "gravity + prior", "nearest",
              "ECE raw -> calibrated (reading)", "entropy AUROC"]
    print(markdown_table(header, [row(scene, reader) for scene in scenes]), end="")
    averaged = [r for r in map(averaging_row, scenes) if r is not None] if reader == "outcrop" else []
    if averaged:
        order = " / ".join(["one network", *AVERAGED.values()])
        print()
        print(markdown_table(["scene", f"reading the outcrop ({order})", "reading + prior", "ECE raw",
                              "ECE at the hidden-outcrop temperature", "entropy AUROC (raw)"], averaged), end="")
    return 0
