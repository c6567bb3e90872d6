"""Retraining a searched network from scratch (paper sections 5.1-5.2): the training loop behind ``retrain``.

One run trains GGMNet (from a genotype, with Table 5's switches) or a baseline of :mod:`ggmnet.models` on the
training windows of a prepared dataset with Eq. 19 (:class:`~ggmnet.losses.WeightedBootstrappedCE`) and section
5.1.3's Adam-then-SGD schedule (:class:`~ggmnet.retrain.schedule.OptimizerSchedule`), and scores it on the
validation windows after every epoch. The epoch loop, the checkpoints and ``--resume`` are the engine's
(:class:`ggmnet.engine.loop.Engine`); what a run reports is :class:`ggmnet.retrain.report.RetrainReport`'s.
With ``ema_decay`` the validated and saved ``model`` is timm's moving average of the weights (``last.pt`` keeps
the trained weights beside it to resume).

Several processes (``torchrun --nproc_per_node=N -m ggmnet.retrain.cli ...``) train with DistributedDataParallel
over shards of the training windows, SyncBatchNorm on CUDA; ``batch_size`` is per process, as in the paper
(4 GPUs x 4 tiles).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from timm.utils import ModelEmaV3

from ggmnet.datasets import ensure_synthetic_default
from ggmnet.datasets.tiles import TileDataset, read_manifest
from ggmnet.engine.checkpoint import read_checkpoint
from ggmnet.engine.config import (
    EPOCHS,
    NON_NEGATIVE_INT,
    POSITIVE,
    POSITIVE_INT,
    RunConfig,
    boolean,
    choice,
    num_workers_field,
    number,
    option,
    optional,
)
from ggmnet.engine.device import autocast_for, make_grad_scaler
from ggmnet.engine.distributed import (
    DistContext,
    maybe_sync_batchnorm,
    process_group,
    wrap_ddp,
)
from ggmnet.engine.loaders import make_loader, reshuffled, validation_loader
from ggmnet.engine.loop import Callback, Engine
from ggmnet.engine.runio import require_file
from ggmnet.errors import UserError
from ggmnet.inference.scoring import WindowScorer
from ggmnet.losses import InstanceWeighted, WeightedBootstrappedCE
from ggmnet.metrics import ConfusionMatrix, percent
from ggmnet.models import CHECKPOINT, build_model, count_parameters, list_models
from ggmnet.models.ggmnet import ABLATIONS
from ggmnet.retrain.report import RetrainReport
from ggmnet.retrain.schedule import OptimizerSchedule
from ggmnet.search_space.genotype import Genotype

log = logging.getLogger(__name__)

#: Where runs go when no ``out`` is given, relative to the working directory.
RUNS_ROOT = Path("runs") / "retrain"
#: Plateau patience used when neither ``switch_epoch`` nor ``plateau_patience`` is given.
DEFAULT_PLATEAU_PATIENCE = 10
#: Scores logged as scalars for both the training and the validation set.
_SCALAR_SCORES = ("loss", "fwiou", "mpa", "miou", "pixel_accuracy")


@dataclasses.dataclass
class RetrainConfig(RunConfig):
    """Settings of one retrain run (defaults: the paper's; ``experiments/retrain_cpu.yaml`` is a CPU recipe).

    Each field is an option of ``retrain``, whose help gives its meaning, unit and default.
    """

    epochs: int = EPOCHS.field(600)
    num_workers: int = num_workers_field(4)
    genotype: str | None = option(None, "genotype of the searched MRFEM (nas-export output); required for --model "
                                        "ggmnet unless resuming. Its num_classes must match the dataset's; the "
                                        "stem's input width follows the data", metavar="FILE.json")
    model: str = option("ggmnet", "network: ggmnet (from --genotype) or a baseline trained from scratch ("
                                  f"{', '.join(m for m in list_models() if m != 'ggmnet')}; fc_hardnet70, fasterseg "
                                  "and hrnet_w32 are Table 6's)",
                        choice(*list_models(), expected=f"one of {', '.join(list_models())}"))
    ablation: str = option("ours", "Table 5's row for ggmnet: a = U-shaped baseline, b = +attention refinement, "
                                   "c = +feature fusion, d = +deformable convolution, ours = +residual connections",
                           choice(*ABLATIONS, expected=f"one of {', '.join(ABLATIONS)} (Table 5's rows)"))
    deformable: bool | None = option(None, "override the deformable convolutions of --ablation's row (their CPU "
                                            "training step costs about 4x a plain convolution's at 128 px)",
                                     boolean, shown="as --ablation's row")
    lr: float = option(1e-3, "Adam's learning rate, and SGD's starting one after the switch", POSITIVE)
    switch_epoch: int | None = option(None, "switch from Adam to SGD before epoch N (0-based: N Adam epochs); "
                                            "exclusive with --plateau-patience", NON_NEGATIVE_INT, metavar="N",
                                      shown="none = by the plateau rule")
    plateau_patience: int | None = option(
        None, "switch to SGD once the epoch training loss has improved by less than --plateau-threshold for N "
              "epochs in a row", POSITIVE_INT, metavar="N",
        shown=f"none = {DEFAULT_PLATEAU_PATIENCE} unless --switch-epoch is given")
    plateau_threshold: float = option(0.01, "relative improvement of the epoch training loss below which an epoch "
                                            "counts as flat",
                                      number(lambda v: 0 <= v < 1, "a relative improvement in [0, 1)"))
    cover_augment: float = option(
        0.0, "probability that a training tile shows its bedrock buried under a random simulated Cenozoic cover "
             "(ggmnet.datasets.cover_sim: the lost top of the bedrock and the cover's low density; labels kept), "
             "so that the network learns to read the bedrock where the map is covered; pseudo-colour input only",
        number(lambda v: 0 <= v <= 1, "a probability in [0, 1]"), metavar="P")
    bury_hidden: float = option(
        0.0, "with --geology-prior: probability that a training tile's hidden outcrop is shown as that ground would "
             "look under a cover thickening from the hole's edge (ggmnet.datasets.cover_sim: the lost top of the "
             "bedrock and the cover's low density), so that hidden ground looks like covered ground; pseudo-colour "
             "input only", number(lambda v: 0 <= v <= 1, "a probability in [0, 1]"), metavar="P")
    bedrock_targets: float = option(
        0.0, "synthetic datasets only: the share of the training windows' cover (grid nodes, drawn once as wells "
             "would sample it) whose true bedrock is learned too; the input still shows that cover as unknown and "
             "validation is unchanged. 1 = all of it: what the data can teach under the cover, which a real map "
             "cannot give; 0 = none",
        number(lambda v: 0 <= v <= 1, "a share in [0, 1]"), metavar="F")
    well_radius: float = option(
        0.0, "with --bedrock-targets below 1: each well's class also answers the cover within this many grid nodes "
             "of it (the nearest well's where they meet), as a geologist would extend a well; 0 = its node only",
        number(lambda v: v >= 0, "a distance of at least 0 grid nodes"), metavar="N")
    init_from: str | None = option(
        None, "start from the weights of a retrain checkpoint of the same architecture (e.g. the gravity-only "
              "best.pt); input channels it lacks, such as the outcrop channels of --geology-prior, start at zero, "
              "so training begins from that network's map; none = the seeded initialisation",
        metavar="FILE", shown="none")
    ema_decay: float | None = option(
        None, "validate, checkpoint and deploy an exponential moving average of the weights (timm's ModelEmaV3 "
              "with its warm-up: the decay grows as 1 - (1 + step)^(-2/3) up to X; BatchNorm statistics averaged "
              "too); none = the weights as trained",
        optional(number(lambda v: 0 < v < 1, "a decay in (0, 1), or none")), metavar="X", shown="none")
    image_every: int = option(25, "log validation pictures (with predicted and true masks) and the confusion "
                                  "matrix every N epochs and after the last", POSITIVE_INT, metavar="N")
    val_images: int = option(2, "validation tiles pictured each time", NON_NEGATIVE_INT, metavar="N")

    def check_together(self) -> None:
        super().check_together()
        if self.model == "ggmnet" and self.genotype is None and not self.resume:
            raise UserError("--genotype: required for --model ggmnet (a genotype JSON written by nas-export)")
        if self.batch_size < 2:
            raise self.error("batch_size", "an integer of at least 2 tiles per process (BatchNorm needs two samples)")
        if self.switch_epoch is not None and self.plateau_patience is not None:
            raise UserError(f"--switch-epoch {self.switch_epoch} and --plateau-patience {self.plateau_patience}: "
                            "give one switching rule and set the other to none")
        if self.tile_size < 16:
            raise self.error("tile_size", "an integer of at least 16 pixels")
        if self.crop_size is not None and not 16 <= self.crop_size <= self.tile_size:
            raise self.error("crop_size", f"an integer in 16..--tile-size ({self.tile_size}) pixels, or none")
        if self.bury_hidden > 0 and not (self.geology_prior and self.channels == "pseudocolour"):
            raise UserError(f"--bury-hidden {self.bury_hidden:g}: buries the hidden outcrop of --geology-prior in the "
                            "residual anomaly; use it with --geology-prior and --channels pseudocolour")
        if self.cover_augment > 0 and self.channels != "pseudocolour":
            raise UserError(f"--cover-augment {self.cover_augment:g}: buries the residual anomaly only; use it with "
                            "--channels pseudocolour")


def _architecture(model_config: dict[str, Any]) -> dict[str, Any]:
    """A model configuration without its genotype's provenance: what decides the network."""
    return {k: ({g: x for g, x in v.items() if g != "provenance"} if k == "genotype" else v)
            for k, v in model_config.items()}


def warm_start(model: torch.nn.Module, checkpoint: str) -> None:
    """Load the weights of a retrain ``checkpoint`` into ``model`` (same architecture). A weight that has more
    input channels in ``model`` than in the checkpoint (dimension 1: the stem's first convolution and the
    decoder's last, which reads the input image as its long skip, when --geology-prior adds the outcrop
    channels after the gravity ones) gets the checkpoint's values in its first channels and zeros after, so
    the network starts with the checkpoint's map. Anything else that differs is an error naming the file."""
    path = require_file(checkpoint, "--init-from", "a retrain checkpoint (best.pt)")
    source = read_checkpoint(path, CHECKPOINT, option="--init-from")["model"]
    target = model.state_dict()
    missing = sorted(set(target) ^ set(source))
    if missing:
        raise UserError(f"--init-from {checkpoint}: not this architecture (weights {', '.join(missing[:3])} "
                        f"{'...' if len(missing) > 3 else ''}differ)")
    loaded = {}
    for key, weight in target.items():
        old = source[key]
        if old.shape == weight.shape:
            loaded[key] = old
        elif (old.ndim == weight.ndim >= 2 and old.shape[0] == weight.shape[0] and old.shape[2:] == weight.shape[2:]
              and old.shape[1] < weight.shape[1]):
            grown = torch.zeros_like(weight)
            grown[:, : old.shape[1]] = old
            loaded[key] = grown
        else:
            raise UserError(f"--init-from {checkpoint}: weight {key} is {tuple(old.shape)}, this network's "
                            f"{tuple(weight.shape)} (not the same architecture)")
    model.load_state_dict(loaded)


class Retrainer(Engine):
    """One retrain run: the engine's loop with the retraining's data, network, schedule and outputs.

    Attributes
    ----------
    model
        The network (not wrapped by DDP).
    """

    stage = "retrain"
    checkpoint_format = CHECKPOINT
    runs_root = RUNS_ROOT
    resume_fixed = ("model", "ablation", "deformable", "tile_size", "crop_size", "pixels_per_degree", "augment", "batch_size",
                    "channels", "geology_prior", "seed", "lr", "switch_epoch", "plateau_patience",
                    "plateau_threshold", "top_k_fraction", "class_weighting", "instance_weighting", "ema_decay", "cover_augment",
                    "bury_hidden", "bedrock_targets", "well_radius", "init_from")
    default_dataset = staticmethod(ensure_synthetic_default)
    config: RetrainConfig

    def __init__(self, config: RetrainConfig, ctx: DistContext | None = None, *,
                 on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
                 callbacks: Sequence[Callback] = ()) -> None:
        if config.check().genotype is not None:
            require_file(config.genotype, "--genotype", "a genotype JSON written by nas-export")
        super().__init__(config, ctx, on_epoch_end=on_epoch_end, callbacks=callbacks)

    def run_name(self) -> str:
        return self.config.model

    def setup(self, state: dict[str, Any] | None) -> None:
        cfg = self.config
        self.manifest = read_manifest(self.data_dir)
        train = TileDataset.for_run(cfg, self.data_dir, "train", train=True)
        self.classes = train.classes
        # the loader's workers compute Eq. 19's instance-size weights (off the training step)
        self.train_data = InstanceWeighted(train) if cfg.instance_weighting else train
        self.val_data = TileDataset.for_run(cfg, self.data_dir, "val", train=False)
        self.scorer = WindowScorer.for_run(cfg, self.data_dir, self.device)
        per_rank = math.ceil(len(self.train_data) / self.ctx.world_size)
        if per_rank < cfg.batch_size:
            raise UserError(f"--batch-size {cfg.batch_size}: larger than the {per_rank} training window(s) "
                            f"each of {self.ctx.world_size} process(es) gets from {self.data_dir}")
        self.loader = make_loader(self.train_data, batch_size=cfg.batch_size, shuffle=True, ctx=self.ctx,
                                  num_workers=cfg.num_workers, seed=cfg.seed, drop_last=True)
        self.steps_per_epoch = cfg.steps_per_epoch or len(self.loader)
        self.val_loader, self.val_ids = validation_loader(self.val_data, tiles=cfg.val_tiles, seed=cfg.seed,
                                                          batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                                                          ctx=self.ctx)

        model_config = self._model_config(state)
        self.model = build_model(model_config)
        self.model_config = self.model.model_config()
        self._check_model_fits_data()
        if cfg.init_from is not None and state is None:
            warm_start(self.model, cfg.init_from)
        self.model = maybe_sync_batchnorm(self.model.to(self.device), self.ctx)
        self.ddp_model = wrap_ddp(self.model, self.ctx)
        # the module validated, checkpointed as "model" and deployed: the weights' moving average, if kept
        self.ema = None if cfg.ema_decay is None else ModelEmaV3(self.model, decay=cfg.ema_decay, use_warmup=True)
        self.network = self.model if self.ema is None else self.ema.module

        self.schedule = OptimizerSchedule(
            self.model.parameters(), max_epochs=cfg.epochs, lr=cfg.lr, switch_epoch=cfg.switch_epoch,
            plateau_patience=cfg.plateau_patience or DEFAULT_PLATEAU_PATIENCE,
            plateau_threshold=cfg.plateau_threshold)
        self.scaler = make_grad_scaler(self.device, self.use_amp)
        self.criterion = WeightedBootstrappedCE.for_run(cfg, self.train_data.class_counts).to(self.device)

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
            # the stem's input width follows the data, so that any genotype trains on any input recipe
            genotype = dataclasses.replace(Genotype.load(cfg.genotype), in_channels=int(self.train_data.in_channels))
            switches = dict(ABLATIONS[cfg.ablation])
            if cfg.deformable is not None:
                switches["deformable"] = cfg.deformable
            # a run begun before shared MRFEM cells resumes with its own copies (models.LEGACY_DEFAULTS)
            legacy = resume_state is not None and "share_cells" not in resume_state["model_config"]
            config = {"name": "ggmnet", "genotype": genotype.to_dict(), **switches,
                      **({} if legacy else {"share_cells": True})}
        elif resume_state is None:
            raise UserError(f"--resume: no checkpoint in {self.run_dir} to continue, and no --genotype to start from")
        else:
            return dict(resume_state["model_config"])
        if resume_state is not None and _architecture(config) != _architecture(resume_state["model_config"]):
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
        named = self.model_config.get("genotype", {}).get("classes")
        if named is not None and list(named["names"]) != list(self.classes.names):
            raise UserError(f"{where}: its classes ({', '.join(named['names'])}) are not the dataset's "
                            f"({', '.join(self.classes.names)})")

    def load_state(self, state: dict[str, Any]) -> None:
        self.network.load_state_dict(state["model"])
        if self.ema is not None:
            self.model.load_state_dict(state["trained_model"])
        self.schedule.load_state_dict({**state["scheduler"], "optimizer": state["optimizer"]})
        self.scaler.load_state_dict(state["scaler"])

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
            "pixels_per_degree": self.config.pixels_per_degree,
            "region": [region["west"], region["east"], region["south"], region["north"]],
            "spacing_deg": list(self.manifest["spacing_deg"]),
            "classes": self.classes.to_dict(),
        }

    def checkpoint_state(self, epoch: int, scores: dict[str, Any]) -> dict[str, Any]:
        return {"model": self.network.state_dict(), "model_config": self.model_config,
                "data": self.data_block(), "metrics": {"latest": scores, "best": self.best},
                "config": self.config.to_dict()}

    def training_state(self) -> dict[str, Any]:
        schedule = self.schedule.state_dict()
        state = {"optimizer": schedule.pop("optimizer"), "scheduler": schedule, "phase": self.schedule.phase,
                 "scaler": self.scaler.state_dict()}
        if self.ema is not None:  # "model" holds the average; resuming needs the weights being trained too
            state["trained_model"] = self.model.state_dict()
        return state

    def run_info(self) -> dict[str, Any]:
        return {"model_config": self.model_config, "parameters": count_parameters(self.model)}

    # ------------------------------------------------------------------ epochs
    def begin_epoch(self, epoch: int) -> dict[str, Any]:
        self.lr, self.phase = self.schedule.current_lr, self.schedule.phase
        return {"train/lr": self.lr, "train/sgd": int(self.phase == "sgd")}

    def batches(self, epoch: int) -> Iterator[dict[str, Any]]:
        """Pass ``p`` over the windows reshuffles and re-augments with the key ``1000 epoch + p``."""
        return reshuffled(self.loader, epoch, self.steps_per_epoch, dataset=self.train_data)

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """The engine's steps; returns the mean loss and the scores of the training batches' predictions."""
        self.model.train()
        self.train_matrix = ConfusionMatrix(self.model.num_classes)
        loss = super().train_epoch(epoch)["loss"]
        return {**self.train_matrix.all_reduce().compute(), "loss": loss}

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        image, mask, pixel_weights = self.inputs(batch)
        with autocast_for(self.device, self.use_amp):
            logits = self.ddp_model(image)
        loss = self.loss(logits, mask, pixel_weights)
        optimizer = self.schedule.optimizer
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step + 1)  # step 1 copies the weights
        self.train_matrix.update(logits.detach().argmax(1), mask)
        return {"loss": float(loss.detach())}

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.network(image)

    def loss(self, logits: torch.Tensor, mask: torch.Tensor,
             pixel_weights: torch.Tensor | None = None) -> torch.Tensor:
        """Eq. 19."""
        return self.criterion(logits, mask, pixel_weights)

    def predict(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return logits.argmax(1)

    def end_epoch(self, epoch: int, train: dict[str, Any], scores: dict[str, Any]) -> None:
        self.switched = self.schedule.end_epoch(train["loss"])

    # ------------------------------------------------------------------ outputs
    def default_callbacks(self) -> list[Callback]:
        return [RetrainReport()]

    def epoch_record(self, epoch: int, scalars: dict[str, Any], train: dict[str, Any],
                     scores: dict[str, Any]) -> dict[str, Any]:
        record = {"epoch": epoch, **scalars}
        for prefix, values in (("train", train), ("val", scores)):
            record.update({f"{prefix}/{k}": values.get(k) for k in _SCALAR_SCORES})
        record.update(scores.get("beside", {}))
        return record

    def finish(self) -> dict[str, Any]:
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
            "best_checkpoint": str(self.best_path),
            "last_checkpoint": str(self.last_path),
        }


def run_retrain(config: RetrainConfig, ctx: DistContext | None = None, *,
                on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run (or resume) a retrain run with ``config``; returns :meth:`Retrainer.finish`.

    The run folder holds ``run.json``, ``genotype.json`` (GGMNet), ``checkpoints/last.pt`` and ``best.pt``,
    ``curves.png`` and the tracker's local copies (``metrics.jsonl``, ``tables/``, ``images/``,
    ``summary.json``). Without ``ctx``, a process launched by torchrun joins the group here and leaves it at
    the end.
    """
    with process_group(config.device, ctx) as ctx:
        return Retrainer(config, ctx, on_epoch_end=on_epoch_end).run()


def format_summary(summary: dict[str, Any]) -> str:
    """The one line ``retrain`` prints at the end."""
    switch = summary["switch_epoch"]
    return (f"retrain: {summary['epochs']} epoch(s), best val FWIoU {percent(summary['best_val_fwiou'], '%')} "
            f"MPA {percent(summary['best_val_mpa'], '%')} mIoU {percent(summary['best_val_miou'], '%')} at epoch "
            f"{summary['best_epoch']}; SGD from epoch {'--' if switch is None else switch + 1}; "
            f"best checkpoint {summary['best_checkpoint']}")
