"""Deformable convolution (Dai et al. 2017; modulated: Zhu et al. 2019) with a fast CPU path.

:func:`deform_conv2d` computes exactly what :func:`torchvision.ops.deform_conv2d` computes, and
:class:`DeformConv2d` is a drop-in subclass of :class:`torchvision.ops.DeformConv2d` (same parameters, same
state-dict keys) whose forward calls it. On CUDA, and for anything the fast path does not cover (weight groups,
dtypes other than float32 and float64, shapes torchvision rejects), the call goes to torchvision's kernel.

Why: torchvision's CPU kernel runs one thread over scalar loops; in a 512 x 512 GGMNet inference its three
deformable layers cost about ten times the rest of the network.

The CPU formulation (library calls only, no compiled code)
---------------------------------------------------------
For input ``x [N, C, H, W]``, weight ``w [C_out, C, kh, kw]`` (``K = kh * kw`` taps), offsets
``[N, 2 * G * K, Ho, Wo]`` (pixels; a ``(dy, dx)`` pair per offset group ``g < G`` and tap ``k``) and an optional
modulation mask ``m [N, G * K, Ho, Wo]``, output pixel ``p`` is

    out[o, p] = sum_{g, k} m[g, k, p] * sum_{c in g} w[o, c, k] * bilinear(x[c], p_k + offset[g, k, p]),

with ``p_k = (p_y * stride - pad + i * dilation, p_x * stride - pad + j * dilation)`` for tap ``k = (i, j)``.
Bilinear sampling is linear in the image and commutes with mixing channels, so the channels are mixed first:

1. ``z = x @ w``: one matrix product gives, at every input pixel, each group's ``K * C_out`` tap-weighted sums
   ``z[g, k, o] = sum_{c in g} w[o, c, k] * x[c]``, a table of ``N * G * (H + 4) * (W + 4) * K`` rows of
   ``C_out`` values (the input is zero-padded by two pixels first, so the border rows are zero).
2. For every output pixel, its ``4 * G * K`` bilinear corners (rows of the table) and their weights (bilinear
   weight times mask) are listed, and :func:`torch.nn.functional.embedding_bag` (``mode="sum"``,
   ``per_sample_weights``) sums them into ``[N * Ho * Wo, C_out]``, transposed to ``[N, C_out, Ho, Wo]``.
   Without autograd this runs over chunks of output rows (``_CORNERS_PER_CHUNK`` corners), so that the index and
   weight arrays take a few tens of MiB at any tile size.

Each sample reads ``C_out`` values instead of ``C`` (GGMNet's decoder maps 144, 72 and 27 channels to 48, 24
and 24), no ``[C * K, Ho * Wo]`` column matrix is built (the table has ``K * C_out`` values per input pixel), and
autograd gives every gradient (``embedding_bag`` differentiates with respect to the table and the per-sample
weights). Out-of-image corners read the zero border; a sample whose top-left corner lies further out
(``y < -1``, ``y >= H``, ``x < -1`` or ``x >= W``) is moved onto the border, where all four corners are zero, so
its value and every gradient through it are zero. Corner indices come from ``floor`` of the sampling position,
computed as torchvision computes it, so values and gradients equal torchvision's also at integer positions
(e.g. zero offsets, GGMNet's initialisation), where the offset gradient is the forward difference of the
zero-padded image (even at ``y = -1``, whose value is zero). A formulation with
:func:`torch.nn.functional.grid_sample` (``align_corners=True``; one bilinear sample per tap, then 1x1
convolutions) gives the same values, but its normalised coordinates move integer positions by an ulp, which
turns that offset gradient into the backward difference at about one in eight of them; it samples ``C``
channels per tap, and on one thread it took 1.3-3 times as long as this path at GGMNet's three decoder sizes
(``benchmarks/bench_deform.py`` compares this path with torchvision's kernel).

Set the environment variable ``GGMNET_DEFORM_CONV=torchvision`` to run torchvision's kernel everywhere (A/B
checks); the default, ``auto``, takes the fast path on CPU.

References
----------
Dai et al. (2017), Deformable convolutional networks, ICCV; Zhu et al. (2019), Deformable ConvNets v2: more
deformable, better results, CVPR.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor
from torch.nn.modules.utils import _pair

from ggmnet.errors import UserError

#: Environment variable choosing the kernel (module docstring).
KERNEL_ENV = "GGMNET_DEFORM_CONV"
KERNELS = ("auto", "torchvision")

IntPair = int | tuple[int, int]

#: Bilinear corners sampled per chunk of output rows on the CPU path without autograd (module docstring).
_CORNERS_PER_CHUNK = 2 ** 21


@contextmanager
def using_kernel(name: str) -> Iterator[None]:
    """Run the body with ``GGMNET_DEFORM_CONV=name`` (the setting before it is restored afterwards)."""
    before = os.environ.get(KERNEL_ENV)
    os.environ[KERNEL_ENV] = name
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(KERNEL_ENV, None)
        else:
            os.environ[KERNEL_ENV] = before


def kernel_choice() -> str:
    """The kernel :envvar:`GGMNET_DEFORM_CONV` asks for, ``auto`` when unset."""
    choice = os.environ.get(KERNEL_ENV, "auto").strip().lower() or "auto"
    if choice not in KERNELS:
        raise UserError(f"{KERNEL_ENV}={choice!r}: expected one of {', '.join(KERNELS)}")
    return choice


def deform_conv2d(input: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None = None, *,
                  stride: IntPair = 1, padding: IntPair = 0, dilation: IntPair = 1,
                  mask: Tensor | None = None) -> Tensor:
    """Deformable convolution with :func:`torchvision.ops.deform_conv2d`'s semantics.

    Parameters
    ----------
    input
        ``[N, C, H, W]``.
    offset
        ``[N, 2 * G * kh * kw, Ho, Wo]``: for each offset group and kernel tap (row-major), the ``(dy, dx)``
        displacement of its sampling position, in pixels.
    weight, bias
        ``[C_out, C / groups, kh, kw]`` and ``[C_out]`` (or None).
    stride, padding, dilation
        As for :func:`torch.nn.functional.conv2d`; the padding is zeros.
    mask
        Optional modulation ``[N, G * kh * kw, Ho, Wo]`` multiplying each sample.

    Returns
    -------
    Tensor
        ``[N, C_out, Ho, Wo]``.
    """
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    if kernel_choice() == "auto" and _fast_path_applies(input, offset, weight, bias, mask, stride, padding,
                                                        dilation):
        with torch.autocast("cpu", enabled=False):
            return _deform_conv2d_cpu(input, offset, weight, bias, stride, padding, dilation, mask)
    return torchvision.ops.deform_conv2d(input, offset, weight, bias, stride=stride, padding=padding,
                                         dilation=dilation, mask=mask)


def _output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _fast_path_applies(input: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None, mask: Tensor | None,
                       stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int]) -> bool:
    """True for non-empty CPU float32/float64 tensors of valid shapes and ``groups == 1``."""
    tensors = [t for t in (input, offset, weight, bias, mask) if t is not None]
    if any(t.device.type != "cpu" or t.dtype != input.dtype for t in tensors):
        return False
    if input.dtype not in (torch.float32, torch.float64) or input.ndim != 4 or weight.ndim != 4:
        return False
    n, c, h, w = input.shape
    c_out, c_per_group, kh, kw = weight.shape
    taps = kh * kw
    if min(n, c, h, w, c_out, taps) == 0 or c_per_group != c or offset.ndim != 4 or offset.shape[1] % (2 * taps):
        return False
    groups = offset.shape[1] // (2 * taps)
    if groups == 0 or c % groups or min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        return False
    out_size = (_output_size(h, kh, stride[0], padding[0], dilation[0]),
                _output_size(w, kw, stride[1], padding[1], dilation[1]))
    if min(out_size) < 1 or offset.shape != (n, 2 * groups * taps, *out_size):
        return False
    if mask is not None and mask.shape != (n, groups * taps, *out_size):
        return False
    return bias is None or bias.shape == (c_out,)


def _deform_conv2d_cpu(x: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple[int, int],
                       padding: tuple[int, int], dilation: tuple[int, int], mask: Tensor | None) -> Tensor:
    """The fast formulation (module docstring): ``z = x @ w`` at every pixel, then weighted ``embedding_bag`` sums."""
    n, c, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    taps = kh * kw
    groups = offset.shape[1] // (2 * taps)
    ho, wo = offset.shape[-2:]
    hp, wp = h + 4, w + 4  # a zero border two pixels wide
    dtype = x.dtype

    # 1. The table z[n, g, pixel, k, :] of tap-weighted channel sums: rows of C_out values.
    padded = F.pad(x, (2, 2, 2, 2)).reshape(n, groups, c // groups, hp * wp).transpose(2, 3)
    w_taps = weight.reshape(c_out, groups, c // groups, taps).permute(1, 2, 3, 0).reshape(groups, c // groups,
                                                                                         taps * c_out)
    table = torch.matmul(padded, w_taps).view(-1, c_out)

    # 2. Sampling positions of the taps before the offsets, pixels of the unpadded input: [K, (y, x), Ho * Wo].
    tap_y = (torch.arange(kh, dtype=dtype) * dilation[0]).repeat_interleave(kw)
    tap_x = (torch.arange(kw, dtype=dtype) * dilation[1]).repeat(kh)
    row_y = (torch.arange(ho, dtype=dtype) * stride[0] - padding[0]).repeat_interleave(wo)
    col_x = (torch.arange(wo, dtype=dtype) * stride[1] - padding[1]).repeat(ho)
    base = torch.stack((tap_y[:, None] + row_y, tap_x[:, None] + col_x), dim=1)
    # Table rows of the four corners of image pixel (0, 0), for each image, group and tap: [N, G, K, 4, 1].
    index_dtype = torch.int32 if n * groups * hp * wp * taps < 2 ** 31 else torch.int64
    image = torch.arange(n * groups, dtype=index_dtype).view(n, groups, 1, 1, 1) * (hp * wp)
    steps = torch.tensor([0, 1, wp, wp + 1], dtype=index_dtype).view(4, 1) + (2 * wp + 2)
    origin = (image + steps) * taps + torch.arange(taps, dtype=index_dtype).view(taps, 1, 1)
    # Top-left corners further out than one pixel are moved to the border, whose corners are all zero.
    lowest = torch.tensor([[-2.0], [-2.0]], dtype=dtype)
    highest = torch.tensor([[float(h)], [float(w)]], dtype=dtype)

    # 3. Without autograd, output rows go in chunks, so that the per-sample arrays stay small and their memory is
    # reused; with it, every chunk's arrays would be kept for the backward pass anyway, and every chunk's
    # embedding_bag backward would fill a gradient of the whole table. The arithmetic runs on planes
    # [N, G, K, ..., pixels]; embedding_bag wants each output pixel's samples together.
    tensors = (x, offset, weight, bias, mask)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        chunk = ho
    else:
        chunk = max(1, _CORNERS_PER_CHUNK // (4 * n * wo * groups * taps))
    offset_planes = offset.reshape(n, groups, taps, 2, ho * wo)
    mask_planes = None if mask is None else mask.reshape(n, groups, taps, 1, ho * wo)
    outputs = []
    for r0 in range(0, ho, chunk):
        pixels = slice(r0 * wo, min(ho, r0 + chunk) * wo)
        count = pixels.stop - pixels.start
        yx = offset_planes[..., pixels] + base[..., pixels]  # [N, G, K, (y, x), pixels]
        low = yx.detach().floor()
        frac = yx - low
        # Bilinear weights of the corners (top-left, top-right, bottom-left, bottom-right), times the mask.
        weights = torch.stack((1 - frac, frac), dim=4)  # [N, G, K, (y, x), (low, high), pixels]
        wy, wx = weights[:, :, :, 0], weights[:, :, :, 1]
        if mask_planes is not None:
            wy = wy * mask_planes[..., pixels]
        weights = (wy.unsqueeze(4) * wx.unsqueeze(3)).view(n, -1, count).transpose(1, 2).contiguous()
        low = torch.clamp(low, lowest, highest).to(index_dtype)
        within = torch.add(low[:, :, :, 1], low[:, :, :, 0], alpha=wp).unsqueeze(3)
        corners = torch.empty(n, count, groups, taps, 4, dtype=index_dtype)
        torch.add(origin, within, alpha=taps, out=corners.permute(0, 2, 3, 4, 1))
        sums = F.embedding_bag(corners.view(n * count, -1), table, per_sample_weights=weights.view(n * count, -1),
                               mode="sum")
        outputs.append(sums.view(n, count, c_out).transpose(1, 2))
    out = torch.cat(outputs, dim=2) if len(outputs) > 1 else outputs[0].contiguous()
    out = out.view(n, c_out, ho, wo)
    return out if bias is None else out + bias.view(1, c_out, 1, 1)


class DeformConv2d(torchvision.ops.DeformConv2d):
    """:class:`torchvision.ops.DeformConv2d` (same constructor, parameters and state-dict keys) on
    :func:`deform_conv2d`, so the CPU takes the fast path.

    ``forward(input [N, C, H, W], offset [N, 2 * G * kh * kw, Ho, Wo], mask [N, G * kh * kw, Ho, Wo] | None)
    -> [N, C_out, Ho, Wo]``.
    """

    def forward(self, input: Tensor, offset: Tensor, mask: Tensor | None = None) -> Tensor:
        return deform_conv2d(input, offset, self.weight, self.bias, stride=self.stride, padding=self.padding,
                             dilation=self.dilation, mask=mask)
