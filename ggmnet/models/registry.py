"""Registry of the segmentation networks that ``retrain``, ``ggm-evaluate`` and ``ggm-predict`` know.

As in timm, each network is a thin entry point registered by name (:func:`register_model`), and
:func:`create_model` looks it up, so ``--model hrnet_w32`` is a dictionary lookup. A checkpoint stores the
network's ``model_config`` (its name plus the entry point's keyword arguments, JSON-plain), from which
:func:`build_model` rebuilds it and :func:`load_model` restores its weights.

Each family's file registers its entry points beside its network (:mod:`ggmnet.models` lists them).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torchvision  # noqa: F401  (registers torch.ops.torchvision for the FLOP counter)
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ggmnet.classes import NUM_CLASSES, ClassList, class_list
from ggmnet.engine.checkpoint import CheckpointFormat, read_checkpoint
from ggmnet.errors import UserError, one_line

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


#: Entry-point arguments that a ``model_config`` written before they existed meant otherwise than their
#: default: GGMNet checkpoints before shared MRFEM cells hold a copy of the shared cells per branch.
LEGACY_DEFAULTS: dict[str, dict[str, Any]] = {"ggmnet": {"share_cells": False}}


def build_model(model_config: Mapping[str, Any]) -> nn.Module:
    """Rebuild a network from a checkpoint's ``model_config`` (``{"name": ..., **entry-point kwargs}``); an
    argument the config lacks takes its :data:`LEGACY_DEFAULTS` value, else the entry point's default."""
    config = dict(model_config)
    name = config.pop("name", None)
    if not isinstance(name, str):
        raise UserError(f"model_config {dict(model_config)!r}: expected a 'name' entry")
    return create_model(name, **{**LEGACY_DEFAULTS.get(name, {}), **config})


def count_parameters(model: nn.Module) -> int:
    """The network's parameters (a module shared by several parents counted once): the one counter of ggmnet."""
    return sum(p.numel() for p in model.parameters())


def model_config_of(model: nn.Module) -> dict[str, Any]:
    """The ``model_config`` of a registered network (a DDP wrapper is looked through)."""
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    return inner.model_config()


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
        raise UserError(f"{path}: the checkpoint's model does not load ({one_line(err)})") from None
    model.to(map_location)
    return model.eval(), checkpoint


def checkpoint_classes(ckpt: dict[str, Any], model: nn.Module) -> ClassList:
    """The class list of a retrain checkpoint: its ``data`` entry's ``classes``, else the genotype's, else Table 1
    (or unnamed classes for a network of another size), checked against the network's outputs."""
    num_classes = int(getattr(model, "num_classes", NUM_CLASSES))
    entry = ckpt.get("data", {}).get("classes") or ckpt.get("model_config", {}).get("genotype", {}).get("classes")
    return class_list(entry, num_classes, source="checkpoint classes")


def deform_conv2d_flop(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of ``torchvision::deform_conv2d``: the convolution plus the bilinear sampling of its columns."""
    n, c_in = input_shape[0], input_shape[1]
    c_out, c_per_group, kh, kw = weight_shape
    positions = n * out_shape[2] * out_shape[3]
    conv = 2 * positions * c_out * c_per_group * kh * kw
    sampling = 8 * positions * c_in * kh * kw
    return conv + sampling


def model_size(build: Callable[[], torch.nn.Module], size: int, in_channels: int,
               breakdown: dict[str, float] | None = None) -> tuple[float, float]:
    """(parameters in M, GFLOPs of one forward pass on 1 x C x size x size) of the network ``build()`` makes.
    A ``breakdown`` dict is filled with the GFLOPs of every submodule by its dotted name (``"mrfem"``,
    ``"mrfem.branches"``, ...; the whole network is ``""``).

    The network and its input live on the meta device: the counter sees every operator's shapes, and nothing
    is allocated or computed. Deformable convolutions run on torchvision's kernel meanwhile
    (``GGMNET_DEFORM_CONV=torchvision``), whose operator the counter is taught (:func:`deform_conv2d_flop`).
    """
    from ggmnet.models.deform_conv import using_kernel

    with using_kernel("torchvision"):
        with torch.device("meta"):
            model = build().eval()
            x = torch.randn(1, in_channels, size, size)
        params = count_parameters(model) / 1e6
        counter = FlopCounterMode(display=False,
                                  custom_mapping={torch.ops.torchvision.deform_conv2d: deform_conv2d_flop})
        with torch.no_grad(), counter:
            model(x)
    if breakdown is not None:
        root = type(model).__name__
        for name, counts in counter.get_flop_counts().items():
            if name == root or name.startswith(root + "."):
                breakdown[name[len(root) + 1:]] = sum(counts.values()) / 1e9
    return params, counter.get_total_flops() / 1e9
