"""Retraining a searched network from scratch (paper sections 5.1-5.2): the training loop behind ``retrain``.

One run trains GGMNet (from a genotype, with Table 5's switches) or the HRNet-W32 baseline on the training
windows of a prepared dataset and scores it on the validation windows after every epoch:

* **data**: :class:`~ggmnet.datasets.tiles.TileDataset` tiles of ``tile_size`` px; training takes random
  ``crop_size`` crops with section 5.1.1's augmentation, validation whole tiles without augmentation;
* **loss**: Eq. 19, the weighted bootstrapped cross-entropy (K = 0.15 N), with class weights from the pixel
  counts of the training windows (:func:`~ggmnet.losses.class_weights_from_counts`);
* **optimiser**: section 5.1.3's Adam-then-SGD schedule (:class:`~ggmnet.retrain.schedule.OptimizerSchedule`),
  switched at ``switch_epoch`` or when the epoch training loss flattens (plateau rule);
* **scores**: the validation loss and a :class:`~ggmnet.metrics.ConfusionMatrix` (FWIoU, MPA, mIoU, per-class
  IoU); the training FWIoU comes from the training batches' predictions (Figure 4B);
* **checkpoints**: ``RUN/checkpoints/last.pt`` after every epoch (atomically; model, optimiser, schedule,
  phase, gradient scaler and generator states) and ``best.pt`` (model only) at the best validation FWIoU.
  The format is the one ``ggm-evaluate`` and ``ggm-predict`` read (:func:`ggmnet.retrain.models.load_model`);
* **tracking** (:class:`~ggmnet.tracking.Tracker`, W&B plus local copies): train and validation loss and FWIoU
  curves (Figure 4; also drawn to ``RUN/curves.png`` after every epoch), learning rate and optimiser phase,
  a per-class IoU table, the confusion matrix as a heatmap and validation tiles with predicted and true
  masks (Figure 5) every ``image_every`` epochs and at the end, the genotype and the best checkpoint as
  artifacts.

``resume=True`` continues ``RUN`` from ``last.pt`` and reaches the same weights as an uninterrupted run: the
sampler's order and the augmentation are functions of (seed, epoch, index), and the generator states, the
optimiser phase and the schedule are restored.

Several processes (``torchrun --nproc_per_node=N -m ggmnet.retrain.cli ...``): DistributedDataParallel over
shards of the training windows (a ``DistributedSampler``), SyncBatchNorm on CUDA, the epoch losses and the
confusion matrices summed over the ranks so that every rank takes the same schedule decision; only rank 0
writes files and logs. ``batch_size`` is per process, as in the paper (4 GPUs x 4 tiles).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from ggmnet.classes import CLASS_CODES, CLASS_NAMES
from ggmnet.datasets.prepare import file_sha256
from ggmnet.distributed import (
    DistContext,
    all_reduce_sum_,
    init_distributed,
    maybe_sync_batchnorm,
    seed_everything,
    unwrap_model,
    wrap_ddp,
)
from ggmnet.errors import UserError
from ggmnet.losses import InstanceWeighted, WeightedBootstrappedCE, class_weights_from_counts
from ggmnet.metrics import ConfusionMatrix
from ggmnet.retrain.ggmnet_model import ABLATIONS
from ggmnet.retrain.models import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, build_model, list_models
from ggmnet.retrain.schedule import OptimizerSchedule
from ggmnet.runio import require_file, torch_save_atomic, write_run_metadata
from ggmnet.search_space.genotype import Genotype
from ggmnet.tracking import Tracker, plot_curves
from ggmnet.training import (
    CheckpointManager,
    autocast_for,
    capture_rng_state,
    check_resume_config,
    make_grad_scaler,
    make_loader,
    open_run_dir,
    resolve_dataset_dir,
    restore_rng_state,
    set_loader_epoch,
)

log = logging.getLogger(__name__)

#: Where runs go when no ``out`` is given, relative to the working directory.
RUNS_ROOT = Path("runs") / "retrain"
#: Settings a resumed run must share with the run it continues (``epochs`` may grow).
_RESUME_FIXED = ("model", "ablation", "tile_size", "crop_size", "batch_size", "channels", "geology_prior", "seed",
                 "lr", "switch_epoch", "plateau_patience", "plateau_threshold", "top_k_fraction")
#: Plateau patience used when neither ``switch_epoch`` nor ``plateau_patience`` is given.
DEFAULT_PLATEAU_PATIENCE = 10
#: Scores logged as scalars for both the training and the validation set.
_SCALAR_SCORES = ("loss", "fwiou", "mpa", "miou", "pixel_accuracy")
#: Passes over the training windows an epoch may make before the order repeats (the sampler epoch's stride).
_PASSES_PER_EPOCH = 1000


@dataclasses.dataclass
class RetrainConfig:
    """Settings of one retrain run (defaults: the paper's; ``experiments/retrain_cpu.yaml`` is a CPU recipe).

    Attributes
    ----------
    genotype
        Genotype JSON of the MRFEM (``nas-export`` output); needed for ``model="ggmnet"`` unless resuming.
    model
        A registered model (:func:`~ggmnet.retrain.models.list_models`): ``ggmnet`` or a baseline.
    ablation
        Table 5's row for GGMNet: ``a`` (U-shaped baseline), ``b`` (+ARM), ``c`` (+FFM), ``d`` (+deformable
        convolution) or ``ours`` (+residual connections: the full GGMNet).
    epochs
        Total epochs (the paper: 600).
    steps_per_epoch
        Optimiser steps per epoch; None: one pass over this process's share of the training windows (more
        steps than that make further passes, each in a new order).
    tile_size
        Pixels per side a window is rendered at (the paper: 2048).
    crop_size
        Pixels per side of the random training crop (the paper: 1024); None: the whole tile. Validation
        always scores whole tiles.
    batch_size
        Tiles per step and per process (the paper: 4 per GPU). At least 2: BatchNorm (and the ARM's
        attention BatchNorm over one pooled value per tile) needs two samples in training.
    val_tiles
        Validation tiles scored each epoch (a fixed, seeded choice); None: every validation window.
    lr
        Adam's learning rate, and SGD's after the switch (the paper: 1e-3).
    switch_epoch
        Switch from Adam to SGD before this epoch (0-based); None: by the plateau rule.
    plateau_patience, plateau_threshold
        The plateau rule: switch once the epoch training loss has improved by less than ``plateau_threshold``
        (relative) for ``plateau_patience`` epochs in a row. Patience None means 10.
    top_k_fraction
        K / N of Eq. 19 (the paper's 0.15).
    channels
        Network input: ``pseudocolour`` (the paper's 3-channel image) or ``physical``.
    geology_prior
        Append the known outcrop classes (11 channels) to the input and train to fill hidden outcrop.
    seed
        Seed of the initial weights, the data order and the augmentation.
    device
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    amp
        Mixed precision on CUDA (ignored on CPU).
    num_workers
        DataLoader worker processes per rank.
    image_every
        Log validation pictures and the confusion heatmap every this many epochs (and after the last one).
    val_images
        Validation tiles drawn with their masks each time.
    data
        Prepared dataset folder; None builds or reuses the synthetic default.
    out
        Run folder; None makes a new one under ``runs/retrain`` (or, with ``resume``, takes the newest there).
    resume
        Continue the run in ``out`` from its ``checkpoints/last.pt``.
    wandb_mode
        ``online``, ``offline`` or ``disabled``; None: online only with credentials, else offline.
    """

    genotype: str | None = None
    model: str = "ggmnet"
    ablation: str = "ours"
    epochs: int = 600
    steps_per_epoch: int | None = None
    tile_size: int = 2048
    crop_size: int | None = 1024
    batch_size: int = 4
    val_tiles: int | None = None
    lr: float = 1e-3
    switch_epoch: int | None = None
    plateau_patience: int | None = None
    plateau_threshold: float = 0.01
    top_k_fraction: float = 0.15
    channels: str = "pseudocolour"
    geology_prior: bool = False
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    num_workers: int = 4
    image_every: int = 25
    val_images: int = 2
    data: str | None = None
    out: str | None = None
    resume: bool = False
    wandb_mode: str | None = None

    def check(self) -> RetrainConfig:
        """Raise a one-line :class:`UserError` naming the option of the first bad value; return self."""
        def bad(name: str, expected: str) -> UserError:
            return UserError(f"--{name.replace('_', '-')} {getattr(self, name)}: expected {expected}")

        def is_int(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        if self.model not in list_models():
            raise bad("model", f"one of {', '.join(list_models())}")
        if self.ablation not in ABLATIONS:
            raise bad("ablation", f"one of {', '.join(ABLATIONS)} (Table 5's rows)")
        if self.model == "ggmnet" and self.genotype is None and not self.resume:
            raise UserError("--genotype: required for --model ggmnet (a genotype JSON written by nas-export)")
        for name in ("epochs", "image_every"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise bad(name, "a positive integer")
        if not is_int(self.batch_size) or self.batch_size < 2:
            raise bad("batch_size", "an integer of at least 2 tiles per process (BatchNorm needs two samples)")
        for name in ("steps_per_epoch", "val_tiles", "plateau_patience"):
            value = getattr(self, name)
            if value is not None and (not is_int(value) or value < 1):
                raise bad(name, "a positive integer (or none)")
        if self.switch_epoch is not None and (not is_int(self.switch_epoch) or self.switch_epoch < 0):
            raise bad("switch_epoch", "a non-negative integer (or none)")
        if self.switch_epoch is not None and self.plateau_patience is not None:
            raise UserError(f"--switch-epoch {self.switch_epoch} and --plateau-patience {self.plateau_patience}: "
                            "give one switching rule and set the other to none")
        if not is_int(self.tile_size) or self.tile_size < 16:
            raise bad("tile_size", "an integer of at least 16 pixels")
        if self.crop_size is not None and (not is_int(self.crop_size) or not 16 <= self.crop_size <= self.tile_size):
            raise bad("crop_size", f"an integer in 16..--tile-size ({self.tile_size}) pixels, or none")
        if not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) or self.lr <= 0:
            raise bad("lr", "a positive number")
        if not isinstance(self.plateau_threshold, (int, float)) or not 0 <= self.plateau_threshold < 1:
            raise bad("plateau_threshold", "a relative improvement in [0, 1)")
        if not isinstance(self.top_k_fraction, (int, float)) or not 0 < self.top_k_fraction <= 1:
            raise bad("top_k_fraction", "a fraction in (0, 1]")
        for name in ("seed", "num_workers", "val_images"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 0:
                raise bad(name, "a non-negative integer")
        if self.channels not in ("pseudocolour", "physical"):
            raise bad("channels", "pseudocolour or physical")
        if self.wandb_mode not in (None, "online", "offline", "disabled"):
            raise bad("wandb_mode", "online, offline or disabled")
        return self

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-plain dict (as saved in ``run.json`` and in the checkpoints)."""
        return dataclasses.asdict(self)


def _genotype_architecture(genotype: dict[str, Any]) -> dict[str, Any]:
    """A genotype dict without its provenance: what decides the network."""
    return {k: v for k, v in genotype.items() if k != "provenance"}


def _same_model(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.get("name") != b.get("name"):
        return False
    strip = {k: (_genotype_architecture(v) if k == "genotype" else v) for k, v in a.items()}
    other = {k: (_genotype_architecture(v) if k == "genotype" else v) for k, v in b.items()}
    return strip == other


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def residual_picture(image: torch.Tensor, channels: str) -> np.ndarray:
    """An RGB uint8 ``[H, W, 3]`` picture of a tile's residual anomaly (Figure 5's third row).

    ``pseudocolour`` tiles already are the residual in the ``jet`` colour map (their first three channels);
    for ``physical`` tiles the first channel (the standardised residual) is stretched between its 2nd and
    98th percentiles and coloured the same way.
    """
    from ggmnet.datasets.tiles import colour_lut

    array = image.detach().float().cpu().numpy()
    if channels == "pseudocolour":
        rgb = np.moveaxis(array[:3], 0, -1)
    else:
        lo, hi = np.percentile(array[0], [2, 98])
        index = np.rint(np.clip((array[0] - lo) / max(hi - lo, 1e-12), 0, 1) * 255).astype(np.intp)
        rgb = colour_lut()[index]
    return np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


class Retrainer:
    """One retrain run: set-up (data, model, schedule, resume) in the constructor, :meth:`run` to train.

    Parameters
    ----------
    config
        The run's settings (checked here).
    ctx
        The process group to use; None joins the one torchrun's environment describes (or runs alone).
    on_epoch_end
        Called on every rank as ``on_epoch_end(epochs_done, record)`` after each epoch's checkpoint, where
        ``record`` holds the epoch's logged scalars (a hook for notebooks and tests; an exception it raises
        stops the run as an interruption would).

    Attributes
    ----------
    model
        The network (not wrapped by DDP).
    run_dir
        The run folder (the same path on every rank; only rank 0 writes to it).
    """

    def __init__(self, config: RetrainConfig, ctx: DistContext | None = None, *,
                 on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None) -> None:
        from ggmnet.datasets.tiles import TileDataset, read_manifest

        self.config = config.check()
        if config.genotype is not None:
            require_file(config.genotype, "--genotype", "a genotype JSON written by nas-export")
        self.on_epoch_end = on_epoch_end
        self.ctx = ctx if ctx is not None else init_distributed(config.device)
        self.device = self.ctx.device
        self.data_dir = self._data_dir()
        self.manifest = read_manifest(self.data_dir)
        self.manifest_sha256 = file_sha256(self.data_dir / "manifest.json")
        self.run_dir, resume_state = self._run_dir_and_state()

        seed_everything(config.seed)
        common = {"tile_size": config.tile_size, "channels": config.channels,
                  "geology_prior": config.geology_prior, "seed": config.seed}
        # the loader's workers compute Eq. 19's instance-size weights (off the training step)
        self.train_data = InstanceWeighted(TileDataset(self.data_dir, "train", crop_size=config.crop_size,
                                                       augment=True, **common))
        self.val_data = TileDataset(self.data_dir, "val", crop_size=None, augment=False, **common)
        per_rank = math.ceil(len(self.train_data) / self.ctx.world_size)
        if per_rank < config.batch_size:
            raise UserError(f"--batch-size {config.batch_size}: larger than the {per_rank} training window(s) "
                            f"each of {self.ctx.world_size} process(es) gets from {self.data_dir}")
        self.loader = make_loader(self.train_data, batch_size=config.batch_size, shuffle=True, ctx=self.ctx,
                                  num_workers=config.num_workers, seed=config.seed, drop_last=True)
        self.steps_per_epoch = config.steps_per_epoch or len(self.loader)
        val_ids = np.random.default_rng(config.seed).permutation(len(self.val_data))
        self.val_ids = sorted(val_ids[: config.val_tiles or len(self.val_data)].tolist())
        self.val_loader = DataLoader(Subset(self.val_data, self.val_ids[self.ctx.rank::self.ctx.world_size]),
                                     batch_size=config.batch_size, shuffle=False, num_workers=config.num_workers,
                                     persistent_workers=config.num_workers > 0)

        model_config = self._model_config(resume_state)
        self.model = build_model(model_config)
        self.model_config = self.model.model_config()
        self._check_model_fits_data()
        self.model = maybe_sync_batchnorm(self.model.to(self.device), self.ctx)
        self.ddp_model = wrap_ddp(self.model, self.ctx)

        self.schedule = OptimizerSchedule(
            self.model.parameters(), max_epochs=config.epochs, lr=config.lr, switch_epoch=config.switch_epoch,
            plateau_patience=config.plateau_patience or DEFAULT_PLATEAU_PATIENCE,
            plateau_threshold=config.plateau_threshold)
        self.use_amp = bool(config.amp) and self.device.type == "cuda"
        self.scaler = make_grad_scaler(self.device, self.use_amp)
        self.class_weights = class_weights_from_counts(np.asarray(self.train_data.class_counts))
        self.criterion = WeightedBootstrappedCE(self.class_weights,
                                                top_k_fraction=config.top_k_fraction).to(self.device)
        self.checkpoints = CheckpointManager(self.run_dir, monitor="val/fwiou", mode="max",
                                             is_main=self.ctx.is_main)
        self.start_epoch = 0
        self.best: dict[str, Any] = {"epoch": None, "scores": None}
        if resume_state is not None:
            self._restore(resume_state)

    # ------------------------------------------------------------------ set-up
    def _data_dir(self) -> Path:
        return resolve_dataset_dir(self.config.data, self.ctx)

    def _run_dir_and_state(self) -> tuple[Path, dict[str, Any] | None]:
        """The run folder and, when resuming, the checkpoint to continue from (read on every rank)."""
        cfg = self.config
        run_dir, state = open_run_dir(cfg.out, resume=cfg.resume, runs_root=RUNS_ROOT, prefix=cfg.model,
                                      kind="retrain", ctx=self.ctx)
        if cfg.resume and state is None:
            if cfg.model == "ggmnet" and cfg.genotype is None:
                raise UserError(f"--resume: no checkpoint in {run_dir} to continue, and no --genotype to start from")
            if self.ctx.is_main:
                log.warning("no checkpoint in %s: starting a new run there", run_dir)
        if state is not None:
            self._check_resumable(state, run_dir / "checkpoints" / "last.pt")
        return run_dir, state

    def _check_resumable(self, state: dict[str, Any], path: Path) -> None:
        if state.get("format") != CHECKPOINT_FORMAT or "optimizer" not in state:
            raise UserError(f"--resume {path}: not a retrain checkpoint with training state")
        check_resume_config(state.get("config", {}), self.config, _RESUME_FIXED, path)
        if state.get("data", {}).get("manifest_sha256") != self.manifest_sha256:
            raise UserError(f"--resume {path}: the run trained on another dataset than {self.data_dir} "
                            "(manifest sha256 differs)")

    def _model_config(self, resume_state: dict[str, Any] | None) -> dict[str, Any]:
        """The model to build: from the genotype and the ablation, or the resumed checkpoint's."""
        cfg = self.config
        if cfg.model != "ggmnet":
            # A baseline takes its input channels and classes from the dataset; resumed, its other arguments too.
            config = {"name": cfg.model, "in_channels": int(self.train_data.in_channels),
                      "num_classes": int(self.train_data.num_classes)}
            if resume_state is not None:
                config = {**resume_state["model_config"], **config}
        elif cfg.genotype is not None:
            genotype = Genotype.load(cfg.genotype)
            config = {"name": "ggmnet", "genotype": genotype.to_dict(), **ABLATIONS[cfg.ablation]}
        else:
            assert resume_state is not None
            return dict(resume_state["model_config"])
        if resume_state is not None and not _same_model(config, resume_state["model_config"]):
            raise UserError(f"--genotype {cfg.genotype}: differs from the architecture of the run in {self.run_dir} "
                            "(resume with the same genotype, or leave --genotype out)")
        return config

    def _check_model_fits_data(self) -> None:
        """The network's input channels and classes must be the dataset's."""
        model, data = self.model, self.train_data
        where = f"--genotype {self.config.genotype}" if self.config.model == "ggmnet" else f"--model {self.config.model}"
        if model.in_channels != data.in_channels:
            prior = " + geology prior" if self.config.geology_prior else ""
            raise UserError(f"{where}: in_channels {model.in_channels} does not match the dataset's "
                            f"{data.in_channels} input channels (--channels {self.config.channels}{prior})")
        if model.num_classes != data.num_classes:
            raise UserError(f"{where}: num_classes {model.num_classes} does not match the dataset's "
                            f"{data.num_classes} classes")

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.schedule.load_state_dict({**state["scheduler"], "optimizer": state["optimizer"]})
        self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = int(state["epoch"])
        self.best = dict(state["metrics"].get("best", self.best))
        self.checkpoints.best_value = state["checkpoint"].get("best_value")
        restore_rng_state(state["rng"])

    # ------------------------------------------------------------------ data
    def data_block(self) -> dict[str, Any]:
        """The checkpoint's ``data`` entry: what a prediction needs to make inputs like the training ones."""
        region = self.manifest["region"]
        return {
            "manifest_sha256": self.manifest_sha256,
            "recipe": self.manifest["recipe"],
            "normalisation": self.manifest["normalisation"],
            "channels": self.config.channels,
            "geology_prior": self.config.geology_prior,
            "tile_size": self.config.tile_size,
            "region": [region["west"], region["east"], region["south"], region["north"]],
            "spacing_deg": list(self.manifest["spacing_deg"]),
        }

    def _batches(self, epoch: int) -> Iterator[dict[str, Any]]:
        """``steps_per_epoch`` training batches of ``epoch``; pass ``p`` over the windows reshuffles (and
        re-augments) with key ``1000 epoch + p``, so the batches depend only on the seed and the epoch."""
        steps = 0
        for p in range(_PASSES_PER_EPOCH):
            key = _PASSES_PER_EPOCH * epoch + p
            self.train_data.set_epoch(key)
            set_loader_epoch(self.loader, key)
            for batch in self.loader:
                yield batch
                steps += 1
                if steps == self.steps_per_epoch:
                    return

    # ------------------------------------------------------------------ epochs
    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """The optimiser steps of ``epoch``; returns the mean loss and the training scores (over the ranks)."""
        self.model.train()
        optimizer = self.schedule.optimizer
        matrix = ConfusionMatrix(self.model.num_classes)
        total = torch.zeros(2, dtype=torch.float64)
        desc = f"epoch {epoch + 1}/{self.config.epochs} ({self.schedule.phase})"
        for batch in tqdm(self._batches(epoch), total=self.steps_per_epoch, desc=desc, leave=False,
                          disable=not self.ctx.is_main, dynamic_ncols=True):
            image = batch["image"].to(self.device, non_blocking=True)
            mask = batch["mask"].to(self.device, non_blocking=True)
            pixel_weights = batch["pixel_weights"].to(self.device, non_blocking=True)
            with autocast_for(self.device, self.use_amp):
                logits = self.ddp_model(image)
            loss = self.criterion(logits, mask, pixel_weights)
            optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()
            total += torch.tensor([float(loss.detach()), 1.0], dtype=torch.float64)
            matrix.update(logits.detach().argmax(1), mask)
        all_reduce_sum_(total)
        scores = matrix.all_reduce().compute()
        scores["loss"] = float(total[0] / total[1])
        return scores

    @torch.no_grad()
    def validate(self) -> tuple[dict[str, Any], np.ndarray]:
        """Score the network on the validation tiles: :meth:`ConfusionMatrix.compute`'s scores plus ``loss``
        (Eq. 19, mean over batches), and the confusion matrix (summed over the ranks)."""
        self.model.eval()
        matrix = ConfusionMatrix(self.model.num_classes)
        total = torch.zeros(2, dtype=torch.float64)
        for batch in self.val_loader:
            image = batch["image"].to(self.device, non_blocking=True)
            mask = batch["mask"].to(self.device, non_blocking=True)
            with autocast_for(self.device, self.use_amp):
                logits = self.model(image)
            total += torch.tensor([float(self.criterion(logits, mask)), 1.0], dtype=torch.float64)
            matrix.update(logits.argmax(1), mask)
        all_reduce_sum_(total)
        scores = matrix.all_reduce().compute()
        scores["loss"] = float(total[0] / total[1]) if total[1] > 0 else None
        return scores, matrix.matrix.copy()

    # ------------------------------------------------------------------ outputs
    def _checkpoint(self, epoch: int, scores: dict[str, Any], *, training_state: bool) -> dict[str, Any]:
        state: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "epoch": epoch,
            "model": unwrap_model(self.model).state_dict(),
            "model_config": self.model_config,
            "data": self.data_block(),
            "metrics": {"latest": scores, "best": self.best},
            "config": self.config.to_dict(),
        }
        if training_state:
            schedule = self.schedule.state_dict()
            state.update({"optimizer": schedule.pop("optimizer"), "scheduler": schedule,
                          "phase": self.schedule.phase, "rng": capture_rng_state(),
                          "scaler": self.scaler.state_dict()})
        return state

    def save_checkpoint(self, epoch: int, scores: dict[str, Any]) -> bool:
        """Write ``last.pt`` (and ``best.pt`` on a better validation FWIoU) on rank 0; True on a new best."""
        improved = self.checkpoints.is_improvement(scores.get("fwiou"))
        if improved:
            self.checkpoints.best_value = float(scores["fwiou"])
            self.best = {"epoch": epoch, "scores": scores}
        if not self.ctx.is_main:
            return improved
        self.checkpoints.save(self._checkpoint(epoch, scores, training_state=True), epoch=epoch)
        if improved:
            torch_save_atomic(self._checkpoint(epoch, scores, training_state=False), self.checkpoints.best_path)
        return improved

    def _log_pictures(self, tracker: Tracker, step: int, confusion: np.ndarray) -> None:
        """Figure 5 (tiles with predicted and true masks) and the row-normalised confusion matrix."""
        rows = confusion.sum(axis=1, keepdims=True)
        normalised = np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
        tracker.log_heatmap("val/confusion", normalised, x_labels=[f"pred {c}" for c in CLASS_CODES],
                            y_labels=list(CLASS_CODES), step=step, title=f"validation confusion, epoch {step}")
        self.model.eval()
        with torch.no_grad():
            for index in self.val_ids[: self.config.val_images]:
                item = self.val_data[index]
                with autocast_for(self.device, self.use_amp):
                    logits = self.model(item["image"][None].to(self.device))
                prediction = logits.argmax(1)[0].cpu().numpy().astype(np.uint8)
                tracker.log_image(f"val/window_{item['window']}", residual_picture(item["image"], self.config.channels),
                                  step=step, caption=f"window {item['window']}: residual anomaly, epoch {step}",
                                  masks={"prediction": prediction,
                                         "ground_truth": item["mask"].numpy().astype(np.uint8)})

    def _log_epoch(self, tracker: Tracker, epoch: int, train: dict[str, Any], val: dict[str, Any],
                   lr: float, phase: str) -> dict[str, Any]:
        record = {"epoch": epoch, "train/lr": lr, "train/sgd": int(phase == "sgd")}
        for prefix, scores in (("train", train), ("val", val)):
            record.update({f"{prefix}/{k}": scores.get(k) for k in _SCALAR_SCORES})
        if not self.ctx.is_main:
            return record
        tracker.log(record, step=epoch)
        tracker.log_table("val/per_class", ["class", "name", "IoU", "accuracy", "pixels"],
                          [[c, n, iou, acc, px] for c, n, iou, acc, px in
                           zip(CLASS_CODES, CLASS_NAMES, val["iou"], val["accuracy"], val["support"])], step=epoch)
        plot_curves(self.run_dir, ["loss", "fwiou", "lr"], self.run_dir / "curves.png")
        return record

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict[str, Any]:
        """Train from the start (or the resumed epoch) to ``epochs``; returns a summary of the run."""
        cfg, main = self.config, self.ctx.is_main
        resumed = self.start_epoch > 0
        tracker = Tracker(self.run_dir, project="ggmnet", name=self.run_dir.name, config=cfg.to_dict(),
                          job_type="retrain", mode=cfg.wandb_mode, is_main=main, resume=resumed)
        try:
            if main:
                name = "run.json" if not resumed else f"run.resume-{self.start_epoch}.json"
                write_run_metadata(self.run_dir, cfg.to_dict(), seed=cfg.seed, name=name, extra={
                    "stage": "retrain", "data": str(self.data_dir), "dataset_manifest_sha256": self.manifest_sha256,
                    "model_config": self.model_config, "world_size": self.ctx.world_size,
                    "resumed_at_epoch": self.start_epoch,
                    "parameters": sum(p.numel() for p in self.model.parameters())})
                if self.model_config["name"] == "ggmnet":
                    genotype_path = self.run_dir / "genotype.json"
                    Genotype.from_dict(self.model_config["genotype"]).save(genotype_path)
                    tracker.log_artifact(genotype_path, name=f"genotype-{self.run_dir.name}", type="genotype")
                log.info("retrain: %s (%.2f M parameters), %d train windows, %d val tiles, %d steps/epoch, "
                         "%d process(es) on %s -> %s", self.model_config["name"] if cfg.model != "ggmnet"
                         else f"ggmnet ablation {cfg.ablation}",
                         sum(p.numel() for p in self.model.parameters()) / 1e6, len(self.train_data),
                         len(self.val_ids), self.steps_per_epoch, self.ctx.world_size, self.device, self.run_dir)
            if self.start_epoch >= cfg.epochs:
                log.info("retrain: %s already finished %d epoch(s)", self.run_dir, self.start_epoch)
            for epoch in range(self.start_epoch, cfg.epochs):
                self._epoch(epoch, tracker)
            summary = self.summary()
            if main:
                tracker.summary(summary)
                if self.checkpoints.best_path.is_file():
                    tracker.log_artifact(self.checkpoints.best_path, name=f"model-{self.run_dir.name}",
                                         type="model")
        finally:
            tracker.finish()
        return summary

    def _epoch(self, epoch: int, tracker: Tracker) -> None:
        cfg, main = self.config, self.ctx.is_main
        start = time.perf_counter()
        lr, phase = self.schedule.current_lr, self.schedule.phase
        train = self.train_epoch(epoch)
        val, confusion = self.validate()
        switched = self.schedule.end_epoch(train["loss"])
        done = epoch + 1
        best = self.save_checkpoint(done, val)
        record = self._log_epoch(tracker, done, train, val, lr, phase)
        if main and (done % cfg.image_every == 0 or done == cfg.epochs):
            self._log_pictures(tracker, done, confusion)
        if main:
            log.info("epoch %d/%d %s lr %.2e: train loss %.4f FWIoU %s | val loss %s FWIoU %s MPA %s mIoU %s  "
                     "%.0f s%s%s", done, cfg.epochs, phase, lr, train["loss"], _pct(train.get("fwiou")),
                     "n/a" if val.get("loss") is None else f"{val['loss']:.4f}", _pct(val.get("fwiou")),
                     _pct(val.get("mpa")), _pct(val.get("miou")), time.perf_counter() - start,
                     "  (best)" if best else "",
                     f"  -> SGD from epoch {self.schedule.switch_epoch + 1}" if switched else "")
        if self.on_epoch_end is not None:
            self.on_epoch_end(done, record)

    def summary(self) -> dict[str, Any]:
        """Final figures: epochs, best epoch and its validation scores, switch epoch, folder, checkpoints."""
        scores = self.best.get("scores") or {}
        return {
            "run_dir": str(self.run_dir),
            "epochs": max(self.start_epoch, self.config.epochs),
            "best_epoch": self.best.get("epoch"),
            "best_val_fwiou": scores.get("fwiou"),
            "best_val_mpa": scores.get("mpa"),
            "best_val_miou": scores.get("miou"),
            "switch_epoch": self.schedule.switch_epoch,
            "best_checkpoint": str(self.checkpoints.best_path),
            "last_checkpoint": str(self.checkpoints.last_path),
        }


def run_retrain(config: RetrainConfig, ctx: DistContext | None = None, *,
                on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run (or resume) a retrain run with ``config``; returns :meth:`Retrainer.summary`.

    The run folder holds ``run.json``, ``genotype.json`` (GGMNet), ``checkpoints/last.pt`` and ``best.pt``,
    ``curves.png`` and the tracker's local copies (``metrics.jsonl``, ``tables/``, ``images/``,
    ``summary.json``).
    """
    return Retrainer(config, ctx, on_epoch_end=on_epoch_end).run()


def format_summary(summary: dict[str, Any]) -> str:
    """The one line ``retrain`` prints at the end."""
    return (f"retrain: {summary['epochs']} epoch(s), best val FWIoU {_pct(summary['best_val_fwiou'])} "
            f"MPA {_pct(summary['best_val_mpa'])} mIoU {_pct(summary['best_val_miou'])} at epoch "
            f"{summary['best_epoch']}; SGD from epoch "
            f"{'n/a' if summary['switch_epoch'] is None else summary['switch_epoch'] + 1}; "
            f"best checkpoint {summary['best_checkpoint']}")

