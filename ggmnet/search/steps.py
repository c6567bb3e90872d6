"""The two steps of the search, apart from its data and its loop: a weight step and an architecture step.

:class:`SearchSteps` holds what a step needs (the supernet, its optimisers, the loss, the settings) and nothing
of where the batches come from, so that the search loop (:mod:`ggmnet.search.search`) and the planted tasks of
``tests/test_planted_search.py`` run the same algorithm.

**The weight step: the sandwich rule.** With every choice sampled, a depth-22 supernet does not train: about
half the cells of a sample lack their residual connection and nearly every sample has a narrow cell on its
1/8 path. So each weight step trains, on the same batch, the **largest** network (every node at its widest
width with its residual connection; operators and paths drawn) on the labels, then ``sandwich`` sampled
networks: the **smallest** (every node at its narrowest width, residual connections on) and random ones
(every choice drawn; residual connections kept on during the warm-up), each on the labels plus the
Kullback-Leibler divergence from the largest network's prediction (in-place distillation, as in slimmable and
once-for-all networks: the largest is the teacher of the others). Their gradients add up to one update.
``sandwich=0`` is one sampled network per step.

**The architecture step** differentiates the loss of a network drawn by the estimator (``"pairs"``: every
choice drawn twice and the rival candidate computed too, so candidates compete) with respect to the
architecture logits only, plus the cost term of :class:`CostControl`.

**The cost target** (:class:`CostControl`): the architecture loss gets ``lambda * E[cost] / target`` (the
supernet's differentiable expected cost, shared cells counted once) while that cost is over the target, and
nothing inside it; ``lambda`` is adapted after every architecture step by dual ascent, ``lambda += rate *
(cost / target - 1)`` floored at 0 (a term that kept pushing inside the target overshot it: a 70 % target
ended at 18 % on a planted task; switching on the most likely architecture's cost held the distribution far
under the target while its argmax lagged above). The derivation then brings the derived network to the
distribution's cost, within the target (:meth:`Supernet.constrain`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ggmnet.engine.device import autocast_for, make_grad_scaler
from ggmnet.engine.distributed import DistContext, all_reduce_mean
from ggmnet.search_space.supernet import Supernet

#: ``loss_fn(logits, target, pixel_weights) -> per-head losses``: each head's loss against the labels (``None``
#: for a head without labels); a step's loss is their sum.
LossFn = Callable[[list[torch.Tensor], Any, "torch.Tensor | None"], list["torch.Tensor | None"]]
#: Pins of the sandwich's fixed members (``Supernet.pin`` indices): the largest network (widest widths, residual
#: connections, every branch at its own resolution from its first layers, so that the coarse branches' early
#: cells, which few drawn paths pass, are trained in every step) and the smallest (narrowest widths).
LARGEST = {"width": -1, "residual": 1, "source": 0}
SMALLEST = {"width": 0, "residual": 1}


def total(losses: Sequence[torch.Tensor | None]) -> torch.Tensor:
    """The sum of the heads' losses that exist."""
    return sum(loss for loss in losses if loss is not None)


