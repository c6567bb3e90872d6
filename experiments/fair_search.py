"""Does the search pay? The searched genotype against cost-matched random genotypes and a null search.

The protocol is :mod:`ggmnet.studies.fair_search`'s. Resumes: finished runs are found. Run one scene per process
to use two cores, then tabulate:

    OMP_NUM_THREADS=1 python experiments/fair_search.py --scenes 1 --out runs/fair-search &
    OMP_NUM_THREADS=1 python experiments/fair_search.py --scenes 2 --out runs/fair-search &
    wait; python experiments/fair_search.py --scenes 1,2 --out runs/fair-search --table

``--search-seeds 1,2`` adds a search and a null search with each of those seeds (their genotypes retrained with
the same training seeds); the table then has a second part, over search seeds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ggmnet.errors import UserError, cli_entry
from ggmnet.studies.fair_search import (
    FairSearch,
    finished_rows,
    rescored,
    run_scene,
    search_seed_table,
    table,
)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", default="1,2", help="synthetic scene seeds, comma-separated (default 1,2)")
    parser.add_argument("--out", default="runs/fair-search", help="folder of the scenes, runs and results")
    parser.add_argument("--train-seeds", default="0,1", help="training seeds of every genotype (default 0,1)")
    parser.add_argument("--search-seeds", default="", help="more seeds of the search and of the null search, "
                                                           "comma-separated (default: the first training seed's only)")
    parser.add_argument("--count", type=int, default=10, help="random genotypes per scene (default 10)")
    parser.add_argument("--tolerance", type=float, default=0.05, help="their cost within this of the searched one's "
                                                                      "(default 0.05)")
    parser.add_argument("--search-config", default=FairSearch.search_config,
                        help="search recipe (default experiments/search_cpu.yaml)")
    parser.add_argument("--retrain-config", default=FairSearch.retrain_config,
                        help="retrain recipe (default experiments/retrain_cpu.yaml)")
    parser.add_argument("--table", action="store_true", help="only tabulate the scenes' results: every finished run, "
                                                             "training seeds added later too")
    args, search_flags = parser.parse_known_args(argv)
    try:
        scenes = [int(s) for s in args.scenes.split(",")]
        seeds = [int(s) for s in args.train_seeds.split(",")]
        search_seeds = [int(s) for s in args.search_seeds.split(",") if s]
    except ValueError:
        raise UserError(f"--scenes {args.scenes} / --train-seeds {args.train_seeds} / --search-seeds "
                        f"{args.search_seeds}: expected integers, comma-separated") from None
    out = Path(args.out)
    results = []
    for scene in scenes:
        path = out / f"scene{scene}" / "fair_search.json"
        if not args.table:
            results.append(run_scene(FairSearch(scene, path.parent, search_config=args.search_config,
                                                retrain_config=args.retrain_config, train_seeds=seeds,
                                                count=args.count, tolerance=args.tolerance, search_flags=search_flags,
                                                search_seeds=search_seeds)))
        else:
            done = len(finished_rows(path.parent))
            if not done:
                raise UserError(f"--table: {path.parent} has no finished run (run the scene first)")
            if not path.is_file():
                print(f"scene {scene}: unfinished, {done} runs so far (no Kendall tau until it finishes)")
            results.append(rescored(scene, path.parent))
    print(table(results))
    seeds_table = search_seed_table(results)
    if seeds_table:
        print()
        print(seeds_table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
