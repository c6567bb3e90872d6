"""The retraining stage: a network (GGMNet from a searched genotype, or a baseline of :mod:`ggmnet.models`) trained
from scratch with section 5.1.3's schedule.

* :mod:`ggmnet.retrain.train`: ``RetrainConfig``, the ``Retrainer``'s steps and ``run_retrain``;
* :mod:`ggmnet.retrain.report`: what a run reports (log lines, tables, pictures, artifacts);
* :mod:`ggmnet.retrain.schedule`: the Adam-then-SGD schedule;
* :mod:`ggmnet.retrain.cli`: ``retrain``, ``ggm-evaluate`` and ``ggm-predict`` (the last two run
  :mod:`ggmnet.inference`).
"""
