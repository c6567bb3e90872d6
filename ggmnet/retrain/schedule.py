"""The two-phase optimiser schedule of paper section 5.1.3: Adam until the loss flattens, then SGD.

SGD starts from Adam's last learning rate under a WarmupMultiStepLR policy (torch's ``LinearLR`` warm-up chained
with ``MultiStepLR`` drops) stepped once per epoch: with the defaults the rate rises over 5 SGD epochs, then
drops tenfold 55, 105, 155, ... SGD epochs after the switch. The ``state_dict`` holds the phase, the switch
epoch, the plateau counter and the optimiser and scheduler states, so a resumed run continues exactly.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch.optim.lr_scheduler import ChainedScheduler, LinearLR, MultiStepLR

Phase = Literal["adam", "sgd"]


class OptimizerSchedule:
    """Adam, then SGD with momentum under WarmupMultiStepLR (paper 5.1.3), advanced once per epoch.

    Parameters
    ----------
    params
        The parameters to optimise (kept, as both phases' optimisers are built over them).
    max_epochs
        Planned number of epochs in all; the SGD milestones are laid out up to it.
    lr
        Adam's learning rate, and so SGD's base learning rate after the switch. Default 1e-3.
    switch_epoch
        Epoch (0-based) whose training runs with SGD first; None switches by the plateau rule instead.
    plateau_patience, plateau_threshold
        The plateau rule: switch once the relative improvement of the epoch training loss,
        ``(L[e-1] - L[e]) / |L[e-1]|``, has stayed below ``plateau_threshold`` for ``plateau_patience``
        consecutive epochs.
    momentum, weight_decay
        SGD's momentum and L2 weight decay (0.9 and 5e-4 in the paper).
    warmup_epochs, warmup_factor
        Linear warm-up of SGD from ``warmup_factor * lr`` to ``lr`` over ``warmup_epochs`` epochs.
    step_epochs, gamma
        After the warm-up the learning rate is multiplied by ``gamma`` every ``step_epochs`` epochs.

    Use :attr:`optimizer` for the steps of an epoch and call :meth:`end_epoch` with the epoch's mean
    training loss after it.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], *, max_epochs: int, lr: float = 1e-3,
                 switch_epoch: int | None = None, plateau_patience: int = 10, plateau_threshold: float = 0.01,
                 momentum: float = 0.9, weight_decay: float = 5e-4, warmup_epochs: int = 5,
                 warmup_factor: float = 1.0 / 3.0, step_epochs: int = 50, gamma: float = 0.1) -> None:
        if switch_epoch is not None and switch_epoch < 0:
            raise ValueError(f"switch_epoch must be >= 0, got {switch_epoch}")
        if plateau_patience < 1:
            raise ValueError(f"plateau_patience must be >= 1, got {plateau_patience}")
        if not 0.0 < warmup_factor <= 1.0:
            raise ValueError(f"warmup_factor must be in (0, 1], got {warmup_factor}")
        self.params = [p for p in params if p.requires_grad]
        self.max_epochs, self.lr = int(max_epochs), float(lr)
        self.configured_switch_epoch = switch_epoch
        self.plateau_patience, self.plateau_threshold = int(plateau_patience), float(plateau_threshold)
        self.momentum, self.weight_decay = float(momentum), float(weight_decay)
        self.warmup_epochs, self.warmup_factor = int(warmup_epochs), float(warmup_factor)
        self.step_epochs, self.gamma = int(step_epochs), float(gamma)

        self.phase: Phase = "adam"
        self.epochs_done = 0
        #: The first epoch trained with SGD, once the switch has happened.
        self.switch_epoch: int | None = None
        self._previous_loss: float | None = None
        self._stale_epochs = 0
        self.optimizer: torch.optim.Optimizer = torch.optim.Adam(self.params, lr=self.lr)
        self.scheduler: ChainedScheduler | None = None
        if switch_epoch == 0:
            self._switch_to_sgd()

    @property
    def milestones(self) -> list[int]:
        """SGD epochs (counted from the switch) at which the learning rate drops by ``gamma``."""
        first = self.warmup_epochs + self.step_epochs
        return list(range(first, max(self.max_epochs, first) + 1, self.step_epochs))

    @property
    def current_lr(self) -> float:
        """The learning rate of the epoch about to run."""
        return float(self.optimizer.param_groups[0]["lr"])

    def sgd_lr(self, sgd_epoch: int) -> float:
        """The closed-form learning rate of the ``sgd_epoch``-th SGD epoch (0 = the first after the switch)."""
        if sgd_epoch < self.warmup_epochs:
            alpha = sgd_epoch / self.warmup_epochs
            warm = self.warmup_factor * (1.0 - alpha) + alpha
        else:
            warm = 1.0
        drops = sum(1 for m in self.milestones if m <= sgd_epoch)
        return self.lr * warm * self.gamma**drops

    def end_epoch(self, train_loss: float) -> bool:
        """Record a finished epoch's mean training loss and advance the schedule.

        Returns True when this call switched from Adam to SGD (the next epoch is SGD's first).
        All processes of a distributed run must pass the same (all-reduced) loss.
        """
        if not math.isfinite(train_loss):
            raise ValueError(f"the epoch training loss is not finite ({train_loss}); training diverged")
        self.epochs_done += 1
        if self.phase == "sgd":
            assert self.scheduler is not None
            self.scheduler.step()
            return False
        if self._previous_loss is not None:
            improvement = (self._previous_loss - train_loss) / max(abs(self._previous_loss), 1e-12)
            self._stale_epochs = self._stale_epochs + 1 if improvement < self.plateau_threshold else 0
        self._previous_loss = float(train_loss)
        if self.configured_switch_epoch is not None:
            due = self.epochs_done >= self.configured_switch_epoch
        else:
            due = self._stale_epochs >= self.plateau_patience
        if due:
            self._switch_to_sgd()
        return due

    def _switch_to_sgd(self) -> None:
        last_lr = self.current_lr
        self.phase = "sgd"
        self.switch_epoch = self.epochs_done
        self.optimizer = torch.optim.SGD(self.params, lr=last_lr, momentum=self.momentum,
                                         weight_decay=self.weight_decay)
        self._drops = MultiStepLR(self.optimizer, milestones=self.milestones, gamma=self.gamma)
        self.scheduler = ChainedScheduler([
            LinearLR(self.optimizer, start_factor=self.warmup_factor, end_factor=1.0,
                     total_iters=self.warmup_epochs),
            self._drops,
        ])

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly: phase, switch epoch, plateau counter, optimiser, scheduler."""
        return {
            "phase": self.phase,
            "epochs_done": self.epochs_done,
            "switch_epoch": self.switch_epoch,
            "previous_loss": self._previous_loss,
            "stale_epochs": self._stale_epochs,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state saved by :meth:`state_dict` (on a schedule built with the same settings)."""
        if state["phase"] == "sgd" and self.phase == "adam":
            self.epochs_done = int(state["switch_epoch"])
            self._switch_to_sgd()
        elif state["phase"] == "adam" and self.phase == "sgd":
            raise ValueError("cannot restore an Adam-phase state into a schedule that starts with SGD")
        self.epochs_done = int(state["epochs_done"])
        self.switch_epoch = state["switch_epoch"]
        self._previous_loss = state["previous_loss"]
        self._stale_epochs = int(state["stale_epochs"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
            # A resumed run may plan more epochs than the saved one: lay the drops out up to its own end.
            self._drops.milestones = Counter(self.milestones)
