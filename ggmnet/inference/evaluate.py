"""Scores of a retrained network on a dataset split (paper section 5.2, Table 7): ``ggm-evaluate``.

Each score set of :data:`ggmnet.inference.scoring.SCORE_SETS` is a confusion matrix with MPA (Eq. 20),
per-class IoU (Eq. 21), FWIoU (Eq. 22), mIoU and per-class accuracy: the model on the outcrop (the paper's
evaluation, cover pixels ignored) beside the commonest class of the training windows and, with a ``bedrock``
grid, the cover scored against the true bedrock beside the no-gravity rules (:mod:`ggmnet.inference.rules`).

A checkpoint trained on fixed-resolution tiles (``--pixels-per-degree``) maps the whole region and each window
is scored at its grid nodes (:class:`ggmnet.inference.scoring.WindowScorer`); a paper-style checkpoint renders
every window as a tile as in training (:func:`score_model`), without augmentation, with its input channels,
normalisation and tile size unless told otherwise.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ggmnet.classes import COVER_INDEX, NUM_CLASSES, TABLE1, ClassList, class_list
from ggmnet.datasets import ensure_synthetic_default
from ggmnet.datasets.geo import spacing_km
from ggmnet.datasets.prepare import manifest_classes
from ggmnet.datasets.tiles import TileDataset, read_manifest
from ggmnet.datasets.windows import Window
from ggmnet.engine.device import resolve_device
from ggmnet.engine.runio import atomic_path, file_sha256, prepare_out_dir, require_file, write_run_metadata
from ggmnet.errors import UserError
from ggmnet.inference.calibration import fit_temperature, plot_reliability, summary
from ggmnet.inference.ensemble import load_members
from ggmnet.inference.rules import training_class_frequencies
from ggmnet.inference.scoring import FILL_SETS, SCORE_SETS, FillScores, WindowScorer
from ggmnet.metrics import ConfusionMatrix, format_table7, markdown_table, percent
from ggmnet.models import checkpoint_classes, load_model

SPLITS = ("val", "test", "train")


def _km_sampling(window: Window, size: tuple[int, int]) -> tuple[float, float]:
    """Pixel size (rows, columns) in km of ``window`` rendered at ``size`` = (H, W) px (rows north-south)."""
    return spacing_km(np.linspace(window.west, window.east, size[1]), np.linspace(window.south, window.north, size[0]))


@torch.inference_mode()
def score_model(model: nn.Module, dataset: Sequence[dict[str, Any]] | torch.utils.data.Dataset, *,
                device: torch.device | str = "cpu", batch_size: int = 1, num_classes: int = NUM_CLASSES,
                windows: Sequence[Window] | None = None, fallback_class: int = 0,
                frequencies: np.ndarray | None = None, progress: bool = False) -> dict[str, ConfusionMatrix | None]:
    """Confusion matrices of ``model`` (``[B, C, H, W] -> logits [B, K, H, W]``) over a paper-style tile dataset.

    ``dataset`` items are :class:`~ggmnet.datasets.tiles.TileDataset`'s: ``image`` [C, H, W], ``mask`` [H, W]
    (255 = cover), optional ``bedrock`` [H, W] (true class everywhere) and ``window`` (id, looked up in
    ``windows`` so that the nearest-outcrop rule measures km; without them, pixels). ``fallback_class`` is the
    commonest class of the training windows; with ``frequencies`` ``(K,)`` the cover is also scored with the
    outcrop prior.

    Returns one entry per key of :data:`SCORE_SETS`: ``outcrop`` and ``commonest_class`` always, the cover sets of
    :meth:`FillScores.matrices` with ``bedrock`` in the items (else None), the hidden-outcrop ones None.
    """
    by_id = {w.id: w for w in windows} if windows is not None else {}
    model.eval().to(device)
    scores: dict[str, ConfusionMatrix | None] = {key: None for key, _ in SCORE_SETS}
    scores["outcrop"] = ConfusionMatrix(num_classes)
    scores["commonest_class"] = ConfusionMatrix(num_classes)
    fill = None
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for batch in tqdm(loader, desc="tiles", unit="batch", disable=not progress, leave=False):
        probability = model(batch["image"].to(device)).float().softmax(dim=1).cpu()
        pred = probability.argmax(dim=1)
        mask = batch["mask"]
        scores["outcrop"].update(pred, mask)
        scores["commonest_class"].update(torch.full_like(mask, fallback_class), mask)
        if "bedrock" not in batch:
            continue
        fill = fill or FillScores(num_classes, with_prior=frequencies is not None)
        hidden = torch.where(mask == COVER_INDEX, batch["bedrock"], torch.full_like(mask, COVER_INDEX))
        for p, classes, labels, truth, window_id in zip(probability.numpy(), pred.numpy(), mask.numpy(),
                                                        hidden.numpy(), batch["window"].tolist()):
            window = by_id.get(int(window_id))
            fill.add(classes, truth, labels, commonest=fallback_class, probability=p, frequencies=frequencies,
                     sampling=_km_sampling(window, labels.shape) if window is not None else None)
    if fill is not None:
        scores.update(zip(FILL_SETS["cover"], fill.matrices()))
    return scores


def bedrock_scorer(checkpoint: str | Path, data: str | Path, split: str) -> tuple[nn.Module, WindowScorer]:
    """The network of a fixed-resolution checkpoint and a :class:`WindowScorer` of a split of a dataset with a
    bedrock grid (a synthetic one), as the cover studies in ``experiments/`` need; a clear error otherwise."""
    model, state = load_model(checkpoint)
    block = state["data"]
    if block.get("pixels_per_degree") is None:
        raise UserError(f"--checkpoint {checkpoint}: a fixed-resolution checkpoint (--pixels-per-degree) is needed")
    scorer = WindowScorer(data, split, pixels_per_degree=block["pixels_per_degree"], tile_size=block["tile_size"],
                          channels=block["channels"], normalisation=block["normalisation"],
                          geology_prior=bool(block.get("geology_prior")), batch_size=8)
    if not scorer.has_bedrock:
        raise UserError(f"--data {data}: no bedrock grid (a synthetic dataset is needed)")
    return model, scorer


def calibrate(scorer: WindowScorer, predictions: dict[str, np.ndarray], val_scorer: WindowScorer,
              val_predictions: dict[str, np.ndarray]) -> dict[str, Any]:
    """Calibration of a map (:mod:`ggmnet.inference.calibration`): a temperature fitted on the hidden outcrop of the
    validation windows (:attr:`WindowScorer.hidden`, which a real map gives), then, on ``scorer``'s split,
    the reliability (ECE), negative log-likelihood and entropy-error AUROC as the probabilities are and at that
    temperature, on its hidden outcrop and, with a bedrock grid, under its windows' cover (each node once)."""
    label = val_scorer.grids["label"]
    fit_truth = label[val_scorer.hidden].astype(np.int64)
    temperature = fit_temperature(val_predictions["hidden"][:, val_scorer.hidden], fit_truth)
    out: dict[str, Any] = {"temperature": temperature, "fitted_on": "hidden outcrop of the val windows",
                           "fitted_nodes": int(fit_truth.size)}
    label = scorer.grids["label"]
    out["hidden_outcrop"] = summary(predictions["hidden"][:, scorer.hidden], label[scorer.hidden].astype(np.int64),
                                    temperature)
    bedrock = scorer.grids.get("bedrock")
    out["under_cover"] = None
    if bedrock is not None:
        cover = scorer.inside & (label == COVER_INDEX)
        out["under_cover"] = summary(predictions["map"][:, cover], bedrock[cover].astype(np.int64), temperature)
    return out


