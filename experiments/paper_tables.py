"""The paper's experiments (Tables 4-7) as one command, at smoke, CPU or paper scale, on both splits.

    python experiments/paper_tables.py --scale smoke|cpu|paper --out DIR [--data-random DIR] [--data-blocks DIR]
        [--splits random,spatial-block] [--depths 16,18,20,22,24] [--gpus N] [--seed 0]

What each table holds, the scales and their measured times: :mod:`ggmnet.studies.paper_tables` (``--help`` prints
it).
"""

from ggmnet.studies.paper_tables import main

if __name__ == "__main__":
    raise SystemExit(main())
