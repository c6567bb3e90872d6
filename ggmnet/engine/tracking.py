"""Experiment tracking: Weights & Biases when it can be had without waiting, local files always.

Everything logged is also written under the run folder, so a run can be read without W&B:

* ``metrics.jsonl``: one JSON object per :meth:`Tracker.log` call, ``{"step", "time", **metrics}``;
* ``tables/NAME.json``: the latest table of each name, ``{"columns", "rows", "step"}``;
* ``images/NAME_STEP.png`` (``NAME.png`` without a step), and ``NAME_STEP_KEY.png`` for each colourised mask;
* ``summary.json`` and ``artifacts.jsonl``.

W&B runs offline unless credentials exist (``WANDB_API_KEY`` or a ``~/.netrc`` entry for its API host) and
``WANDB_MODE`` does not say otherwise; it never prompts, and a failed start only warns and keeps the local
copies. Offline runs can be uploaded later with ``wandb sync OUT_DIR/wandb/offline-run-*``.
"""

from __future__ import annotations

import json
import math
import netrc
import os
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from ggmnet.classes import TABLE1, ClassList
from ggmnet.engine.runio import atomic_path, write_json_atomic
from ggmnet.errors import one_line

#: W&B modes a Tracker accepts.
MODES = ("online", "offline", "disabled")

#: Seconds W&B may take to start before the Tracker gives up on it.
INIT_TIMEOUT_S = 30.0


def has_wandb_credentials() -> bool:
    """True when ``WANDB_API_KEY`` is set or ``~/.netrc`` has an entry for the W&B API host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_wandb_mode(mode: str | None) -> str:
    """The W&B mode to use: ``mode`` if given, else ``WANDB_MODE``, else online with credentials, else offline.

    An online request without credentials becomes offline (W&B would otherwise prompt for a login).
    """
    if mode is None:
        env = os.environ.get("WANDB_MODE", "").strip().lower()
        mode = {"dryrun": "offline", "run": "online"}.get(env, env) or None
    if mode is None:
        return "online" if has_wandb_credentials() else "offline"
    if mode not in MODES:
        raise ValueError(f"W&B mode must be one of {MODES}, got {mode!r}")
    if mode == "online" and not has_wandb_credentials():
        warnings.warn("W&B online mode asked for without credentials (WANDB_API_KEY or ~/.netrc): "
                      "logging offline", stacklevel=2)
        return "offline"
    return mode


def _plain(value: Any) -> Any:
    """JSON-friendly form of a logged value (tensors and NumPy scalars become numbers or lists)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


#: Heatmaps with at most this many cells have their values written in them (a 10-class confusion matrix does).
ANNOTATED_CELLS = 144