# --------------------------------------------------------------------------------------------- reports

def confusion_table(matrix: np.ndarray, classes: ClassList = TABLE1) -> str:
    """A Markdown table of a confusion matrix ``[K, K]`` (rows: truth, columns: prediction, pixel counts)."""
    codes = list(classes.codes[:matrix.shape[0]])
    return markdown_table(["truth \\ predicted", *codes], [[code, *map(int, row)] for code, row in zip(codes, matrix)])


def _num(value: float | None) -> str:
    return "--" if value is None else f"{value:.3f}"


def _averaging_lines(results: dict[str, Any]) -> list[str]:
    """The report's line on averaged probabilities (members, test-time augmentation), if any."""
    members = results.get("members") or []
    parts = []
    if len(members) > 1:
        others = ", ".join(f"`{m['checkpoint']}`" for m in members[1:])
        parts.append(f"{len(members)} networks (the checkpoint and {others})")
    if results.get("tta"):
        parts.append("the eight flips and turns of every tile")
    return ["- probabilities: the mean over " + " and ".join(parts)] if parts else []


def format_report(results: dict[str, Any]) -> str:
    """The Markdown report: a summary of the score sets, then Table 7 and the confusion matrix of each."""
    classes = class_list(results.get("classes"))
    lines = [f"# Evaluation on the {results['split']} windows", "",
             f"- checkpoint: `{results['checkpoint']}` (sha256 {results['checkpoint_sha256'][:12]}..., "
             f"epoch {results.get('epoch')})",
             *_averaging_lines(results),
             f"- dataset: `{results['data_dir']}`, {results['windows']} windows, "
             + (f"mapped at {results['pixels_per_degree']:g} px per degree and scored at the grid nodes"
                if results.get("pixels_per_degree") else f"each rendered at {results['tile_size']} px")
             + f", {results['channels']} input", "",
             markdown_table(["scored on", "pixels", "pixel accuracy (%)", "MPA (%)", "mIoU (%)", "FWIoU (%)"],
                            [[title, s["pixels"], *(percent(s[k]) for k in ("pixel_accuracy", "mpa", "miou", "fwiou"))]
                             for key, title in SCORE_SETS if (s := results.get(key)) is not None]
                            ).rstrip()]
    if results.get("under_cover") is None:
        lines += ["", "This dataset has no bedrock grid, so nothing under the cover can be scored."]
    calibration = results.get("calibration")
    if calibration:
        lines += ["", "## Calibration", "",
                  f"Temperature {calibration['temperature']:.3f}, fitted on the {calibration['fitted_nodes']} hidden "
                  "outcrop nodes of the val windows" + (" (the nodes scored below: in-sample)"
                                                        if results["split"] == "val" else "") + ". "
                  "ECE: expected calibration error of the top class (15 bins); AUROC: how well the entropy ranks "
                  "wrong nodes above right ones (0.5 = chance).", ""]
        rows = [[title, c["nodes"], percent(c["raw"]["ece"]), percent(c["calibrated"]["ece"]),
                 f"{c['raw']['nll']:.3f}", f"{c['calibrated']['nll']:.3f}", _num(c["raw"]["entropy_error_auroc"]),
                 _num(c["calibrated"]["entropy_error_auroc"])]
                for title, c in (("hidden outcrop", calibration.get("hidden_outcrop")),
                                 ("under the cover", calibration.get("under_cover"))) if c and c["nodes"]]
        lines.append(markdown_table(["nodes", "count", "ECE raw (%)", "ECE calibrated (%)", "NLL raw", "NLL calibrated",
                                     "AUROC raw", "AUROC calibrated"], rows).rstrip())
    for key, title in SCORE_SETS:
        s = results.get(key)
        if s is None:
            continue
        lines += ["", f"## {title}", "", format_table7(s, classes.names, overall_label=results["split"]).rstrip(),
                  "", confusion_table(np.asarray(s["confusion_matrix"]), classes).rstrip()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- the command

def _run_dir(checkpoint: Path) -> Path:
    """The run folder of a checkpoint: ``RUN`` for ``RUN/checkpoints/best.pt``, else the file's folder."""
    parent = checkpoint.resolve().parent
    return parent.parent if parent.name == "checkpoints" else parent


def _data_dir(ckpt: dict[str, Any]) -> Path:
    """The dataset the checkpoint was trained on: the config's ``data``, or the synthetic default without one."""
    trained_on = (ckpt.get("config") or {}).get("data")
    if trained_on is None:
        return ensure_synthetic_default()
    if not (Path(trained_on) / "manifest.json").is_file():
        raise UserError(f"--data: not given, and the checkpoint's training dataset {trained_on} is not here; "
                        f"pass --data DIR")
    return Path(trained_on)


def evaluate(checkpoint: str | Path, data_dir: str | Path | None = None, split: str = "val", *,
             tile_size: int | None = None, device: str = "auto", out_dir: str | Path | None = None,
             batch_size: int = 1, progress: bool = True, config: dict[str, Any] | None = None,
             members: Sequence[str | Path] = (), tta: bool = False) -> dict[str, Any]:
    """Score a checkpoint on a split and write ``evaluation_<split>.json`` and ``evaluation_<split>.md``.

    Parameters
    ----------
    checkpoint
        A retrain checkpoint (``best.pt``/``last.pt``).
    data_dir
        A prepared dataset (``grids.nc`` + ``manifest.json``); default the checkpoint's training dataset (its
        config's ``data``), or the synthetic default when it was trained on that.
    split
        ``val``, ``test`` or ``train``.
    tile_size
        Pixels per side each window is rendered at; default the checkpoint's.
    device, batch_size, progress
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; tiles per forward pass; show a progress bar.
    out_dir
        Where the reports go; default the checkpoint's run folder (``RUN`` of ``RUN/checkpoints/best.pt``).
    config
        The resolved command-line options, recorded with the results (default: these arguments).
    members, tta
        Checkpoints of the same recipe and dataset (other seeds) whose probabilities are averaged with
        ``checkpoint``'s, and/or the mean over the eight flips and turns of every tile
        (:mod:`ggmnet.inference.ensemble`).

    Returns
    -------
    dict
        What ``evaluation_<split>.json`` holds: one entry per key of :data:`SCORE_SETS` (the scores of
        :meth:`ConfusionMatrix.compute`, fractions in [0, 1], plus ``confusion_matrix``; None where not scored),
        ``calibration``, the checkpoint, dataset, networks read (``members``) and ``tta``, and the run metadata
        of :func:`ggmnet.engine.runio.write_run_metadata`; plus ``report`` (the Markdown) and ``paths``
        (``json``, ``markdown``), which the JSON file does not hold.
    """
    if split not in SPLITS:
        raise UserError(f"--split {split}: expected one of {', '.join(SPLITS)}")
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: expected at least 1")
    checkpoint = require_file(checkpoint, "--checkpoint", "a retrain checkpoint (.pt)")
    dev = resolve_device(device)
    model, ckpt, members = load_members(checkpoint, members, tta=tta)
    data = ckpt["data"]
    data_path = Path(data_dir) if data_dir is not None else _data_dir(ckpt)
    manifest = read_manifest(data_path)
    classes = checkpoint_classes(ckpt, model)
    if list(manifest_classes(manifest).names) != list(classes.names):
        raise UserError(f"--data {data_path}: its classes ({', '.join(manifest_classes(manifest).names)}) are not "
                        f"the checkpoint's ({', '.join(classes.names)})")
    manifest_sha = file_sha256(data_path / "manifest.json")
    if manifest_sha != data.get("manifest_sha256"):
        warnings.warn(f"{data_path}: not the dataset the checkpoint was trained on; its tiles are normalised "
                      f"with the checkpoint's statistics", stacklevel=2)
    has_bedrock = "bedrock" in manifest["variables"]
    tile = int(tile_size or data["tile_size"])
    ppd = data.get("pixels_per_degree")
    if ppd is not None:
        def scorer_of(part: str) -> WindowScorer:
            return WindowScorer(data_path, part, pixels_per_degree=ppd, tile_size=tile, channels=data["channels"],
                                normalisation=data["normalisation"], geology_prior=bool(data.get("geology_prior")),
                                batch_size=batch_size, device=dev)

        scorer = scorer_of(split)
        predictions = scorer.predict(model)
        matrices, _ = scorer.score_predictions(predictions)
        windows = len(scorer.windows)
        if split == "val":
            calibration = calibrate(scorer, predictions, scorer, predictions)
        else:
            val_scorer = scorer_of("val")
            calibration = calibrate(scorer, predictions, val_scorer, val_scorer.predict(model))
    else:
        dataset = TileDataset(data_path, split, tile_size=tile, augment=False, channels=data["channels"],
                              geology_prior=bool(data.get("geology_prior")), return_bedrock=has_bedrock)
        # The input transformation belongs to the model: use the statistics it was trained with.
        dataset.normalisation = data["normalisation"]
        # The commonest class of the training windows (label information) is the rule's and the fallback.
        frequencies = training_class_frequencies(manifest)
        matrices = score_model(model, dataset, device=dev, batch_size=batch_size, num_classes=classes.num_classes,
                               windows=dataset.windows,
                               fallback_class=int(np.argmax(frequencies)), frequencies=frequencies,
                               progress=progress)
        windows = len(dataset)
        calibration = None

    out = prepare_out_dir(out_dir if out_dir is not None else _run_dir(checkpoint))
    results: dict[str, Any] = {
        "format": "ggmnet-evaluation", "version": 1, "split": split,
        "checkpoint": str(checkpoint.resolve()), "checkpoint_sha256": members[0]["sha256"],
        "epoch": ckpt.get("epoch"), "model": ckpt["model_config"].get("name"),
        "members": members, "tta": bool(tta),
        "data_dir": str(data_path.resolve()), "manifest_sha256": manifest_sha,
        "trained_on_this_dataset": manifest_sha == data.get("manifest_sha256"),
        "windows": windows, "tile_size": tile, "pixels_per_degree": ppd, "channels": data["channels"],
        "geology_prior": bool(data.get("geology_prior")), "classes": classes.to_dict(),
    }
    for key, _ in SCORE_SETS:
        cm = matrices.get(key)
        results[key] = None if cm is None else {**cm.compute(), "confusion_matrix": cm.matrix.tolist()}
    results["calibration"] = calibration
    if calibration is not None:
        sets = {f"{where}, {name}": calibration[where][name] for where in ("under_cover", "hidden_outcrop")
                if calibration.get(where) for name in ("raw", "calibrated")}
        plot_reliability(sets, out / f"reliability_{split}.png",
                         f"{split} windows: top-class confidence against accuracy "
                         f"(T = {calibration['temperature']:.2f} fitted on hidden val outcrop)")
    options = config if config is not None else {
        "checkpoint": str(checkpoint), "data": str(data_path), "split": split, "tile_size": tile,
        "device": str(dev), "out": str(out), "batch_size": batch_size}
    json_path = write_run_metadata(out, options, seed=None, name=f"evaluation_{split}.json", extra=results)
    report = format_report(results)
    with atomic_path(out / f"evaluation_{split}.md", suffix=".md") as tmp:
        tmp.write_text(report)
    results["report"] = report
    results["paths"] = {"json": json_path, "markdown": out / f"evaluation_{split}.md"}
    return results
