"""The retraining stage: GGMNet built from a searched genotype, trained from scratch, evaluated, applied.

Modules (imported on demand; importing this package is light):

* :mod:`ggmnet.retrain.ggmnet_model`: GGMNet (encoder, MRFEM, ARM, FFM, deformable decoder) and Table 5's
  ``ABLATIONS``;
* :mod:`ggmnet.retrain.deform_conv`: deformable convolution, torchvision's op and module with a fast CPU path;
* :mod:`ggmnet.retrain.models`: the model registry (``ggmnet`` and the baselines: ``fc_hardnet70``,
  ``fasterseg``, ``hrnet_w32``, ``unet``, ``unet_resnet18``), ``build_model`` and ``load_model`` for retrain
  checkpoints;
* :mod:`ggmnet.retrain.hardnet`, :mod:`ggmnet.retrain.fasterseg`, :mod:`ggmnet.retrain.hrnet`,
  :mod:`ggmnet.retrain.unet`: the baselines, one file per family;
* :mod:`ggmnet.retrain.schedule`: section 5.1.3's Adam-then-SGD schedule;
* :mod:`ggmnet.retrain.train` and :mod:`ggmnet.retrain.cli`: the training loop and ``retrain``;
* :mod:`ggmnet.retrain.evaluate` and :mod:`ggmnet.retrain.predict`: ``ggm-evaluate`` and ``ggm-predict``.
"""
