"""Planted search tasks: synthetic labels whose best architecture is known, searched with the search's own steps.

Each task is images of white noise in blocks of 8 x 8 pixels (so the stem's 1/8 feature holds one noise vector
per pixel of the 1/8 map) and, per head, a label computed from that noise, or no label (the head is not
trained and its nodes get no gradient from the labels). :func:`planted_search` runs the search's algorithm
(:class:`ggmnet.search.steps.SearchSteps`: the sandwich weight step, the paired architecture step, the cost
target) on fresh batches and returns the supernet.

* :func:`receptive_field_task`: the 1/8 head's label is the sign of the noise blurred by a Gaussian; only the
  operator with the widest receptive field (``zoomed_conv5x5``) reaches far enough (``test_planted_search``).
* :func:`width_task`: the 1/8 head's label is which of ``channels`` noise channels is largest at the pixel: the
  1/8 path must carry every channel, so only its widest width (as many channels as the noise) keeps all of
  them; the 1/16 and 1/32 heads have no label, so their nodes need no width at all.
* :func:`path_task`: the 1/32 head's label is the sign of the noise several pixels away: the 1/32 branch needs
  the receptive field of many cells at 1/32, which only an early downsampling gives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ggmnet.search.steps import CostControl, SearchSteps
from ggmnet.search_space.supernet import Supernet

#: A batch maker: generator -> (images [N, C, H, W], per-head labels (None: no label at that head)).
Batches = Callable[[torch.Generator], tuple[torch.Tensor, list[torch.Tensor | None]]]


@dataclass
class Task:
    """A planted task: its batches and the supernet it is searched on."""

    batches: Batches
    in_channels: int
    num_classes: int
    depth: int
    unit_channels: tuple[int, int, int]
    stem_channels: tuple[int, int, int]
    head_channels: int


def _block_noise(generator: torch.Generator, batch: int, channels: int, side: int) -> torch.Tensor:
    """``[batch, channels, side, side]`` noise at the 1/8 map (``side`` = image side / 8)."""
    return torch.randn(batch, channels, side, side, generator=generator)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = int(3 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    c = x.shape[1]
    x = F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1).contiguous(), padding=(radius, 0), groups=c)
    return F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1).contiguous(), padding=(0, radius), groups=c)


def _image(noise: torch.Tensor) -> torch.Tensor:
    return F.interpolate(noise, scale_factor=8, mode="nearest").contiguous()


def receptive_field_task(*, side: int = 24, sigma: float = 6.0, batch: int = 8) -> Task:
    """Issue 9's planted operator: the 1/8 label needs a receptive field of about +-2 sigma at 1/8."""
    def batches(generator: torch.Generator) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        noise = _block_noise(generator, batch, 1, side)
        label = (_blur(noise, sigma)[:, 0] > 0).long()
        return _image(noise).expand(-1, 3, -1, -1).contiguous(), [label, None, None]

    return Task(batches, 3, 2, 2, (1, 2, 4), (4, 4, 4), 8)


def width_task(*, channels: int = 16, side: int = 8, batch: int = 8) -> Task:
    """The 1/8 label is the argmax over ``channels`` noise channels; x8 at unit width ``channels / 8`` is the
    only width that carries them all; the coarser heads have no label."""
    def batches(generator: torch.Generator) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        noise = _block_noise(generator, batch, channels, side)
        return _image(noise), [noise.argmax(1), None, None]

    unit = channels // 8
    return Task(batches, channels, channels, 2, (unit, 2 * unit, 4 * unit), (2 * channels,) * 3, 2 * channels)


def all_heads_width_task(*, channels: int = 16, side: int = 8, batch: int = 8, depth: int = 2) -> Task:
    """Every head's label is the argmax over ``channels`` noise channels at its own resolution (the noise
    averaged over its pixels), with unit widths ``channels / 8`` at every stride: every node needs its widest
    width, so the untargeted network is close to the largest and any cost target binds."""
    def batches(generator: torch.Generator) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        noise = _block_noise(generator, batch, channels, side)
        labels = [F.avg_pool2d(noise, f).argmax(1) for f in (1, 2, 4)]
        return _image(noise), labels

    unit = channels // 8
    return Task(batches, channels, channels, depth, (unit, unit, unit), (2 * channels,) * 3, 2 * channels)


def path_task(*, depth: int = 6, side: int = 16, shift: int = 5, batch: int = 4) -> Task:
    """The 1/32 label at a pixel is the sign of the noise ``shift`` pixels of the 1/32 map to its right (the noise
    constant over 4 x 4 pixels of the 1/8 map), 255 where that is off the map. With conv3x3 cells a cell at 1/32
    reaches one pixel of the 1/32 map, a cell at 1/8 a quarter of one: only a 1/32 branch that gets there
    early reaches ``shift`` pixels. The 1/8 and 1/16 heads have no label."""
    def batches(generator: torch.Generator) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        coarse = torch.randn(batch, 1, side, side, generator=generator)
        label = torch.full((batch, side, side), 255, dtype=torch.long)
        label[..., : side - shift] = (coarse[:, 0, :, shift:] > 0).long()
        noise = F.interpolate(coarse, scale_factor=4, mode="nearest")
        return _image(noise).expand(-1, 3, -1, -1).contiguous(), [None, None, label]

    return Task(batches, 3, 2, depth, (2, 4, 8), (8, 8, 8), 16)


def head_losses(logits: list[torch.Tensor], labels: list[torch.Tensor | None],
                _pixel_weights: torch.Tensor | None = None) -> list[torch.Tensor | None]:
    """Each head's cross-entropy, ``None`` where it has no label."""
    return [None if y is None else F.cross_entropy(z, y, ignore_index=255) for z, y in zip(logits, labels)]


def planted_search(task: Task, *, seed: int, warmup_steps: int = 30, search_steps: int = 120,
                   cost_target: float | None = None, min_real_cells: int = 0, sandwich: int = 2,
                   estimator: str = "pairs", lr_weights: float = 0.05, lr_arch: float = 0.05,
                   cost_rate: float = 0.05, fixed: dict[str, int] | None = None) -> Supernet:
    """Search ``task`` with the search's steps; ``cost_target`` is a fraction of the largest network's cost;
    ``fixed`` takes choice kinds out of the search (``Supernet.fix``: ``{"op": 2}`` is conv5x5 everywhere)."""
    torch.manual_seed(seed)
    net = Supernet(task.depth, num_classes=task.num_classes, in_channels=task.in_channels,
                   unit_channels=task.unit_channels, stem_channels=task.stem_channels,
                   head_channels=task.head_channels).train()
    net.fix(**(fixed or {}))
    cost = None
    if cost_target is not None:
        limit = cost_target * net.largest_cost()
        net.constrain(cost_limit=limit, min_real_cells=min_real_cells)
        cost = CostControl(limit, rate=cost_rate)
    elif min_real_cells:
        net.constrain(min_real_cells=min_real_cells)
    steps = SearchSteps(net, net, head_losses, sandwich=sandwich, estimator=estimator, cost=cost,
                        labelled=lambda _labels: None,
                        weight_opt=torch.optim.SGD(net.weight_parameters(), lr=lr_weights, momentum=0.9),
                        arch_opt=torch.optim.Adam(net.arch_parameters(), lr=lr_arch, betas=(0.5, 0.999)))
    data = torch.Generator().manual_seed(seed)
    for step in range(warmup_steps + search_steps):
        if step >= warmup_steps:
            steps.arch_step(*task.batches(data))
        steps.weight_step(*task.batches(data), warmup=step < warmup_steps)
    return net
