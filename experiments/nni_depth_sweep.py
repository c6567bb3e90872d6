"""Sweep the MRFEM depth (Table 4 of the paper): at each depth search, export, retrain and score.

The sweep is :mod:`ggmnet.studies.depth_sweep` (NNI 3.0's multi-trial engine, or a plain loop)::

    python experiments/nni_depth_sweep.py --search-config experiments/search_cpu.yaml \\
        --retrain-config experiments/retrain_cpu.yaml --data data/prepared --out runs/depth-sweep
    python experiments/nni_depth_sweep.py --depths 16,20,24 --engine loop ...
"""

from ggmnet.studies.depth_sweep import main

if __name__ == "__main__":
    raise SystemExit(main())
