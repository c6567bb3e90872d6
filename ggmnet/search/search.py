"""The differentiable architecture search of MRFEM (section 4.2 of the paper): the search loop.

The supernet (:class:`ggmnet.search_space.supernet.Supernet`) holds two sets of parameters: the network
weights and the architecture logits. The training windows are split once, by a seeded permutation, into two
halves: half A trains the weights, half B the architecture, so that the architecture is chosen by how well the
weights generalise rather than by how well they fit. An epoch is either

* a **warm-up** epoch (the first ``warmup_epochs``): weight steps only, each on an architecture sampled from
  the (still uniform) distribution, so that every candidate operator and width gets trained before the
  architecture logits start to judge them; or
* a **search** epoch: every step is a first-order alternating update, an architecture step on a B batch
  (Adam) followed by a weight step on an A batch (SGD with momentum). The architecture step differentiates
  the loss with respect to the architecture logits only, so it leaves no gradient on the weights: FasterSeg
  let its architecture step's weight gradients leak into the weight update.

Both steps sample one architecture per step by straight-through hard Gumbel-softmax at temperature ``tau``,
which is kept at ``tau_start`` through the warm-up, then annealed geometrically each epoch to ``tau_end``. The
loss is Eq. 19 (:class:`~ggmnet.losses.WeightedBootstrappedCE`, class weights from the training windows'
class counts, K = 0.15 N) summed over the three heads at strides 8, 16, 32, plus ``cost_weight`` times the
supernet's expected cost when that is set.

After every epoch the currently derived architecture (``mode="argmax"``) is validated on a fixed set of
validation tiles (FWIoU, MPA), the genotype is derived and written with its provenance to
``RUN/genotype.json``, the architecture probabilities are logged as heatmaps, and the state is checkpointed
atomically to ``RUN/checkpoints/last.pt`` (``best.pt`` by validation FWIoU). ``resume=True`` continues from
``last.pt`` and reaches the same architecture parameters as an uninterrupted run.

Several processes (``torchrun --nproc_per_node=N``): the weights are trained with DistributedDataParallel on
shards of the data (DistributedSampler); every rank keeps the same generator seed, so all ranks draw the same
architecture sample in a step (one sampled network trained on the global batch, DDP's unused parameters agree
across ranks, and SyncBatchNorm on CUDA sees the same layers everywhere). The architecture logits are frozen
outside the architecture step, so DDP leaves them out; their gradients are averaged over the ranks (one
all-reduce) before each architecture step and the parameters are broadcast from rank 0 at the start, so they
stay identical on every rank. On CPU (gloo) each rank keeps BatchNorm statistics of its own
batch, since SyncBatchNorm only runs on CUDA. Only rank 0 writes files and logs.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import itertools
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from ggmnet.classes import NUM_CLASSES
from ggmnet.datasets.prepare import file_sha256
from ggmnet.distributed import (
    DistContext,
    all_reduce_mean,
    all_reduce_sum_,
    broadcast_module_,
    init_distributed,
    maybe_sync_batchnorm,
    seed_everything,
    wrap_ddp,
)
from ggmnet.errors import UserError
from ggmnet.losses import InstanceWeighted, WeightedBootstrappedCE, class_weights_from_counts, sum_head_losses
from ggmnet.metrics import ConfusionMatrix
from ggmnet.runio import write_run_metadata
from ggmnet.search_space.genotype import Genotype
from ggmnet.search_space.operations import CELL_OPS, DOWN_OPS, STRIDES, UNIT_CHANNELS
from ggmnet.search_space.supernet import SOURCES, Supernet
from ggmnet.tracking import Tracker
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

#: ``format`` entry of a search checkpoint (``checkpoints/last.pt`` and ``best.pt`` of a search run).
CHECKPOINT_FORMAT = "ggmnet-search-checkpoint"
CHECKPOINT_VERSION = 1
#: Where runs go when no ``out`` is given, relative to the working directory.
RUNS_ROOT = Path("runs") / "search"
#: The depths the paper searched (Table 4); others are allowed with a warning.
PAPER_DEPTHS = (16, 24)
#: Settings a resumed run must share with the run it continues.
_RESUME_FIXED = ("depth", "unit_channels", "tile_size", "crop_size", "batch_size", "channels", "seed")


@dataclasses.dataclass
class SearchConfig:
    """Settings of one search run (defaults: the paper's scale; ``experiments/search_cpu.yaml`` is a CPU recipe).

    Attributes
    ----------
    depth
        Cells per branch of the searched MRFEM (the paper searches 16-24 and keeps 22).
    unit_channels
        Unit widths at strides 8, 16, 32: a cell of width expansion ``e`` has ``e * unit`` channels. The
        paper-scale default (12, 24, 48) gives a supernet of about 300 M weights at depth 22; smaller units
        make a lighter one for CPU work (the count scales with the square of the units).
    epochs
        Total epochs, warm-up included.
    warmup_epochs
        Leading epochs that train the weights only (on sampled architectures).
    steps_per_epoch
        Steps (each one weight step, plus one architecture step after the warm-up) per epoch; None: one pass
        over this rank's share of half A.
    tile_size
        Side of a rendered window tile, pixels (the paper's 2048).
    crop_size
        Side of the random training crop, pixels (None: the whole tile); validation uses whole tiles.
    batch_size
        Tiles per step and per process.
    val_tiles
        Validation tiles scored each epoch (a fixed, seeded choice); None: every validation window.
    lr_weights, lr_arch
        Initial learning rate of the weights (SGD, cosine decay over the epochs) and of the architecture
        logits (Adam, betas (0.5, 0.999), no weight decay).
    weight_decay
        SGD weight decay of the network weights.
    momentum
        SGD momentum of the network weights.
    grad_clip
        Maximum global norm of the weights' gradient.
    tau_start, tau_end
        Gumbel-softmax temperature in the warm-up and at the last epoch (geometric annealing per epoch).
    cost_weight
        Weight of the supernet's expected cost (MACs per pixel) in the architecture loss; 0 searches for
        accuracy only, as the paper does.
    top_k_fraction
        K / N of the bootstrapped cross-entropy (Eq. 19; the paper's 0.15).
    seed
        Seed of the data split, the sampling and the initial weights.
    device
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    num_workers
        DataLoader worker processes per rank.
    channels
        Network input: ``pseudocolour`` (the paper's 3-channel image) or ``physical``.
    amp
        Mixed precision on CUDA (ignored on CPU).
    data
        Prepared dataset folder; None builds or reuses the synthetic default.
    out
        Run folder; None makes a new one under ``runs/search`` (or, with ``resume``, takes the newest there).
    resume
        Continue the run in ``out`` from its ``checkpoints/last.pt``.
    wandb_mode
        ``online``, ``offline`` or ``disabled``; None: online only with credentials, else offline.
    """

    depth: int = 22
    unit_channels: tuple[int, int, int] = UNIT_CHANNELS
    epochs: int = 50
    warmup_epochs: int = 20
    steps_per_epoch: int | None = None
    tile_size: int = 2048
    crop_size: int | None = 1024
    batch_size: int = 4
    val_tiles: int | None = None
    lr_weights: float = 0.01
    lr_arch: float = 3e-4
    weight_decay: float = 5e-4
    momentum: float = 0.9
    grad_clip: float = 5.0
    tau_start: float = 5.0
    tau_end: float = 0.5
    cost_weight: float = 0.0
    top_k_fraction: float = 0.15
    seed: int = 0
    device: str = "auto"
    num_workers: int = 2
    channels: str = "pseudocolour"
    amp: bool = True
    data: str | None = None
    out: str | None = None
    resume: bool = False
    wandb_mode: str | None = None

    def check(self) -> SearchConfig:
        """Raise a one-line :class:`UserError` naming the option of the first bad value; return self."""
        def bad(name: str, expected: str) -> UserError:
            return UserError(f"--{name.replace('_', '-')} {getattr(self, name)}: expected {expected}")

        def is_int(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        if not is_int(self.depth) or not 2 <= self.depth <= 64:
            raise bad("depth", "an integer in 2..64 (the paper searches 16..24)")
        units = tuple(self.unit_channels)
        if len(units) != 3 or not all(is_int(u) and u >= 1 for u in units):
            raise bad("unit_channels", "three positive integers (unit widths at strides 8, 16, 32)")
        self.unit_channels = units
        for name in ("epochs", "batch_size"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise bad(name, "a positive integer")
        if not is_int(self.warmup_epochs) or not 0 <= self.warmup_epochs <= self.epochs:
            raise bad("warmup_epochs", f"an integer in 0..--epochs ({self.epochs})")
        for name in ("steps_per_epoch", "val_tiles"):
            value = getattr(self, name)
            if value is not None and (not is_int(value) or value < 1):
                raise bad(name, "a positive integer (or none)")
        if not is_int(self.tile_size) or self.tile_size < 32 or self.tile_size % 32:
            raise bad("tile_size", "a multiple of 32 pixels, at least 32 (the network's coarsest stride)")
        if self.crop_size is not None and (not is_int(self.crop_size) or self.crop_size < 32
                                           or self.crop_size % 32 or self.crop_size > self.tile_size):
            raise bad("crop_size", f"a multiple of 32 pixels in 32..--tile-size ({self.tile_size}), or none")
        for name in ("lr_weights", "lr_arch", "tau_start", "tau_end", "grad_clip"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise bad(name, "a positive number")
        if self.tau_end > self.tau_start:
            raise bad("tau_end", f"a temperature no higher than --tau-start ({self.tau_start})")
        for name in ("weight_decay", "cost_weight"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise bad(name, "a non-negative number")
        if not isinstance(self.momentum, (int, float)) or not 0 <= self.momentum < 1:
            raise bad("momentum", "a number in [0, 1)")
        if not isinstance(self.top_k_fraction, (int, float)) or not 0 < self.top_k_fraction <= 1:
            raise bad("top_k_fraction", "a fraction in (0, 1]")
        if not is_int(self.seed) or self.seed < 0:
            raise bad("seed", "a non-negative integer")
        if not is_int(self.num_workers) or self.num_workers < 0:
            raise bad("num_workers", "a non-negative integer")
        if self.channels not in ("pseudocolour", "physical"):
            raise bad("channels", "pseudocolour or physical")
        if self.wandb_mode not in (None, "online", "offline", "disabled"):
            raise bad("wandb_mode", "online, offline or disabled")
        return self

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-plain dict (as saved in ``run.json``, checkpoints and the genotype)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def temperature(epoch: int, config: SearchConfig) -> float:
    """Gumbel-softmax temperature of ``epoch`` (0-based).

    ``tau_start`` through the warm-up, then geometric: search epoch ``j`` (1-based) of ``n`` gets
    ``tau_start * (tau_end / tau_start) ** (j / n)``, so the last epoch runs at ``tau_end``.
    """
    if epoch < config.warmup_epochs:
        return float(config.tau_start)
    n = config.epochs - config.warmup_epochs
    j = epoch - config.warmup_epochs + 1
    return float(config.tau_start * (config.tau_end / config.tau_start) ** (j / n))


def weight_lr(epoch: int, config: SearchConfig) -> float:
    """Learning rate of the weights in ``epoch`` (0-based): cosine decay from ``lr_weights`` over ``epochs``.

    A pure function of the epoch, so a resumed run (even one given more epochs) needs no scheduler state.
    """
    return float(config.lr_weights * 0.5 * (1.0 + math.cos(math.pi * epoch / config.epochs)))


def split_halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the two halves of ``n`` training windows: A (weights) and B (architecture).

    A seeded permutation, so the halves are the same in every run with this seed (and on every rank).
    """
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[: (n + 1) // 2]), np.sort(perm[(n + 1) // 2:])


def build_supernet(supernet_config: dict[str, Any]) -> Supernet:
    """The supernet described by a checkpoint's ``supernet_config`` (depth, classes, input channels)."""
    return Supernet(int(supernet_config["depth"]), num_classes=int(supernet_config["num_classes"]),
                    in_channels=int(supernet_config["in_channels"]),
                    unit_channels=tuple(supernet_config.get("unit_channels", UNIT_CHANNELS)))


def choice_labels(supernet: Supernet) -> dict[str, tuple[str, ...]]:
    """Names of the choices of each kind of :meth:`Supernet.arch_probabilities`, in index order."""
    return {"op": CELL_OPS, "width": tuple(f"x{e}" for e in supernet.expansions), "residual": ("off", "on"),
            "source": SOURCES, "down": DOWN_OPS}


def derive_genotype(supernet: Supernet, provenance: dict[str, Any]) -> Genotype:
    """The supernet's derived genotype with ``provenance`` attached, validated."""
    return dataclasses.replace(supernet.derive(), provenance=dict(provenance)).validate()


def _endless(loader: DataLoader, epoch: int, offset: int) -> Iterator[dict[str, Any]]:
    """Batches of ``loader`` without end: pass ``p`` of ``epoch`` reshuffles with key ``2 (1000 epoch + p) +
    offset``, so the order depends only on the seed, the epoch and the pass (and differs between halves)."""
    for p in itertools.count():
        set_loader_epoch(loader, 2 * (1000 * epoch + p) + offset)
        yield from loader


class ArchitectureSearch:
    """One search run: set-up (data, supernet, optimisers, resume) in the constructor, :meth:`run` to search.

    Parameters
    ----------
    config
        The run's settings (checked here).
    ctx
        The process group to use; None joins the one torchrun's environment describes (or runs alone).

    Attributes
    ----------
    supernet
        The supernet (not wrapped by DDP); its architecture parameters are identical on every rank.
    run_dir
        The run folder (the same path on every rank; only rank 0 writes to it).
    """

    def __init__(self, config: SearchConfig, ctx: DistContext | None = None) -> None:
        from ggmnet.datasets.tiles import TileDataset

        self.config = config.check()
        if not PAPER_DEPTHS[0] <= config.depth <= PAPER_DEPTHS[1]:
            log.warning("warning: --depth %d is outside the paper's searched range %d..%d", config.depth,
                        *PAPER_DEPTHS)
        self.ctx = ctx if ctx is not None else init_distributed(config.device)
        self.device = self.ctx.device
        self.data_dir = self._data_dir()
        self.manifest_sha256 = file_sha256(self.data_dir / "manifest.json")
        self.run_dir, resume_state = self._run_dir_and_state()

        seed_everything(config.seed)
        # the loader's workers compute Eq. 19's instance-size weights (off the training step)
        train = InstanceWeighted(TileDataset(self.data_dir, "train", tile_size=config.tile_size,
                                             crop_size=config.crop_size, augment=True, channels=config.channels,
                                             seed=config.seed))
        val = TileDataset(self.data_dir, "val", tile_size=config.tile_size, crop_size=None, augment=False,
                          channels=config.channels, seed=config.seed)
        if len(train) < 2:
            raise UserError(f"--data {self.data_dir}: {len(train)} training window(s); the search needs at "
                            "least 2 (one for the weights, one for the architecture)")
        if len(val) == 0:
            raise UserError(f"--data {self.data_dir}: no validation windows")
        self.train_data = train
        half_a, half_b = split_halves(len(train), config.seed)
        per_rank = len(half_b) // self.ctx.world_size
        if per_rank < config.batch_size:
            raise UserError(f"--batch-size {config.batch_size}: larger than the {per_rank} training window(s) "
                            f"each process gets from either half of {len(train)}")
        self.loader_a = make_loader(Subset(train, half_a.tolist()), batch_size=config.batch_size, shuffle=True,
                                    ctx=self.ctx, num_workers=config.num_workers, seed=config.seed,
                                    drop_last=True)
        self.loader_b = make_loader(Subset(train, half_b.tolist()), batch_size=config.batch_size, shuffle=True,
                                    ctx=self.ctx, num_workers=config.num_workers, seed=config.seed,
                                    drop_last=True)
        self.steps_per_epoch = config.steps_per_epoch or len(self.loader_a)
        val_ids = np.random.default_rng(config.seed).permutation(len(val))[: config.val_tiles or len(val)]
        self.val_loader = DataLoader(Subset(val, sorted(val_ids.tolist())[self.ctx.rank::self.ctx.world_size]),
                                     batch_size=config.batch_size, shuffle=False,
                                     num_workers=config.num_workers)
        self.num_val_tiles = len(val_ids)

        self.supernet_config = {"depth": config.depth, "num_classes": NUM_CLASSES,
                                "in_channels": int(train.in_channels),
                                "unit_channels": list(config.unit_channels)}
        supernet = build_supernet(self.supernet_config).to(self.device)
        self.supernet = maybe_sync_batchnorm(supernet, self.ctx)
        broadcast_module_(self.supernet)
        self.arch_params = list(self.supernet.arch_parameters())
        # The architecture logits take no gradient outside the architecture step, so DDP (built while they
        # are frozen) leaves them out of its reducer and the weight step does not differentiate them.
        self._arch_requires_grad(False)
        self.model = wrap_ddp(self.supernet, self.ctx, find_unused_parameters=True)
        self.weight_params = list(self.supernet.weight_parameters())
        self.arch_opt = torch.optim.Adam(self.arch_params, lr=config.lr_arch, betas=(0.5, 0.999),
                                         weight_decay=0.0)
        self.weight_opt = torch.optim.SGD(self.weight_params, lr=config.lr_weights, momentum=config.momentum,
                                          weight_decay=config.weight_decay)
        self.use_amp = bool(config.amp) and self.device.type == "cuda"
        self.arch_scaler = make_grad_scaler(self.device, self.use_amp)
        self.weight_scaler = make_grad_scaler(self.device, self.use_amp)
        weights = class_weights_from_counts(np.asarray(train.class_counts))
        self.criterion = WeightedBootstrappedCE(weights, top_k_fraction=config.top_k_fraction).to(self.device)
        self.checkpoints = CheckpointManager(self.run_dir, monitor="val/fwiou", mode="max",
                                             is_main=self.ctx.is_main)
        self.start_epoch = 0
        self.global_step = 0
        if resume_state is not None:
            self._restore(resume_state)

    # ------------------------------------------------------------------ set-up
    def _data_dir(self) -> Path:
        return resolve_dataset_dir(self.config.data, self.ctx)

    def _run_dir_and_state(self) -> tuple[Path, dict[str, Any] | None]:
        """The run folder and, when resuming, the checkpoint to continue from (read on every rank)."""
        cfg = self.config
        run_dir, state = open_run_dir(cfg.out, resume=cfg.resume, runs_root=RUNS_ROOT,
                                      prefix=f"depth{cfg.depth}", kind="search", ctx=self.ctx)
        if cfg.resume and state is None and self.ctx.is_main:
            log.warning("no checkpoint in %s: starting a new search there", run_dir)
        if state is not None:
            self._check_resumable(state, run_dir / "checkpoints" / "last.pt")
        return run_dir, state

    def _check_resumable(self, state: dict[str, Any], path: Path) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise UserError(f"--resume {path}: not a search checkpoint (format {state.get('format')!r})")
        check_resume_config(state.get("config", {}), self.config, _RESUME_FIXED, path)
        if state.get("provenance", {}).get("dataset_manifest_sha256") != self.manifest_sha256:
            raise UserError(f"--resume {path}: the run searched another dataset than --data {self.data_dir} "
                            "(manifest sha256 differs)")

    def _restore(self, state: dict[str, Any]) -> None:
        self.supernet.load_state_dict(state["supernet"])
        self.arch_opt.load_state_dict(state["arch_optimizer"])
        self.weight_opt.load_state_dict(state["weight_optimizer"])
        self.arch_scaler.load_state_dict(state["arch_scaler"])
        self.weight_scaler.load_state_dict(state["weight_scaler"])
        self.checkpoints.best_value = state["checkpoint"]["best_value"]
        self.start_epoch = int(state["epoch"])
        self.global_step = int(state["step"])
        restore_rng_state(state["rng"])

    # ------------------------------------------------------------------ steps
    def _batch(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Image, mask and (training batches) the instance-size weights made by the loader's workers."""
        weights = batch.get("pixel_weights")
        return (batch["image"].to(self.device, non_blocking=True),
                batch["mask"].to(self.device, non_blocking=True),
                None if weights is None else weights.to(self.device, non_blocking=True))

    def _loss(self, logits: list[torch.Tensor], mask: torch.Tensor,
              pixel_weights: torch.Tensor | None = None) -> torch.Tensor:
        return sum_head_losses(self.criterion, logits, mask, pixel_weights=pixel_weights)

    def _average_arch_grads(self) -> None:
        """Average the architecture gradients over the ranks (one all-reduce of their concatenation)."""
        if not self.ctx.is_distributed:
            return
        flat = all_reduce_mean(torch.cat([p.grad.reshape(-1) for p in self.arch_params]))
        offset = 0
        for p in self.arch_params:
            p.grad = flat[offset: offset + p.numel()].view_as(p).to(p.dtype)
            offset += p.numel()

    def _arch_requires_grad(self, flag: bool) -> None:
        for p in self.arch_params:
            p.requires_grad_(flag)

    def arch_step(self, batch: dict[str, Any]) -> float:
        """One architecture update on a batch of half B; returns its loss (Eq. 19 plus the cost term).

        The gradient is taken with respect to the architecture logits only (``torch.autograd.grad``), so the
        weights' ``.grad`` is never touched: FasterSeg's leak of architecture-step gradients into the weight
        update cannot happen, and DDP's reducer sees nothing of this step.
        """
        image, mask, pixel_weights = self._batch(batch)
        self._arch_requires_grad(True)
        try:
            with autocast_for(self.device, self.use_amp):
                logits = self.supernet(image, mode="sample")
            loss = self._loss(logits, mask, pixel_weights)
            if self.config.cost_weight > 0:
                loss = loss + self.config.cost_weight * self.supernet.expected_cost()
            grads = torch.autograd.grad(self.arch_scaler.scale(loss), self.arch_params, allow_unused=True)
        finally:
            self._arch_requires_grad(False)
        for p, g in zip(self.arch_params, grads):
            p.grad = torch.zeros_like(p) if g is None else g
        self._average_arch_grads()
        self.arch_scaler.step(self.arch_opt)
        self.arch_scaler.update()
        return float(loss.detach())

    def weight_step(self, batch: dict[str, Any]) -> float:
        """One weight update on a batch of half A through DDP (sampled architecture); returns its loss."""
        image, mask, pixel_weights = self._batch(batch)
        self.weight_opt.zero_grad(set_to_none=True)
        with autocast_for(self.device, self.use_amp):
            logits = self.model(image, mode="sample")
        loss = self._loss(logits, mask, pixel_weights)
        self.weight_scaler.scale(loss).backward()
        self.weight_scaler.unscale_(self.weight_opt)
        torch.nn.utils.clip_grad_norm_(self.weight_params, self.config.grad_clip)
        self.weight_scaler.step(self.weight_opt)
        self.weight_scaler.update()
        return float(loss.detach())

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """Warm-up or search steps of ``epoch``; returns the mean losses (over the ranks)."""
        searching = epoch >= self.config.warmup_epochs
        self.train_data.set_epoch(epoch)
        self.model.train()
        batches_a = _endless(self.loader_a, epoch, 0)
        batches_b = _endless(self.loader_b, epoch, 1)
        sums = torch.zeros(2, dtype=torch.float64)
        desc = f"epoch {epoch + 1}/{self.config.epochs} ({'search' if searching else 'warm-up'})"
        for _ in tqdm(range(self.steps_per_epoch), desc=desc, leave=False, disable=not self.ctx.is_main,
                      dynamic_ncols=True):
            if searching:
                sums[1] += self.arch_step(next(batches_b))
            sums[0] += self.weight_step(next(batches_a))
            self.global_step += 1
        means = all_reduce_mean(sums) / self.steps_per_epoch
        out = {"train/loss": float(means[0])}
        if searching:
            out["train/arch_loss"] = float(means[1])
        return out

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """Score the derived architecture (``mode="argmax"``) on the fixed validation tiles.

        The prediction is the argmax of the three heads' logits upsampled to the tile and summed (the
        supernet's stand-in for GGMNet's fusion of the branches). Returns the scores of
        :meth:`ConfusionMatrix.compute` plus ``loss`` (Eq. 19 summed over heads, mean over batches).
        """
        self.supernet.eval()
        matrix = ConfusionMatrix(NUM_CLASSES)
        totals = torch.zeros(2, dtype=torch.float64)
        for batch in self.val_loader:
            image, mask, _ = self._batch(batch)
            with autocast_for(self.device, self.use_amp):
                logits = self.supernet(image, mode="argmax")
            totals += torch.tensor([float(self._loss(logits, mask)), 1.0], dtype=torch.float64)
            fused = sum(F.interpolate(z.float(), size=mask.shape[-2:], mode="bilinear", align_corners=False)
                        for z in logits)
            matrix.update(fused.argmax(1), mask)
        self.supernet.train()
        all_reduce_sum_(totals)
        scores = matrix.all_reduce().compute()
        scores["loss"] = float(totals[0] / totals[1]) if totals[1] > 0 else None
        return scores

    # ------------------------------------------------------------------ outputs
    def provenance(self, epoch: int, scores: dict[str, Any]) -> dict[str, Any]:
        """What the genotype of ``epoch`` (1-based, completed) came from: data, seed, settings, scores."""
        return {
            "stage": "search",
            "dataset": str(self.data_dir),
            "dataset_manifest_sha256": self.manifest_sha256,
            "seed": self.config.seed,
            "config": self.config.to_dict(),
            "epoch": epoch,
            "metrics": {k: scores.get(k) for k in ("fwiou", "mpa", "miou", "pixel_accuracy", "loss")},
            "val_tiles": self.num_val_tiles,
            "world_size": self.ctx.world_size,
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }

    def _log_probabilities(self, tracker: Tracker, step: int) -> None:
        """One heatmap per choice kind: layers (rows) x branch node and choice (columns), NaN: no node."""
        names = choice_labels(self.supernet)
        for kind, probs in self.supernet.arch_probabilities().items():
            depth, nodes, n = probs.shape
            columns = [f"1/{STRIDES[k]} {names[kind][c]}" for k in range(nodes) for c in range(n)]
            tracker.log_heatmap(f"arch/{kind}", probs.reshape(depth, nodes * n), x_labels=columns,
                                y_labels=[str(i) for i in range(depth)], step=step,
                                title=f"architecture probabilities: {kind} (layer x branch node)")

    def _checkpoint_state(self, epoch: int, tau: float, scores: dict[str, Any],
                          provenance: dict[str, Any]) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "supernet": self.supernet.state_dict(),
            "supernet_config": dict(self.supernet_config),
            "arch_optimizer": self.arch_opt.state_dict(),
            "weight_optimizer": self.weight_opt.state_dict(),
            "arch_scaler": self.arch_scaler.state_dict(),
            "weight_scaler": self.weight_scaler.state_dict(),
            "epoch": epoch,
            "step": self.global_step,
            "tau": tau,
            "rng": capture_rng_state(),
            "metrics": {k: v for k, v in scores.items() if not isinstance(v, list)},
            "config": self.config.to_dict(),
            "provenance": provenance,
        }

    def save_checkpoint(self, epoch: int, tau: float, scores: dict[str, Any],
                        provenance: dict[str, Any]) -> bool:
        """Write ``last.pt`` (and ``best.pt`` on a better FWIoU) on rank 0; True when it was a new best."""
        state = self._checkpoint_state(epoch, tau, scores, provenance)
        return self.checkpoints.save(state, epoch=epoch, metric=scores.get("fwiou"))

    # ------------------------------------------------------------------ the loop
    def run(self) -> Path:
        """Search from the start (or the resumed epoch) to ``epochs``; returns the run folder."""
        cfg, main = self.config, self.ctx.is_main
        if main:
            name = "run.json" if self.start_epoch == 0 else f"run.resume-{self.start_epoch}.json"
            write_run_metadata(self.run_dir, cfg.to_dict(), seed=cfg.seed, name=name,
                               extra={"stage": "search", "data": str(self.data_dir),
                                      "dataset_manifest_sha256": self.manifest_sha256,
                                      "world_size": self.ctx.world_size, "resumed_at_epoch": self.start_epoch})
            log.info("search: depth %d, %d train windows (halves %d/%d), %d val tiles, %d steps/epoch, "
                     "%d process(es) on %s -> %s", cfg.depth, len(self.train_data), len(self.loader_a.dataset),
                     len(self.loader_b.dataset), self.num_val_tiles, self.steps_per_epoch,
                     self.ctx.world_size, self.device, self.run_dir)
        tracker = Tracker(self.run_dir, project="ggmnet", name=self.run_dir.name, config=cfg.to_dict(),
                          job_type="search", mode=cfg.wandb_mode, is_main=main,
                          resume=self.start_epoch > 0)
        try:
            if self.start_epoch >= cfg.epochs:
                log.info("search: %s already finished %d epoch(s)", self.run_dir, self.start_epoch)
            for epoch in range(self.start_epoch, cfg.epochs):
                self._epoch(epoch, tracker)
        finally:
            tracker.finish()
        return self.run_dir

    def _epoch(self, epoch: int, tracker: Tracker) -> None:
        cfg, main = self.config, self.ctx.is_main
        start = time.perf_counter()
        tau = temperature(epoch, cfg)
        self.supernet.set_tau(tau)
        lr = weight_lr(epoch, cfg)
        for group in self.weight_opt.param_groups:
            group["lr"] = lr
        losses = self.train_epoch(epoch)
        scores = self.validate()
        done = epoch + 1
        provenance = self.provenance(done, scores)
        genotype = derive_genotype(self.supernet, provenance)
        if main:
            genotype.save(self.run_dir / "genotype.json")
        best = self.save_checkpoint(done, tau, scores, provenance)
        if best:
            genotype.save(self.run_dir / "genotype_best.json")
        if main:
            metrics = {**losses, "epoch": done, "tau": tau, "lr/weights": lr,
                       "cost/expected": float(self.supernet.expected_cost().detach()),
                       **{f"val/{k}": v for k, v in scores.items() if isinstance(v, float)}}
            tracker.log(metrics, step=done)
            self._log_probabilities(tracker, done)
            tracker.log_artifact(self.run_dir / "genotype.json", name=f"genotype-{self.run_dir.name}",
                                 type="genotype")
            log.info("epoch %d/%d %s: loss %.4f%s  val FWIoU %s MPA %s  tau %.3f  %.0f s%s", done, cfg.epochs,
                     "search" if epoch >= cfg.warmup_epochs else "warm-up", losses["train/loss"],
                     f" arch {losses['train/arch_loss']:.4f}" if "train/arch_loss" in losses else "",
                     _pct(scores.get("fwiou")), _pct(scores.get("mpa")), tau, time.perf_counter() - start,
                     "  (best)" if best else "")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def run_search(config: SearchConfig, ctx: DistContext | None = None) -> Path:
    """Run (or resume) a search with ``config``; returns the run folder.

    The folder holds ``run.json``, ``genotype.json`` (the architecture derived after the last epoch, with
    provenance), ``genotype_best.json`` (after the epoch of best validation FWIoU), ``checkpoints/last.pt`` and
    ``best.pt``, and the tracker's local copies (``metrics.jsonl``, heatmaps).
    """
    return ArchitectureSearch(config, ctx).run()
