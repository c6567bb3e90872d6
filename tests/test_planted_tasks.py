"""Planted tasks for the search's other decisions (issue 17): widths, paths and cost targets.

Each task (``tests/planted.py``) has a label whose best architecture is known, and is searched with the search's
own steps (:class:`ggmnet.search.steps.SearchSteps`: the sandwich weight step, the paired architecture step, the
cost target). What each test found before the change that it checks is in its docstring; all of them fail on
the code before issue 17, which had no cost target, no sandwich and no path estimator to call.
"""

from __future__ import annotations

import pytest
import torch
from planted import all_heads_width_task, path_task, planted_search, receptive_field_task, width_task

from ggmnet.search.search import branch_output_layers
from ggmnet.search_space.operations import CELL_OPS

#: the width tests take the operator (conv5x5, the costliest) and the residual connection out of the search
WIDTH_ONLY = {"op": CELL_OPS.index("conv5x5"), "residual": 1}


@pytest.fixture(autouse=True)
def one_thread():
    """Many tiny convolutions: one thread avoids OpenMP contention on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _fraction(net) -> float:
    return net.genotype_cost(net.derive()) / net.largest_cost()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_the_width_a_label_needs_is_kept_and_the_others_give_way_under_a_target(seed):
    """The 1/8 label needs every one of 16 channels (x8 on the 1/8 path); the other nodes feed heads without
    labels. Without a target the 1/8 path goes to x8 and the other nodes stay exactly at their prior; under a 50 %
    target the 1/8 path keeps x8 and the others go to x2. (With the first-order estimate at the drawn network
    that the paired estimator used for widths before, the 1/8 path went to x2: P(x8) 0.02-0.04.)"""
    task = width_task()
    free = planted_search(task, seed=seed, fixed=WIDTH_ONLY).arch_probabilities()["width"]
    assert free[0, 0, -1] > 0.6 and free[1, 0, -1] > 0.6
    others = free[[0, 1, 1], [1, 1, 2]]
    assert abs(others - 0.25).max() < 0.01  # no label, no gradient: the prior

    net = planted_search(task, seed=seed, fixed=WIDTH_ONLY, cost_target=0.5)
    targeted = net.arch_probabilities()["width"]
    assert targeted[0, 0, -1] > 0.6 and targeted[1, 0, -1] > 0.6
    assert (targeted[[0, 1, 1], [1, 1, 2], 0] > 0.6).all()
    genotype = net.derive()
    assert [c.expansion for c in genotype.branches[0].cells] == [8, 8]
    assert _fraction(net) <= 0.5


@pytest.mark.slow
@pytest.mark.parametrize("target", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("seed", [0, 1])
def test_cost_targets_are_met(target, seed):
    """Every head needs its widest width, so the untargeted network costs 84-89 % of the largest and every
    target binds. The search's distribution is held at the target in expectation (measured: -11 % to +1 %), and
    the derived network, brought to a binding target, meets it from below within 10 % (measured: -2 % to 0 %;
    brought to the distribution's expected cost instead, it landed 12.5 % under the 30 % target for seed 0)."""
    net = planted_search(all_heads_width_task(), seed=seed, fixed=WIDTH_ONLY, cost_target=target)
    fraction = _fraction(net)
    assert fraction <= target + 1e-9
    assert fraction >= 0.9 * target, f"derived {fraction:.3f} for a target of {target}"
    assert float(net.expected_cost()) / net.largest_cost() == pytest.approx(target, rel=0.12)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_planted_operator_is_still_found_under_a_cost_target(seed):
    """Issue 9's planted operator (``test_planted_search``) with every choice searched, the sandwich and a 50 %
    cost target: both nodes of the 1/8 path still choose ``zoomed_conv5x5``."""
    net = planted_search(receptive_field_task(), seed=seed, cost_target=0.5)
    probs = net.arch_probabilities()["op"][:2, 0, CELL_OPS.index("zoomed_conv5x5")]
    assert (probs > 0.5).all(), probs
    assert [c.op for c in net.derive().branches[0].cells] == ["zoomed_conv5x5"] * 2
    assert _fraction(net) <= 0.5


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_a_coarse_branch_that_needs_a_wide_receptive_field_downsamples_early(seed):
    """The 1/32 label at a pixel is the sign of the noise 4 pixels of the 1/32 map away; with conv3x3 cells
    (operators, widths and residual connections fixed, paths searched) only a 1/32 branch that reaches 1/32
    before the last layer learns it (trained alone for 300 steps, downsampling at layers (0, 1), (1, 2), (0, 3),
    (2, 4) reach a loss of 0.03-0.04; at (0, 5) and (4, 5) the loss stays at 0.69, chance). The paths' paired
    REINFORCE gets there for seeds 0-2 (seed 2 is left out for time; the per-node rival-source estimate that
    the search used before ended at (3, 5), (1, 5) and (0, 4); the uniform prior puts a third of its mass on
    reaching 1/32 at the last layer). The provenance's ``branch_output_layers`` reports where each branch gets
    to its stride."""
    fixed = {"op": CELL_OPS.index("conv3x3"), "width": -1, "residual": 1}
    net = planted_search(path_task(side=12), seed=seed, fixed=fixed, search_steps=300)
    genotype = net.derive()
    reach = branch_output_layers(genotype)[2]
    assert reach <= genotype.depth - 2, f"the 1/32 branch downsamples at {genotype.downsample_layers(2)}"
    # the per-node estimate drove this probability up, to 0.57-0.98; here it ends at 0.19-0.35
    p_last = net.arch_probabilities()["source"][genotype.depth - 1, 2, 1]
    assert p_last < 0.5, f"P(reaching 1/32 at the last layer) = {p_last:.2f}, prior 1/3"
