"""The segmentation networks: GGMNet, the deformable convolution it decodes with, and the baselines of Table 6.

Entries (one file per family; every baseline takes ``in_channels`` and ``num_classes``, which ``retrain`` reads
from the dataset, and starts from random weights, as in the paper):

* ``ggmnet``: :class:`~ggmnet.models.ggmnet.GGMNet` from a genotype (dict or :class:`Genotype`) and the
  Table 5 switches.
* ``fc_hardnet70``: Table 6's FC-HarDNet-70 (:mod:`ggmnet.models.hardnet`), 4.12 M parameters (Table 6:
  4.1 M).
* ``fasterseg``: Table 6's FasterSeg, the released searched student in ggmnet's operators
  (:mod:`ggmnet.models.fasterseg`), 4.65 M (Table 6: 4.7 M).
* ``hrnet_w32``: Table 6's HRNetV1-W32, timm's backbone with a light head (:mod:`ggmnet.models.hrnet`), 29.5 M
  (Table 6: 28.5 M).
* ``unet``, ``unet_resnet18``: smp's U-Net on ResNet-34 / ResNet-18 encoders (:mod:`ggmnet.models.unet`),
  24.4 M and 14.3 M; no Table 6 row.

Parameter counts at 3 input channels and 10 classes; ``benchmarks/bench_model_size.py`` prints them beside
Table 6 with the FLOPs.
"""

from ggmnet.models import fasterseg, ggmnet, hardnet, hrnet, unet  # noqa: E402,F401  (register the entries)
from ggmnet.models.base import SegmentationModel  # noqa: E402
from ggmnet.models.ggmnet import ABLATIONS, GGMNet  # noqa: E402
from ggmnet.models.registry import (  # the registry first: every family registers into it on import
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
