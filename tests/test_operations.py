"""The operator library (Table 3), the cell, the stem and the derived MRFEM against hand-built references."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ggmnet.search_space.genotype import BranchSpec, CellSpec, Genotype, default_genotype
from ggmnet.search_space.mrfem import MRFEM, Stem
from ggmnet.search_space.operations import CELL_OPS, DOWN_OPS, Cell, build_op


def _randomise_bn(module: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial affine parameters and running statistics."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = 0.5 + torch.rand(n, generator=g)
            m.bias.data = torch.randn(n, generator=g) * 0.1
            m.running_mean = torch.randn(n, generator=g) * 0.1
            m.running_var = 0.5 + torch.rand(n, generator=g)


def _load_sliced(exact: nn.Module, big: nn.Module) -> None:
    """Copy ``big``'s max-width weights into ``exact`` by slicing each tensor to the exact shape (a BatchNorm's
    state is under its width's key in ``exact``, under the widest width's in ``big``)."""
    source = {re.sub(r"\.bns\.\d+\.", ".bns.*.", k): v for k, v in big.state_dict().items()}
    exact.load_state_dict({k: source[re.sub(r"\.bns\.\d+\.", ".bns.*.", k)][tuple(slice(0, d) for d in v.shape)]
                           for k, v in exact.state_dict().items()})


@pytest.mark.parametrize("name", CELL_OPS + DOWN_OPS)
@pytest.mark.parametrize(("c_in", "c_out"), [(6, 6), (4, 10)])
@pytest.mark.parametrize(("h", "w"), [(9, 7), (1, 2)])
def test_op_output_shape(name, c_in, c_out, h, w):
    op = build_op(name, c_in, c_out)
    y = op(torch.randn(2, c_in, h, w))
    if name in DOWN_OPS:
        assert y.shape == (2, c_out, math.ceil(h / 2), math.ceil(w / 2))
    else:
        assert y.shape == (2, c_out, h, w)


def test_unknown_op_is_refused():
    with pytest.raises(ValueError, match="unknown operator 'conv7x7'"):
        build_op("conv7x7", 4, 4)


def test_skip_is_exactly_identity_and_has_no_weights():
    op = build_op("skip", 8, 8)
    x = torch.randn(1, 8, 5, 3)
    assert op(x) is x
    assert sum(p.numel() for p in op.parameters()) == 0


def test_skip_projects_when_widths_differ():
    op = build_op("skip", 4, 6).eval()
    _randomise_bn(op)
    x = torch.randn(1, 4, 5, 5)
    bn = op.proj.bn.bns["6"]
    expected = F.batch_norm(F.conv2d(x, op.proj.conv.weight), bn.running_mean, bn.running_var, bn.weight,
                            bn.bias, eps=bn.eps)
    torch.testing.assert_close(op(x), expected)


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize(("h", "w"), [(11, 8), (1, 1)])
def test_zoomed_conv_equals_down_conv_up(k, h, w):
    op = build_op(f"zoomed_conv{k}x{k}", 3, 5).eval()
    _randomise_bn(op)
    x = torch.randn(2, 3, h, w)
    small = F.interpolate(x, size=((h + 1) // 2, (w + 1) // 2), mode="bilinear", align_corners=False)
    conv = nn.Conv2d(3, 5, k, padding=k // 2, bias=False)
    conv.weight.data = op.conv.conv.weight.data.clone()
    bn = op.conv.bn.bns["5"]
    z = F.relu(F.batch_norm(conv(small), bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps))
    expected = F.interpolate(z, size=(h, w), mode="bilinear", align_corners=False)
    torch.testing.assert_close(op(x), expected)


def test_maxpool_down_without_width_change_is_a_plain_max_pool():
    op = build_op("maxpool", 4, 4)
    x = torch.randn(1, 4, 7, 6)
    torch.testing.assert_close(op(x), nn.MaxPool2d(3, 2, padding=1)(x))
    assert sum(p.numel() for p in op.parameters()) == 0


def test_sliced_conv_equals_plain_conv_with_the_first_filters():
    """The one-library property, against torch's own Conv2d + BatchNorm2d built from the first filters."""
    big = build_op("conv3x3", 16, 24, widths=(8, 16, 24)).eval()
    _randomise_bn(big)
    x = torch.randn(2, 12, 9, 7)
    conv = nn.Conv2d(12, 16, 3, padding=1, bias=False)
    conv.weight.data = big.conv.weight.data[:16, :12].clone()
    bn = nn.BatchNorm2d(16).eval()
    bn.load_state_dict({k: v[:16] if v.ndim else v for k, v in big.bn.bns["24"].state_dict().items()})
    torch.testing.assert_close(big(x, 16), F.relu(bn(conv(x))))


def test_a_narrower_width_is_the_widest_layer_masked_after_its_batchnorm():
    """In training, width 16 of a 24-wide layer gives the first 16 channels of the 24-wide output when the
    input's extra channels are zero, and moves the running statistics of those 16 channels only."""
    torch.manual_seed(0)
    big = build_op("conv3x3", 12, 24, widths=(8, 16, 24)).train()
    bn = big.bn.bns["24"]
    x = torch.randn(4, 12, 9, 7)
    reference = F.relu(F.batch_norm(F.conv2d(x, big.conv.weight, padding=1), None, None, bn.weight, bn.bias,
                                    training=True))
    before_mean, before_var = bn.running_mean.clone(), bn.running_var.clone()
    torch.testing.assert_close(big(x, 16), reference[:, :16])
    assert not torch.equal(bn.running_mean[:16], before_mean[:16])
    torch.testing.assert_close(bn.running_mean[16:], before_mean[16:])
    torch.testing.assert_close(bn.running_var[16:], before_var[16:])
    # every width trains the same affine parameters
    big(x, 8).sum().backward()
    assert bn.weight.grad[:8].abs().sum() > 0 and (bn.weight.grad[8:] == 0).all()


