"""The CPU fast path of deformable convolution against torchvision's kernel, the independent reference.

Values and every gradient (input, offset, mask, weight, bias) in float64 with a tight tolerance, for offsets
that throw many samples outside the image, onto its edges and onto exact integer positions (where the offset
gradient is a one-sided difference), with and without a mask, over strides, padding, dilation, offset groups,
odd sizes and batches; zero offsets against a plain convolution; the module and GGMNet on both kernels.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

from ggmnet.errors import UserError
from ggmnet.models import deform_conv
from ggmnet.models.deform_conv import KERNEL_ENV, DeformConv2d, deform_conv2d
from ggmnet.models.ggmnet import GGMNet
from ggmnet.search_space.genotype import default_genotype

# name: (batch, c_in, c_out, height, width, kernel, stride, padding, dilation, offset groups, mask)
CASES = {
    "3x3": (2, 6, 5, 9, 11, (3, 3), 1, 1, 1, 1, False),
    "mask-2-groups": (2, 6, 4, 9, 11, (3, 3), 1, 1, 1, 2, True),
    "stride-2-batch-3": (3, 4, 3, 8, 7, (3, 3), 2, 1, 1, 1, True),
    "asymmetric": (2, 6, 5, 9, 11, (3, 2), (2, 1), (2, 0), (1, 2), 3, True),
    "dilated-wider-out": (1, 4, 9, 10, 10, (3, 3), 1, 2, 2, 2, False),
    "5x5-odd-size": (2, 3, 2, 5, 7, (5, 5), 1, 2, 1, 1, True),
    "1x1-no-padding": (2, 3, 4, 6, 5, (1, 1), 1, 0, 1, 3, True),
}


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else v


def _inputs(case: str, offsets: str, dtype=torch.float64, seed: int = 0):
    """Leaf tensors (x, offset, weight, bias, mask or None) and the keyword arguments of ``case``.

    ``offsets``: ``random`` (N(0, 3 px): many samples leave the 5-11 px images), ``integer`` (the same rounded:
    samples on exact pixels, on the edges and at -1), or ``zero``.
    """
    n, c, c_out, h, w, kernel, stride, padding, dilation, groups, use_mask = CASES[case]
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, _pair(stride), _pair(padding), _pair(dilation)
    ho, wo = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen, dtype=dtype)
    offset = torch.randn(n, 2 * groups * kh * kw, ho, wo, generator=gen, dtype=dtype) * 3.0
    if offsets == "integer":
        offset = offset.round()
    elif offsets == "zero":
        offset = torch.zeros_like(offset)
    weight = torch.randn(c_out, c, kh, kw, generator=gen, dtype=dtype)
    bias = torch.randn(c_out, generator=gen, dtype=dtype)
    mask = torch.rand(n, groups * kh * kw, ho, wo, generator=gen, dtype=dtype) if use_mask else None
    tensors = [t.requires_grad_() if t is not None else None for t in (x, offset, weight, bias, mask)]
    return tensors, {"stride": stride, "padding": padding, "dilation": dilation}


def _value_and_grads(fn, tensors, kwargs, seed: int = 1):
    """``fn``'s output and the gradients of ``<output, g>`` (random ``g``) for every tensor given."""
    x, offset, weight, bias, mask = tensors
    out = fn(x, offset, weight, bias, mask=mask, **kwargs)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    leaves = [t for t in tensors if t is not None]
    return out, torch.autograd.grad(out, leaves, upstream.to(out.device))


def _sample_rows(case: str, offset: torch.Tensor) -> torch.Tensor:
    """Row coordinate (pixels) of every sample: the tap's position plus its offset."""
    _, _, _, _, _, (kh, kw), stride, padding, dilation, _, _ = CASES[case]
    ho = offset.shape[2]
    taps = torch.arange(kh, dtype=offset.dtype).repeat_interleave(kw) * _pair(dilation)[0]
    rows = torch.arange(ho, dtype=offset.dtype) * _pair(stride)[0] - _pair(padding)[0]
    dy = offset.detach().view(offset.shape[0], -1, kh * kw, 2, ho, offset.shape[3])[:, :, :, 0]
    return dy + taps.view(-1, 1, 1) + rows.view(-1, 1)


