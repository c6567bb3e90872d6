"""A planted task: the search must find the operator that a synthetic label needs (issue 9).

The image is white noise in blocks of 8 x 8 pixels, so the stem's 1/8 feature holds one noise value per pixel
of the 1/8 map (24 x 24); the label of a 1/8 pixel is the sign of that noise blurred by a Gaussian of
sigma = 6 pixels of the 1/8 map. Predicting it needs a receptive field of about +-12 pixels there, far more
than the stem and the head give (about +-2). Of the cell operators, ``zoomed_conv5x5`` reaches furthest
(a 5 x 5 kernel at half resolution: about +-5 per cell), so it is the planted winner at both nodes of the
1/8 path of a depth-2 supernet. Measured with each operator fixed at both nodes (150 weight steps, 2 seeds),
the loss is 0.24 for ``zoomed_conv5x5``, 0.38 for ``zoomed_conv3x3``, 0.43 for ``conv5x5``, and worse for
``conv3x3`` and ``skip``.

The search alternates, as the search loop does, an architecture step (Adam on the logits, the gradient of
the stride-8 head's cross-entropy with respect to them only) and a weight step (SGD, ``mode="sample"``), on
fresh batches, after 30 weight-only warm-up steps. With ``mode="pairs"`` both nodes end with most of their
operator probability on ``zoomed_conv5x5`` (0.90 to 0.95 for seeds 0-2); the single-path straight-through
estimator (``mode="sample"`` used for the architecture step) leaves them spread over the five operators
(0.11 to 0.41 on ``zoomed_conv5x5`` at the nodes for seeds 0-2), which this test records as a strict
expected failure.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ggmnet.search_space.operations import CELL_OPS
from ggmnet.search_space.supernet import Supernet

PLANTED = "zoomed_conv5x5"
SIZE = 192  # pixels: a 24 x 24 map at stride 8
SIGMA = 6.0  # pixels of the 1/8 map
BATCH = 8
WARMUP_STEPS = 30
SEARCH_STEPS = 120


@pytest.fixture(autouse=True)
def one_thread():
    """Many tiny convolutions: one thread avoids OpenMP contention on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def planted_batch(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``[BATCH, 3, SIZE, SIZE]`` of block noise and their labels ``[BATCH, SIZE / 8, SIZE / 8]`` (0/1)."""
    n = SIZE // 8
    noise = torch.randn(BATCH, 1, n, n, generator=generator)
    radius = int(3 * SIGMA)
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    g = torch.exp(-(t**2) / (2 * SIGMA**2))
    kernel = (g[:, None] * g[None, :] / g.sum() ** 2)[None, None]
    label = (F.conv2d(noise, kernel, padding=radius)[:, 0] > 0).long()
    image = F.interpolate(noise, scale_factor=8, mode="nearest").expand(-1, 3, -1, -1).contiguous()
    return image, label


def search(arch_mode: str, seed: int) -> torch.Tensor:
    """Search a depth-2 supernet on the planted task; returns the operator probabilities ``[2, 5]`` of the
    1/8 path's nodes (0, 8) and (1, 8)."""
    torch.manual_seed(seed)
    net = Supernet(2, num_classes=2, unit_channels=(1, 2, 4), stem_channels=(4, 4, 4), head_channels=8).train()
    data = torch.Generator().manual_seed(seed)
    arch = net.arch_parameters()
    weight_opt = torch.optim.SGD(net.weight_parameters(), lr=0.05, momentum=0.9)
    arch_opt = torch.optim.Adam(arch, lr=0.05, betas=(0.5, 0.999))
    for step in range(WARMUP_STEPS + SEARCH_STEPS):
        if step >= WARMUP_STEPS:
            image, label = planted_batch(data)
            loss = F.cross_entropy(net(image, mode=arch_mode)[0], label)
            grads = torch.autograd.grad(loss, arch, allow_unused=True)
            for p, g in zip(arch, grads):
                p.grad = torch.zeros_like(p) if g is None else g
            arch_opt.step()
        image, label = planted_batch(data)
        for p in arch:
            p.requires_grad_(False)
        loss = F.cross_entropy(net(image, mode="sample")[0], label)
        weight_opt.zero_grad(set_to_none=True)
        loss.backward()
        weight_opt.step()
        for p in arch:
            p.requires_grad_(True)
    return torch.from_numpy(net.arch_probabilities()["op"][:2, 0])


@pytest.mark.slow
@pytest.mark.parametrize("arch_mode", [
    "pairs",
    pytest.param("sample", marks=pytest.mark.xfail(strict=True, reason="the single-path estimator of issue 9")),
])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_search_puts_most_probability_on_the_planted_operator(arch_mode, seed):
    probs = search(arch_mode, seed)
    winner = CELL_OPS.index(PLANTED)
    assert (probs[:, winner] > 0.5).all(), f"P({PLANTED}) at nodes (0, 8), (1, 8): {probs[:, winner].tolist()}"
