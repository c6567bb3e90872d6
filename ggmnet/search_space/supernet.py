"""The relaxed search space of MRFEM (the supernet), its sampling, its cost and the derivation of a genotype.

Grid. After the :class:`~ggmnet.search_space.mrfem.Stem` (1/8 feature, the "layer -1" node at stride 8), node
``(i, s)`` for layer ``i in range(depth)`` and stride ``s in (8, 16, 32)`` exists when ``i >= k - 1`` with
``k = (8, 16, 32).index(s)``: (i, 8) from layer 0, (i, 16) from layer 0 (its first cell may downsample from
the stem, as the genotype allows), (i, 32) from layer 1. So every valid genotype of the same depth is a path
of the supernet, and ``depth >= 2``. The three heads (3x3 conv + BN + ReLU, then 1x1 to ``num_classes``) read
the last layer's nodes at 8, 16 and 32.

Choices of node (i, s), each a row of architecture logits (parameters ``arch_<kind>``, ``[depth, 3, n]``;
entries of nodes or choices that do not exist are masked out). All start uniform except ``source``, which
starts at the prior that makes every placement of a branch's downsampling layers equally likely
(:meth:`Supernet.uniform_path_prior_logits`):

* ``op`` (5): the cell operator, ``CELL_OPS``.
* ``width`` (len(expansions)): the expansion; the node's width is ``expansion * unit_channels[s]``.
* ``residual`` (2): off / on (add ``shortcut(d(x))``: identity when the widths agree, else 1x1 conv + BN).
* ``source`` (2): ``same``, the node (i-1, s) at the same resolution, or ``down``, the node (i-1, s/2)
  through a downsampling operator. Nodes with one valid source have it with probability 1.
* ``down`` (2): the downsampling operator (``DOWN_OPS``) used when the source is ``down``.

All candidates of a node are modules of :mod:`ggmnet.search_space.operations` built at the node's maximal
width and run at the sampled one (sliced weights, one sliced BatchNorm): one library, no copies.

Modes of :meth:`Supernet.forward`. Both sampling modes draw every choice from ``softmax(logits / tau)``
(Gumbel-max), so the temperature ``tau`` (:meth:`Supernet.set_tau`) is the exploration of the search: above 1
the draws flatten (every candidate keeps being trained and compared), below 1 they concentrate on the likely
candidates. Only the nodes that feed a head through their drawn sources are computed.

* ``"sample"``: one drawn network, each node with only its drawn operator, width, residual and source (the
  weight step's forward: about one network's cost). Its output is multiplied by the product of the drawn
  straight-through weights (value 1). As an architecture gradient that is the single-path estimator: every
  choice of a node gets the same scalar ``<dL/dy, y>``, about zero when a BatchNorm follows (the loss is then
  invariant to the scale of ``y``), and no candidate's output is compared with another's; it fails the
  planted task of ``tests/test_planted_search.py`` and is kept as that baseline.
* ``"pairs"``: the architecture step's estimator. Every choice of every node is drawn twice, independently:
  ``a`` (computed) and ``b`` (its rival). At each node that feeds a head and for each choice whose draws
  differ, the cell with that one choice replaced by ``b`` is computed too (forward only, no graph), and the
  node's output becomes ``y + sum over choices (s - s.detach()) * (y - y_b)`` with
  ``s = (l_a - l_b) / (2 tau)``: the value is ``y``, the gradient reaching ``l_a`` is
  ``<dL/dy, y - y_b> / (2 tau)`` and ``l_b`` gets its opposite. For two independent draws,
  ``E[(1[a=i] - 1[b=i]) (G_a - G_b)] / 2 = p_i (G_i - sum_j p_j G_j)`` with ``G_j = <dL/dy, y_j>``: the
  estimate is unbiased for the gradient of DARTS's mixture ``sum_j p_j y_j`` (``p = softmax(l / tau)``)
  linearised at the drawn network, and it compares candidates' outputs, which a following BatchNorm does
  not cancel. The wider of the two drawn widths is computed and the narrower zero-padded into it (a
  following convolution reads the padded map exactly as the narrower one).

  *Nested choices at the midpoint* (docs/search.md, "How the architecture is learned"). For the kinds in
  :attr:`midpoint` (``width`` and ``residual``: fewer features, not another function) the node's value is the
  midpoint ``y - (y - y_b) / 2`` of the pair, where the slope gives ``L(y) - L(y_b)`` to second order; the
  operators and downsampling operators are linearised at the drawn output.

  *Paths by whole paths.* With :attr:`path_estimator` ``"reinforce"`` (the default) the source choices get no
  gate: the search runs the network with the second draws' sources too (:meth:`path_rival_plan`,
  ``mode="plan"``, no graph) and weighs each head's loss difference by the log-probability ratio of that
  head's two paths (:meth:`path_log_ratio`), a paired REINFORCE per head. ``"pairs"`` keeps the per-node rival
  source (computed without a graph through its own drawn sources where no head needs it).

  Use it in train mode (each candidate normalised by its own batch statistics) with
  ``torch.autograd.grad(loss, arch_parameters())``.
* ``"soft"``: DARTS-style relaxation: at every width, every operator (and downsampling operator) is computed
  and mixed by softmax; the two sources are mixed before the operators; the widths are mixed after padding
  with zeros to the node's maximal width, so in this mode every node passes its maximal width on (and
  ``skip`` projects rather than being the identity). Costs about 4 x 8 modules per node.
* ``"argmax"``: the architecture :meth:`Supernet.derive` returns, computed with the supernet's weights:
  equals :meth:`Supernet.subnet` (``GenotypeNetwork(derive())`` with inherited weights) exactly.

Derivation (:meth:`Supernet.derive`): per branch the most probable path through the grid (dynamic
programming; each node keeps one best predecessor, so the branches form a tree), each node's most likely
options, then the constraints of :meth:`Supernet.constrain` (a floor of real cells, a cost limit).

Cost (:meth:`Supernet.expected_cost`, :meth:`Supernet.largest_cost`, :func:`genotype_cost`): by default the
multiply-accumulates of MRFEM per input pixel (:func:`macs_per_pixel`: a k x k convolution ``c_in -> c_out``
at stride s costs ``k^2 c_in c_out / s^2``, a zoomed one a quarter of that; ``maxpool``, ``skip`` and the
shortcut cost a 1x1 projection where the widths differ), so cost grows with the square of the width and
falls 4x per stride doubling. A measured table (e.g. latency) plugs in through ``cost_table``, keyed
``(op, stride, c_in, c_out)`` with ``op`` in ``CELL_OPS + DOWN_OPS + ("shortcut",)``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ggmnet.search_space.genotype import BranchSpec, CellSpec, Genotype
from ggmnet.search_space.mrfem import MRFEM, Stem
from ggmnet.search_space.operations import (
    CELL_OPS,
    DOWN_OPS,
    EXPANSIONS,
    STRIDES,
    UNIT_CHANNELS,
    ConvNormAct,
    build_op,
)

#: A cost limit binds (:meth:`Supernet.constrain`) where the distribution's expected cost is at least this share of
#: it: the cost control holds the expectation within a few per cent of a binding target (measured on the planted
#: target tasks: 0.89-1.01), and a search that does not need the target ends far below it (the CPU recipe: 0.16
#: of a 0.5 target).
BINDING = 0.85
#: Choice kinds of every node, in the order of ``Supernet.named_arch_parameters``.
CHOICE_KINDS = ("op", "width", "residual", "source", "down")
SOURCES = ("same", "down")
#: The cost-table operator name of the residual shortcut projection.
SHORTCUT = "shortcut"

CostTable = Mapping[tuple[str, int, int, int], float]
#: A node's choices as indices, in the order of ``PLAN_KINDS``.
Plan = tuple[int, int, int, int, int]
PLAN_KINDS = ("source", "op", "width", "residual", "down")
#: What a genotype shares with the supernet it is a path of.
GRID_FIELDS = ("depth", "num_classes", "in_channels", "stem_channels", "unit_channels")


def macs_per_pixel(op: str, stride: int, c_in: int, c_out: int) -> float:
    """Analytic multiply-accumulates per network-input pixel of ``op`` producing a map at ``stride``.

    Parameters
    ----------
    op
        One of ``CELL_OPS``, ``DOWN_OPS`` or ``"shortcut"``.
    stride
        Output stride of the operator's output map relative to the network input (8, 16, 32).
    c_in, c_out
        Input and output widths.
    """
    pixels = 1.0 / stride**2
    if op in ("skip", "maxpool", SHORTCUT):
        return 0.0 if c_in == c_out else c_in * c_out * pixels
    if op in ("conv3x3", "conv5x5", "conv3x3_s2"):
        k = int(op[4])
        return k * k * c_in * c_out * pixels
    if op in ("zoomed_conv3x3", "zoomed_conv5x5"):
        k = int(op[-1])
        return k * k * c_in * c_out * pixels / 4
    raise ValueError(f"unknown operator {op!r} for the cost table")


class SegHead(nn.Module):
    """3x3 conv + BN + ReLU, then a 1x1 conv (with bias) to class logits; reads any input width <= ``c_in``."""

    def __init__(self, c_in: int, head_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv = ConvNormAct(c_in, head_channels, 3)
        self.classifier = nn.Conv2d(head_channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, c, h, w]`` -> ``[N, num_classes, h, w]`` logits."""
        return self.classifier(self.conv(x))