def test_offsets_reach_outside_the_image_and_its_edges():
    (x, offset, *_), _ = _inputs("3x3", "integer")
    rows = _sample_rows("3x3", offset)
    height = x.shape[2]
    assert (rows < -1).float().mean() > 0.05 and (rows >= height).float().mean() > 0.05
    for edge in (-1, 0, height - 1, height):
        assert (rows == edge).any(), edge
    (_, offset, *_), _ = _inputs("3x3", "random")
    assert not torch.equal(offset, offset.round())


@pytest.mark.parametrize("offsets", ["random", "integer", "zero"])
@pytest.mark.parametrize("case", list(CASES))
def test_cpu_path_equals_torchvision_in_value_and_gradients(case, offsets):
    tensors, kwargs = _inputs(case, offsets)
    ours, our_grads = _value_and_grads(deform_conv2d, tensors, kwargs)
    ref, ref_grads = _value_and_grads(torchvision.ops.deform_conv2d, tensors, kwargs)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    names = ["input", "offset", "weight", "bias", "mask"][: len(ref_grads)]
    for name, got, expected in zip(names, our_grads, ref_grads):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10, msg=lambda m, name=name: f"{name}: {m}")
        assert expected.abs().sum() > 0, name


@pytest.mark.parametrize("corners_per_chunk", [1, 200, 2 ** 21])
@pytest.mark.parametrize("case", ["mask-2-groups", "stride-2-batch-3", "asymmetric"])
def test_without_autograd_any_chunking_of_the_output_rows_gives_torchvisions_output(case, corners_per_chunk,
                                                                                     monkeypatch):
    monkeypatch.setattr(deform_conv, "_CORNERS_PER_CHUNK", corners_per_chunk)  # 1: row by row
    (x, offset, weight, bias, mask), kwargs = _inputs(case, "integer")
    with torch.no_grad():
        ref = torchvision.ops.deform_conv2d(x, offset, weight, bias, mask=mask, **kwargs)
        torch.testing.assert_close(deform_conv2d(x, offset, weight, bias, mask=mask, **kwargs), ref,
                                   rtol=1e-10, atol=1e-10)
    with torch.inference_mode():
        torch.testing.assert_close(deform_conv2d(x, offset, weight, bias, mask=mask, **kwargs), ref,
                                   rtol=1e-10, atol=1e-10)


def test_non_contiguous_inputs_give_the_same_result():
    (x, offset, weight, bias, mask), kwargs = _inputs("mask-2-groups", "random")
    strided = [x.detach().contiguous(memory_format=torch.channels_last),
               offset.detach().transpose(2, 3).contiguous().transpose(2, 3),
               weight.detach().contiguous(memory_format=torch.channels_last), bias.detach(),
               mask.detach().contiguous(memory_format=torch.channels_last)]
    assert not any(t.is_contiguous() for t in strided[:3])
    tensors = [t.requires_grad_() for t in strided]
    ours, our_grads = _value_and_grads(deform_conv2d, tensors, kwargs)
    ref, ref_grads = _value_and_grads(torchvision.ops.deform_conv2d, [x, offset, weight, bias, mask], kwargs)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    for got, expected in zip(our_grads, ref_grads):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_float32_matches_torchvision_at_a_decoder_like_size():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 27, 33, 41, generator=gen)
    offset = torch.randn(2, 18, 33, 41, generator=gen) * 2.0
    weight = torch.randn(24, 27, 3, 3, generator=gen) / 9.0
    ours = deform_conv2d(x, offset, weight, padding=1)
    ref = torchvision.ops.deform_conv2d(x, offset, weight, padding=(1, 1))
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["3x3", "stride-2-batch-3", "asymmetric", "dilated-wider-out"])
def test_zero_offsets_and_unit_mask_give_the_plain_convolution(case):
    (x, offset, weight, bias, mask), kwargs = _inputs(case, "zero")
    mask = None if mask is None else torch.ones_like(mask)
    expected = F.conv2d(x, weight, bias, **kwargs)
    torch.testing.assert_close(deform_conv2d(x, offset, weight, bias, mask=mask, **kwargs), expected,
                               rtol=1e-12, atol=1e-12)


def test_weight_groups_fall_back_to_torchvision():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 6, 7, 8, generator=gen, dtype=torch.float64)
    offset = torch.randn(2, 18, 7, 8, generator=gen, dtype=torch.float64)
    weight = torch.randn(4, 3, 3, 3, generator=gen, dtype=torch.float64)  # groups = 2
    ref = torchvision.ops.deform_conv2d(x, offset, weight, padding=(1, 1))
    torch.testing.assert_close(deform_conv2d(x, offset, weight, padding=1), ref, rtol=0, atol=0)