def labelled_pixels(target: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """The pixels of a label map ``[N, H, W]`` that carry a label."""
    return target != ignore_index


def distillation_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
                      labelled: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the ``labelled`` pixels (``[N, H, W]`` bool, downsampled to each head by nearest neighbour;
    ``None``: every pixel) and sum over heads of KL(teacher || student) of the heads' class distributions, each
    head at its own resolution; the teacher's logits are detached."""
    total = student[0].new_zeros(())
    for s, t in zip(student, teacher):
        if labelled is None:
            valid = torch.ones(s.shape[0], *s.shape[-2:], device=s.device)
        else:
            valid = F.interpolate(labelled.float()[:, None], size=s.shape[-2:], mode="nearest")[:, 0]
        log_s = F.log_softmax(s.float(), dim=1)
        log_t = F.log_softmax(t.detach().float(), dim=1)
        kl = (log_t.exp() * (log_t - log_s)).sum(1)
        total = total + (kl * valid).sum() / valid.sum().clamp_min(1.0)
    return total


class CostControl:
    """The cost target of the search: a penalty term with a weight adapted by dual ascent (module docstring).

    Parameters
    ----------
    target
        The cost target, in the supernet's cost unit (MACs per input pixel, or a latency table's unit).
    weight
        Initial ``lambda``.
    rate
        Step of ``lambda`` per architecture step, per unit of relative excess (``cost / target - 1``).
    """

    def __init__(self, target: float, *, weight: float = 0.0, rate: float = 0.05) -> None:
        if not target > 0:
            raise ValueError(f"CostControl: target must be positive, got {target}")
        self.target = float(target)
        self.weight = float(weight)
        self.rate = float(rate)
        self.over = True  # until the first measurement

    def penalty(self, supernet: Supernet) -> torch.Tensor:
        """``lambda * E[cost] / target`` while the last measured cost is over the target, else 0:
        differentiable in the architecture logits."""
        if not self.over:
            return supernet.arch_op.new_zeros(())
        return self.weight * supernet.expected_cost() / self.target

    def update(self, cost: float) -> float:
        """Integrate the relative excess of the measured ``cost`` over the target into ``lambda`` (floored at
        0) and switch the term on while over the target, off inside it; returns the new ``lambda``."""
        excess = cost / self.target - 1.0
        self.over = excess > 0
        self.weight = max(0.0, self.weight + self.rate * excess)
        return self.weight

    def state_dict(self) -> dict[str, float]:
        return {"weight": self.weight, "over": float(self.over)}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.weight = float(state["weight"])
        self.over = bool(state.get("over", 1.0))


class SearchSteps:
    """The weight step and the architecture step of the search (module docstring).

    Parameters
    ----------
    supernet
        The supernet (its architecture logits are left frozen outside :meth:`arch_step`).
    model
        What the weight step runs: the supernet or its DistributedDataParallel wrapper.
    loss_fn
        The heads' loss against the labels (:data:`LossFn`).
    weight_opt, arch_opt
        Optimisers of the weights and of the architecture logits.
    sandwich
        Sampled networks trained beside the largest in each weight step (the first the smallest), each on the
        labels plus its divergence from the largest network's prediction; 0: one sampled network per step.
    estimator
        The architecture step's mode of :meth:`Supernet.forward` (``"pairs"``, ``"sample"`` or ``"soft"``).
    cost
        The cost target, or ``None``.
    grad_clip
        Largest global norm of the weights' gradient.
    labelled
        ``labelled(target)``: the ``[N, H, W]`` pixels the distillation is averaged over (default: those with
        a label), or ``None`` for every pixel.
    device, use_amp, ctx
        Where the steps run, mixed precision (CUDA only) and the process group (the architecture gradients
        are averaged over the ranks).
    """

    def __init__(self, supernet: Supernet, model: nn.Module, loss_fn: LossFn, *,
                 weight_opt: torch.optim.Optimizer, arch_opt: torch.optim.Optimizer, sandwich: int = 0,
                 estimator: str = "pairs", cost: CostControl | None = None, grad_clip: float = 5.0,
                 labelled: Callable[[Any], torch.Tensor | None] = labelled_pixels,
                 device: torch.device | str = "cpu", use_amp: bool = False, ctx: DistContext | None = None) -> None:
        self.supernet, self.model, self.loss_fn, self.labelled = supernet, model, loss_fn, labelled
        self.weight_opt, self.arch_opt = weight_opt, arch_opt
        self.sandwich, self.estimator, self.cost, self.grad_clip = int(sandwich), estimator, cost, grad_clip
        self.device, self.use_amp, self.ctx = torch.device(device), use_amp, ctx
        self.arch_params = list(supernet.arch_parameters())
        self.weight_params = list(supernet.weight_parameters())
        self.weight_scaler = make_grad_scaler(self.device, use_amp)
        self.arch_scaler = make_grad_scaler(self.device, use_amp)
        self.freeze_arch(True)

    def freeze_arch(self, frozen: bool) -> None:
        """Architecture logits without (``True``) or with gradients."""
        for p in self.arch_params:
            p.requires_grad_(not frozen)

    # ------------------------------------------------------------------ weights
    def _forward(self, image: torch.Tensor, pins: dict[str, int]) -> list[torch.Tensor]:
        self.supernet.pin(**pins)
        with autocast_for(self.device, self.use_amp):
            return self.model(image, mode="sample")

    def weight_step(self, image: torch.Tensor, target: torch.Tensor, pixel_weights: torch.Tensor | None = None,
                    *, warmup: bool = False, pins: dict[str, int] | None = None) -> dict[str, float]:
        """One update of the weights on a batch: the sandwich (``sandwich > 0``), or one network drawn under
        ``pins`` (default: every choice drawn). In the ``warmup`` every residual connection is kept. Returns the
        largest network's loss (``loss``) and the sampled ones' mean loss and divergence."""
        self.weight_opt.zero_grad(set_to_none=True)
        out: dict[str, float] = {}
        try:
            logits = self._forward(image, LARGEST if self.sandwich > 0 else pins or {})
            loss = total(self.loss_fn(logits, target, pixel_weights))
            self.weight_scaler.scale(loss).backward()
            out["loss"] = float(loss.detach())
            if self.sandwich > 0:
                teacher = [t.detach() for t in logits]
                labelled = self.labelled(target)
                children, divergences = [], []
                for n in range(self.sandwich):
                    child_pins = SMALLEST if n == 0 else ({"residual": 1} if warmup else {})
                    logits = self._forward(image, child_pins)
                    label_loss = total(self.loss_fn(logits, target, pixel_weights))
                    kd = distillation_loss(logits, teacher, labelled)
                    self.weight_scaler.scale(label_loss + kd).backward()
                    children.append(float(label_loss.detach()))
                    divergences.append(float(kd.detach()))
                out["loss_sampled"] = sum(children) / len(children)
                out["distillation"] = sum(divergences) / len(divergences)
        finally:
            self.supernet.pin()
        self.weight_scaler.unscale_(self.weight_opt)
        torch.nn.utils.clip_grad_norm_(self.weight_params, self.grad_clip)
        self.weight_scaler.step(self.weight_opt)
        self.weight_scaler.update()
        return out

    # ------------------------------------------------------------------ architecture
    def arch_step(self, image: torch.Tensor, target: torch.Tensor,
                  pixel_weights: torch.Tensor | None = None) -> dict[str, float]:
        """One update of the architecture logits on a batch; returns the loss (labels plus cost term) and,
        with a cost target, the cost weight after its update and the derived architecture's cost."""
        self.freeze_arch(False)
        try:
            with autocast_for(self.device, self.use_amp):
                logits = self.supernet(image, mode=self.estimator)
            losses = self.loss_fn(logits, target, pixel_weights)
            loss = total(losses)
            objective = loss + self._path_surrogate(image, target, pixel_weights, losses)
            if self.cost is not None:
                objective = objective + self.cost.penalty(self.supernet)
            grads = torch.autograd.grad(self.arch_scaler.scale(objective), self.arch_params, allow_unused=True)
        finally:
            self.freeze_arch(True)
        for p, g in zip(self.arch_params, grads):
            p.grad = torch.zeros_like(p) if g is None else g
        self._average_arch_grads()
        self.arch_scaler.step(self.arch_opt)
        self.arch_scaler.update()
        out = {"arch_loss": float(loss.detach())}
        if self.cost is not None:
            with torch.no_grad():
                cost = float(self.supernet.expected_cost())
            out["cost_weight"] = self.cost.update(cost)
            out["cost_fraction_of_target"] = cost / self.cost.target
        return out

    def _path_surrogate(self, image: torch.Tensor, target: Any, pixel_weights: torch.Tensor | None,
                        losses: Sequence[torch.Tensor | None]) -> torch.Tensor:
        """The paths' paired REINFORCE term of a ``"pairs"`` step (``Supernet.path_estimator == "reinforce"``):
        the network with the second draws' paths is run too (no graph), and each head's loss difference
        weighs the log-probability ratio of that head's two paths (:meth:`Supernet.path_log_ratio`)."""
        zero = losses[0].new_zeros(()) if losses[0] is not None else image.new_zeros(())
        if self.estimator != "pairs" or self.supernet.path_estimator != "reinforce":
            return zero
        rival = self.supernet.path_rival_plan()
        if rival is None:
            return zero
        with torch.no_grad(), autocast_for(self.device, self.use_amp):
            rival_losses = self.loss_fn(self.supernet(image, mode="plan", plan=rival), target, pixel_weights)
        surrogate = zero
        for end, (a, b) in enumerate(zip(losses, rival_losses)):
            if a is not None and b is not None:
                surrogate = surrogate + 0.5 * float(a.detach() - b) * self.supernet.path_log_ratio(end, rival)
        return surrogate

    def _average_arch_grads(self) -> None:
        """Average the architecture gradients over the ranks (one all-reduce of their concatenation)."""
        if self.ctx is None or not self.ctx.is_distributed:
            return
        flat = all_reduce_mean(torch.cat([p.grad.reshape(-1) for p in self.arch_params]))
        offset = 0
        for p in self.arch_params:
            p.grad = flat[offset: offset + p.numel()].view_as(p).to(p.dtype)
            offset += p.numel()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Optimisers, scalers and the cost weight, for ``last.pt``."""
        state = {"arch_optimizer": self.arch_opt.state_dict(), "weight_optimizer": self.weight_opt.state_dict(),
                 "arch_scaler": self.arch_scaler.state_dict(), "weight_scaler": self.weight_scaler.state_dict()}
        if self.cost is not None:
            state["cost_control"] = self.cost.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.arch_opt.load_state_dict(state["arch_optimizer"])
        self.weight_opt.load_state_dict(state["weight_optimizer"])
        self.arch_scaler.load_state_dict(state["arch_scaler"])
        self.weight_scaler.load_state_dict(state["weight_scaler"])
        if self.cost is not None and "cost_control" in state:
            self.cost.load_state_dict(state["cost_control"])
