"""The differentiable architecture search of MRFEM (section 4.2 of the paper): the search loop.

The supernet (:class:`ggmnet.search_space.supernet.Supernet`) holds two sets of parameters: the network
weights and the architecture logits. The training windows are split once, by a seeded permutation, into two
halves: half A trains the weights, half B the architecture, so that the architecture is chosen by how well the
weights generalise rather than by how well they fit. An epoch is either

* a **warm-up** epoch (the first ``warmup_epochs``): weight steps only; or
* a **search** epoch: every step is a first-order alternating update, an architecture step on a B batch
  (Adam) followed by a weight step on an A batch (SGD with momentum, or Adam). The architecture step
  differentiates the loss with respect to the architecture logits only, so it leaves no gradient on the
  weights: FasterSeg let its architecture step's weight gradients leak into the weight update.

The weight step follows the **sandwich rule** (``sandwich``; :mod:`ggmnet.search.steps`, docs/search.md),
so every width and residual choice is trained and the search decides all four of the paper's choices per cell:
operator, width expansion, residual connection and downsampling path. The architecture step's estimator is
``arch_estimator`` (:meth:`Supernet.forward`'s modes ``"pairs"``, ``"sample"``, ``"soft"``). Draws come from
``softmax(logits / tau)``, ``tau`` kept at ``tau_start`` through the warm-up, then annealed geometrically each
epoch to ``tau_end``. The loss is Eq. 19 (:class:`~ggmnet.losses.WeightedBootstrappedCE`) summed over the three
heads at strides 8, 16, 32.

**Cost.** ``cost_target`` (a fraction of the largest network's cost, or GMACs of MRFEM at 1024 x 1024, or
milliseconds of a ``latency_table`` measured by ``nas-latency-table``, :mod:`ggmnet.search.latency`) adds the
cost term of :class:`~ggmnet.search.steps.CostControl` to the architecture loss, and the derivation brings the
most likely architecture to the target (:meth:`Supernet.constrain`); ``min_real_cells`` keeps a floor of
non-skip cells in every branch.

After every epoch the currently derived architecture (``mode="argmax"``) gets BatchNorm statistics of its own
(:func:`recalibrate_batchnorm`) and is validated; its genotype is written with its provenance to
``RUN/genotype.json``, the architecture probabilities are logged as heatmaps (:mod:`ggmnet.search.report`), and
the state is checkpointed by the engine (:class:`ggmnet.engine.loop.Engine`: ``last.pt``, ``best.pt`` of the
best validation FWIoU among the search epochs, resume to the same architecture parameters).

Several processes (``torchrun --nproc_per_node=N``): DistributedDataParallel on shards of the data, every rank
with the same generator seed, so all ranks draw the same architecture in a step. The architecture logits are
frozen outside the architecture step, so DDP leaves them out; their gradients are averaged over the ranks
before each architecture step and the logits broadcast from rank 0 at the start. On CPU (gloo) each rank keeps
BatchNorm statistics of its own batch (SyncBatchNorm runs on CUDA only). Only rank 0 writes files and logs.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Subset

from ggmnet.datasets import ensure_synthetic_default
from ggmnet.engine.checkpoint import CheckpointFormat
from ggmnet.engine.config import (
    DERIVED,
    EPOCHS,
    NON_NEGATIVE,
    NON_NEGATIVE_INT,
    POSITIVE,
    RunConfig,
    boolean,
    choice,
    integer,
    integers,
    num_workers_field,
    number,
    option,
    optional,
    text,
)
from ggmnet.engine.device import autocast_for
from ggmnet.engine.distributed import (
    DistContext,
    broadcast_module_,
    maybe_sync_batchnorm,
    process_group,
    wrap_ddp,
)
from ggmnet.engine.loaders import make_loader, reshuffled, validation_loader
from ggmnet.engine.loop import Callback, Engine
from ggmnet.errors import UserError
from ggmnet.inference.scoring import WindowScorer
from ggmnet.losses import InstanceWeighted, WeightedBootstrappedCE, sum_head_losses
from ggmnet.search.latency import load_latency_table
from ggmnet.search.steps import LARGEST, CostControl, SearchSteps
from ggmnet.search_space.genotype import Genotype
from ggmnet.search_space.operations import UNIT_CHANNELS
from ggmnet.search_space.supernet import Supernet

log = logging.getLogger(__name__)

#: ``format`` and ``version`` of a search checkpoint (``checkpoints/last.pt`` and ``best.pt`` of a search run).
CHECKPOINT = CheckpointFormat("ggmnet-search-checkpoint", 2, "search")
#: Where runs go when no ``out`` is given, relative to the working directory.
RUNS_ROOT = Path("runs") / "search"
#: The lowest and highest MRFEM depths the paper searched (Table 4); others are allowed with a warning.
DEPTH_RANGE = (16, 24)
#: The input side at which an absolute cost target in GMACs is counted (``--cost-target 12GMAC``).
GMAC_SIZE = 1024
#: Share of the epochs that warm up the weights when ``--warmup-epochs`` is not given (the paper's 20 of 50).
WARMUP_SHARE = 0.4


def cost_target(value: Any) -> float | str:
    """A ``--cost-target``: a fraction in (0, 1] of the largest network's cost, or ``<x>GMAC`` (MRFEM
    multiply-accumulates on a 1024 x 1024 input) or ``<x>ms`` (milliseconds of a ``--latency-table``)."""
    expected = "a fraction in (0, 1] of the largest network's cost, or a cost such as 5GMAC or 30ms"
    text_value = str(value).strip()
    for unit in ("GMAC", "ms"):
        if isinstance(value, str) and text_value.endswith(unit):
            try:
                amount = float(text_value[: -len(unit)])
            except ValueError:
                raise ValueError(expected) from None
            if not (math.isfinite(amount) and amount > 0):
                raise ValueError(expected)
            return f"{amount:g}{unit}"
    try:
        fraction = float(text_value)
    except ValueError:
        raise ValueError(expected) from None
    if isinstance(value, bool) or not 0 < fraction <= 1:
        raise ValueError(expected)
    return fraction


@dataclasses.dataclass
class SearchConfig(RunConfig):
    """Settings of one search run (defaults: the paper's scale; ``experiments/search_cpu.yaml`` is a CPU recipe).

    Each field is an option of ``nas-search``, whose help gives its meaning, unit and default.
    """

    epochs: int = EPOCHS.field(50)
    num_workers: int = num_workers_field(2)
    depth: int = option(22, "cells per branch of the MRFEM, 2..64; the paper searches 16..24 (others warn)",
                        integer(lambda v: 2 <= v <= 64, "an integer in 2..64 (the paper searches 16..24)"))
    unit_channels: tuple[int, int, int] = option(
        UNIT_CHANNELS, "unit widths at strides 8, 16, 32; a cell of width expansion e has e x unit channels, so "
                       "expansion 8 at 1/8 gives the encoder's 96. Smaller units give a lighter supernet (the CPU "
                       "recipe uses 4,8,16)",
        integers(3, lambda v: v >= 1, "three positive integers (unit widths at strides 8, 16, 32)"),
        metavar="U8,U16,U32")
    warmup_epochs: int = option(DERIVED, "leading epochs of --epochs that train the weights only, on sampled "
                                         "architectures", NON_NEGATIVE_INT, metavar="N",
                                derive=lambda c: round(WARMUP_SHARE * c.epochs),
                                derived=f"{WARMUP_SHARE:.0%} of --epochs, rounded")
    weight_optimizer: str = option("sgd", "optimiser of the supernet's weights: sgd (FasterSeg's: --momentum, "
                                          "--weight-decay) or adam (betas 0.9/0.999, --weight-decay as L2)",
                                   choice("sgd", "adam"))
    lr_weights: float = option(0.01, "initial learning rate of the weights (cosine decay over the epochs)", POSITIVE)
    lr_arch: float = option(3e-4, "learning rate of the architecture logits (Adam, betas 0.5/0.999, no weight "
                                  "decay)", POSITIVE)
    weight_decay: float = option(5e-4, "SGD weight decay of the weights", NON_NEGATIVE)
    momentum: float = option(0.9, "SGD momentum of the weights", number(lambda v: 0 <= v < 1, "a number in [0, 1)"))
    grad_clip: float = option(5.0, "maximum global norm of the weights' gradient", POSITIVE)
    tau_start: float = option(5.0, "Gumbel-softmax temperature during the warm-up", POSITIVE)
    tau_end: float = option(0.5, "temperature at the last epoch (geometric annealing per epoch)", POSITIVE)
    cost_target: float | str | None = option(
        None, "the derived network's cost target: a fraction in (0, 1] of the largest network's cost (every cell "
              "at its widest width with its costliest operator and residual connection, no cell shared), or "
              "5GMAC (MRFEM multiply-accumulates on a 1024 x 1024 input), or 30ms (with --latency-table); none "
              "searches for accuracy only, as the paper does", optional(cost_target), metavar="F|XGMAC|Xms")
    cost_weight: float = option(0.0, "initial weight of the cost term (expected cost / target) in the "
                                     "architecture loss; with --cost-target it is then adapted after every "
                                     "architecture step", NON_NEGATIVE)
    cost_rate: float = option(0.05, "step of the cost term's weight per architecture step per unit of relative "
                                    "excess of the derived network's cost over the target (dual ascent)",
                              NON_NEGATIVE)
    min_real_cells: int = option(DERIVED, "fewest cells per branch whose operator is not skip in the derived "
                                          "network", NON_NEGATIVE_INT, metavar="N",
                                 derive=lambda c: math.ceil(c.depth / 2) if c.cost_target is not None else 0,
                                 derived="half of --depth with --cost-target, else 0")
    latency_table: str | None = option(None, "cost table measured by nas-latency-table (milliseconds per operator "
                                             "on the machine that will run the network) instead of "
                                             "multiply-accumulates", optional(text), metavar="FILE")
    residual_prior: float = option(0.5, "initial probability of each cell's residual connection (0.5: none "
                                        "favoured); the search moves it", number(lambda v: 0 < v < 1,
                                                                                  "a probability in (0, 1)"))
    sandwich: int = option(2, "sampled networks trained beside the largest in each weight step (the sandwich "
                              "rule: the first is the smallest, the others random), each on the labels plus its "
                              "divergence from the largest's prediction; 0 trains one sampled network per step "
                              "(see --train-largest)", NON_NEGATIVE_INT, metavar="N")
    arch_estimator: str = option(
        "pairs", "gradient of the architecture step: pairs (two draws of every choice; where they differ the "
                 "rival candidate is computed too and the logits learn from the difference of the two outputs), "
                 "sample (one straight-through Gumbel draw: the candidates never compete; kept for comparison) "
                 "or soft (DARTS: every candidate mixed, tens of times slower)", choice("pairs", "sample", "soft"))
    fixed_largest: bool = option(False, "fix every cell at its widest width with its residual connection and search "
                                        "the operators and the downsampling path only (the CPU recipe until the sandwich "
                                        "rule made narrow and residual-free cells trainable; kept for comparison: "
                                        "docs/search.md)", boolean)
    train_largest: str = option(
        "warmup", "with --sandwich 0, weight steps that train the largest network (every node at its widest width, "
                  "with its residual connection; operators and paths sampled): always, in the warm-up only, or "
                  "never (every choice sampled: a depth-22 supernet then stays untrained for hundreds of steps). "
                  "The architecture steps always sample every choice",
        choice("always", "warmup", "never"))
    bn_batches: int = option(4, "training batches (central tiles, no augmentation, a fixed seeded choice) that "
                                "recompute the BatchNorm statistics of the derived architecture before it is "
                                "validated; 0 keeps the statistics pooled over every sampled architecture",
                             NON_NEGATIVE_INT, metavar="N")

    def check_together(self) -> None:
        super().check_together()
        if self.warmup_epochs > self.epochs:
            raise self.error("warmup_epochs", f"an integer in 0..--epochs ({self.epochs})")
        if self.tile_size < 32 or self.tile_size % 32:
            raise self.error("tile_size", "a multiple of 32 pixels, at least 32 (the network's coarsest stride)")
        if self.crop_size is not None and (self.crop_size < 32 or self.crop_size % 32
                                           or self.crop_size > self.tile_size):
            raise self.error("crop_size", f"a multiple of 32 pixels in 32..--tile-size ({self.tile_size}), or none")
        if self.tau_end > self.tau_start:
            raise self.error("tau_end", f"a temperature no higher than --tau-start ({self.tau_start})")
        if isinstance(self.cost_target, str) and self.cost_target.endswith("ms") and self.latency_table is None:
            raise self.error("cost_target", "a fraction or GMACs (a target in ms needs --latency-table)")
        if isinstance(self.cost_target, str) and self.cost_target.endswith("GMAC") and self.latency_table:
            raise self.error("cost_target", "a fraction or ms (with --latency-table the cost is its milliseconds)")


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
    """The supernet described by a checkpoint's ``supernet_config``: depth, classes, input channels, unit widths,
    the choice kinds fixed out of the search, and the derivation's constraints (cost table, cost limit, floor of
    real cells), so that exporting a checkpoint derives what the search derived."""
    supernet = Supernet(int(supernet_config["depth"]), num_classes=int(supernet_config["num_classes"]),
                        in_channels=int(supernet_config["in_channels"]),
                        unit_channels=tuple(supernet_config.get("unit_channels", UNIT_CHANNELS)),
                        residual_prior=float(supernet_config.get("residual_prior", 0.5)))
    supernet.fix(**supernet_config.get("fixed", {}))
    table = supernet_config.get("cost_table")
    if table is not None:
        supernet.set_cost_table({(op, int(s), int(a), int(c)): float(v) for op, s, a, c, v in table})
    supernet.constrain(cost_limit=supernet_config.get("cost_limit"),
                       min_real_cells=int(supernet_config.get("min_real_cells", 0)))
    return supernet


def cost_limit(target: float | str, supernet: Supernet) -> float:
    """The absolute cost (the supernet's cost unit) of a ``--cost-target``."""
    if isinstance(target, str) and target.endswith("GMAC"):
        return float(target[:-4]) * 1e9 / GMAC_SIZE**2
    if isinstance(target, str) and target.endswith("ms"):
        return float(target[:-2])
    return float(target) * supernet.largest_cost()


def branch_output_layers(genotype: Genotype) -> list[int]:
    """Per branch, the first layer (0-based) whose cell is at the branch's output stride: where a coarse branch
    gets there (late: the branch is the finer branches' stack with a downsampling at the end)."""
    return [next(i for i, c in enumerate(b.cells) if c.stride == b.output_stride) for b in genotype.branches]


def search_summary(supernet: Supernet, genotype: Genotype, supernet_config: dict[str, Any]) -> dict[str, Any]:
    """What the search decided, for the genotype's provenance: each chosen option's probability, the mean
    chosen probability per choice kind (uniform: 1/5 for operators, 1/4 for widths, 1/2 for residuals), each
    kind's entropy, where each branch reaches its output stride, its real (non-skip) cells, and the cost
    (derived network, target, largest network of the space, and their ratios)."""
    choices = supernet.choice_probabilities(genotype)
    flat = [c for cells in choices for c in cells]
    derived, largest = supernet.genotype_cost(genotype), supernet.largest_cost()
    limit = supernet_config.get("cost_limit")
    cost = {"unit": supernet_config.get("cost_unit", "MACs per input pixel"), "derived": derived,
            "largest": largest, "fraction_of_largest": derived / largest, "target": limit,
            "target_fraction_of_largest": None if limit is None else limit / largest,
            "min_real_cells": supernet.min_real_cells}
    if cost["unit"] == "MACs per input pixel":
        cost["gmacs_at_1024"] = derived * GMAC_SIZE**2 / 1e9
    return {
        "choices": [{"output_stride": spec.output_stride, "cells": cells}
                    for spec, cells in zip(genotype.branches, choices)],
        **{f"mean_{kind}_probability": float(np.mean([c[f"{key}_probability"] for c in flat]))
           for kind, key in (("op", "op"), ("width", "expansion"), ("residual", "residual"),
                             ("source", "source"))},
        "entropy": supernet.choice_entropy(),
        "branch_output_layers": branch_output_layers(genotype),
        "real_cells": [sum(c.op != "skip" for c in b.cells) for b in genotype.branches],
        "cost": cost,
    }


def derive_genotype(supernet: Supernet, provenance: dict[str, Any],
                    classes: dict[str, Any] | None = None) -> Genotype:
    """The supernet's derived genotype with ``provenance`` and the dataset's class list attached, validated."""
    return dataclasses.replace(supernet.derive(), provenance=dict(provenance), classes=classes).validate()


class ArchitectureSearch(Engine):
    """One search run: the engine's loop with the search's data, supernet, steps and outputs.

    Attributes
    ----------
    supernet
        The supernet (not wrapped by DDP); its architecture parameters are identical on every rank.
    loader_a, loader_b
        The loaders of half A (weights) and half B (architecture) of the training windows.
    """

    stage = "search"
    checkpoint_format = CHECKPOINT
    #: ``best.pt`` is chosen among the search epochs only: in the warm-up the architecture has not been judged
    #: and its derivation is merely the first option of every choice.
    monitor = "search_fwiou"
    #: a tie (at a short budget every derived network may still predict one class) goes to the later epoch,
    #: whose architecture the search has decided more
    ties_to_later = True
    runs_root = RUNS_ROOT
    resume_fixed = ("depth", "unit_channels", "tile_size", "crop_size", "pixels_per_degree", "augment", "batch_size",
                    "channels", "seed", "class_weighting", "instance_weighting", "top_k_fraction", "arch_estimator",
                    "bn_batches", "weight_optimizer", "train_largest", "fixed_largest", "sandwich", "cost_target",
                    "latency_table", "min_real_cells", "residual_prior", "geology_prior")
    default_dataset = staticmethod(ensure_synthetic_default)
    config: SearchConfig

    def run_name(self) -> str:
        return f"depth{self.config.depth}"

    def setup(self, state: dict[str, Any] | None) -> None:
        from ggmnet.datasets.tiles import TileDataset

        cfg = self.config
        if not DEPTH_RANGE[0] <= cfg.depth <= DEPTH_RANGE[1]:
            log.warning("warning: --depth %d is outside the paper's searched range %d..%d", cfg.depth,
                        *DEPTH_RANGE)
        train = TileDataset.for_run(cfg, self.data_dir, "train", train=True)
        # the loader's workers compute Eq. 19's instance-size weights (off the training step)
        train = InstanceWeighted(train) if cfg.instance_weighting else train
        val = TileDataset.for_run(cfg, self.data_dir, "val", train=False)
        # Fixed central tiles of a seeded choice of training windows recompute the derived architecture's
        # BatchNorm statistics before each validation.
        plain = TileDataset.for_run(cfg, self.data_dir, "train", train=True, augment=False, hide_outcrop=True)
        self.bn_tiles = batchnorm_tiles(plain, seed=cfg.seed + 1, tiles=cfg.bn_batches * cfg.batch_size,
                                        batch_size=cfg.batch_size)
        self.scorer = WindowScorer.for_run(cfg, self.data_dir, self.device)
        if len(train) < 2:
            raise UserError(f"--data {self.data_dir}: {len(train)} training window(s); the search needs at "
                            "least 2 (one for the weights, one for the architecture)")
        if len(val) == 0:
            raise UserError(f"--data {self.data_dir}: no validation windows")
        self.train_data = train
        half_a, half_b = split_halves(len(train), cfg.seed)
        per_rank = len(half_b) // self.ctx.world_size
        if per_rank < cfg.batch_size:
            raise UserError(f"--batch-size {cfg.batch_size}: larger than the {per_rank} training window(s) "
                            f"each process gets from either half of {len(train)}")
        self.loader_a, self.loader_b = (
            make_loader(Subset(train, half.tolist()), batch_size=cfg.batch_size, shuffle=True, ctx=self.ctx,
                        num_workers=cfg.num_workers, seed=cfg.seed, drop_last=True) for half in (half_a, half_b))
        self.steps_per_epoch = cfg.steps_per_epoch or len(self.loader_a)
        self.val_loader, val_ids = validation_loader(val, tiles=cfg.val_tiles, seed=cfg.seed,
                                                     batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                                                     ctx=self.ctx)
        self.num_val_tiles = len(val_ids)

        self.classes = train.classes
        self.supernet_config = {"depth": cfg.depth, "num_classes": train.num_classes,
                                "classes": train.classes.to_dict(), "in_channels": int(train.in_channels),
                                "unit_channels": list(cfg.unit_channels),
                                "fixed": {"width": -1, "residual": 1} if cfg.fixed_largest else {},
                                "min_real_cells": cfg.min_real_cells, "residual_prior": cfg.residual_prior,
                                "cost_unit": "MACs per input pixel"}
        if cfg.latency_table is not None:
            table = load_latency_table(cfg.latency_table)
            self.supernet_config["cost_table"] = table.rows()
            self.supernet_config["cost_unit"] = table.unit
        supernet = build_supernet(self.supernet_config)
        if cfg.cost_target is not None:
            self.supernet_config["cost_limit"] = cost_limit(cfg.cost_target, supernet)
            supernet.constrain(cost_limit=self.supernet_config["cost_limit"], min_real_cells=cfg.min_real_cells)
        supernet = supernet.to(self.device)
        self.supernet = self.network = maybe_sync_batchnorm(supernet, self.ctx)
        broadcast_module_(self.supernet)
        # The architecture logits take no gradient outside the architecture step (SearchSteps freezes them),
        # so DDP (built while they are frozen) leaves them out of its reducer and the weight step does not
        # differentiate them.
        for p in self.supernet.arch_parameters():
            p.requires_grad_(False)
        self.model = wrap_ddp(self.supernet, self.ctx, find_unused_parameters=True)
        weight_params = list(self.supernet.weight_parameters())
        arch_opt = torch.optim.Adam(self.supernet.arch_parameters(), lr=cfg.lr_arch, betas=(0.5, 0.999),
                                    weight_decay=0.0)
        if cfg.weight_optimizer == "adam":
            weight_opt = torch.optim.Adam(weight_params, lr=cfg.lr_weights, weight_decay=cfg.weight_decay)
        else:
            weight_opt = torch.optim.SGD(weight_params, lr=cfg.lr_weights, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)
        self.criterion = WeightedBootstrappedCE.for_run(cfg, train.class_counts).to(self.device)
        cost = None if cfg.cost_target is None else CostControl(self.supernet_config["cost_limit"],
                                                                 weight=cfg.cost_weight, rate=cfg.cost_rate)
        self.steps = SearchSteps(self.supernet, self.model, self.head_losses, weight_opt=weight_opt, arch_opt=arch_opt,
                                 sandwich=cfg.sandwich, estimator=cfg.arch_estimator, cost=cost,
                                 grad_clip=cfg.grad_clip, device=self.device, use_amp=self.use_amp, ctx=self.ctx)

    def load_state(self, state: dict[str, Any]) -> None:
        self.supernet.load_state_dict(state["supernet"])
        self.steps.load_state_dict(state)

    def checkpoint_state(self, epoch: int, scores: dict[str, Any]) -> dict[str, Any]:
        return {
            "supernet": self.supernet.state_dict(),
            "supernet_config": dict(self.supernet_config),
            "tau": self.tau,
            "metrics": {k: v for k, v in scores.items() if not isinstance(v, list)},
            "config": self.config.to_dict(),
            "provenance": self.genotype.provenance,
        }

    def training_state(self) -> dict[str, Any]:
        return self.steps.state_dict()

    # ------------------------------------------------------------------ steps
    def loss(self, logits: list[torch.Tensor], mask: torch.Tensor,
             pixel_weights: torch.Tensor | None = None) -> torch.Tensor:
        """Eq. 19 summed over the three heads."""
        return sum_head_losses(self.criterion, logits, mask, pixel_weights=pixel_weights)

    def head_losses(self, logits: list[torch.Tensor], mask: torch.Tensor,
                    pixel_weights: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Eq. 19 at each head (the instance weights computed once)."""
        if pixel_weights is None:
            pixel_weights = self.criterion.pixel_weights_for(mask)
        return [sum_head_losses(self.criterion, [z], mask, pixel_weights=pixel_weights) for z in logits]

    def arch_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One architecture update on a batch of half B (:meth:`SearchSteps.arch_step`): the gradient is taken
        with respect to the architecture logits only, so the weights' ``.grad`` is never touched (FasterSeg's
        leak of architecture-step gradients into the weight update cannot happen, and DDP's reducer sees
        nothing of this step)."""
        return self.steps.arch_step(*self.inputs(batch))

    def weight_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One weight update on a batch of half A through DDP (:meth:`SearchSteps.weight_step`)."""
        largest = self.config.train_largest
        pinned = largest == "always" or (largest == "warmup" and not self.searching)
        return self.steps.weight_step(*self.inputs(batch), warmup=not self.searching,
                                      pins=LARGEST if pinned else None)

    def begin_epoch(self, epoch: int) -> dict[str, Any]:
        """Temperature and learning rate of ``epoch``; returns them for the log."""
        self.searching = epoch >= self.config.warmup_epochs
        self.phase = "search" if self.searching else "warm-up"
        self.tau = temperature(epoch, self.config)
        self.supernet.set_tau(self.tau)
        lr = weight_lr(epoch, self.config)
        for group in self.steps.weight_opt.param_groups:
            group["lr"] = lr
        self.train_data.set_epoch(epoch)
        self.model.train()
        return {"tau": self.tau, "lr/weights": lr}

    def batches(self, epoch: int) -> Iterator[tuple[dict[str, Any] | None, dict[str, Any]]]:
        """(B batch or None in the warm-up, A batch) pairs: the halves reshuffle as two streams of one epoch."""
        weights = reshuffled(self.loader_a, epoch, self.steps_per_epoch, stream=0, streams=2)
        if not self.searching:
            return ((None, batch) for batch in weights)
        return zip(reshuffled(self.loader_b, epoch, self.steps_per_epoch, stream=1, streams=2), weights)

    def train_step(self, batch: tuple[dict[str, Any] | None, dict[str, Any]]) -> dict[str, float]:
        """An architecture step on the B batch (after the warm-up), then a weight step on the A batch."""
        arch_batch, weight_batch = batch
        arch = {} if arch_batch is None else self.arch_step(arch_batch)
        return {f"train/{key}": value for key, value in {**self.weight_step(weight_batch), **arch}.items()}

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """The derived architecture's (``mode="argmax"``) three heads."""
        return self.supernet(image, mode="argmax")

    def predict(self, logits: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """The argmax of the three heads' logits upsampled to the tile and summed (the supernet's stand-in for
        GGMNet's fusion of the branches)."""
        return fuse_heads(logits, mask.shape[-2:]).argmax(1)

    def recalibrate_batchnorm(self) -> None:
        """:func:`recalibrate_batchnorm` of the derived architecture on the ``bn_batches`` fixed batches."""
        def forward(image: torch.Tensor) -> None:
            with autocast_for(self.device, self.use_amp):
                self.supernet(image.to(self.device), mode="argmax")

        recalibrate_batchnorm(self.supernet, self.bn_tiles, forward)

    def validation_network(self) -> torch.nn.Module:
        return DerivedNetwork(self.supernet)

    def validate(self) -> dict[str, Any]:
        """The derived architecture (``mode="argmax"``), its BatchNorm statistics recomputed, scored on the
        validation tiles, or with ``--pixels-per-degree`` on the validation windows of its map of the region.
        Not in the warm-up: the architecture has not been judged yet (its derivation is the first option of
        every choice) and ``best.pt`` is chosen among the search epochs."""
        if not self.searching:
            return {"search_fwiou": None}
        self.recalibrate_batchnorm()
        scores = super().validate()
        self.supernet.train()
        scores["search_fwiou"] = scores.get("fwiou")
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

    def end_epoch(self, epoch: int, train: dict[str, Any], scores: dict[str, Any]) -> None:
        """Derive the epoch's genotype (kept in the checkpoint's provenance) and write ``genotype.json``; its
        provenance records what the search decided (each chosen option's probability) and how sure it is."""
        provenance = self.provenance(epoch + 1, scores)
        genotype = self.supernet.derive()
        provenance.update(search_summary(self.supernet, genotype, self.supernet_config))
        self.genotype = derive_genotype(self.supernet, provenance, self.supernet_config.get("classes"))
        if self.ctx.is_main:
            self.genotype.save(self.run_dir / "genotype.json")

    def epoch_record(self, epoch: int, scalars: dict[str, Any], train: dict[str, Any],
                     scores: dict[str, Any]) -> dict[str, Any]:
        provenance = self.genotype.provenance
        cost = provenance["cost"]
        return {**train, "epoch": epoch, **scalars, "cost/expected": float(self.supernet.expected_cost().detach()),
                "cost/derived": cost["derived"], "cost/fraction_of_largest": cost["fraction_of_largest"],
                **{f"val/{k}": v for k, v in scores.items() if isinstance(v, float)}, **scores.get("beside", {}),
                **{f"arch/entropy_{kind}": value for kind, value in provenance["entropy"].items()},
                **{f"arch/mean_{kind}_probability": provenance[f"mean_{kind}_probability"]
                   for kind in ("op", "width", "residual")}}

    def default_callbacks(self) -> list[Callback]:
        from ggmnet.search.report import SearchReport

        return [SearchReport()]


def batchnorm_tiles(dataset: Any, *, seed: int, tiles: int, batch_size: int) -> list[torch.Tensor]:
    """``tiles`` images of ``dataset`` in a seeded order, stacked in batches: the fixed inputs on which
    :func:`recalibrate_batchnorm` recomputes a derived network's BatchNorm statistics."""
    chosen = np.random.default_rng(seed).permutation(len(dataset))[:tiles]
    return [torch.stack([dataset[int(i)]["image"] for i in chosen[b:b + batch_size]])
            for b in range(0, len(chosen), batch_size)]


@torch.no_grad()
def recalibrate_batchnorm(network: torch.nn.Module, batches: Sequence[torch.Tensor],
                          forward: Callable[[torch.Tensor], Any]) -> None:
    """Recompute the BatchNorm statistics of ``network`` as the cumulative average over ``batches`` of what
    ``forward(batch)`` (in training mode) feeds each BatchNorm, as one-shot NAS evaluates a sub-network of a
    supernet: the derived architecture is then validated with its own statistics, not ones pooled over every
    architecture sampled in training. BatchNorms the forward does not reach are reset (only evaluation reads
    running statistics; training recomputes batch ones). Nothing is done without batches. The network is left
    in training mode."""
    if not batches:
        return
    norms = [m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    network.train()
    try:
        for batch in batches:
            forward(batch)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum


def fuse_heads(logits: list[torch.Tensor], size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """The three heads' logits upsampled bilinearly to ``size`` and summed: ``[N, K, H, W]``."""
    return sum(F.interpolate(z.float(), size=size, mode="bilinear", align_corners=False) for z in logits)


class DerivedNetwork(torch.nn.Module):
    """The supernet's derived architecture as one network: ``[N, C, H, W] -> [N, K, H, W]`` fused logits."""

    def __init__(self, supernet: Supernet) -> None:
        super().__init__()
        self.supernet = supernet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fuse_heads(self.supernet(x, mode="argmax"), x.shape[-2:])


def run_search(config: SearchConfig, ctx: DistContext | None = None) -> Path:
    """Run (or resume) a search with ``config``; returns the run folder.

    The folder holds ``run.json``, ``genotype.json`` (the architecture derived after the last epoch, with
    provenance), ``genotype_best.json`` (after the epoch of best validation FWIoU), ``checkpoints/last.pt`` and
    ``best.pt``, and the tracker's local copies (``metrics.jsonl``, heatmaps). Without ``ctx``, a process launched
    by torchrun joins the group here and leaves it at the end.
    """
    with process_group(config.device, ctx) as ctx:
        return ArchitectureSearch(config, ctx).run()