def test_environment_variable_forces_torchvision_kernel(monkeypatch):
    calls = []
    kernel = torchvision.ops.deform_conv2d

    def spy(*args, **kwargs):
        calls.append(1)
        return kernel(*args, **kwargs)

    monkeypatch.setattr(torchvision.ops, "deform_conv2d", spy)
    (x, offset, weight, bias, mask), kwargs = _inputs("mask-2-groups", "random")
    fast = deform_conv2d(x, offset, weight, bias, mask=mask, **kwargs)
    assert calls == []
    monkeypatch.setenv(KERNEL_ENV, "torchvision")
    forced = deform_conv2d(x, offset, weight, bias, mask=mask, **kwargs)
    assert calls == [1]
    torch.testing.assert_close(fast, forced, rtol=1e-10, atol=1e-10)
    monkeypatch.setenv(KERNEL_ENV, "cuda-please")
    with pytest.raises(UserError, match=KERNEL_ENV):
        deform_conv2d(x, offset, weight, bias, mask=mask, **kwargs)


def test_module_is_a_drop_in_for_torchvisions():
    torch.manual_seed(5)
    reference = torchvision.ops.DeformConv2d(6, 4, 3, stride=2, padding=1, dilation=1, bias=True)
    module = DeformConv2d(6, 4, 3, stride=2, padding=1, dilation=1, bias=True)
    assert isinstance(module, torchvision.ops.DeformConv2d)
    assert module.state_dict().keys() == reference.state_dict().keys()
    module.load_state_dict(reference.state_dict())
    x = torch.randn(2, 6, 11, 9)
    offset = torch.randn(2, 18, 6, 5) * 2.0
    mask = torch.rand(2, 9, 6, 5)
    torch.testing.assert_close(module(x, offset, mask), reference(x, offset, mask), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(module(x, offset), reference(x, offset), rtol=1e-5, atol=1e-5)


def test_ggmnet_is_the_same_network_on_both_kernels(monkeypatch):
    """GGMNet's deformable decoder (non-zero offsets) in float64: same logits and parameter gradients."""
    torch.manual_seed(6)
    model = GGMNet(default_genotype(depth=2)).double().eval()
    for name, param in model.named_parameters():
        if ".offset." in name:
            torch.nn.init.normal_(param, std=0.05)
    x = torch.randn(1, 3, 37, 29, dtype=torch.float64)

    def run():
        model.zero_grad()
        logits = model(x)
        (logits * torch.linspace(-1, 1, logits.numel(), dtype=logits.dtype).view_as(logits)).sum().backward()
        return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    fast_logits, fast_grads = run()
    monkeypatch.setenv(KERNEL_ENV, "torchvision")
    ref_logits, ref_grads = run()
    torch.testing.assert_close(fast_logits, ref_logits, rtol=1e-10, atol=1e-10)
    for name, grad in ref_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, rtol=1e-9, atol=1e-9, msg=lambda m, n=name: f"{n}: {m}")
    assert any(".offset." in n and g.abs().sum() > 0 for n, g in ref_grads.items())


@pytest.mark.gpu
@pytest.mark.parametrize("offsets", ["random", "integer"])
def test_cuda_runs_torchvisions_kernel_and_agrees_with_the_cpu_path(offsets, monkeypatch):
    calls = []
    kernel = torchvision.ops.deform_conv2d

    def spy(*args, **kwargs):
        calls.append(args[0].device.type)
        return kernel(*args, **kwargs)

    monkeypatch.setattr(torchvision.ops, "deform_conv2d", spy)
    tensors, kwargs = _inputs("asymmetric", offsets)
    cpu, cpu_grads = _value_and_grads(deform_conv2d, tensors, kwargs)
    assert calls == []
    on_gpu = [t.detach().cuda().requires_grad_() if t is not None else None for t in tensors]
    gpu, gpu_grads = _value_and_grads(deform_conv2d, on_gpu, kwargs)
    assert calls == ["cuda"] and gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-9, atol=1e-9)
    for got, expected in zip(gpu_grads, cpu_grads):
        torch.testing.assert_close(got.cpu(), expected, rtol=1e-9, atol=1e-9)