class Tracker:
    """Log scalars, tables, images and artifacts to W&B and to local files under ``out_dir``.

    Parameters
    ----------
    out_dir
        The run folder; local copies go here and W&B's own files under ``out_dir/wandb``.
    project, name, config, job_type
        Passed to ``wandb.init`` (``config`` is the resolved run configuration).
    mode
        ``"online"``, ``"offline"``, ``"disabled"`` or None (see :func:`resolve_wandb_mode`).
    enabled
        False: no W&B at all (the local files are still written).
    is_main
        False on ranks other than 0: every method does nothing.
    resume
        Continue the W&B run recorded in ``out_dir/wandb_run.json`` (a resumed training run).
    """

    def __init__(self, out_dir: str | os.PathLike, *, project: str = "ggmnet", name: str | None = None,
                 config: dict[str, Any] | None = None, job_type: str | None = None, mode: str | None = None,
                 enabled: bool = True, is_main: bool = True, resume: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.is_main = is_main
        self.run: Any = None
        self._wandb: Any = None
        self._metrics_file = None
        self._summary: dict[str, Any] = {}
        self._step = 0
        if not is_main:
            self.mode = "disabled"
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._metrics_file = open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8")
        self.mode = resolve_wandb_mode(mode) if enabled else "disabled"
        if self.mode != "disabled":
            self._start_wandb(project, name, config, job_type, resume)

    def _start_wandb(self, project: str, name: str | None, config: dict[str, Any] | None,
                     job_type: str | None, resume: bool) -> None:
        record = self.out_dir / "wandb_run.json"
        run_id = None
        if resume and record.is_file():
            run_id = json.loads(record.read_text()).get("id")
        try:
            import wandb

            settings = wandb.Settings(init_timeout=INIT_TIMEOUT_S, console="off", silent=True,
                                      x_disable_stats=True, x_save_requirements=False, save_code=False)
            self.run = wandb.init(project=project, name=name, config=_plain(config or {}), job_type=job_type,
                                  dir=str(self.out_dir), mode=self.mode, id=run_id,
                                  resume="allow" if run_id else None, reinit="create_new", settings=settings)
            self._wandb = wandb
            self._step = int(getattr(self.run, "step", 0) or 0)  # a resumed run continues at its last step
        except Exception as err:  # W&B must never stop a run: keep the local copies only.
            warnings.warn(f"W&B could not start ({type(err).__name__}: {one_line(err)}); logging locally only "
                          f"under {self.out_dir}", stacklevel=3)
            self.run = None
            return
        write_json_atomic(record, {"id": self.run.id, "project": project, "mode": self.mode})

    @property
    def active(self) -> bool:
        """True when a W&B run is live (else only the local files are written)."""
        return self.run is not None

    # ------------------------------------------------------------------------------------------- scalars
    def _wandb_log(self, values: dict[str, Any], step: int | None) -> None:
        # W&B drops rows whose step goes back, and a log without a step would advance its own counter:
        # everything is logged at an explicit step, the latest one when the caller gives none.
        if step is not None:
            self._step = int(step)
        if self.run is not None:
            self.run.log(values, step=self._step)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        """Log scalars (``{"train/loss": 0.3, "val/fwiou": 0.41}``) at ``step``.

        Use one step counter for the whole run (the epoch, or the iteration) and never go back: W&B drops
        rows with a smaller step than one already logged (``metrics.jsonl`` keeps them).
        """
        if not self.is_main:
            return
        values = {str(k): _plain(v) for k, v in metrics.items()}
        row = {"step": int(step), "time": round(time.time(), 3), **values}
        self._metrics_file.write(json.dumps(row) + "\n")
        self._metrics_file.flush()
        self._wandb_log(values, step)

    def summary(self, values: dict[str, Any]) -> None:
        """Record final figures (W&B run summary and ``summary.json``, merged with earlier calls)."""
        if not self.is_main:
            return
        plain = {str(k): _plain(v) for k, v in values.items()}
        self._summary.update(plain)
        write_json_atomic(self.out_dir / "summary.json", self._summary)
        if self.run is not None:
            self.run.summary.update(plain)

    # ------------------------------------------------------------------------------------------- tables
    def log_table(self, name: str, columns: Sequence[str], rows: Iterable[Sequence[Any]],
                  step: int | None = None) -> None:
        """Log a table (W&B Table; local ``tables/NAME.json`` holds the latest one)."""
        if not self.is_main:
            return
        rows = [[_plain(v) for v in row] for row in rows]
        columns = [str(c) for c in columns]
        for row in rows:
            if len(row) != len(columns):
                raise ValueError(f"table {name}: row of {len(row)} values for {len(columns)} columns")
        write_json_atomic(self.out_dir / "tables" / f"{_safe_name(name)}.json",
                          {"columns": columns, "rows": rows, "step": step})
        if self.run is not None:
            self._wandb_log({name: self._wandb.Table(columns=columns, data=rows)}, step)

    # ------------------------------------------------------------------------------------------- images
    def _image_path(self, name: str, step: int | None, key: str | None = None) -> Path:
        stem = _safe_name(name) + ("" if step is None else f"_{int(step)}") + ("" if key is None else f"_{key}")
        return self.out_dir / "images" / f"{stem}.png"

    def log_image(self, name: str, image: np.ndarray | str | os.PathLike, step: int | None = None,
                  caption: str | None = None, masks: dict[str, np.ndarray] | None = None,
                  classes: ClassList = TABLE1) -> Path | None:
        """Log a picture, optionally with segmentation masks W&B overlays on it.

        Parameters
        ----------
        image
            ``[H, W, 3]`` uint8 RGB, or the path of an image file.
        masks
            ``{"prediction": labels, "ground_truth": labels}``: integer ``[H, W]`` class indices (255 = cover),
            shown by W&B as toggleable overlays with the class names; saved locally in the classes' colours.
        classes
            The class list of the masks (default Table 1).

        Returns
        -------
        Path or None
            The local PNG (None on ranks other than 0).
        """
        if not self.is_main:
            return None
        from PIL import Image

        if isinstance(image, (str, os.PathLike)):
            array = np.asarray(Image.open(image).convert("RGB"))
        else:
            array = np.asarray(image)
            if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
                raise ValueError(f"image {name}: expected [H, W, 3] uint8, got {array.shape} {array.dtype}")
        path = self._image_path(name, step)
        with atomic_path(path, suffix=".png") as tmp:
            Image.fromarray(array).save(tmp, format="PNG")
        for key, labels in (masks or {}).items():
            with atomic_path(self._image_path(name, step, _safe_name(key)), suffix=".png") as tmp:
                Image.fromarray(classes.colourise(np.asarray(labels))).save(tmp, format="PNG")
        if self.run is not None:
            class_labels = classes.label_names()
            wb_masks = {key: {"mask_data": np.asarray(labels).astype(np.uint8), "class_labels": class_labels}
                        for key, labels in (masks or {}).items()}
            self._wandb_log({name: self._wandb.Image(array, caption=caption, masks=wb_masks or None)}, step)
        return path

    def log_heatmap(self, name: str, matrix: np.ndarray, *, x_labels: Sequence[str], y_labels: Sequence[str],
                    step: int | None = None, title: str | None = None) -> Path | None:
        """Draw ``matrix`` ``[len(y_labels), len(x_labels)]`` (e.g. a row-normalised confusion matrix) as a PNG.

        Up to :data:`ANNOTATED_CELLS` cells are annotated with their values (more would be unreadable, and
        drawing a search's layers x choices text costs more than the rest of the picture); the PNG goes to
        ``images/`` and to W&B as an image.
        """
        if not self.is_main:
            return None
        values = np.asarray(matrix, dtype=np.float64)
        if values.shape != (len(y_labels), len(x_labels)):
            raise ValueError(f"heatmap {name}: matrix {values.shape} for {len(y_labels)}x{len(x_labels)} labels")
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        size = 1.0 + 0.55 * max(len(x_labels), len(y_labels))
        fig, ax = plt.subplots(figsize=(size + 1.5, size))
        im = ax.imshow(values, cmap="viridis")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ax.set_xticks(range(len(x_labels)), labels=list(x_labels), rotation=45, ha="right")
        ax.set_yticks(range(len(y_labels)), labels=list(y_labels))
        threshold = np.nanmin(values) + 0.5 * (np.nanmax(values) - np.nanmin(values)) if values.size else 0
        for (i, j), v in np.ndenumerate(values if values.size <= ANNOTATED_CELLS else np.zeros((0, 0))):
            ax.text(j, i, f"{v:.2g}", ha="center", va="center", fontsize=7,
                    color="black" if v > threshold else "white")
        ax.set_title(title or name)
        fig.tight_layout()
        path = self._image_path(name, step)
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=120)
        plt.close(fig)
        if self.run is not None:
            self._wandb_log({name: self._wandb.Image(str(path))}, step)
        return path

    # ------------------------------------------------------------------------------------------- artifacts
    def log_artifact(self, path: str | os.PathLike, *, name: str, type: str) -> None:
        """Record a file or folder (a checkpoint, a genotype) as a W&B artifact and in ``artifacts.jsonl``."""
        if not self.is_main:
            return
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"artifact {name}: {path} does not exist")
        with open(self.out_dir / "artifacts.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"name": name, "type": type, "path": str(path.resolve()),
                                 "time": round(time.time(), 3)}) + "\n")
        if self.run is not None:
            artifact = self._wandb.Artifact(_safe_name(name), type=type)
            (artifact.add_dir if path.is_dir() else artifact.add_file)(str(path))
            self.run.log_artifact(artifact)

    # ------------------------------------------------------------------------------------------- lifecycle
    def finish(self) -> None:
        """Close the local files and the W&B run (safe to call twice)."""
        if self._metrics_file is not None:
            self._metrics_file.close()
            self._metrics_file = None
        if self.run is not None:
            run, self.run = self.run, None
            try:
                run.finish()
            except Exception as err:  # the local copies are complete; W&B's failure must not fail the run
                warnings.warn(f"W&B run did not finish cleanly: {err}", stacklevel=2)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()


