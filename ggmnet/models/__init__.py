"""The segmentation networks, one file per family, each registering its entry points beside its network.

* ``ggmnet``: :class:`~ggmnet.models.ggmnet.GGMNet` from a genotype and Table 5's switches;
* Table 6's baselines: ``fc_hardnet70`` (:mod:`~ggmnet.models.hardnet`), ``fasterseg``
  (:mod:`~ggmnet.models.fasterseg`), ``hrnet_w32`` (:mod:`~ggmnet.models.hrnet`);
* ``unet``, ``unet_resnet18``: smp's U-Net (:mod:`~ggmnet.models.unet`), a plain reference with no Table 6 row.

Every baseline takes ``in_channels`` and ``num_classes`` and starts from random weights, as in the paper;
``benchmarks/bench_model_size.py`` prints their sizes beside Table 6.
"""

from ggmnet.models import fasterseg, ggmnet, hardnet, hrnet, unet  # noqa: F401  (register the entries)
from ggmnet.models.base import SegmentationModel
from ggmnet.models.ggmnet import ABLATIONS, GGMNet
from ggmnet.models.registry import (
    CHECKPOINT,
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    build_model,
    checkpoint_classes,
    count_parameters,
    create_model,
    list_models,
    load_model,
    model_config_of,
    model_size,
    register_model,
)

__all__ = ["ABLATIONS", "CHECKPOINT", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "GGMNet", "SegmentationModel",
           "build_model", "checkpoint_classes", "count_parameters", "create_model", "list_models", "load_model",
           "model_config_of", "model_size", "register_model"]
