"""Every registered network: forward, backward, odd sizes, determinism, model_config round trip, Table 6 sizes."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from ggmnet.models import build_model, create_model, list_models
from ggmnet.models.fasterseg import BRANCHES, TRUNK, FasterSeg
from ggmnet.models.hardnet import HarDBlock, harmonic_links
from ggmnet.search_space.genotype import default_genotype

#: Table 6 of the paper: parameters (M) of the baselines, by registered name.
TABLE_6_PARAMS_M = {"fc_hardnet70": 4.1, "fasterseg": 4.7, "hrnet_w32": 28.5}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on a shared 2-core machine, spinning OpenMP threads slow small ops tenfold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(name: str) -> torch.nn.Module:
    """The registered model ``name`` at 3 input channels and 10 classes (GGMNet: the smallest genotype)."""
    torch.manual_seed(0)
    if name == "ggmnet":
        return create_model("ggmnet", genotype=default_genotype(depth=2).to_dict())
    return create_model(name, in_channels=3, num_classes=10)


def _parameters_m(model: torch.nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


@pytest.mark.parametrize("name", list_models())
def test_forward_and_backward_reach_every_parameter(name):
    model = _model(name).train()
    x = torch.randn(2, 3, 32, 32)
    target = torch.randint(0, 10, (2, 32, 32))
    logits = model(x)
    assert logits.shape == (2, 10, 32, 32)
    F.cross_entropy(logits, target).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    dead = [n for n, p in model.named_parameters() if float(p.grad.abs().sum()) == 0.0]
    assert not dead


@pytest.mark.parametrize("name", list_models())
def test_odd_input_sizes_work_and_eval_mode_is_deterministic(name):
    model = _model(name).eval()
    x = torch.randn(1, 3, 97, 131)
    with torch.no_grad():
        first, second = model(x), model(x)
    assert first.shape == (1, 10, 97, 131)
    assert torch.equal(first, second)


@pytest.mark.parametrize("name", list_models())
def test_wrong_input_channels_fail_clearly(name):
    with pytest.raises(ValueError, match=r"expects input \[N, 3, H, W\]"):
        _model(name).eval()(torch.randn(1, 4, 32, 32))


@pytest.mark.parametrize("name", list_models())
def test_model_config_is_json_and_rebuilds_the_same_network(name):
    model = _model(name).eval()
    config = model.model_config()
    assert config["name"] == name
    assert json.loads(json.dumps(config)) == config
    torch.manual_seed(1)  # the rebuilt network's own initialisation differs; the loaded weights must not
    rebuilt = build_model(config)
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.model_config() == config
    x = torch.randn(1, 3, 40, 48)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), model(x))


@pytest.mark.parametrize("name", sorted(TABLE_6_PARAMS_M))
def test_parameters_match_table_6_within_15_percent(name):
    assert name in list_models()
    params = _parameters_m(_model(name))
    assert abs(params / TABLE_6_PARAMS_M[name] - 1) < 0.15, f"{name}: {params:.2f} M"


def test_harmonic_links_and_widths_follow_the_paper():
    links, widths = harmonic_links(8, 48, 10)
    # Layer k reads layers k - 2^i for every 2^i dividing k; layer 0 is the block input.
    assert links[1:] == [[0], [1, 0], [2], [3, 2, 0], [4], [5, 4], [6], [7, 6, 4, 0]]
    # Width k * 1.7^(links - 1), rounded to even: 10, 17 -> 18, 28.9 -> 28, 49.1 -> 50.
    assert widths == [48, 10, 18, 10, 28, 10, 18, 10, 50]
    block = HarDBlock(48, 10, 8)
    assert block.out_channels == 10 + 10 + 10 + 10 + 50  # odd layers and the last one, not the input
    assert block(torch.randn(1, 48, 5, 7)).shape == (1, block.out_channels, 5, 7)


def test_fasterseg_has_the_released_student_cells_and_widths():
    # The 1/32 branch: 10 FasterSeg cells, whose inputs are 4 at 1/8, 4 at 1/16, 2 at 1/32 (so their outputs
    # 3, 4, 3); the 1/16 branch: 9 cells, inputs 6 at 1/8 and 3 at 1/16; the first 3 shared.
    strides = {out: [s for _, s, _ in TRUNK + cells] for out, cells in BRANCHES.items()}
    assert strides[32] == [8] * 3 + [16] * 4 + [32] * 3
    assert strides[16] == [8] * 5 + [16] * 4
    released = FasterSeg(3, 10, base_channels=12)
    widths = [[cell[-1].out_channels for cell in branch.cells] for branch in released.branches]
    assert widths == [[128, 64, 64, 64, 128, 128, 256], [32, 32, 64, 64, 192, 128]]
    assert _parameters_m(released) == pytest.approx(3.42, abs=0.005)


def test_model_size_counts_each_submodule_by_hand():
    from ggmnet.models import model_size

    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.first = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
            self.second = torch.nn.Conv2d(8, 4, 1, bias=False)

        def forward(self, x):
            return self.second(self.first(x))

    parts = {}
    params, gflops = model_size(Two, 16, 3, breakdown=parts)
    first, second = 2 * 3 * 8 * 9 * 16 * 16, 2 * 8 * 4 * 16 * 16  # 2 FLOPs per multiply-add at every pixel
    assert params == pytest.approx((3 * 8 * 9 + 8 * 4) / 1e6)
    assert parts["first"] == pytest.approx(first / 1e9) and parts["second"] == pytest.approx(second / 1e9)
    assert gflops == pytest.approx((first + second) / 1e9) == pytest.approx(parts[""])
