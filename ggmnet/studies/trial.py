"""Train one network with a recipe and score it: the unit of the studies that compare networks trained alike.

:func:`train_and_score` runs ``retrain`` with the given flags (a recipe file plus overrides, exactly as on the
command line), resumed when its folder already holds a run (so an interrupted study continues and a finished one
is not redone), then ``ggm-evaluate``'s scores of its best checkpoint on the requested splits, as a JSON dict.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ggmnet.inference.evaluate import evaluate
from ggmnet.models import count_parameters, load_model
from ggmnet.retrain.train import RetrainConfig, run_retrain

#: Score sets kept from each evaluation (see :data:`ggmnet.inference.scoring.SCORE_SETS`).
KEPT = ("outcrop", "commonest_class", "under_cover", "commonest_class_under_cover", "nearest_outcrop_baseline",
        "outcrop_prior_under_cover")


def split_retrain_flags(argv: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """A study's command line split at ``--``: its own arguments, and the ``retrain`` flags given to every run."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        return argv, []
    return argv[:argv.index("--")], argv[argv.index("--") + 1:]


def default_genotype_file(out: Path) -> str:
    """``out/genotype_default22.json``: the hand-made depth-22 genotype at the CPU recipe's unit widths (4, 8, 16),
    the GGMNet that studies train when no searched genotype is given."""
    from ggmnet.search_space.genotype import default_genotype

    path = out / "genotype_default22.json"
    default_genotype(22, unit_channels=(4, 8, 16)).save(path)
    return str(path)


def train_and_score(flags: Sequence[str], *, splits: Sequence[str] = ("val",)) -> dict[str, Any]:
    """Train (or resume, or find finished) the ``retrain`` run of ``flags`` and score its ``best.pt``.

    ``flags`` are ``retrain``'s command-line flags and must include ``--out``. Returns ``run`` (the folder),
    ``seconds`` (training wall-clock of the first run that finished it), ``parameters``, ``steps``,
    ``best_epoch``, the resolved ``config``, and per split the :data:`KEPT` score sets (each
    :meth:`~ggmnet.metrics.ConfusionMatrix.compute`'s scores; None where not scored).
    """
    from ggmnet.retrain.cli import build_retrain_parser

    flags = list(flags)
    config = RetrainConfig.from_argv(build_retrain_parser(), flags)
    run = Path(config.out)
    if (run / "checkpoints" / "last.pt").is_file() and not config.resume:
        config = RetrainConfig.from_argv(build_retrain_parser(), [*flags, "--resume"])
    start = time.perf_counter()
    summary = run_retrain(config)
    seconds = time.perf_counter() - start
    timing = run / "study_seconds.json"
    if not timing.is_file() or seconds > 5:  # a finished run found again keeps the time of its training
        timing.write_text(json.dumps({"seconds": seconds}))
    best = Path(summary["best_checkpoint"])
    model, _ = load_model(best)
    result: dict[str, Any] = {
        "run": str(run), "seconds": json.loads(timing.read_text())["seconds"],
        "parameters": count_parameters(model),
        "steps": config.epochs * (config.steps_per_epoch or 0), "best_epoch": summary["best_epoch"],
        "config": config.to_dict(),
    }
    for split in splits:
        scores = evaluate(best, config.data, split, device=config.device, out_dir=run / "eval",
                          batch_size=config.batch_size, progress=False)
        result[split] = {key: scores.get(key) for key in KEPT}
    return result
