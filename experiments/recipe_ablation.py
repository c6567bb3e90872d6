"""Why the CPU recipe is what it is: each of its departures from the paper's recipe undone, one at a time.

The study is :mod:`ggmnet.studies.recipe_ablation` (its docstring, and ``--help``, say what it does and how to run it).
"""

from ggmnet.studies.recipe_ablation import main

if __name__ == "__main__":
    raise SystemExit(main())
