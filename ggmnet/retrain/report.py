"""What a retrain run reports (rank 0): its first log line and genotype, each epoch's per-class table, curves,
pictures (Figure 5) and confusion matrix and its log line, and at the end the summary and the best model as
artifacts. A :class:`~ggmnet.engine.loop.Callback` handed to the engine, so that :class:`Retrainer` holds only
its steps."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from ggmnet.datasets.tiles import colour_lut
from ggmnet.engine.device import autocast_for
from ggmnet.engine.loop import Callback, Engine
from ggmnet.engine.tracking import Tracker, plot_curves
from ggmnet.metrics import percent
from ggmnet.models import count_parameters
from ggmnet.search_space.genotype import Genotype

log = logging.getLogger("ggmnet.retrain.train")


def residual_picture(image: torch.Tensor, channels: str) -> np.ndarray:
    """An RGB uint8 ``[H, W, 3]`` picture of a tile's residual anomaly (Figure 5's third row).

    ``pseudocolour`` tiles already are the residual in the ``jet`` colour map (their first three channels);
    for ``physical`` tiles the first channel (the standardised residual) is stretched between its 2nd and
    98th percentiles and coloured the same way.
    """
    array = image.detach().float().cpu().numpy()
    if channels == "pseudocolour":
        rgb = np.moveaxis(array[:3], 0, -1)
    else:
        lo, hi = np.percentile(array[0], [2, 98])
        index = np.rint(np.clip((array[0] - lo) / max(hi - lo, 1e-12), 0, 1) * 255).astype(np.intp)
        rgb = colour_lut()[index]
    return np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


class RetrainReport(Callback):
    """The retrain stage's reporting (``engine`` is its :class:`ggmnet.retrain.train.Retrainer`)."""

    def on_start(self, engine: Engine, tracker: Tracker) -> None:
        cfg = engine.config
        if engine.model_config["name"] == "ggmnet":
            genotype_path = engine.run_dir / "genotype.json"
            Genotype.from_dict(engine.model_config["genotype"]).save(genotype_path)
            tracker.log_artifact(genotype_path, name=f"genotype-{engine.run_dir.name}", type="genotype")
        name = f"ggmnet ablation {cfg.ablation}" if cfg.model == "ggmnet" else engine.model_config["name"]
        log.info("retrain: %s (%.2f M parameters), %d train windows, %d val tiles, %d steps/epoch, "
                 "%d process(es) on %s -> %s", name, count_parameters(engine.model) / 1e6, len(engine.train_data),
                 len(engine.val_ids), engine.steps_per_epoch, engine.ctx.world_size, engine.device, engine.run_dir)

    @staticmethod
    def log_pictures(engine: Engine, tracker: Tracker, step: int) -> None:
        """Figure 5 (tiles with predicted and true masks) and the row-normalised confusion matrix."""
        rows = engine.confusion.sum(axis=1, keepdims=True)
        normalised = np.divide(engine.confusion, rows, out=np.zeros(engine.confusion.shape), where=rows > 0)
        codes = engine.classes.codes
        tracker.log_heatmap("val/confusion", normalised, x_labels=[f"pred {c}" for c in codes],
                            y_labels=list(codes), step=step, title=f"validation confusion, epoch {step}")
        engine.network.eval()
        with torch.no_grad():
            for index in engine.val_ids[: engine.config.val_images]:
                item = engine.val_data[index]
                with autocast_for(engine.device, engine.use_amp):
                    logits = engine.network(item["image"][None].to(engine.device))
                prediction = logits.argmax(1)[0].cpu().numpy().astype(np.uint8)
                tracker.log_image(f"val/window_{item['window']}", residual_picture(item["image"], engine.config.channels),
                                  step=step, caption=f"window {item['window']}: residual anomaly, epoch {step}",
                                  masks={"prediction": prediction,
                                         "ground_truth": item["mask"].numpy().astype(np.uint8)}, classes=engine.classes)

    def on_epoch(self, engine: Engine, tracker: Tracker, epoch: int, record: dict[str, Any],
                 scores: dict[str, Any], best: bool, seconds: float) -> None:
        rows = zip(engine.classes.codes, engine.classes.names, scores["iou"], scores["accuracy"], scores["support"])
        tracker.log_table("val/per_class", ["class", "name", "IoU", "accuracy", "pixels"], rows, step=epoch)
        plot_curves(engine.run_dir, ["loss", "fwiou", "lr"], engine.run_dir / "curves.png")
        if epoch % engine.config.image_every == 0 or epoch == engine.config.epochs:
            self.log_pictures(engine, tracker, epoch)
        val_loss = record["val/loss"]
        log.info("epoch %d/%d %s lr %.2e: train loss %.4f FWIoU %s | val loss %s FWIoU %s MPA %s mIoU %s  %.0f s%s%s",
                 epoch, engine.config.epochs, engine.phase, engine.lr, record["train/loss"],
                 percent(record["train/fwiou"], "%"), "--" if val_loss is None else f"{val_loss:.4f}",
                 percent(scores.get("fwiou"), "%"), percent(scores.get("mpa"), "%"), percent(scores.get("miou"), "%"),
                 seconds, "  (best)" if best else "",
                 f"  -> SGD from epoch {engine.schedule.switch_epoch + 1}" if engine.switched else "")

    def on_finish(self, engine: Engine, tracker: Tracker, result: dict[str, Any]) -> None:
        tracker.summary(result)
        if engine.best_path.is_file():
            tracker.log_artifact(engine.best_path, name=f"model-{engine.run_dir.name}", type="model")
