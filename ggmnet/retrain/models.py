"""Registry of the segmentation networks that ``retrain``, ``ggm-evaluate`` and ``ggm-predict`` know.

As in timm, each network is a thin entry point registered by name (:func:`register_model`), and
:func:`create_model` looks it up, so ``--model hrnet_w32`` is a dictionary lookup. A checkpoint stores the
network's ``model_config`` (its name plus the entry point's keyword arguments, JSON-plain), from which
:func:`build_model` rebuilds it and :func:`load_model` restores its weights.

Entries:

* ``ggmnet``: :class:`~ggmnet.retrain.ggmnet_model.GGMNet` from a genotype (dict or :class:`Genotype`) and the
  Table 5 switches.
* ``hrnet_w32``: the Table 6 baseline HRNetV1-W32, timm's ``hrnet_w32`` backbone (random initialisation)
  with a light segmentation head (:class:`HRNetSegmentation`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ggmnet.engine.checkpoint import CheckpointFormat, read_checkpoint
from ggmnet.errors import UserError
from ggmnet.retrain.ggmnet_model import GGMNet
from ggmnet.search_space.genotype import Genotype
from ggmnet.search_space.operations import ConvNormAct

#: Value of a retrain checkpoint's ``format`` entry, and its version.
CHECKPOINT_FORMAT = "ggmnet-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT = CheckpointFormat(CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "retrain")

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a model entry point under its function name (a decorator)."""
    if fn.__name__ in _REGISTRY:
        raise ValueError(f"model {fn.__name__!r} is already registered")
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names of the registered models, sorted."""
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with the entry point's keyword arguments.

    Raises
    ------
    UserError
        For an unknown name (``--model``).
    """
    if name not in _REGISTRY:
        raise UserError(f"--model {name}: unknown model (expected one of {', '.join(list_models())})")
    return _REGISTRY[name](**kwargs)


def build_model(model_config: Mapping[str, Any]) -> nn.Module:
    """Rebuild a network from a checkpoint's ``model_config`` (``{"name": ..., **entry-point kwargs}``)."""
    config = dict(model_config)
    name = config.pop("name", None)
    if not isinstance(name, str):
        raise UserError(f"model_config {dict(model_config)!r}: expected a 'name' entry")
    return create_model(name, **config)


def model_config_of(model: nn.Module) -> dict[str, Any]:
    """The ``model_config`` of a registered network (a DDP wrapper is looked through)."""
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    return inner.model_config()


class HRNetSegmentation(nn.Module):
    """HRNetV1-W32 (timm ``hrnet_w32``, ``features_only``) with a light segmentation head.

    The backbone returns its four parallel branches (32, 64, 128 and 256 channels at strides 4, 8, 16, 32;
    timm's ``feature_location=""``, HRNet's own features rather than the classifier's widened ones). The head
    upsamples them bilinearly to stride 4, concatenates them, applies a 1x1 conv-BN-ReLU and a 1x1
    classifier, and upsamples the logits to the input size (HRNetV2's segmentation head).

    ``forward(x [N, in_channels, H, W]) -> logits [N, num_classes, H, W]``. Random initialisation, as every
    network of the paper was trained from scratch (5.1).
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        import timm  # imported here: only this baseline needs it, and it takes seconds to import

        super().__init__()
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.backbone = timm.create_model("hrnet_w32", pretrained=False, features_only=True,
                                          in_chans=self.in_channels, feature_location="", out_indices=(1, 2, 3, 4))
        width = sum(self.backbone.feature_info.channels())
        self.fuse = ConvNormAct(width, width, 1)
        self.classifier = nn.Conv2d(width, self.num_classes, 1)

    def model_config(self) -> dict[str, Any]:
        """The checkpoint's ``model_config``."""
        return {"name": "hrnet_w32", "in_channels": self.in_channels, "num_classes": self.num_classes}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        size = features[0].shape[-2:]
        up = [features[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False)
                              for f in features[1:]]
        logits = self.classifier(self.fuse(torch.cat(up, dim=1)))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


@register_model
def ggmnet(*, genotype: Genotype | Mapping[str, Any], arm: bool = True, ffm: bool = True,
           deformable: bool = True, residual: bool = True) -> GGMNet:
    """GGMNet from a genotype (a :class:`Genotype` or its dict) and Table 5's switches."""
    if not isinstance(genotype, Genotype):
        genotype = Genotype.from_dict(genotype)
    return GGMNet(genotype, arm=arm, ffm=ffm, deformable=deformable, residual=residual)


@register_model
def hrnet_w32(*, in_channels: int = 3, num_classes: int = 10) -> HRNetSegmentation:
    """The HRNetV1-W32 baseline of Table 6 (timm backbone, random weights)."""
    return HRNetSegmentation(in_channels, num_classes)


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The network stored in a retrain checkpoint, in eval mode, and the checkpoint dict.

    Raises
    ------
    UserError
        Naming ``path`` when the file is not a ggmnet checkpoint or its weights do not fit its model config.
    """
    checkpoint = read_checkpoint(path, CHECKPOINT, map_location=map_location)
    try:
        model = build_model(checkpoint["model_config"])
        model.load_state_dict(checkpoint["model"])
    except (KeyError, RuntimeError, UserError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"{path}: the checkpoint's model does not load ({first})") from None
    model.to(map_location)
    return model.eval(), checkpoint