def read_metrics(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of ``out_dir/metrics.jsonl`` (a truncated last line, from a killed run, is skipped)."""
    rows = []
    for line in (Path(out_dir) / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def plot_curves(out_dir: str | os.PathLike, keys: Sequence[str], out_png: str | os.PathLike) -> Path:
    """Draw training curves from ``metrics.jsonl``: one axis per key, every split on it (the paper's Figure 4).

    A key ``"loss"`` plots every logged series named ``loss`` or ending in ``/loss`` (``train/loss``,
    ``val/loss``) against the step; for a step logged twice (a resumed run) the last value wins.
    """
    rows = read_metrics(out_dir)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(5.0 * len(keys), 3.8), squeeze=False)
    for ax, key in zip(axes[0], keys):
        series: dict[str, dict[int, float]] = {}
        for row in rows:
            for name, value in row.items():
                if (name == key or name.endswith("/" + key)) and isinstance(value, (int, float)):
                    series.setdefault(name, {})[int(row["step"])] = float(value)
        for name in sorted(series):
            steps = sorted(series[name])
            ax.plot(steps, [series[name][s] for s in steps], label=name.split("/")[0] if "/" in name else name)
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        if series:
            ax.legend()
    fig.tight_layout()
    out_png = Path(out_png)
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return out_png
