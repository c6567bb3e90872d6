"""The epoch loop both training stages run: set-up, resume, train steps, validation, tracking, checkpoints.

A stage subclasses :class:`Engine`, sets its class attributes and fills the hooks; the engine does::

    Engine(config, ctx)  check the settings, join the process group, find the dataset, open the run folder
                         (with --resume: read last.pt and check that it continues this run), seed the
                         generators, setup(state); with a checkpoint, load_state(state) and the generators
    run()                run.json, the tracker, each callback's on_start, then for each epoch:
        scalars = begin_epoch(epoch)             learning rate, temperature...; sets self.phase
        train   = train_epoch(epoch)             default: train_step(b) for b in batches(epoch), the means
        scores  = validate()                     default: forward/loss/predict over val_loader
        end_epoch(epoch, train, scores)          what the checkpoint must already see (schedule, genotype)
        best    = save_checkpoint(done, scores)  last.pt, and best.pt on a new best
        record  = epoch_record(done, scalars, train, scores)
        callbacks' on_epoch(...)                 rank 0: tracker, log line, pictures, files
        on_epoch_end(done, record)               every rank (a hook for tests and notebooks)
                         and returns finish(), after the callbacks' on_finish.

A stage may replace :meth:`Engine.train_epoch` or :meth:`Engine.validate` whole (the scores must hold
:attr:`Engine.monitor`). Every rank runs the same steps; only rank 0 writes files and logs (see
docs/design.md, "The engine").
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ggmnet.classes import TABLE1, ClassList
from ggmnet.engine.checkpoint import CheckpointFormat, read_checkpoint, write_checkpoint
from ggmnet.engine.config import RunConfig, flag
from ggmnet.engine.device import autocast_for
from ggmnet.engine.distributed import (
    DistContext,
    all_reduce_sum_,
    barrier,
    broadcast_object,
    init_distributed,
)
from ggmnet.engine.rng import capture_rng_state, restore_rng_state, seed_everything
from ggmnet.engine.runio import file_sha256, latest_run_dir, new_run_dir, prepare_out_dir, write_run_metadata
from ggmnet.engine.tracking import Tracker
from ggmnet.errors import UserError
from ggmnet.metrics import ConfusionMatrix

log = logging.getLogger(__name__)


class Callback:
    """Reporting beside a run (log lines, tables, pictures, artifacts), called on rank 0 only; it never changes
    what is trained. Override what you need."""

    def on_start(self, engine: Engine, tracker: Tracker) -> None:
        """Before the first epoch of this process."""

    def on_epoch(self, engine: Engine, tracker: Tracker, epoch: int, record: dict[str, Any],
                 scores: dict[str, Any], best: bool, seconds: float) -> None:
        """After epoch ``epoch`` (1-based) was checkpointed and the tracker logged ``record``."""

    def on_finish(self, engine: Engine, tracker: Tracker, result: Any) -> None:
        """After the last epoch, with what :meth:`Engine.run` returns."""


class Engine:
    """One training run of a stage: set-up and resume in the constructor, :meth:`run` to train.

    Parameters
    ----------
    config
        The run's settings (checked here).
    ctx
        The process group to use; None joins the one torchrun's environment describes (or runs alone).
    on_epoch_end
        Called on every rank as ``on_epoch_end(epochs_done, record)`` after each epoch's checkpoint, where
        ``record`` holds the epoch's logged scalars; an exception it raises stops the run as an interruption
        would.
    callbacks
        Reporting added to the stage's :meth:`default_callbacks`.

    Attributes
    ----------
    run_dir, last_path, best_path
        The run folder (the same path on every rank; only rank 0 writes to it) and its checkpoints.
    start_epoch, global_step
        Epochs and steps done before this process started (non-zero when resumed).
    best
        ``{"epoch", "scores"}`` of the best validation score so far.
    """

    #: The stage's name (run.json, the tracker's job type, messages).
    stage: str = "run"
    #: ``format`` and ``version`` of the stage's checkpoints.
    checkpoint_format: CheckpointFormat
    #: Where runs go when no ``--out`` is given, relative to the working directory.
    runs_root: Path
    #: Settings a resumed run must share with the run it continues.
    resume_fixed: tuple[str, ...] = ()
    #: The validation score that selects ``best.pt`` (higher is better).
    monitor = "fwiou"
    #: whether a later epoch that ties the best score becomes the best (the search: it has decided more by then)
    ties_to_later = False
    #: The dataset's classes (a stage's ``setup`` sets them from its training data; Table 1 by default).
    classes: ClassList = TABLE1
    #: A region validation's scorer (``validate(network) -> (scores, confusion matrix)``, e.g.
    #: :class:`ggmnet.inference.scoring.WindowScorer`) that a stage's ``setup`` may set; None validates on tiles.
    scorer: Any = None

    def __init__(self, config: RunConfig, ctx: DistContext | None = None, *,
                 on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
                 callbacks: Sequence[Callback] = ()) -> None:
        self.config = config.check()
        self.on_epoch_end = on_epoch_end
        self.callbacks = [*self.default_callbacks(), *callbacks]
        self.ctx = ctx if ctx is not None else init_distributed(config.device)
        self.device = self.ctx.device
        self.use_amp = bool(config.amp) and self.device.type == "cuda"
        self.data_dir = self._dataset_dir()
        self.manifest_sha256 = file_sha256(self.data_dir / "manifest.json")
        self.run_dir, state = self._open_run()
        self.last_path, self.best_path = (self.run_dir / "checkpoints" / name for name in ("last.pt", "best.pt"))
        self.start_epoch = 0
        self.global_step = 0
        self.best: dict[str, Any] = {"epoch": None, "scores": None}
        self.phase = ""
        seed_everything(config.seed)
        self.setup(state)
        if state is not None:
            self.load_state(state)
            self.start_epoch = int(state["epoch"])
            self.global_step = int(state.get("step", 0))
            entry = state["checkpoint"]
            # checkpoints written before the engine kept the best value only
            self.best = dict(entry.get("best") or {"epoch": None, "scores": {self.monitor: entry.get("best_value")}})
            restore_rng_state(state["rng"])

    # ------------------------------------------------------------------ hooks a stage fills in
    @staticmethod
    def default_dataset() -> Path:
        """The prepared dataset used without ``--data`` (called on rank 0 only)."""
        raise NotImplementedError

    def run_name(self) -> str:
        """The name of a new run folder, before its date and time."""
        raise NotImplementedError

    def setup(self, state: dict[str, Any] | None) -> None:
        """Build the data, the network and the optimisers; set ``steps_per_epoch``, ``val_loader`` and
        ``network`` (the module validated, not wrapped by DDP). ``state``: the checkpoint resumed, or None."""
        raise NotImplementedError

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore the network and training states from ``last.pt`` (the engine restores the rest)."""
        raise NotImplementedError

    def checkpoint_state(self, epoch: int, scores: dict[str, Any]) -> dict[str, Any]:
        """What ``best.pt`` and ``last.pt`` hold to use the weights: network, configuration, scores."""
        raise NotImplementedError

    def training_state(self) -> dict[str, Any]:
        """What ``last.pt`` adds to resume: optimiser, scheduler and gradient-scaler states."""
        raise NotImplementedError

    def run_info(self) -> dict[str, Any]:
        """Entries the stage adds to ``run.json``."""
        return {}

    def default_callbacks(self) -> list[Callback]:
        """The stage's reporting (:class:`Callback`)."""
        return []

    def begin_epoch(self, epoch: int) -> dict[str, Any]:
        """Prepare ``epoch`` (0-based; learning rate, temperature, ``self.phase``); returns scalars to log."""
        return {}

    def batches(self, epoch: int) -> Iterator[Any]:
        """The ``steps_per_epoch`` training batches of ``epoch`` (see :func:`ggmnet.engine.loaders.reshuffled`)."""
        raise NotImplementedError

    def train_step(self, batch: Any) -> dict[str, float]:
        """One training step on ``batch``; returns the values whose means over the epoch it reports."""
        raise NotImplementedError

    def forward(self, image: torch.Tensor) -> Any:
        """The network's logits for a validation batch (under autocast; the network is in eval mode)."""
        raise NotImplementedError

    def loss(self, logits: Any, mask: torch.Tensor, pixel_weights: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of ``logits`` against ``mask`` (Eq. 19 in both stages)."""
        raise NotImplementedError

    def predict(self, logits: Any, mask: torch.Tensor) -> torch.Tensor:
        """The predicted classes ``[B, H, W]`` of ``logits`` for a batch whose labels are ``mask``."""
        raise NotImplementedError

    def end_epoch(self, epoch: int, train: dict[str, Any], scores: dict[str, Any]) -> None:
        """The stage's bookkeeping after validation, before the checkpoint."""

    def epoch_record(self, epoch: int, scalars: dict[str, Any], train: dict[str, Any],
                     scores: dict[str, Any]) -> dict[str, Any]:
        """The scalars of epoch ``epoch`` (1-based, done) logged to the tracker and given to ``on_epoch_end``."""
        raise NotImplementedError

    def finish(self) -> Any:
        """Every rank, after the last epoch: what :meth:`run` returns (default: the run folder)."""
        return self.run_dir

    # ------------------------------------------------------------------ set-up
    def _dataset_dir(self) -> Path:
        """``--data`` (checked), or the stage's default dataset, made once by rank 0."""
        if self.config.data is not None:
            path = Path(self.config.data)
            if not (path / "manifest.json").is_file():
                raise UserError(f"--data {path}: not a prepared dataset (no manifest.json; run ggm-data prepare)")
            return path
        path = self.default_dataset() if self.ctx.is_main else None
        barrier()
        return Path(broadcast_object(str(path)))

    def _open_run(self) -> tuple[Path, dict[str, Any] | None]:
        """Choose the run folder (rank 0) and, with ``--resume``, read and check its last checkpoint (every rank).

        Without ``--out`` a new ``runs_root/NAME-DATE-TIME`` folder is made, or with ``--resume`` the newest
        run there is taken. A folder that already holds a run is refused without ``--resume``.
        """
        cfg = self.config
        path: Path | None = None
        if self.ctx.is_main:
            if cfg.out is not None:
                path = prepare_out_dir(cfg.out)
            elif cfg.resume:
                path = latest_run_dir(self.runs_root)
                if path is None:
                    raise UserError(f"--resume: no run under {self.runs_root} to continue (give its folder "
                                    "with --out)")
            else:
                path = new_run_dir(self.runs_root, self.run_name())
            last = path / "checkpoints" / "last.pt"
            if last.exists() and not cfg.resume:
                raise UserError(f"--out {path}: already holds a {self.stage} run ({last}); pass --resume to "
                                "continue it or choose another folder")
        run_dir = Path(broadcast_object(str(path)))
        last = run_dir / "checkpoints" / "last.pt"
        if not cfg.resume:
            return run_dir, None
        if not last.is_file():
            if self.ctx.is_main:
                log.warning("no checkpoint in %s: starting a new %s run there", run_dir, self.stage)
            return run_dir, None
        state = read_checkpoint(last, self.checkpoint_format, option="--resume")
        self._check_resumable(state, last)
        return run_dir, state

    def _check_resumable(self, state: dict[str, Any], path: Path) -> None:
        """Refuse a checkpoint that does not continue this run; take its derived settings."""
        if "rng" not in state:
            raise UserError(f"--resume {path}: holds no training state (resume from last.pt)")
        saved, current = state.get("config", {}), self.config.to_dict()
        # a setting added after the checkpoint was written is absent from it: the run used its default
        defaults = {f.name: f.default for f in dataclasses.fields(self.config)}
        for key in self.resume_fixed:
            used = saved.get(key, defaults.get(key))
            if used != current[key]:
                raise UserError(f"--resume {path}: the run used {flag(key)} {used}, not {current[key]}; "
                                "resume with the same value")
        # checkpoints written before the engine name their dataset elsewhere; theirs is not checked
        sha = state["checkpoint"].get("dataset_manifest_sha256")
        if sha is not None and sha != self.manifest_sha256:
            raise UserError(f"--resume {path}: the run used another dataset than {self.data_dir} (manifest "
                            "sha256 differs)")
        self.config.adopt_derived(saved)

    # ------------------------------------------------------------------ the loop
    def run(self) -> Any:
        """Train from the start (or the resumed epoch) to ``epochs``; returns :meth:`finish`'s value."""
        cfg, main = self.config, self.ctx.is_main
        if main:
            name = "run.json" if self.start_epoch == 0 else f"run.resume-{self.start_epoch}.json"
            write_run_metadata(self.run_dir, cfg.to_dict(), seed=cfg.seed, name=name, extra={
                "stage": self.stage, "data": str(self.data_dir), "dataset_manifest_sha256": self.manifest_sha256,
                "world_size": self.ctx.world_size, "resumed_at_epoch": self.start_epoch, **self.run_info()})
            if cfg.derived:
                log.info("%s: derived defaults %s", self.stage, cfg.derived_line())
        tracker = Tracker(self.run_dir, project="ggmnet", name=self.run_dir.name, config=cfg.to_dict(),
                          job_type=self.stage, mode=cfg.wandb_mode, is_main=main, resume=self.start_epoch > 0)
        try:
            if main:
                for callback in self.callbacks:
                    callback.on_start(self, tracker)
                if self.start_epoch >= cfg.epochs:
                    log.info("%s: %s already finished %d epoch(s)", self.stage, self.run_dir, self.start_epoch)
            for epoch in range(self.start_epoch, cfg.epochs):
                self._epoch(epoch, tracker)
            result = self.finish()
            if main:
                for callback in self.callbacks:
                    callback.on_finish(self, tracker, result)
            return result
        finally:
            tracker.finish()

    def _epoch(self, epoch: int, tracker: Tracker) -> None:
        start = time.perf_counter()
        scalars = self.begin_epoch(epoch)
        train = self.train_epoch(epoch)
        scores = self.validate()
        self.end_epoch(epoch, train, scores)
        done = epoch + 1
        best = self.save_checkpoint(done, scores)
        record = self.epoch_record(done, scalars, train, scores)
        if self.ctx.is_main:
            tracker.log(record, step=done)
            for callback in self.callbacks:
                callback.on_epoch(self, tracker, done, record, scores, best, time.perf_counter() - start)
        if self.on_epoch_end is not None:
            self.on_epoch_end(done, record)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """:meth:`train_step` on each of :meth:`batches`; the mean of each value over the steps and ranks."""
        sums: dict[str, float] = {}
        desc = f"epoch {epoch + 1}/{self.config.epochs} ({self.phase})"
        for batch in tqdm(self.batches(epoch), total=self.steps_per_epoch, desc=desc, leave=False,
                          disable=not self.ctx.is_main, dynamic_ncols=True):
            for key, value in self.train_step(batch).items():
                sums[key] = sums.get(key, 0.0) + value
            self.global_step += 1
        totals = all_reduce_sum_(torch.tensor(list(sums.values()), dtype=torch.float64)).tolist()
        count = self.steps_per_epoch * self.ctx.world_size
        return {key: total / count for key, total in zip(sums, totals)}

    def inputs(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """A batch's image, mask and (training batches) instance-size weights, on the device."""
        weights = batch.get("pixel_weights")
        return (batch["image"].to(self.device, non_blocking=True), batch["mask"].to(self.device, non_blocking=True),
                None if weights is None else weights.to(self.device, non_blocking=True))

    def validation_network(self) -> torch.nn.Module:
        """The network a region validation maps with (the trained one; the search: its derived network)."""
        return self.network

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """Score the network on the validation windows of :attr:`scorer` when a stage set one, else on the
        validation tiles of ``val_loader``, summed over the ranks.

        Returns :meth:`ConfusionMatrix.compute`'s scores plus ``loss`` (:meth:`loss`, mean over batches; a
        scorer's own) and keeps the confusion matrix in ``self.confusion``; :meth:`forward`, :meth:`loss` and
        :meth:`predict` are the stage's.
        """
        if self.scorer is not None:
            scores, self.confusion = self.scorer.validate(self.validation_network())
            return scores
        self.network.eval()
        matrix = ConfusionMatrix(self.classes.num_classes)
        total = torch.zeros(2, dtype=torch.float64)
        for batch in self.val_loader:
            image, mask, _ = self.inputs(batch)
            with autocast_for(self.device, self.use_amp):
                logits = self.forward(image)
            total += torch.tensor([float(self.loss(logits, mask)), 1.0], dtype=torch.float64)
            matrix.update(self.predict(logits, mask), mask)
        all_reduce_sum_(total)
        scores = matrix.all_reduce().compute()
        scores["loss"] = float(total[0] / total[1]) if total[1] > 0 else None
        self.confusion = matrix.matrix.copy()
        return scores

    def save_checkpoint(self, epoch: int, scores: dict[str, Any]) -> bool:
        """After epoch ``epoch`` (1-based): ``best.pt`` when the monitored score improves, then ``last.pt``
        (rank 0 writes); True on a new best.

        ``best.pt`` is written first, so an interruption between the two leaves a ``last.pt`` from which the
        resumed run redoes the epoch and rewrites both.
        """
        value = scores.get(self.monitor)
        previous = (self.best["scores"] or {}).get(self.monitor)
        improved = value is not None and not math.isnan(value) and (
            previous is None or value > previous or (self.ties_to_later and value == previous))
        if improved:
            self.best = {"epoch": epoch, "scores": scores}
        if self.ctx.is_main:
            state = {"epoch": epoch, "step": self.global_step, **self.checkpoint_state(epoch, scores),
                     "checkpoint": {"monitor": self.monitor, "best": self.best,
                                    "dataset_manifest_sha256": self.manifest_sha256}}
            if improved:
                write_checkpoint(self.best_path, self.checkpoint_format, state)
            write_checkpoint(self.last_path, self.checkpoint_format,
                             {**state, **self.training_state(), "rng": capture_rng_state()})
        return improved
