"""What a search run reports (rank 0): its first log line, each epoch's architecture probabilities (heatmaps),
genotype artifact and log line, and the best epoch's genotype. A :class:`~ggmnet.engine.loop.Callback` handed to
the engine, so that :class:`ArchitectureSearch` holds only its steps."""

from __future__ import annotations

import logging
from typing import Any

from ggmnet.engine.loop import Callback, Engine
from ggmnet.engine.tracking import Tracker
from ggmnet.metrics import percent
from ggmnet.search_space.operations import CELL_OPS, DOWN_OPS, STRIDES
from ggmnet.search_space.supernet import SOURCES, Supernet

log = logging.getLogger("ggmnet.search.search")


def choice_labels(supernet: Supernet) -> dict[str, tuple[str, ...]]:
    """Names of the choices of each kind of :meth:`Supernet.arch_probabilities`, in index order."""
    return {"op": CELL_OPS, "width": tuple(f"x{e}" for e in supernet.expansions), "residual": ("off", "on"),
            "source": SOURCES, "down": DOWN_OPS}


class SearchReport(Callback):
    """The search stage's reporting (``engine`` is its :class:`ggmnet.search.search.ArchitectureSearch`)."""

    @staticmethod
    def log_probabilities(engine: Engine, tracker: Tracker, step: int) -> None:
        """One heatmap per choice kind: layers (rows) x branch node and choice (columns), NaN: no node."""
        names = choice_labels(engine.supernet)
        for kind, probs in engine.supernet.arch_probabilities().items():
            depth, nodes, n = probs.shape
            columns = [f"1/{STRIDES[k]} {names[kind][c]}" for k in range(nodes) for c in range(n)]
            tracker.log_heatmap(f"arch/{kind}", probs.reshape(depth, nodes * n), x_labels=columns,
                                y_labels=[str(i) for i in range(depth)], step=step,
                                title=f"architecture probabilities: {kind} (layer x branch node)")

    def on_start(self, engine: Engine, tracker: Tracker) -> None:
        cfg = engine.config
        log.info("search: depth %d, %d train windows (halves %d/%d), %d val tiles, %d steps/epoch, "
                 "%d process(es) on %s -> %s", cfg.depth, len(engine.train_data), len(engine.loader_a.dataset),
                 len(engine.loader_b.dataset), engine.num_val_tiles, engine.steps_per_epoch, engine.ctx.world_size,
                 engine.device, engine.run_dir)

    def on_epoch(self, engine: Engine, tracker: Tracker, epoch: int, record: dict[str, Any],
                 scores: dict[str, Any], best: bool, seconds: float) -> None:
        if best:
            engine.genotype.save(engine.run_dir / "genotype_best.json")
        self.log_probabilities(engine, tracker, epoch)
        tracker.log_artifact(engine.run_dir / "genotype.json", name=f"genotype-{engine.run_dir.name}", type="genotype")
        arch = f" arch {record['train/arch_loss']:.4f}" if "train/arch_loss" in record else ""
        cost = f"  cost weight {record['train/cost_weight']:.3f}" if "train/cost_weight" in record else ""
        log.info("epoch %d/%d %s: loss %.4f%s  val FWIoU %s MPA %s  tau %.3f  chosen p: op %.2f width %.2f "
                 "residual %.2f  cost %.2f of the largest%s  %.0f s%s", epoch, engine.config.epochs, engine.phase,
                 record["train/loss"], arch, percent(scores.get("fwiou"), "%"), percent(scores.get("mpa"), "%"),
                 engine.tau, record["arch/mean_op_probability"], record["arch/mean_width_probability"],
                 record["arch/mean_residual_probability"], record["cost/fraction_of_largest"], cost, seconds,
                 "  (best)" if best else "")
