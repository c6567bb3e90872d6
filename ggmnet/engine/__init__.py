"""The runtime both training stages run on: one epoch loop and what it needs, knowing no stage.

Modules (imported on demand; importing this package is light):

* :mod:`ggmnet.engine.runio`: atomic writes, ``run.json`` provenance, file hashes, run folders;
* :mod:`ggmnet.engine.config`: options defined once (type, default, unit, help, check) for the settings
  dataclasses, the ``--config`` YAML file and the flags; the options both stages share;
* :mod:`ggmnet.engine.device`: ``--device`` and mixed precision;
* :mod:`ggmnet.engine.distributed`: the process group, reductions, broadcasts, DDP and SyncBatchNorm;
* :mod:`ggmnet.engine.rng`: seeding and capturing/restoring the generators' states;
* :mod:`ggmnet.engine.loaders`: data loaders whose order is a function of (seed, epoch, pass);
* :mod:`ggmnet.engine.checkpoint`: the one checkpoint writer and reader (format and version checked);
* :mod:`ggmnet.engine.tracking`: W&B plus local copies of everything logged;
* :mod:`ggmnet.engine.loop`: :class:`~ggmnet.engine.loop.Engine`, the epoch loop whose hooks the search and
  the retraining fill in.

Imports run one way: ``ggmnet.errors``/``ggmnet.classes`` -> ``ggmnet.engine`` -> ``ggmnet.datasets`` and
``ggmnet.search_space`` -> ``ggmnet.search`` and ``ggmnet.retrain``. Nothing here imports a stage package.
"""