class GenotypeNetwork(nn.Module):
    """The network derived from a genotype: stem, :class:`MRFEM` and three :class:`SegHead` (search's view).

    ``forward(x)`` ``[N, in_channels, H, W]`` -> three logits ``[N, num_classes, ceil(H/s), ceil(W/s)]`` at
    strides 8, 16, 32.
    """

    def __init__(self, genotype: Genotype, *, head_channels: int = 64, residual: bool = True) -> None:
        super().__init__()
        self.genotype = genotype
        self.stem = Stem(genotype.in_channels, genotype.stem_channels)
        self.mrfem = MRFEM(genotype, residual=residual)
        self.heads = nn.ModuleList(SegHead(c, head_channels, genotype.num_classes)
                                   for c in self.mrfem.out_channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits at strides 8, 16, 32."""
        return [head(f) for head, f in zip(self.heads, self.mrfem(self.stem(x)[-1]))]


def _pad_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    return x if x.shape[1] == channels else F.pad(x, (0, 0, 0, 0, 0, channels - x.shape[1]))


class SearchNode(nn.Module):
    """Node (i, s) of the grid: every candidate of its choices, at its maximal width.

    Parameters
    ----------
    stride
        The node's output stride.
    widths
        Its candidate widths (one per expansion).
    same_widths, down_widths
        Candidate widths of the same-resolution and coarser-by-one predecessors (``None`` without one).
    """

    def __init__(self, stride: int, widths: Sequence[int], same_widths: Sequence[int] | None,
                 down_widths: Sequence[int] | None) -> None:
        super().__init__()
        self.stride = stride
        self.widths = tuple(widths)
        self.same_widths = None if same_widths is None else tuple(same_widths)
        self.down_widths = None if down_widths is None else tuple(down_widths)
        c_max = max(self.widths)
        c_op_in = max((c_max, *(self.same_widths or ())))
        self.ops = nn.ModuleDict({name: build_op(name, c_op_in, c_max, widths=widths) for name in CELL_OPS})
        self.downs = None if down_widths is None else nn.ModuleDict(
            {name: build_op(name, max(down_widths), c_max, widths=widths) for name in DOWN_OPS})
        self.shortcut = ConvNormAct(c_op_in, c_max, 1, relu=False, widths=widths)

    def run(self, x: torch.Tensor, *, op: str, width: int, residual: bool, down: str | None) -> torch.Tensor:
        """One sampled cell: ``op(d(x))`` (+ ``shortcut(d(x))``) at ``width`` channels."""
        if down is not None:
            x = self.downs[down](x, width)
        y = self.ops[op](x, width)
        if residual:
            y = y + self._shortcut(x, width)
        return y

    def _shortcut(self, z: torch.Tensor, width: int) -> torch.Tensor:
        return z if z.shape[1] == width else self.shortcut(z, width)

    def compare(self, x: torch.Tensor, *, op: str, width: int, residual: bool, down: str | None,
                rivals: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The sampled cell (as :meth:`run`, with its graph) and its differences from its rivals (no graph).

        ``rivals`` maps a choice kind to the rival candidate that replaces the sampled one in that choice
        alone: ``"op"``: an operator name; ``"width"``: a narrower width (its output is zero-padded to
        ``width``, which a following convolution reads exactly as the narrower map); ``"residual"``: the
        other flag; ``"down"``: the other downsampling operator; ``"source"``: ``(x_rival, down_rival)``,
        the other predecessor's output and the downsampling operator to apply to it (``None`` for the
        same resolution). Returns ``y`` and ``{kind: y - y_rival}``, the differences detached.
        """
        z = self.downs[down](x, width) if down is not None else x
        y_op = self.ops[op](z, width)
        y = y_op + self._shortcut(z, width) if residual else y_op
        differences = {}
        with torch.no_grad():
            main = y.detach()
            for kind, rival in rivals.items():
                if kind == "op":  # the same input and shortcut, another operator
                    other = self.ops[rival](z, width) + (main - y_op)
                elif kind == "residual":
                    other = main + self._shortcut(z, width) if rival else y_op.detach()
                elif kind == "width":
                    other = _pad_channels(self.run(x, op=op, width=rival, residual=residual, down=down), width)
                elif kind == "down":
                    other = self.run(x, op=op, width=width, residual=residual, down=rival)
                elif kind == "source":
                    x_rival, down_rival = rival
                    other = self.run(x_rival, op=op, width=width, residual=residual, down=down_rival)
                else:
                    raise ValueError(f"SearchNode.compare: unknown choice kind {kind!r}")
                differences[kind] = main - other
        return y, differences

    def mix(self, x_same: torch.Tensor | None, x_down: torch.Tensor | None,
            probs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The soft (DARTS) node: every candidate mixed by its probabilities; output at maximal width."""
        c_max = max(self.widths)
        out = 0
        for w, p_w in zip(self.widths, probs["width"]):
            parts = []
            if x_same is not None:
                parts.append(probs["source"][0] * x_same)
            if x_down is not None:
                d = sum(p * self.downs[name](x_down, w) for name, p in zip(DOWN_OPS, probs["down"]))
                parts.append(probs["source"][1] * d)
            c_z = max(t.shape[1] for t in parts)
            z = sum(_pad_channels(t, c_z) for t in parts)
            y = sum(p * self.ops[name](z, w) for name, p in zip(CELL_OPS, probs["op"]))
            y = y + probs["residual"][1] * self._shortcut(z, w)
            out = out + p_w * _pad_channels(y, c_max)
        return out

    def cost_tensors(self, cost: Callable[[str, int, int, int], float]) -> dict[str, torch.Tensor]:
        """Tabulate the node's candidate costs for :meth:`expected_cost` (install with ``register_buffer``).

        ``cost_same[a, w, op]``, ``cost_shortcut[a, w]`` (from a same-resolution input of width index a),
        ``cost_down[a, w, down]`` and ``cost_after_down[w, op]`` (from the coarser-by-one input).
        """
        s, ws = self.stride, self.widths
        out = {}
        if self.same_widths is not None:
            out["cost_same"] = torch.tensor([[[cost(o, s, a, w) for o in CELL_OPS] for w in ws]
                                             for a in self.same_widths])
            out["cost_shortcut"] = torch.tensor([[cost(SHORTCUT, s, a, w) if a != w else 0.0 for w in ws]
                                                 for a in self.same_widths])
        if self.down_widths is not None:
            out["cost_down"] = torch.tensor([[[cost(d, s, a, w) for d in DOWN_OPS] for w in ws]
                                             for a in self.down_widths])
            out["cost_after_down"] = torch.tensor([[cost(o, s, w, w) for o in CELL_OPS] for w in ws])
        return out

    def expected_cost(self, probs: Mapping[str, torch.Tensor], p_same_in: torch.Tensor | None,
                      p_down_in: torch.Tensor | None) -> torch.Tensor:
        """Expected cost of the node given its probabilities and its predecessors' width distributions."""
        total = 0
        if p_same_in is not None:
            e = torch.einsum("a,w,awo,o->", p_same_in, probs["width"], self.cost_same, probs["op"])
            e = e + probs["residual"][1] * torch.einsum("a,w,aw->", p_same_in, probs["width"], self.cost_shortcut)
            total = total + probs["source"][0] * e
        if p_down_in is not None:
            e = torch.einsum("a,w,awd,d->", p_down_in, probs["width"], self.cost_down, probs["down"])
            e = e + torch.einsum("w,wo,o->", probs["width"], self.cost_after_down, probs["op"])
            total = total + probs["source"][1] * e
        return total


class Supernet(nn.Module):
    """The MRFEM search space over a (layer, stride) grid, with stem and three heads (see module docstring).

    Parameters
    ----------
    depth
        Layers of the grid (= cells per derived branch), >= 2.
    num_classes, in_channels
        Classes of the logits and channels of the input image.
    stem_channels
        Widths of the stem's three levels; the last feeds the grid.
    unit_channels
        Unit widths at strides 8, 16, 32.
    expansions
        Width expansions searched at every node.
    head_channels
        Width of each head's 3x3 conv.
    cost_table
        ``(op, stride, c_in, c_out) -> cost`` for :meth:`expected_cost`; ``None``: :func:`macs_per_pixel`.
    residual_prior
        The initial probability of every residual connection (0.5: uniform). A deep stack with half its cells
        without a residual connection hardly trains, and the weights a residual-free cell inherits were trained
        as a residual branch: a higher prior keeps the drawn networks trainable and leaves the search to turn
        connections off where that pays.
    """

    def __init__(self, depth: int = 22, *, num_classes: int = 10, in_channels: int = 3,
                 stem_channels: Sequence[int] = (24, 48, 96), unit_channels: Sequence[int] = UNIT_CHANNELS,
                 expansions: Sequence[int] = EXPANSIONS, head_channels: int = 64,
                 cost_table: CostTable | None = None, residual_prior: float = 0.5) -> None:
        super().__init__()
        if not 0 < residual_prior < 1:
            raise ValueError(f"Supernet: residual_prior {residual_prior} must be in (0, 1)")
        if depth < 2:
            raise ValueError(f"Supernet: depth {depth} < 2 cannot reach stride 32")
        if not set(expansions) <= set(EXPANSIONS):
            raise ValueError(f"Supernet: expansions {tuple(expansions)} must be among {EXPANSIONS}")
        self.depth = depth
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.stem_channels = tuple(stem_channels)
        self.unit_channels = tuple(unit_channels)
        self.expansions = tuple(expansions)
        self.head_channels = head_channels
        self.tau = 1.0
        self.pinned: dict[str, int] = {}
        self.fixed: dict[str, int] = {}
        self.cost_limit: float | None = None
        self.min_real_cells = 0
        #: choice kinds whose pair is linearised at the midpoint of the two candidates' outputs (module docstring)
        self.midpoint: set[str] = {"width", "residual"}
        #: how ``mode="pairs"`` learns the paths: "reinforce" (whole drawn paths compared by their heads' losses,
        #: :meth:`path_rival_plan`, :meth:`path_log_ratio`) or "pairs" (each node's rival source, linearised)
        self.path_estimator = "reinforce"
        self.last_pairs: dict[str, Any] | None = None
        self._derived_cache: tuple[Any, ...] | None = None
        self.stem = Stem(in_channels, stem_channels)
        self.nodes = nn.ModuleDict()
        for i, k in self._nodes():
            self.nodes[self._key(i, k)] = SearchNode(
                STRIDES[k], self._widths(i, k), self._widths(i - 1, k) if self.node_exists(i - 1, k) else None,
                self._widths(i - 1, k - 1) if k > 0 and self.node_exists(i - 1, k - 1) else None)
        self.heads = nn.ModuleList(SegHead(max(self._widths(depth - 1, k)), head_channels, num_classes)
                                   for k in range(len(STRIDES)))
        sizes = {"op": len(CELL_OPS), "width": len(self.expansions), "residual": 2, "source": 2,
                 "down": len(DOWN_OPS)}
        for kind in CHOICE_KINDS:
            self.register_parameter(f"arch_{kind}", nn.Parameter(torch.zeros(depth, len(STRIDES), sizes[kind])))
            self.register_buffer(f"valid_{kind}", self._valid_mask(kind, sizes[kind]), persistent=False)
        with torch.no_grad():
            self.arch_source.copy_(self.uniform_path_prior_logits())
            self.arch_residual[..., 1] = math.log(residual_prior / (1 - residual_prior))
        self.set_cost_table(cost_table)

    # ------------------------------------------------------------------ grid
    @staticmethod
    def node_exists(i: int, k: int) -> bool:
        """Whether node (layer ``i``, stride index ``k``) exists; layer -1 is the stem (stride 8 only)."""
        return k == 0 if i < 0 else i >= k - 1

    @staticmethod
    def _key(i: int, k: int) -> str:
        return f"{i}_{STRIDES[k]}"

    def node(self, i: int, k: int) -> SearchNode:
        """The node at layer ``i``, stride index ``k`` (0, 1, 2 for 8, 16, 32)."""
        return self.nodes[self._key(i, k)]

    def _nodes(self) -> Iterator[tuple[int, int]]:
        return ((i, k) for i in range(self.depth) for k in range(len(STRIDES)) if self.node_exists(i, k))

    def _widths(self, i: int, k: int) -> tuple[int, ...]:
        if i < 0:
            return (self.stem_channels[-1],)
        return tuple(e * self.unit_channels[k] for e in self.expansions)

    def _valid_mask(self, kind: str, n: int) -> torch.Tensor:
        mask = torch.zeros(self.depth, len(STRIDES), n, dtype=torch.bool)
        for i, k in self._nodes():
            has_down = k > 0 and self.node_exists(i - 1, k - 1)
            if kind == "source":
                mask[i, k, 0], mask[i, k, 1] = self.node_exists(i - 1, k), has_down
            else:
                mask[i, k, :] = has_down if kind == "down" else True
        return mask

    def uniform_path_prior_logits(self) -> torch.Tensor:
        """Source logits ``[depth, 3, 2]`` under which every branch's downsampling layers are uniform.

        With equal source logits a branch's path, walked back from its head, downsamples at the last layer
        with probability 1/2, at the one before with 1/4, ...: late downsampling would dominate the sampling
        and the derivation. Instead node (i, k) starts with P(down) = k / (i + 1), the probability that the
        last of the branch's k downsamplings happened at layer i given it happened at or before i when the
        downsampling layers are a uniform random k-subset of the layers: then the 1/16 branch downsamples at
        any layer with probability 1/depth and every pair of layers of the 1/32 branch is equally likely.
        Rows of nodes with one source hold 0 (masked anyway).
        """
        logits = torch.zeros(self.depth, len(STRIDES), 2)
        for i in range(self.depth):
            for k in range(1, len(STRIDES)):
                if self.node_exists(i - 1, k) and self.node_exists(i - 1, k - 1):  # both sources
                    p = k / (i + 1)
                    logits[i, k, 1] = math.log(p / (1 - p))
        return logits

    # ------------------------------------------------------------------ parameters
    def named_arch_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """The architecture logits ``arch_<kind>``, each ``[depth, 3, n_choices]``."""
        for kind in CHOICE_KINDS:
            yield f"arch_{kind}", getattr(self, f"arch_{kind}")

    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture logits (for the architecture optimiser)."""
        return [p for _, p in self.named_arch_parameters()]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every other parameter (operators, stem, heads: for the weight optimiser)."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def pin(self, **choices: int) -> None:
        """Pin choice kinds in ``mode="sample"``: ``pin(width=-1, residual=1, source=0)`` draws only the largest
        network (widest widths, every residual connection, every branch at its resolution from its first layers:
        no cell shared), operators drawn. A node without the pinned option (``source=0`` at a node that can only
        downsample) keeps its draw. ``pin()`` unpins. Indices count from the end when negative."""
        unknown = set(choices) - set(CHOICE_KINDS)
        if unknown:
            raise ValueError(f"Supernet.pin: unknown choice kind(s) {sorted(unknown)}")
        self.pinned = {kind: int(index) for kind, index in choices.items()}

    def fix(self, **choices: int) -> None:
        """Take choice kinds out of the search: ``fix(width=-1, residual=1)`` gives every node its widest width
        and its residual connection in every mode, the architecture step's and the derivation included (their
        probabilities become one-hot, so nothing is learned or reported for them). ``fix()`` searches every
        kind again. ``width``, ``residual``, ``op`` and ``down`` can be fixed (every node has all their options),
        not ``source`` (the paths)."""
        unknown = set(choices) - {"width", "residual", "op", "down"}
        if unknown:
            raise ValueError(f"Supernet.fix: only width, residual, op and down can be fixed, not {sorted(unknown)}")
        self.fixed = {kind: int(index) for kind, index in choices.items()}
        self._derived_cache = None

    def set_tau(self, tau: float) -> None:
        """Set the sampling temperature of ``mode="sample"`` and ``"pairs"`` (used when ``tau`` is not given):
        choices are drawn from ``softmax(logits / tau)``."""
        if not tau > 0:
            raise ValueError(f"Supernet.set_tau: tau must be positive, got {tau}")
        self.tau = float(tau)

    def _logits(self, kind: str) -> torch.Tensor:
        """Masked logits: invalid choices -inf; rows of absent nodes left at 0 so softmax stays finite. A fixed
        kind (:meth:`fix`) has 0 at its fixed option and -inf elsewhere."""
        valid = getattr(self, f"valid_{kind}")
        usable = valid | ~valid.any(-1, keepdim=True)
        logits = getattr(self, f"arch_{kind}")
        if kind in self.fixed:
            index = self.fixed[kind] % logits.shape[-1]
            usable = usable & (torch.arange(logits.shape[-1], device=logits.device) == index)
            logits = logits * 0.0
        return logits.masked_fill(~usable, float("-inf"))

    def _probabilities(self) -> dict[str, torch.Tensor]:
        return {kind: F.softmax(self._logits(kind), dim=-1) for kind in CHOICE_KINDS}

    def arch_probabilities(self) -> dict[str, np.ndarray]:
        """Softmax probabilities per choice kind, ``[depth, 3, n_choices]``; NaN where the node (or, for
        ``down``, its down source) does not exist."""
        out = {}
        with torch.no_grad():
            for kind, p in self._probabilities().items():
                exists = getattr(self, f"valid_{kind}").any(-1, keepdim=True)
                out[kind] = p.masked_fill(~exists, float("nan")).cpu().numpy()
        return out

    def choice_entropy(self) -> dict[str, float]:
        """Mean entropy (nats) of each choice kind over the nodes where it has at least two valid options: ln n
        at the uniform start (ln 5 = 1.61 for the operators), 0 when every node has decided."""
        out = {}
        with torch.no_grad():
            for kind, p in self._probabilities().items():
                rows = getattr(self, f"valid_{kind}").sum(-1) >= 2
                if rows.any():
                    out[kind] = float(-torch.special.xlogy(p, p).sum(-1)[rows].mean())
        return out

    def choice_probabilities(self, genotype: Genotype) -> list[list[dict[str, float]]]:
        """For each branch and cell of ``genotype`` (a path of this supernet), the probability the supernet gives
        each option the cell took: ``op_probability``, ``expansion_probability``, ``residual_probability``,
        ``source_probability`` (its input's resolution: the same or one finer) and, where it downsamples,
        ``down_probability``. 1.0 where the node has a single valid option."""
        probs = self.arch_probabilities()
        branches = []
        for spec in genotype.branches:
            cells = []
            for i, cell in enumerate(spec.cells):
                k = STRIDES.index(cell.stride)
                entry = {"op_probability": probs["op"][i, k, CELL_OPS.index(cell.op)],
                         "expansion_probability": probs["width"][i, k, self.expansions.index(cell.expansion)],
                         "residual_probability": probs["residual"][i, k, int(cell.residual)],
                         "source_probability": probs["source"][i, k, int(cell.down is not None)]}
                if cell.down is not None:
                    entry["down_probability"] = probs["down"][i, k, DOWN_OPS.index(cell.down)]
                cells.append({key: round(float(value), 6) for key, value in entry.items()})
            branches.append(cells)
        return branches

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, *, mode: str = "sample", tau: float | None = None,
                plan: Mapping[tuple[int, int], Plan] | None = None) -> list[torch.Tensor]:
        """``x`` ``[N, in_channels, H, W]`` -> three logits ``[N, num_classes, ceil(H/s), ceil(W/s)]``,
        s = 8, 16, 32. ``mode``: ``"sample"``, ``"pairs"``, ``"soft"``, ``"argmax"`` (module docstring) or
        ``"plan"`` (the network of ``plan``, e.g. :meth:`path_rival_plan`); ``tau`` (default :attr:`tau`) is the
        sampling temperature of ``"sample"`` and ``"pairs"``."""
        x8 = self.stem(x)[-1]
        tau = self.tau if tau is None else tau
        if mode == "plan":
            if plan is None:
                raise ValueError("Supernet.forward: mode 'plan' needs a plan")
            features = self._run_plan(x8, plan, None)
        elif mode == "sample":
            features = self._forward_sample(x8, tau)
        elif mode == "pairs":
            features = self._forward_pairs(x8, tau)
        elif mode == "soft":
            features = self._forward_soft(x8)
        elif mode == "argmax":
            features = self._forward_argmax(x8)
        else:
            raise ValueError(f"Supernet.forward: mode {mode!r} (expected 'sample', 'pairs', 'soft' or 'argmax')")
        return [head(f) for head, f in zip(self.heads, features)]

    def _forward_sample(self, x8: torch.Tensor, tau: float) -> list[torch.Tensor]:
        hard = {kind: F.gumbel_softmax(self._logits(kind) / tau, hard=True) for kind in CHOICE_KINDS}
        for kind, index in self.pinned.items():
            if kind in self.fixed:  # a kind taken out of the search stays at its fixed option
                continue
            pinned = F.one_hot(torch.full(hard[kind].shape[:-1], index % hard[kind].shape[-1], device=x8.device),
                               hard[kind].shape[-1]).to(hard[kind].dtype)
            # a node without the pinned option (a source it does not have) keeps its draw
            has = (pinned * getattr(self, f"valid_{kind}")).sum(-1, keepdim=True) > 0
            hard[kind] = torch.where(has, pinned, hard[kind])
        flat = torch.cat([hard[kind].argmax(-1) for kind in CHOICE_KINDS]).view(len(CHOICE_KINDS), self.depth, -1)
        choice = dict(zip(CHOICE_KINDS, flat.tolist()))
        plan = {(i, k): tuple(choice[kind][i][k] for kind in PLAN_KINDS) for i, k in self._nodes()}

        def gate(i: int, k: int) -> torch.Tensor:
            src, op, w, res, down = plan[(i, k)]
            g = hard["source"][i, k, src] * hard["op"][i, k, op] * hard["width"][i, k, w] \
                * hard["residual"][i, k, res]
            return g * hard["down"][i, k, down] if src == 1 else g

        return self._run_plan(x8, plan, gate)

    def _forward_pairs(self, x8: torch.Tensor, tau: float) -> list[torch.Tensor]:
        """The paired estimator (module docstring): the network of the first draws, plus, at every node that
        feeds a head, a value-free gate per choice whose two draws differ."""
        logits = {kind: self._logits(kind) for kind in CHOICE_KINDS}
        with torch.no_grad():  # Gumbel-max, twice: argmax(z / tau + g) is a draw from softmax(z / tau)
            draws = torch.stack([
                (z / tau - torch.empty((2, *z.shape), device=z.device).exponential_().log()).argmax(-1)
                for z in logits.values()])  # [kind, draw, depth, 3]
            j_width, j_source, j_down = (CHOICE_KINDS.index(kind) for kind in ("width", "source", "down"))
            # compute the wider width (the narrower is zero-padded into it); no rival down without a down
            wider = torch.tensor(self.expansions, device=x8.device)[draws[j_width]].argmax(0, keepdim=True)
            draws[j_width] = torch.cat([draws[j_width].gather(0, wider), draws[j_width].gather(0, 1 - wider)])
            draws[j_down, 1] = torch.where(draws[j_source, 0] == 1, draws[j_down, 1], draws[j_down, 0])
        # gate[kind][i, k]: (l_computed - l_rival) / (2 tau) minus its value, so zero with that gradient
        gate = {}
        for kind, z, pair in zip(CHOICE_KINDS, logits.values(), draws):
            half = z.gather(-1, pair.permute(1, 2, 0)).diff(dim=-1).squeeze(-1) / (-2 * tau)
            gate[kind] = half - half.detach()
        flat = draws.tolist()  # [kind][draw][i][k]
        plan = {(i, k): tuple(flat[CHOICE_KINDS.index(kind)][0][i][k] for kind in PLAN_KINDS)
                for i, k in self._nodes()}
        rivals = {(i, k): {kind: flat[j][1][i][k] for j, kind in enumerate(CHOICE_KINDS)
                           if flat[j][1][i][k] != flat[j][0][i][k]} for i, k in self._nodes()}
        self.last_pairs = {"plan": plan, "tau": tau,
                           "sources": {node: flat[j_source][1][node[0]][node[1]] for node in self._nodes()}}
        if self.path_estimator == "reinforce":  # the paths are learned from whole rival paths instead
            for node_rivals in rivals.values():
                node_rivals.pop("source", None)
        needed = self._feeding(plan)
        # a rival source that no head needs is computed (without a graph) through its own sampled sources
        context = set()
        for i, k in needed:
            if "source" in rivals[(i, k)]:
                node = (i - 1, k - rivals[(i, k)]["source"])
                while node[0] >= 0 and node not in needed and node not in context:
                    context.add(node)
                    node = (node[0] - 1, node[1] - plan[node][0])
        values: dict[tuple[int, int], torch.Tensor] = {(-1, 0): x8}
        for i, k in sorted(needed | context):
            src, op, w, res, down = plan[(i, k)]
            node, widths = self.node(i, k), self._widths(i, k)
            cell = {"op": CELL_OPS[op], "width": widths[w], "residual": bool(res),
                    "down": DOWN_OPS[down] if src == 1 else None}
            x = values[(i - 1, k - src)]
            if (i, k) not in needed:
                with torch.no_grad():
                    values[(i, k)] = node.run(x, **cell)
                continue
            named = {"op": CELL_OPS, "width": widths, "residual": (False, True), "down": DOWN_OPS}
            given = {kind: (values[(i - 1, k - b)], DOWN_OPS[down] if b == 1 else None) if kind == "source"
                     else named[kind][b] for kind, b in rivals[(i, k)].items()}
            y, differences = node.compare(x, **cell, rivals=given)
            for kind, difference in differences.items():
                y = y + gate[kind][i, k] * difference
                if kind in self.midpoint:
                    y = y - 0.5 * difference
            values[(i, k)] = y
        return [values[(self.depth - 1, k)] for k in range(len(STRIDES))]

    def path_rival_plan(self) -> dict[tuple[int, int], Plan] | None:
        """The last ``mode="pairs"`` network with the sources of the second draws (its paths' rivals), or
        ``None`` when both draws took the same paths."""
        if self.last_pairs is None:
            raise RuntimeError("Supernet.path_rival_plan: no mode='pairs' forward yet")
        plan, sources = self.last_pairs["plan"], self.last_pairs["sources"]
        rival = {node: (sources[node], *choices[1:]) for node, choices in plan.items()}
        return None if self._paths(plan) == self._paths(rival) else rival

    def _path(self, plan: Mapping[tuple[int, int], Plan], end: int) -> list[tuple[int, int]]:
        """The nodes of head ``end``'s path through ``plan``'s sources, from the last layer back."""
        node, path = (self.depth - 1, end), []
        while node[0] >= 0:
            path.append(node)
            node = (node[0] - 1, node[1] - plan[node][0])
        return path

    def _paths(self, plan: Mapping[tuple[int, int], Plan]) -> list[list[int]]:
        """Per branch, the stride index of its path through ``plan`` at every layer."""
        return [[k for _, k in reversed(self._path(plan, end))] for end in range(len(STRIDES))]

    def path_log_ratio(self, end: int, rival: Mapping[tuple[int, int], Plan]) -> torch.Tensor:
        """``log p(path of head end in the last pairs draw) - log p(its path in rival)`` under the sampling law
        ``softmax(source logits / tau)``, summed over the nodes either path passes: with the two paths' losses
        at that head, the paired REINFORCE estimate of the gradient of the expected loss with respect to the
        source logits is ``(L - L_rival) / 2`` times this ratio's gradient (the pairs draws are independent)."""
        plan, tau = self.last_pairs["plan"], self.last_pairs["tau"]
        log_p = F.log_softmax(self._logits("source") / tau, dim=-1)
        total = log_p.new_zeros(())
        for i, k in set(self._path(plan, end)) | set(self._path(rival, end)):
            if self.valid_source[i, k].all():
                total = total + log_p[i, k, plan[(i, k)][0]] - log_p[i, k, rival[(i, k)][0]]
        return total

    def _forward_argmax(self, x8: torch.Tensor) -> list[torch.Tensor]:
        plan, _ = self.derived_plan()
        return self._run_plan(x8, plan, None)

    def _feeding(self, plan: Mapping[tuple[int, int], Plan]) -> set[tuple[int, int]]:
        """The nodes that feed a head through ``plan``'s sources."""
        return {node for end in range(len(STRIDES)) for node in self._path(plan, end)}

    def _run_plan(self, x8: torch.Tensor, plan: Mapping[tuple[int, int], Plan],
                  gate: Callable[[int, int], torch.Tensor] | None) -> list[torch.Tensor]:
        """Compute, one cell each, only the nodes that feed a head through ``plan``'s sources."""
        values: dict[tuple[int, int], torch.Tensor] = {(-1, 0): x8}
        for i, k in sorted(self._feeding(plan)):
            src, op, w, res, down = plan[(i, k)]
            y = self.node(i, k).run(values[(i - 1, k - src)], op=CELL_OPS[op], width=self._widths(i, k)[w],
                                    residual=bool(res), down=DOWN_OPS[down] if src == 1 else None)
            values[(i, k)] = y if gate is None else y * gate(i, k)
        return [values[(self.depth - 1, k)] for k in range(len(STRIDES))]

    def _forward_soft(self, x8: torch.Tensor) -> list[torch.Tensor]:
        probs = self._probabilities()
        values: dict[tuple[int, int], torch.Tensor] = {(-1, 0): x8}
        for i, k in self._nodes():
            p = {kind: probs[kind][i, k] for kind in CHOICE_KINDS}
            values[(i, k)] = self.node(i, k).mix(values.get((i - 1, k)), values.get((i - 1, k - 1)), p)
        return [values[(self.depth - 1, k)] for k in range(len(STRIDES))]

    # ------------------------------------------------------------------ derivation
    def _argmax_plan(self) -> tuple[dict[tuple[int, int], Plan], list[list[int]]]:
        """Per node the (source, op, width, residual, down) indices of the derived architecture, and per
        branch the stride index of its path at every layer (dynamic programming over source probabilities)."""
        with torch.no_grad():
            probs = {kind: p.cpu().numpy() for kind, p in self._probabilities().items()}
        with np.errstate(divide="ignore"):
            log_source = np.log(probs["source"])
        score = {(-1, 0): 0.0}
        plan = {}
        for i, k in self._nodes():
            candidates = [(score.get((i - 1, k - src), -np.inf) + log_source[i, k, src], -src)
                          for src in (0, 1) if k - src >= 0 and self.node_exists(i - 1, k - src)]
            best, neg_src = max(candidates)  # ties: prefer the same resolution
            score[(i, k)] = best
            plan[(i, k)] = (-neg_src, *(int(np.argmax(probs[kind][i, k])) for kind in PLAN_KINDS[1:]))
        return plan, self._paths(plan)

    def constrain(self, *, cost_limit: float | None = None, min_real_cells: int = 0) -> None:
        """Constraints of the derivation (:meth:`derive`, ``mode="argmax"``).

        Parameters
        ----------
        cost_limit
            Largest cost (:meth:`genotype_cost`) of the derived network, or ``None``. The most likely
            architecture is brought (:meth:`_fit_budget`) to the limit where it binds (:meth:`expected_cost`
            is at least ``BINDING`` of it), else to the expected cost: a search that ends above its target still
            exports a network that meets it, and one held at its target in expectation derives a network of
            about that cost (each choice's likeliest option alone can land far below it).
        min_real_cells
            Fewest cells of each branch whose operator is not ``skip``. Where a branch has fewer, its skip cells
            with the most probable other operator take that operator (a cost term alone, to which ``skip`` is
            free, would leave a branch that is nearly the identity).
        """
        if cost_limit is not None and not cost_limit > 0:
            raise ValueError(f"Supernet.constrain: cost_limit must be positive, got {cost_limit}")
        if min_real_cells < 0:
            raise ValueError(f"Supernet.constrain: min_real_cells must be >= 0, got {min_real_cells}")
        self.cost_limit = None if cost_limit is None else float(cost_limit)
        self.min_real_cells = int(min_real_cells)
        self._derived_cache = None

    def derived_plan(self) -> tuple[dict[tuple[int, int], Plan], list[list[int]]]:
        """The plan and branch paths of :meth:`derive`: the most likely architecture (:meth:`_argmax_plan`)
        under the constraints of :meth:`constrain` (cached until the logits or the constraints change)."""
        with torch.no_grad():
            key = (torch.cat([p.detach().reshape(-1) for p in self.arch_parameters()]).cpu().numpy().tobytes(),
                   self.cost_limit, self.min_real_cells, tuple(sorted(self.fixed.items())))
        if self._derived_cache is not None and self._derived_cache[0] == key:
            return dict(self._derived_cache[1]), [list(p) for p in self._derived_cache[2]]
        plan, paths = self._argmax_plan()
        if self.min_real_cells or self.cost_limit is not None:
            with torch.no_grad():
                log_p = {kind: np.log(np.maximum(p.cpu().numpy(), 1e-30))
                         for kind, p in self._probabilities().items()}
            self._apply_floor(plan, paths, log_p)
            if self.cost_limit is not None:
                with torch.no_grad():
                    expected = float(self.expected_cost())
                binds = expected >= BINDING * self.cost_limit
                self._fit_budget(plan, paths, log_p, self.cost_limit if binds else expected)
        self._derived_cache = (key, dict(plan), [list(p) for p in paths])
        return plan, paths

    def _branches_through(self, paths: Sequence[Sequence[int]]) -> dict[tuple[int, int], list[int]]:
        through: dict[tuple[int, int], list[int]] = {}
        for b, path in enumerate(paths):
            for i, k in enumerate(path):
                through.setdefault((i, k), []).append(b)
        return through

    def _real_cells(self, plan: Mapping[tuple[int, int], Plan], paths: Sequence[Sequence[int]]) -> list[int]:
        skip = CELL_OPS.index("skip")
        return [sum(plan[(i, k)][1] != skip for i, k in enumerate(path)) for path in paths]

    def _apply_floor(self, plan: dict[tuple[int, int], Plan], paths: Sequence[Sequence[int]],
                     log_p: Mapping[str, np.ndarray]) -> None:
        """Give each branch at least ``min_real_cells`` non-skip cells (its likeliest ones), in place."""
        skip = CELL_OPS.index("skip")
        floor = min(self.min_real_cells, self.depth)
        for path in paths:
            missing = floor - self._real_cells(plan, [path])[0]
            if missing <= 0:
                continue
            candidates = []
            for i, k in enumerate(path):
                if plan[(i, k)][1] == skip:
                    row = log_p["op"][i, k].copy()
                    row[skip] = -np.inf
                    candidates.append((-float(row.max()), i, k, int(row.argmax())))
            for _, i, k, op in sorted(candidates)[:missing]:
                plan[(i, k)] = (plan[(i, k)][0], op, *plan[(i, k)][2:])

    def _moves(self, plan: Mapping[tuple[int, int], Plan], nodes: Iterable[tuple[int, int]],
               through: Mapping[tuple[int, int], Sequence[int]], real: Sequence[int]
               ) -> Iterator[tuple[tuple[int, int], Plan]]:
        """Each ``(node, plan)`` one decided choice away from ``plan[node]``: a width step, another operator
        (skip only where every branch through the node keeps more than its floor of real cells), the residual
        connection flipped, another downsampling operator."""
        skip, floor = CELL_OPS.index("skip"), min(self.min_real_cells, self.depth)
        for node in nodes:
            src, op, w, res, down = plan[node]
            if "width" not in self.fixed:
                yield from ((node, (src, op, v, res, down)) for v in (w - 1, w + 1) if 0 <= v < len(self.expansions))
            if "op" not in self.fixed:
                yield from ((node, (src, o, w, res, down)) for o in range(len(CELL_OPS)) if o != op and not (
                    o == skip and any(real[b] <= floor for b in through[node])))
            if "residual" not in self.fixed:
                yield node, (src, op, w, 1 - res, down)
            if src == 1 and "down" not in self.fixed:
                yield from ((node, (src, op, w, res, d)) for d in range(len(DOWN_OPS)) if d != down)

    def _fit_budget(self, plan: dict[tuple[int, int], Plan], paths: Sequence[Sequence[int]],
                    log_p: Mapping[str, np.ndarray], budget: float) -> None:
        """Move the plan's cost towards ``budget`` in place, one choice at a time, each time the change that
        loses the least log-probability per unit of cost it saves (over the budget: until the plan fits) or
        adds (under it: while the change still fits). Paths are kept; the floor of real cells too."""
        through = self._branches_through(paths)
        fed = set(through)  # (the order in which ties are broken)
        readers: dict[tuple[int, int], list[tuple[int, int]]] = {node: [] for node in fed}
        for i, k in fed:
            if i > 0:
                readers[(i - 1, k - plan[(i, k)][0])].append((i, k))
        cost = {node: self._node_cost(plan, *node) for node in fed}
        for shrink in (True, False):  # under the budget first, then fill what a last big saving left
            total = sum(cost.values())
            while not shrink or total > budget:
                best = None
                for node, new in self._moves(plan, fed, through, self._real_cells(plan, paths)):
                    current = plan[node]
                    loss = sum(log_p[kind][node][a] - log_p[kind][node][b]
                               for kind, a, b in zip(PLAN_KINDS, current, new) if a != b)
                    plan[node] = new
                    changed = {n: self._node_cost(plan, *n) for n in (node, *readers[node])}
                    plan[node] = current
                    delta = sum(c - cost[n] for n, c in changed.items())
                    if (shrink and delta < -1e-12 * max(total, 1.0)) or (
                            not shrink and delta > 1e-12 * max(total, 1.0) and total + delta <= budget):
                        score = max(float(loss), 0.0) / abs(delta)
                        if best is None or score < best[0]:
                            best = (score, node, new, changed)
                if best is None:  # nothing left to give up (or to add within the budget)
                    break
                _, node, new, changed = best
                plan[node] = new
                cost.update(changed)
                total = sum(cost.values())

    def derive(self) -> Genotype:
        """The most likely architecture as a validated :class:`Genotype` of this supernet's depth, under the
        constraints of :meth:`constrain` (none by default)."""
        return self._genotype(*self.derived_plan())

    def sample_genotype(self, rng: np.random.Generator) -> Genotype:
        """A genotype drawn from the current distribution: each choice of each node from ``softmax(logits)``.
        Before the search that is the search space's prior (uniform operators, widths, residual connections and
        downsampling operators; every placement of a branch's downsampling layers equally likely), and, as a
        derived genotype, its branches form a tree: the random architectures a search is judged against."""
        probs = {kind: np.nan_to_num(p) for kind, p in self.arch_probabilities().items()}
        plan = {}
        for node in self._nodes():
            rows = [probs[kind][node] for kind in PLAN_KINDS]
            plan[node] = tuple(int(rng.choice(len(r), p=r / r.sum())) if r.sum() > 0 else 0 for r in rows)
        return self._genotype(plan, self._paths(plan))

    def _genotype(self, plan: Mapping[tuple[int, int], Plan], paths: Sequence[Sequence[int]]) -> Genotype:
        branches = []
        for end, path in enumerate(paths):
            cells = []
            for i, k in enumerate(path):
                src, op, w, res, down = plan[(i, k)]
                cells.append(CellSpec(op=CELL_OPS[op], expansion=self.expansions[w], stride=STRIDES[k],
                                      residual=bool(res), down=DOWN_OPS[down] if src == 1 else None))
            branches.append(BranchSpec(output_stride=STRIDES[end], cells=tuple(cells)))
        return self._space_genotype(branches, provenance={"derived_by": "ggmnet.Supernet.derive"})

    def _space_genotype(self, branches: Sequence[BranchSpec], **fields: Any) -> Genotype:
        """A validated genotype of ``branches`` with this supernet's depth, channels and classes."""
        return Genotype(branches=tuple(branches), **{name: getattr(self, name) for name in GRID_FIELDS},
                        **fields).validate()

    def subnet(self, genotype: Genotype | None = None) -> GenotypeNetwork:
        """``GenotypeNetwork(genotype or derive())`` with the supernet's weights, sliced to exact widths.

        Any genotype with this supernet's depth, channels and classes is a path of the grid.
        """
        genotype = self.derive() if genotype is None else genotype.validate()
        if any(getattr(genotype, name) != getattr(self, name) for name in GRID_FIELDS):
            raise ValueError("Supernet.subnet: the genotype's depth, channels or classes differ from the supernet's")
        net = GenotypeNetwork(genotype, head_channels=self.head_channels).to(self.arch_op.device)
        source = self.state_dict()
        names = {}
        for b, branch in enumerate(genotype.branches):
            for i, cell in enumerate(branch.cells):
                node = f"nodes.{i}_{cell.stride}."
                prefix = f"mrfem.branches.{b}.{i}."
                names[prefix + "op."] = node + f"ops.{cell.op}."
                names[prefix + "shortcut."] = node + "shortcut."
                if cell.down is not None:
                    names[prefix + "down."] = node + f"downs.{cell.down}."
        # the supernet's sliced BatchNorms keep their state under their widest width's key
        widest = {re.sub(r"\.bns\.\d+\.", ".bns.*.", key): key for key in source}
        state = {}
        for name, tensor in net.state_dict().items():
            src = name
            for prefix, replacement in names.items():
                if name.startswith(prefix):
                    src = replacement + name[len(prefix):]
                    break
            src = widest.get(re.sub(r"\.bns\.\d+\.", ".bns.*.", src), src)
            piece = source[src]
            state[name] = (piece[tuple(slice(0, d) for d in tensor.shape)] if piece.ndim else piece).clone()
        net.load_state_dict(state)
        return net

    # ------------------------------------------------------------------ cost
    def set_cost_table(self, cost_table: CostTable | None) -> None:
        """Use ``cost_table`` (``(op, stride, c_in, c_out) -> cost``) or, with ``None``, analytic MACs."""

        def cost(op: str, stride: int, c_in: int, c_out: int) -> float:
            if cost_table is None:
                return macs_per_pixel(op, stride, c_in, c_out)
            key = (op, stride, c_in, c_out)
            if key not in cost_table:
                raise KeyError(f"cost table has no entry for (op, stride, c_in, c_out) = {key}")
            return float(cost_table[key])

        tables = [node.cost_tensors(cost) for node in self.nodes.values()]  # all or nothing
        self.largest_cost(cost)
        for node, table in zip(self.nodes.values(), tables):
            for name, tensor in table.items():
                node.register_buffer(name, tensor.to(self.arch_op.device), persistent=False)
        self.cost = cost
        self._derived_cache = None

    def _node_cost(self, plan: Mapping[tuple[int, int], Plan], i: int, k: int) -> float:
        """Cost of node (i, k)'s cell under ``plan``, from its planned predecessor's width."""
        src, op, w, res, down = plan[(i, k)]
        width = self._widths(i, k)[w]
        pred = (i - 1, k - src)
        c_in = self.stem_channels[-1] if pred[0] < 0 else self._widths(*pred)[plan[pred][2]]
        spec = CellSpec(op=CELL_OPS[op], expansion=self.expansions[w], stride=STRIDES[k], residual=bool(res),
                        down=DOWN_OPS[down] if src == 1 else None)
        return cell_cost(spec, c_in, width, self.cost)

    def genotype_cost(self, genotype: Genotype) -> float:
        """Cost (:func:`genotype_cost` under this supernet's table) of a genotype's MRFEM, shared cells once."""
        return genotype_cost(genotype, self.cost)

    def derived_cost(self, *, constrained: bool = True) -> float:
        """Cost of the derived architecture (``constrained=False``: of the most likely one, before the
        constraints of :meth:`constrain`)."""
        plan, paths = self.derived_plan() if constrained else self._argmax_plan()
        return sum(self._node_cost(plan, *node) for node in self._branches_through(paths))

    def largest_cost(self, cost: Callable[[str, int, int, int], float] | None = None) -> float:
        """The reference of cost targets: the cost of the largest network of the search space.

        Every cell at the widest expansion, with the costliest cell operator and downsampling operator and its
        residual connection; the 1/16 branch downsamples at layer 0 and the 1/32 branch at layers 0 and 1, so no
        cell is shared by two branches. Under MACs (:func:`macs_per_pixel`) a cell costs the same at the three
        strides (the width doubles where the map quarters), so this is the costliest architecture of the space.
        """
        cost = self.cost if cost is None else cost
        return genotype_cost(self.largest_genotype(cost), cost)

    def largest_genotype(self, cost: Callable[[str, int, int, int], float] | None = None) -> Genotype:
        """The largest network of the space under ``cost`` (default: the supernet's), as :meth:`largest_cost`
        defines it."""
        cost = self.cost if cost is None else cost
        e = max(self.expansions)
        branches = []
        for b, out_stride in enumerate(STRIDES):
            stride, c_in, cells = STRIDES[0], self.stem_channels[-1], []
            for i in range(self.depth):
                stride = 2 * stride if i < b else stride
                c_out = e * self.unit_channels[STRIDES.index(stride)]
                down = max(DOWN_OPS, key=lambda d, s=stride, a=c_in, c=c_out: cost(d, s, a, c)) if i < b else None
                mid = c_out if down else c_in
                op = max(CELL_OPS, key=lambda o, s=stride, a=mid, c=c_out: cost(o, s, a, c))
                cells.append(CellSpec(op=op, expansion=e, stride=stride, residual=True, down=down))
                c_in = c_out
            branches.append(BranchSpec(output_stride=out_stride, cells=tuple(cells)))
        return self._space_genotype(branches)

    def feed_probabilities(self) -> dict[tuple[int, int], torch.Tensor]:
        """P(node (i, k) is computed) in a network drawn from the current logits: some head's path passes it.

        A node is computed when a computed successor takes it as its source. The stride-8 nodes always are (the
        stride-8 head's path); for the others the joint law of (node (i, 16) computed, node (i, 32) computed)
        is carried from the last layer back, each node's source drawn independently. Exact, differentiable.
        """
        p_same = self._probabilities()["source"][..., 0]
        device = self.arch_op.device
        one = torch.ones((), device=device)
        joint = torch.zeros(2, 2, device=device)
        joint[1, 1] = 1.0  # at the last layer every head reads its node
        fed: dict[tuple[int, int], torch.Tensor] = {}
        for i in range(self.depth - 1, -1, -1):
            fed[(i, 0)] = one
            fed[(i, 1)] = joint[1].sum()
            if self.node_exists(i, 2):
                fed[(i, 2)] = joint[:, 1].sum()
            if i == 0:
                break
            q1 = p_same[i, 1]
            q2 = p_same[i, 2] if self.node_exists(i, 2) else torch.zeros((), device=device)
            terms: dict[tuple[int, int], list[torch.Tensor]] = {(a, b): [] for a in (0, 1) for b in (0, 1)}
            for f1 in (0, 1):
                for f2 in (0, 1):
                    for same1, p1 in ((1, q1), (0, 1 - q1)):
                        for same2, p2 in ((1, q2), (0, 1 - q2)):
                            n1 = int((f1 and same1) or (f2 and not same2))
                            n2 = int(f2 and same2)
                            terms[(n1, n2)].append(joint[f1, f2] * p1 * p2)
            joint = torch.stack([torch.stack([sum(terms[(a, b)]) for b in (0, 1)]) for a in (0, 1)])
        return fed

    def expected_cost(self) -> torch.Tensor:
        """Differentiable expected cost of MRFEM (default: MACs per input pixel) under the current logits: the
        sum over nodes of the probability that the node is computed (:meth:`feed_probabilities`; a cell that
        several branches pass is computed once, as in the derived network) times its expected cost under its
        operator, width, residual and downsampling probabilities and its predecessors' width distributions."""
        probs = self._probabilities()
        stem_width = torch.ones(1, device=self.arch_op.device)

        def width_dist(i: int, k: int) -> torch.Tensor | None:
            if k < 0 or not self.node_exists(i, k):
                return None
            return stem_width if i < 0 else probs["width"][i, k]

        total = torch.zeros((), device=stem_width.device)
        for (i, k), p_fed in self.feed_probabilities().items():
            p = {kind: probs[kind][i, k] for kind in CHOICE_KINDS}
            total = total + p_fed * self.node(i, k).expected_cost(p, width_dist(i - 1, k), width_dist(i - 1, k - 1))
        return total


def cell_cost(cell: CellSpec, c_in: int, c_out: int, cost: Callable[[str, int, int, int], float]) -> float:
    """Cost of one derived cell from ``c_in`` to ``c_out`` channels: its downsampling operator (where it has
    one), its operator, and the projection of its residual shortcut where the widths differ."""
    if cell.down is not None:
        return cost(cell.down, cell.stride, c_in, c_out) + cost(cell.op, cell.stride, c_out, c_out)
    total = cost(cell.op, cell.stride, c_in, c_out)
    if cell.residual and c_in != c_out:
        total += cost(SHORTCUT, cell.stride, c_in, c_out)
    return total


def genotype_cost(genotype: Genotype, cost: Callable[[str, int, int, int], float] = macs_per_pixel) -> float:
    """Cost of a genotype's MRFEM (default: multiply-accumulates per network-input pixel), each cell that
    several branches share (:meth:`Genotype.cell_owners`) counted once, as the derived network computes it."""
    owners = genotype.cell_owners()
    total = 0.0
    for b, branch in enumerate(genotype.branches):
        c_in = genotype.stem_channels[-1]
        for i, cell in enumerate(branch.cells):
            c_out = cell.channels(genotype.unit_channels)
            if owners[b][i] == b:
                total += cell_cost(cell, c_in, c_out, cost)
            c_in = c_out
    return total