@pytest.mark.parametrize("name", CELL_OPS + DOWN_OPS)
def test_every_op_at_an_active_width_equals_its_exact_build(name):
    big = build_op(name, 16, 24, widths=(8, 16, 24)).eval()
    _randomise_bn(big, seed=1)
    exact = build_op(name, 12, 16).eval()
    _load_sliced(exact, big)
    x = torch.randn(2, 12, 9, 7)
    torch.testing.assert_close(big(x, 16), exact(x))
    assert sum(p.numel() for p in exact.parameters()) < sum(p.numel() for p in big.parameters())


def test_cell_computes_op_of_down_plus_shortcut():
    torch.manual_seed(0)
    cell = Cell(6, 10, "conv3x3", down="conv3x3_s2", residual=True).eval()
    _randomise_bn(cell)
    x = torch.randn(2, 6, 9, 9)
    d = cell.down(x)
    assert cell.shortcut is None  # down already maps 6 -> 10, so the widths agree
    torch.testing.assert_close(cell(x), cell.op(d) + d)
    assert cell(x).shape == (2, 10, 5, 5)

    plain = Cell(6, 10, "zoomed_conv5x5", residual=True).eval()
    _randomise_bn(plain)
    torch.testing.assert_close(plain(x), plain.op(x) + plain.shortcut(x))
    no_res = Cell(6, 10, "zoomed_conv5x5", residual=False).eval()
    no_res.load_state_dict(plain.state_dict(), strict=False)
    torch.testing.assert_close(no_res(x), plain.op(x))


def test_cell_parameter_count_is_exact():
    # 3x3 conv 4->8 (288) + BN (16); 1x1 shortcut 4->8 (32) + BN (16)
    assert sum(p.numel() for p in Cell(4, 8, "conv3x3", residual=True).parameters()) == 288 + 16 + 32 + 16
    # maxpool down 4->8: 1x1 conv (32) + BN (16); skip 8->8 is free; identity shortcut
    assert sum(p.numel() for p in Cell(4, 8, "skip", down="maxpool", residual=True).parameters()) == 32 + 16


def test_stem_declares_its_features():
    stem = Stem(5, (8, 12, 16))
    feats = stem(torch.randn(1, 5, 33, 30))
    assert [f.shape[1] for f in feats] == [i["num_chs"] for i in stem.feature_info] == [8, 12, 16]
    assert [i["reduction"] for i in stem.feature_info] == [2, 4, 8]
    assert [tuple(f.shape[-2:]) for f in feats] == [(17, 15), (9, 8), (5, 4)]
    assert stem.out_channels == 16


def _tiny_genotype(residual: bool = True) -> Genotype:
    cells = {
        8: [CellSpec("conv3x3", 2, 8, residual), CellSpec("skip", 4, 8, residual),
            CellSpec("zoomed_conv3x3", 2, 8, residual)],
        16: [CellSpec("conv5x5", 2, 16, residual, "maxpool"), CellSpec("skip", 2, 16, residual),
             CellSpec("conv3x3", 4, 16, residual)],
        32: [CellSpec("skip", 2, 8, residual), CellSpec("conv3x3", 2, 16, residual, "conv3x3_s2"),
             CellSpec("zoomed_conv5x5", 6, 32, residual, "maxpool")],
    }
    return Genotype(depth=3, num_classes=10, in_channels=3, stem_channels=(4, 8, 16), unit_channels=(4, 8, 12),
                    branches=tuple(BranchSpec(s, tuple(c)) for s, c in cells.items()))


def test_mrfem_follows_the_genotype():
    g = _tiny_genotype()
    m = MRFEM(g).eval()
    assert m.out_channels == [8, 32, 72]
    outs = m(torch.randn(2, 16, 9, 7))
    assert [tuple(o.shape) for o in outs] == [(2, 8, 9, 7), (2, 32, 5, 4), (2, 72, 3, 2)]
    # branch 2, layer 1 doubles the stride with conv3x3_s2 from 8 to 16 channels
    cell = m.branches[2]["1"]
    assert cell.down.conv.stride == (2, 2) and cell.down.conv.weight.shape == (16, 8, 3, 3)


def test_mrfem_without_residuals_matches_a_residual_free_genotype():
    torch.manual_seed(0)
    with_res = MRFEM(_tiny_genotype(residual=True))
    ablated = MRFEM(_tiny_genotype(residual=True), residual=False).eval()
    reference = MRFEM(_tiny_genotype(residual=False)).eval()
    assert not any(c.residual for b in ablated.branches for c in b.values())
    reference.load_state_dict(ablated.state_dict())
    x = torch.randn(1, 16, 8, 8)
    for a, r in zip(ablated(x), reference(x)):
        torch.testing.assert_close(a, r)
    n_params = sum(p.numel() for p in ablated.parameters())
    assert n_params < sum(p.numel() for p in with_res.parameters())


def test_default_genotype_mrfem_strides_on_odd_input():
    m = MRFEM(default_genotype(depth=4)).eval()
    outs = m(torch.randn(1, 96, 7, 5))
    assert [tuple(o.shape[-2:]) for o in outs] == [(7, 5), (4, 3), (2, 2)]
    assert m.out_channels == [48, 96, 192] == [o.shape[1] for o in outs]
