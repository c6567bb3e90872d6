"""The runtime both training stages run on: one epoch loop (:mod:`ggmnet.engine.loop`) and what it needs
(options, devices, process groups, generators, loaders, checkpoints, tracking, run folders in
:mod:`ggmnet.engine.runio`), knowing no stage. Its modules are imported on demand (importing this package is
light); docs/design.md lists what each holds.

Imports run one way: ``ggmnet.errors``/``ggmnet.classes`` -> ``ggmnet.engine`` -> ``ggmnet.datasets`` and
``ggmnet.search_space`` -> ``ggmnet.search`` and ``ggmnet.retrain``. Nothing here imports a stage package.
"""
