"""The Adam -> SGD schedule of paper 5.1.3: switch epoch, plateau rule, WarmupMultiStepLR, exact resume."""

from __future__ import annotations

import warnings

import pytest
import torch

from ggmnet.retrain.schedule import OptimizerSchedule


def _params() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.ones(3))]


def _run(schedule: OptimizerSchedule, losses: list[float]) -> list[tuple[str, float]]:
    """(phase, lr) of every epoch, the epoch's loss fed to the schedule after it."""
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # scheduler steps without optimiser steps
        for loss in losses:
            seen.append((schedule.phase, schedule.current_lr))
            schedule.end_epoch(loss)
    return seen


def test_fixed_switch_and_warmup_multistep_lr_by_hand():
    sched = OptimizerSchedule(_params(), max_epochs=200, lr=1e-3, switch_epoch=3, warmup_factor=0.25)
    seen = _run(sched, [1.0] * 170)
    assert [p for p, _ in seen[:4]] == ["adam", "adam", "adam", "sgd"]
    assert sched.switch_epoch == 3
    assert isinstance(sched.optimizer, torch.optim.SGD)
    group = sched.optimizer.param_groups[0]
    assert group["momentum"] == 0.9 and group["weight_decay"] == 5e-4
    # Adam at 1e-3, then SGD epoch k = epoch - 3: warm-up 0.25 -> 1 over 5 epochs, x0.1 at k = 55, 105, 155.
    expected = {0: 1e-3, 2: 1e-3, 3: 0.25e-3, 4: 0.4e-3, 5: 0.55e-3, 6: 0.7e-3, 7: 0.85e-3, 8: 1e-3,
                57: 1e-3, 58: 1e-4, 107: 1e-4, 108: 1e-5, 158: 1e-6}
    for epoch, lr in expected.items():
        assert seen[epoch][1] == pytest.approx(lr, rel=1e-9), epoch
    assert sched.milestones == [55, 105, 155]
    for k in range(160):
        assert seen[3 + k][1] == pytest.approx(sched.sgd_lr(k), rel=1e-9)


def test_plateau_rule_on_made_up_losses():
    # Relative improvements: 0.5, 0.2, 0.1, then 0.005, 0.0, 0.00999..: three stale epochs in a row after
    # epoch 6 (0-based) with patience 3, so SGD trains from epoch 7.
    losses = [2.0, 1.0, 0.8, 0.72, 0.7164, 0.7164, 0.70925, 0.5, 0.4]
    sched = OptimizerSchedule(_params(), max_epochs=100, plateau_patience=3, plateau_threshold=0.01)
    seen = _run(sched, losses)
    assert [p for p, _ in seen] == ["adam"] * 7 + ["sgd"] * 2
    assert sched.switch_epoch == 7


def test_plateau_counter_resets_on_improvement():
    # Two stale epochs, a real improvement, then two stale again: patience 3 is never reached.
    losses = [1.0, 0.999, 0.998, 0.5, 0.4999, 0.4998]
    sched = OptimizerSchedule(_params(), max_epochs=100, plateau_patience=3, plateau_threshold=0.01)
    assert {p for p, _ in _run(sched, losses)} == {"adam"}
    assert sched.phase == "adam"


def test_switch_epoch_zero_starts_with_sgd():
    sched = OptimizerSchedule(_params(), max_epochs=10, switch_epoch=0, lr=0.01)
    assert sched.phase == "sgd" and sched.switch_epoch == 0
    assert sched.current_lr == pytest.approx(0.01 / 3)


def test_state_dict_resumes_exactly_across_the_switch():
    def make():
        return OptimizerSchedule(_params(), max_epochs=100, plateau_patience=2, plateau_threshold=0.05,
                                 step_epochs=3, warmup_epochs=2)

    losses = [1.0, 0.99, 0.98, 0.97, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.01, 0.001]
    full = make()
    reference = _run(full, losses)
    for cut in (1, 2, 3, 5, 8):
        first = make()
        _run(first, losses[:cut])
        state = first.state_dict()
        resumed = make()
        resumed.load_state_dict(state)
        assert _run(resumed, losses[cut:]) == reference[cut:], cut
        assert resumed.switch_epoch == full.switch_epoch == 3


def test_non_finite_loss_is_refused():
    sched = OptimizerSchedule(_params(), max_epochs=10)
    with pytest.raises(ValueError, match="not finite"):
        sched.end_epoch(float("nan"))


def test_resume_into_a_longer_run_keeps_dropping_the_rate():
    short = OptimizerSchedule(_params(), max_epochs=60, switch_epoch=0, step_epochs=10, warmup_epochs=5)
    _run(short, [1.0] * 20)
    assert short.milestones == [15, 25, 35, 45, 55]
    longer = OptimizerSchedule(_params(), max_epochs=120, switch_epoch=0, step_epochs=10, warmup_epochs=5)
    longer.load_state_dict(short.state_dict())
    seen = _run(longer, [1.0] * 60)
    # SGD epoch k = 20 + i: drops at 15, 25, ..., 75 (past the short run's last milestone, 55).
    assert seen[59][1] == pytest.approx(1e-3 * 0.1**7)
    assert [lr for _, lr in seen] == pytest.approx([longer.sgd_lr(20 + i) for i in range(60)], rel=1e-9)
