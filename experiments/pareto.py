"""Accuracy against speed: searched GGMNets at several cost targets beside Table 6's baselines, on one scene.

The protocol is :mod:`ggmnet.studies.pareto`'s; it reuses the untargeted search and its retrained runs of
``experiments/fair_search.py`` (same ``--out``), so run that scene first (or at least its search). Resumes.

    OMP_NUM_THREADS=1 python experiments/pareto.py --scene 1 --out runs/fair-search [--targets 0.03,0.02,0.01]
"""

from __future__ import annotations

import argparse

from ggmnet.errors import UserError, cli_entry
from ggmnet.studies.pareto import BASELINES, Pareto, run_scene, table


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", type=int, default=1, help="synthetic scene seed (default 1)")
    parser.add_argument("--out", default="runs/fair-search", help="the fair test's folder (default runs/fair-search)")
    parser.add_argument("--targets", default="0.03,0.02,0.01",
                        help="--cost-target of each targeted search, comma-separated (default 0.03,0.02,0.01 of "
                             "the largest network)")
    parser.add_argument("--train-seeds", default="0,1", help="training seeds of the searched networks (default 0,1)")
    parser.add_argument("--baseline-seeds", default="0", help="training seeds of the baselines (default 0)")
    parser.add_argument("--baselines", default=",".join(BASELINES), help=f"default {','.join(BASELINES)}")
    args = parser.parse_args(argv)
    try:
        train_seeds = [int(s) for s in args.train_seeds.split(",")]
        baseline_seeds = [int(s) for s in args.baseline_seeds.split(",")]
    except ValueError:
        raise UserError("--train-seeds/--baseline-seeds: expected integers, comma-separated") from None
    plan = Pareto(args.scene, args.out, targets=args.targets.split(","), train_seeds=train_seeds,
                  baseline_seeds=baseline_seeds, baselines=args.baselines.split(","))
    print(table(run_scene(plan)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
