"""GGMNet and the model registry: every ablation trains, deformable conv against plain conv, odd sizes, loading.

The checks every registered network passes (baselines included) are in ``test_models.py``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

from ggmnet.errors import UserError
from ggmnet.models import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    build_model,
    create_model,
    list_models,
    load_model,
)
from ggmnet.models.ggmnet import ABLATIONS, DeformConvNormAct, GGMNet
from ggmnet.search_space.genotype import default_genotype
from ggmnet.search_space.operations import Cell, ConvNormAct


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on a shared 2-core machine, spinning OpenMP threads slow small ops tenfold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

# The contract allows depth >= 2; the smallest keeps the 1/16 and 1/32 branches real.
TINY = default_genotype(depth=2)


@pytest.mark.parametrize("row", list(ABLATIONS))
def test_every_ablation_trains_every_parameter(row):
    torch.manual_seed(0)
    model = GGMNet(TINY, **ABLATIONS[row]).train()
    x = torch.randn(2, 3, 32, 32)
    target = torch.randint(0, 10, (2, 32, 32))
    logits = model(x)
    assert logits.shape == (2, 10, 32, 32)
    F.cross_entropy(logits, target).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    dead = [n for n, p in model.named_parameters() if float(p.grad.abs().sum()) == 0.0]
    assert not dead


@pytest.mark.parametrize("row", list(ABLATIONS))
def test_ablation_switches_build_table_5_rows(row):
    switches = ABLATIONS[row]
    model = GGMNet(TINY, **switches)
    assert (model.arms is not None) == switches["arm"]
    assert (model.fusion.attention is not None) == switches["ffm"]
    kinds = {type(stage.conv) for stage in model.decoder}
    assert kinds == {DeformConvNormAct if switches["deformable"] else ConvNormAct}
    residual_cells = [m.residual for m in model.mrfem.modules() if isinstance(m, Cell)]
    owners = TINY.cell_owners()
    assert len(residual_cells) == sum(o == b for b, row in enumerate(owners) for o in row)
    assert all(residual_cells) if switches["residual"] else not any(residual_cells)
    assert model.model_config() == {"name": "ggmnet", "genotype": TINY.to_dict(), **switches, "share_cells": True}


def test_table_5_rows_add_one_component_each():
    order = ["a", "b", "c", "d", "ours"]
    assert not any(ABLATIONS["a"].values()) and all(ABLATIONS["ours"].values())
    for before, after in zip(order, order[1:]):
        changed = [k for k in ABLATIONS[after] if ABLATIONS[after][k] != ABLATIONS[before][k]]
        assert len(changed) == 1 and ABLATIONS[after][changed[0]]


def test_deform_conv_with_zero_offsets_is_plain_conv():
    torch.manual_seed(1)
    x, w, b = torch.randn(2, 5, 9, 11), torch.randn(7, 5, 3, 3), torch.randn(7)
    offset = torch.zeros(2, 2 * 9, 9, 11)
    expected = F.conv2d(x, w, b, padding=1)
    torch.testing.assert_close(deform_conv2d(x, offset, w, b, padding=(1, 1)), expected, rtol=1e-5, atol=1e-5)
    # An offset of one pixel to the right on every tap is the plain conv of the input shifted left by one
    # (away from the left border, where the shifted input's zero padding differs).
    offset[:, 1::2] = 1.0
    shifted = F.pad(x[..., 1:], (0, 1))
    moved = deform_conv2d(x, offset, w, b, padding=(1, 1))
    torch.testing.assert_close(moved[..., 1:], F.conv2d(shifted, w, b, padding=1)[..., 1:], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(moved, expected, atol=1e-3)


def test_deformable_layer_starts_as_the_plain_conv_bn_relu():
    torch.manual_seed(2)
    layer = DeformConvNormAct(6, 4).eval()
    layer.bn.running_mean.uniform_(-1, 1)
    layer.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 6, 10, 12)
    plain = F.relu(F.batch_norm(F.conv2d(x, layer.conv.weight, padding=1), layer.bn.running_mean,
                                layer.bn.running_var, layer.bn.weight, layer.bn.bias, eps=layer.bn.eps))
    torch.testing.assert_close(layer(x), plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [(70, 45), (33, 17), (8, 8)])
def test_sizes_not_divisible_by_8_give_full_size_logits(size):
    model = GGMNet(TINY).eval()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        first, second = model(x), model(x)
    assert first.shape == (1, 10, *size)
    assert torch.equal(first, second)  # eval mode is deterministic


def test_wrong_input_channels_fail_clearly():
    with pytest.raises(ValueError, match=r"expects input \[N, 3, H, W\]"):
        GGMNet(TINY)(torch.randn(1, 4, 32, 32))


def test_registry_and_model_config_round_trip():
    assert "ggmnet" in list_models()
    with pytest.raises(UserError, match="--model nope"):
        create_model("nope")
    model = GGMNet(TINY, **ABLATIONS["c"])
    rebuilt = build_model(model.model_config())
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), model.eval()(x))


def test_load_model_restores_weights_and_rejects_bad_files(tmp_path):
    torch.manual_seed(3)
    model = GGMNet(TINY).eval()
    path = tmp_path / "best.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "epoch": 1,
                "model": model.state_dict(), "model_config": model.model_config()}, path)
    loaded, checkpoint = load_model(path)
    assert not loaded.training and checkpoint["epoch"] == 1
    x = torch.randn(1, 3, 24, 24)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="garbage.pt: not a readable ggmnet checkpoint"):
        load_model(garbage)
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else"}, other)
    with pytest.raises(UserError, match="other.pt: not a ggmnet retrain checkpoint"):
        load_model(other)
    with pytest.raises(UserError, match="missing.pt: no such file"):
        load_model(tmp_path / "missing.pt")
    broken = tmp_path / "broken.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model": {},
                "model_config": model.model_config()}, broken)
    with pytest.raises(UserError, match="broken.pt: the checkpoint's model does not load"):
        load_model(broken)


def test_attention_refinement_depends_on_the_tile_alone():
    # BiSeNet's BatchNorm on the pooled vector made the attention of a batch of 2 exactly sigmoid(+-1) per channel
    # in training, whatever the tiles held, and different in evaluation: the ARM of section 4.3 has none.
    from ggmnet.models.ggmnet import AttentionRefinement

    torch.manual_seed(0)
    arm = AttentionRefinement(8).train()
    x = torch.randn(3, 8, 5, 5)
    with torch.no_grad():
        pair = arm.attention(x[:2])
        other_pair = arm.attention(x[[0, 2]])
        torch.testing.assert_close(pair[0], other_pair[0])
        arm.eval()
        torch.testing.assert_close(arm.attention(x[:2]), pair)
        pooled = x[:2].mean(dim=(2, 3))
        conv = arm.attention[1]
        expected = torch.sigmoid(pooled @ conv.weight[:, :, 0, 0].T + conv.bias)
        torch.testing.assert_close(pair[:, :, 0, 0], expected)
