"""ggmnet: bedrock geology under sedimentary cover from satellite gravity.

Stages, as in Liu et al. (2024), GGMNet:

* :mod:`ggmnet.datasets`: gravity and label grids, residual anomaly, multi-scale windows, tiles.
* :mod:`ggmnet.search_space`: the operator library, the supernet and the genotype (the contract).
* :mod:`ggmnet.search`: the differentiable search loop and the genotype export.
* :mod:`ggmnet.retrain`: GGMNet, its training, evaluation and region prediction.

Shared yardsticks live at the top level: :mod:`ggmnet.losses`, :mod:`ggmnet.metrics`.
"""

__version__ = "0.1.0"
