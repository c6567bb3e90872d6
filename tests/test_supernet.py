"""The supernet: modes, gradients to every architecture logit, derivation, inherited weights and cost."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from ggmnet.search_space.genotype import BranchSpec, CellSpec, Genotype
from ggmnet.search_space.mrfem import MRFEM
from ggmnet.search_space.operations import CELL_OPS, DOWN_OPS, EXPANSIONS, STRIDES, ConvNormAct
from ggmnet.search_space.supernet import CHOICE_KINDS, GenotypeNetwork, Supernet, macs_per_pixel

TINY = {"unit_channels": (2, 4, 8), "stem_channels": (4, 8, 8), "head_channels": 8}


@pytest.fixture(autouse=True)
def one_thread():
    """Many tiny convolutions: one thread avoids OpenMP contention on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def nets() -> dict[int, Supernet]:
    torch.manual_seed(0)
    return {depth: Supernet(depth, **TINY) for depth in (16, 22)}


def _randomise(net: nn.Module, seed: int) -> None:
    """Random architecture logits and non-trivial BatchNorm statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.startswith("arch_"):
                p.copy_(torch.randn(p.shape, generator=g))
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean = torch.randn(m.num_features, generator=g) * 0.1
            m.running_var = 0.5 + torch.rand(m.num_features, generator=g)


@pytest.mark.parametrize("depth", [16, 22])
@pytest.mark.parametrize("mode", ["sample", "pairs", "soft"])
def test_forward_backward_reaches_every_architecture_parameter(nets, depth, mode):
    net = nets[depth].train()
    net.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    # "pairs" compares a downsampling operator only where one was drawn with a differing rival: a few draws
    for _ in range(4 if mode == "pairs" else 1):
        outs = net(torch.randn(2, 3, 64, 48), mode=mode, tau=1.0)
        assert [tuple(o.shape) for o in outs] == [(2, 10, 8, 6), (2, 10, 4, 3), (2, 10, 2, 2)]
        sum((o * torch.randn_like(o)).sum() for o in outs).backward()
    for name, p in net.named_arch_parameters():
        if mode == "pairs" and name == "arch_source":  # the paths learn from whole rival paths (below)
            assert p.grad is None
            continue
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    if mode == "soft":  # every choice of every node with more than one option gets a gradient
        for kind in CHOICE_KINDS:
            valid = getattr(net, f"valid_{kind}")
            rows = valid.sum(-1, keepdim=True) > 1
            grad = getattr(net, f"arch_{kind}").grad
            assert (grad[valid & rows] != 0).all(), kind
            assert (grad[~valid] == 0).all(), kind
    assert all(p.grad is not None for p in net.heads.parameters())


def test_sample_mode_computes_one_operator_per_sampled_node(nets):
    net = nets[16].train()
    calls = []
    hooks = [op.register_forward_hook(lambda *_: calls.append(1))
             for node in net.nodes.values() for op in node.ops.values()]
    try:
        for seed in range(3):
            torch.manual_seed(seed)
            calls.clear()
            net(torch.randn(2, 3, 32, 32), mode="sample")
            assert 16 <= len(calls) <= 3 * 16
    finally:
        for h in hooks:
            h.remove()


def test_sampled_steps_send_gradients_to_the_ops_of_many_nodes(nets):
    net = nets[16].train()
    net.zero_grad(set_to_none=True)
    with torch.no_grad():  # favour the coarser sources so that the 1/16 and 1/32 nodes get visited
        net.arch_source[..., 1] = 0.0
    for seed in range(12):
        torch.manual_seed(seed)
        sum(o.square().mean() for o in net(torch.randn(2, 3, 32, 32), mode="sample", tau=2.0)).backward()
    visited = (net.arch_op.grad != 0).any(-1)
    assert visited[:, 0].all()  # the 1/8 branch's path is every stride-8 node
    assert visited.sum() > 16
    net.zero_grad(set_to_none=True)


def test_pairs_moves_only_the_two_drawn_logits_of_a_choice_in_opposite_directions(nets):
    net = nets[16].train()
    _randomise(net, seed=7)
    for seed in range(3):
        torch.manual_seed(seed)
        outs = net(torch.randn(2, 3, 32, 32), mode="pairs", tau=0.5)
        grads = torch.autograd.grad(sum((o * torch.randn_like(o)).sum() for o in outs), net.arch_parameters(),
                                    allow_unused=True)
        for kind, g in zip(CHOICE_KINDS, grads):
            if g is None:  # no node drew two different candidates of this kind
                continue
            assert ((g != 0).sum(-1) <= 2).all(), kind  # the computed candidate and its rival, nothing else
            torch.testing.assert_close(g.sum(-1), torch.zeros_like(g[..., 0]), atol=1e-6, rtol=0)
            assert (g[~getattr(net, f"valid_{kind}")] == 0).all(), kind


def test_pairs_gradient_is_the_loss_slope_from_one_candidate_output_to_the_other():
    """Only the operator of node (1, 8) left to draw and a loss linear in that node's output, ``<c, y>``: the
    two drawn logits get ``+-<c, y_i - y_j> / (2 tau)``, the outputs of the two operators on the same input."""
    torch.manual_seed(0)
    net = Supernet(2, **TINY).train()
    with torch.no_grad():
        for kind in CHOICE_KINDS:  # every choice certain (no rival) except the operator of node (1, 8)
            getattr(net, f"arch_{kind}")[..., 0] = 1e4
        net.arch_op[1, 0] = 0.0
    x = torch.randn(2, 3, 32, 32)
    width = net._widths(1, 0)[0]
    c = torch.randn(2, width, 4, 4)
    with torch.no_grad():  # the candidates' outputs on the drawn input (train mode: batch statistics)
        x0 = net.node(0, 0).run(net.stem(x)[-1], op=CELL_OPS[0], width=net._widths(0, 0)[0], residual=False,
                                down=None)
        outputs = [net.node(1, 0).run(x0, op=op, width=width, residual=False, down=None) for op in CELL_OPS]
    captured = {}
    hook = net.heads[0].register_forward_pre_hook(lambda _, inputs: captured.update(y=inputs[0]))
    tau = 2.0
    seen = set()
    try:
        for seed in range(30):
            torch.manual_seed(seed)
            net(x, mode="pairs", tau=tau)
            (g,) = torch.autograd.grad((captured["y"] * c).sum(), [net.arch_op], allow_unused=True)
            if g is None:  # both draws took the same operator
                continue
            assert (g[0] == 0).all()
            pair = g[1, 0].nonzero().flatten().tolist()
            if pair:
                i, j = pair
                expected = (c * (outputs[i] - outputs[j])).sum() / (2 * tau)
                torch.testing.assert_close(g[1, 0, [i, j]], torch.stack([expected, -expected]), rtol=1e-4,
                                           atol=1e-5)
                seen.add((i, j))
    finally:
        hook.remove()
    assert len(seen) >= 3


def test_pairs_gradient_at_the_midpoint_is_the_exact_loss_difference_of_a_quadratic_loss():
    """Only the operator of node (1, 8) left to draw and a quadratic loss ``|y - t|^2`` of that node's output:
    linearised at the midpoint of the two candidates' outputs, the two drawn logits get exactly
    ``+-(L(y_i) - L(y_j)) / (2 tau)`` (at the drawn output, the first-order estimate would not)."""
    torch.manual_seed(0)
    net = Supernet(2, **TINY).train()
    net.midpoint = {"op"}  # by default only the nested choices (width, residual) are; the rule is the same
    with torch.no_grad():
        for kind in CHOICE_KINDS:
            getattr(net, f"arch_{kind}")[..., 0] = 1e4
        net.arch_op[1, 0] = 0.0
    x = torch.randn(2, 3, 32, 32)
    width = net._widths(1, 0)[0]
    t = torch.randn(2, width, 4, 4)
    with torch.no_grad():
        x0 = net.node(0, 0).run(net.stem(x)[-1], op=CELL_OPS[0], width=net._widths(0, 0)[0], residual=False,
                                down=None)
        losses = [(net.node(1, 0).run(x0, op=op, width=width, residual=False, down=None) - t).square().sum()
                  for op in CELL_OPS]
    captured = {}
    hook = net.heads[0].register_forward_pre_hook(lambda _, inputs: captured.update(y=inputs[0]))
    tau, seen = 2.0, set()
    try:
        for seed in range(30):
            torch.manual_seed(seed)
            net(x, mode="pairs", tau=tau)
            (g,) = torch.autograd.grad((captured["y"] - t).square().sum(), [net.arch_op], allow_unused=True)
            pair = [] if g is None else g[1, 0].nonzero().flatten().tolist()
            if pair:
                i, j = pair
                expected = (losses[i] - losses[j]) / (2 * tau)
                torch.testing.assert_close(g[1, 0, [i, j]], torch.stack([expected, -expected]), rtol=1e-4,
                                           atol=1e-4)
                seen.add((i, j))
    finally:
        hook.remove()
    assert len(seen) >= 3


def test_paths_are_learned_from_the_loss_difference_of_two_drawn_paths():
    """``path_rival_plan`` is the drawn network with the second draws' sources; ``path_log_ratio`` is the
    difference of the two paths' log-probabilities under ``softmax(source logits / tau)``, checked by hand."""
    torch.manual_seed(0)
    net = Supernet(4, **TINY).train()
    _randomise(net, seed=3)
    tau = 1.5
    for seed in range(20):
        torch.manual_seed(seed)
        net(torch.randn(2, 3, 64, 64), mode="pairs", tau=tau)
        rival = net.path_rival_plan()
        if rival is not None:
            break
    plan = net.last_pairs["plan"]
    assert all(rival[n][1:] == plan[n][1:] for n in plan)  # only the sources differ
    log_p = torch.log_softmax(net.arch_source.detach() / tau, -1)
    for end in range(3):
        a, b = net._path(plan, end), net._path(rival, end)
        expected = sum(float(log_p[i, k, plan[(i, k)][0]] - log_p[i, k, rival[(i, k)][0]])
                       for i, k in set(a) | set(b) if net.valid_source[i, k].all())
        assert float(net.path_log_ratio(end, rival)) == pytest.approx(expected, abs=1e-5)
    # the rival network is the one the plan mode computes: the sampled network when the plans agree
    with torch.no_grad():
        out = net(torch.randn(2, 3, 64, 64), mode="plan", plan=rival)
    assert [tuple(o.shape[1:]) for o in out] == [(10, 8, 8), (10, 4, 4), (10, 2, 2)]


def test_pairs_has_the_value_of_the_drawn_network(nets):
    """With certain logits both draws agree: ``pairs`` computes exactly the favoured network."""
    depth = 16
    net = nets[depth]
    _favour(net, _target(depth), strength=1000.0)
    net.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = net.subnet(_target(depth)).eval()(x)
    got = net(x, mode="pairs")
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)
    net.train()


def test_arch_probabilities_have_nan_where_a_node_does_not_exist(nets):
    probs = nets[16].arch_probabilities()
    assert probs["op"].shape == (16, 3, 5) and probs["width"].shape == (16, 3, len(EXPANSIONS))
    assert np.isnan(probs["op"][0, 2]).all() and not np.isnan(probs["op"][1, 2]).any()
    np.testing.assert_allclose(probs["source"][0, 1], [0.0, 1.0])  # (0, 16) only from the stem, downsampled
    np.testing.assert_allclose(probs["source"][1, 2], [0.0, 1.0])
    assert np.isnan(probs["down"][:, 0]).all()
    np.testing.assert_allclose(np.nansum(probs["op"], -1)[~np.isnan(probs["op"][..., 0])], 1.0, rtol=1e-6)


def test_parameter_sets_are_disjoint_and_complete(nets):
    net = nets[16]
    arch, weights = net.arch_parameters(), net.weight_parameters()
    assert len(arch) == len(CHOICE_KINDS)
    assert {id(p) for p in arch}.isdisjoint(id(p) for p in weights)
    assert len(arch) + len(weights) == len(list(net.parameters()))


def _target(depth: int) -> Genotype:
    """A hand-made tree of three paths: 1/16 downsamples at layer 1, 1/32 there and at layer 4 (or last)."""
    def cell(i: int, k: int, down: str | None) -> CellSpec:
        return CellSpec(op=CELL_OPS[(i + 2 * k) % 5], expansion=EXPANSIONS[(i + k) % 4], stride=STRIDES[k],
                        residual=(i + k) % 3 == 0, down=down)

    second = min(4, depth - 1)
    paths = [[0] * depth, [0] + [1] * (depth - 1), [0] + [1] * (second - 1) + [2] * (depth - second)]
    branches = []
    for b, path in enumerate(paths):
        cells = [cell(i, k, None if i == 0 or path[i - 1] == k else DOWN_OPS[(i + k) % 2])
                 for i, k in enumerate(path)]
        branches.append(BranchSpec(STRIDES[b], tuple(cells)))
    return Genotype(depth=depth, num_classes=10, in_channels=3, stem_channels=TINY["stem_channels"],
                    unit_channels=TINY["unit_channels"], branches=tuple(branches)).validate()


def _favour(net: Supernet, genotype: Genotype, strength: float = 6.0) -> None:
    """Set the logits so that ``genotype``'s choices are the most likely ones (others random, smaller)."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for _, p in net.named_arch_parameters():
            p.copy_(torch.rand(p.shape, generator=g))
        for branch in genotype.branches:
            previous = 0
            for i, c in enumerate(branch.cells):
                k = STRIDES.index(c.stride)
                net.arch_op[i, k, CELL_OPS.index(c.op)] = strength
                net.arch_width[i, k, EXPANSIONS.index(c.expansion)] = strength
                net.arch_residual[i, k, int(c.residual)] = strength
                net.arch_source[i, k, k - previous] = strength
                if c.down is not None:
                    net.arch_down[i, k, DOWN_OPS.index(c.down)] = strength
                previous = k


@pytest.mark.parametrize("depth", [16, 22])
def test_derive_returns_the_favoured_architecture(nets, depth):
    net = nets[depth]
    target = _target(depth)
    _favour(net, target)
    derived = net.derive()
    assert derived.branches == target.branches
    assert Genotype.from_json(derived.to_json()) == derived


def test_derive_maximises_the_path_probability_not_the_greedy_choice():
    """Branch 1/32 of a depth-4 grid, by hand. Greedy from the end would take the likelier 'down' at (3, 32)."""
    net = Supernet(4, **TINY)

    def p_down(i: int, k: int, q: float) -> None:
        net.arch_source[i, k] = torch.tensor([0.0, math.log(q / (1 - q))])

    with torch.no_grad():
        p_down(3, 2, 0.6)  # (3, 32): from (2, 16) 0.6, from (2, 32) 0.4
        p_down(2, 1, 0.5)  # (2, 16): best path into it 0.5
        p_down(1, 1, 0.5)
        p_down(2, 2, 1e-6)  # (2, 32) <- (1, 32) <- (0, 16) <- stem: certain
    # via (2, 16): 0.6 * 0.5 = 0.30; via (2, 32): 0.4 * 1 = 0.40
    assert net.derive().downsample_layers(2) == [0, 1]
    with torch.no_grad():
        p_down(2, 2, 0.3)  # via (2, 32) now 0.4 * 0.7 = 0.28 < 0.30
    assert net.derive().downsample_layers(2) == [2, 3]


@pytest.mark.parametrize("depth", [16, 22])
def test_argmax_mode_equals_the_derived_network_with_inherited_weights(nets, depth):
    net = nets[depth]
    _randomise(net, seed=depth)
    net.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = net.subnet().eval()(x)
        got = net(x, mode="argmax")
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)
    # peaked logits favouring a tree of paths: every Gumbel sample is that tree, which is also the DP's
    _favour(net, _target(depth), strength=1000.0)
    with torch.no_grad():
        sampled = net(x, mode="sample")
        expected = net.subnet(_target(depth)).eval()(x)
    for a, b in zip(sampled, expected):
        torch.testing.assert_close(a, b)
    net.train()


def test_subnet_has_exact_widths_and_the_derived_parameter_count(nets):
    net = nets[16]
    _randomise(net, seed=5)
    genotype = net.derive()
    sub = net.subnet(genotype)
    fresh = GenotypeNetwork(genotype, head_channels=TINY["head_channels"])
    assert sum(p.numel() for p in sub.parameters()) == sum(p.numel() for p in fresh.parameters())
    assert sum(p.numel() for p in sub.parameters()) < sum(p.numel() for p in net.weight_parameters()) / 10


def _conv_macs_per_pixel(model: nn.Module, x: torch.Tensor) -> float:
    """MACs of every convolution (``ConvNormAct`` runs its conv functionally), counted on the actual run, per
    pixel of ``x``."""
    total = []

    def hook(module, inputs, output):
        k = module.conv.weight.shape[-1] * module.conv.weight.shape[-2]
        total.append(output.numel() / output.shape[0] * k * inputs[0].shape[1])

    convs = [m for m in model.modules() if isinstance(m, ConvNormAct)]
    handles = [m.register_forward_hook(hook) for m in convs]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return sum(total) / (x.shape[-2] * x.shape[-1])


def test_expected_cost_of_a_certain_architecture_equals_its_counted_macs():
    torch.manual_seed(0)
    net = Supernet(6, **TINY)
    target = _target(6)
    _favour(net, target, strength=40.0)
    mrfem = GenotypeNetwork(target, head_channels=TINY["head_channels"]).mrfem.eval()
    counted = _conv_macs_per_pixel(mrfem, torch.zeros(1, TINY["stem_channels"][-1], 16, 16)) / 64
    assert counted > 0
    assert net.expected_cost().item() == pytest.approx(counted, rel=1e-4)


def test_expected_cost_is_differentiable_and_the_table_pluggable():
    net = Supernet(4, **TINY)
    cost = net.expected_cost()
    cost.backward()
    assert all(torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
               for _, p in net.named_arch_parameters())
    # more probability on the wide expansion costs more
    with torch.no_grad():
        net.arch_width[..., -1] = 3.0
    assert net.expected_cost().item() > cost.item()
    table = {}
    for node in net.nodes.values():
        for a in set((node.same_widths or ()) + (node.down_widths or ()) + node.widths):
            for w in node.widths:
                for op in CELL_OPS + DOWN_OPS + ("shortcut",):
                    table[(op, node.stride, a, w)] = 2 * macs_per_pixel(op, node.stride, a, w)
    doubled = net.expected_cost().item()
    net.set_cost_table(table)
    assert net.expected_cost().item() == pytest.approx(2 * doubled)
    with pytest.raises(KeyError, match="no entry"):
        net.set_cost_table({})
    assert net.expected_cost().item() == pytest.approx(2 * doubled)  # the failed table changed nothing


def test_genotype_network_trains_end_to_end():
    torch.manual_seed(0)
    net = GenotypeNetwork(_target(4), head_channels=8)
    outs = net(torch.randn(2, 3, 40, 40))
    assert [tuple(o.shape) for o in outs] == [(2, 10, 5, 5), (2, 10, 3, 3), (2, 10, 2, 2)]
    sum(o.mean() for o in outs).backward()
    assert all(p.grad is not None for p in net.parameters())


def test_bad_arguments_are_refused(nets):
    with pytest.raises(ValueError, match="depth 1"):
        Supernet(1, **TINY)
    with pytest.raises(ValueError, match="mode 'mixed'"):
        nets[16](torch.randn(1, 3, 32, 32), mode="mixed")
    with pytest.raises(ValueError, match="tau"):
        nets[16].set_tau(0.0)


def test_initial_source_logits_make_every_downsampling_placement_equally_likely():
    depth = 6
    net = Supernet(depth, **TINY)
    p = net.arch_probabilities()["source"]

    def path_probability(downs: list[int], end: int) -> float:
        prob, k = 1.0, end
        for i in range(depth - 1, -1, -1):
            src = 1 if i in downs else 0
            prob *= p[i, k, src]
            k -= src
        return prob

    singles = [path_probability([j], 1) for j in range(depth)]
    np.testing.assert_allclose(singles, 1 / depth, rtol=1e-5)
    pairs = [path_probability([a, b], 2) for a in range(depth) for b in range(a + 1, depth)]
    np.testing.assert_allclose(pairs, 1 / math.comb(depth, 2), rtol=1e-5)


def test_fixed_and_pinned_choices():
    # fix(): out of the search in every mode (one-hot probabilities, no gradient, the derivation keeps them);
    # pin(): the weight steps' sampled networks only.
    torch.manual_seed(0)
    net = Supernet(3, unit_channels=(2, 2, 2))
    net.fix(width=-1, residual=1)
    genotype = net.derive()
    assert all(c.expansion == net.expansions[-1] and c.residual for b in genotype.branches for c in b.cells)
    probs = net.arch_probabilities()
    assert np.nanmin(probs["width"][..., -1]) == 1.0 and np.nanmax(probs["residual"][..., 0]) == 0.0
    assert net.choice_entropy()["width"] == 0.0 and net.choice_entropy()["op"] > 1.0
    out = net(torch.randn(2, 3, 64, 64), mode="pairs")
    grads = dict(zip(("op", "width", "residual", "source", "down"),
                     torch.autograd.grad(sum(o.sum() for o in out), net.arch_parameters(), allow_unused=True)))
    assert grads["width"] is None and grads["residual"] is None and float(grads["op"].abs().sum()) > 0
    with pytest.raises(ValueError, match="only width, residual, op and down"):
        net.fix(source=1)

    free = Supernet(3, unit_channels=(2, 2, 2))
    widths = set()
    for node in free.nodes.values():
        for op in node.ops.values():
            op.register_forward_hook(lambda m, i, o: widths.add(o.shape[1]))
    free.pin(width=0, residual=0)
    for _ in range(5):
        with torch.no_grad():
            free(torch.randn(2, 3, 64, 64), mode="sample")
    assert widths == {2 * free.expansions[0]}  # every sampled cell at the narrowest width
    free.pin()
    widths.clear()
    for _ in range(10):
        with torch.no_grad():
            free(torch.randn(2, 3, 64, 64), mode="sample")
    assert len(widths) > 1


def test_expected_cost_is_the_mean_cost_of_the_sampled_networks_counting_shared_cells_once():
    """Monte Carlo: the cost of networks drawn as ``mode="sample"`` draws them (each node's source once, so
    branches through one node share its prefix), against :meth:`expected_cost`."""
    torch.manual_seed(0)
    net = Supernet(6, **TINY)
    _randomise(net, seed=11)
    rng = np.random.default_rng(0)
    probs = {kind: np.nan_to_num(p) for kind, p in net.arch_probabilities().items()}
    costs, separate = [], []

    def draw(row: np.ndarray) -> int:  # a node without a down source has no down choice: any index
        return int(rng.choice(len(row), p=row / row.sum())) if row.sum() > 0 else 0

    for _ in range(4000):
        plan = {node: tuple(draw(probs[kind][node]) for kind in ("source", "op", "width", "residual", "down"))
                for node in net._nodes()}
        costs.append(sum(net._node_cost(plan, *node) for node in net._feeding(plan)))
        paths = []
        for end in range(3):  # each head's path, walked back through the drawn sources
            node, path = (net.depth - 1, end), []
            while node[0] >= 0:
                path.append(node)
                node = (node[0] - 1, node[1] - plan[node][0])
            paths.append(path)
        assert set().union(*paths) == net._feeding(plan)
        separate.append(sum(net._node_cost(plan, *node) for path in paths for node in path))
    expected = net.expected_cost().item()
    assert np.mean(costs) == pytest.approx(expected, rel=3 * np.std(costs) / np.sqrt(len(costs)) / expected + 1e-3)
    # three separate branches (each computing its whole path) would cost clearly more
    assert np.mean(separate) > 1.2 * expected


def test_genotype_cost_counts_the_macs_the_derived_network_computes():
    """A tree genotype (branches splitting where they downsample): its cost equals the MACs of the shared
    derived MRFEM, counted by torch's FLOP counter, and is below the cost of three separate branches."""
    from torch.utils.flop_counter import FlopCounterMode

    from ggmnet.search_space.supernet import genotype_cost

    genotype = _target(6)
    assert genotype.cell_owners()[1][0] == 0  # the 1/16 branch shares the first cells of the 1/8 one
    x = torch.zeros(1, TINY["stem_channels"][-1], 16, 16)
    counted = {}
    for share in (True, False):
        mrfem = MRFEM(genotype, share_cells=share).eval()
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            mrfem(x)
        counted[share] = counter.get_total_flops() / 2 / (16 * 16 * 64)  # MACs per network-input pixel
    # the counter also counts the 1x1 shortcuts' and projections' MACs, which the cost table includes
    assert genotype_cost(genotype) == pytest.approx(counted[True], rel=1e-6)
    assert counted[True] < counted[False]


def test_shared_cells_give_the_outputs_of_separate_copies_with_fewer_parameters():
    genotype = _target(6)
    torch.manual_seed(0)
    shared = MRFEM(genotype).eval()
    separate = MRFEM(genotype, share_cells=False).eval()
    state = {}
    for b, branch in enumerate(separate.branches):
        for i in branch:
            owner = shared.owners[b][int(i)]
            for name, tensor in shared.branches[owner][i].state_dict().items():
                state[f"branches.{b}.{i}.{name}"] = tensor
    separate.load_state_dict(state)
    x = torch.randn(2, TINY["stem_channels"][-1], 16, 12)
    with torch.no_grad():
        for a, b in zip(shared(x), separate(x)):
            torch.testing.assert_close(a, b)
    n_shared = sum(p.numel() for p in shared.parameters())
    assert n_shared < sum(p.numel() for p in separate.parameters())
    # every parameter is held once, under the name of the branch that computes it
    assert n_shared == sum(v.numel() for k, v in shared.state_dict().items() if not k.endswith(
        ("running_mean", "running_var", "num_batches_tracked")))


def test_a_legacy_ggmnet_config_builds_separate_branches_and_loads_its_weights():
    from ggmnet.models import build_model

    genotype = _target(6)
    config = {"name": "ggmnet", "genotype": genotype.to_dict(), "arm": True, "ffm": True, "deformable": False,
              "residual": True}  # as written before shared cells
    old = build_model(config)
    assert not old.mrfem.share_cells
    assert set(old.state_dict()) == set(build_model({**config, "share_cells": False}).state_dict())
    assert build_model({**config, "share_cells": True}).mrfem.share_cells


def test_derivation_under_a_cost_limit_gives_up_the_least_likely_choices_first():
    torch.manual_seed(0)
    net = Supernet(6, **TINY)
    target = _target(6)
    _favour(net, target, strength=5.0)
    full = net.genotype_cost(net.derive())
    assert full == pytest.approx(net.derived_cost(constrained=False))
    largest = net.largest_cost()
    assert full < largest
    for fraction in (0.8, 0.5, 0.3):
        net.constrain(cost_limit=fraction * full)
        genotype = net.derive()
        cost = net.genotype_cost(genotype)
        assert cost <= fraction * full * (1 + 1e-9)
        assert cost >= 0.8 * fraction * full  # it stops once under the limit, not far below
        assert cost == pytest.approx(net.derived_cost())
        # the paths are kept; choices are given up, never added
        assert [net_b.output_stride for net_b in genotype.branches] == [8, 16, 32]
        assert [genotype.downsample_layers(b) for b in range(3)] == [target.downsample_layers(b) for b in range(3)]
    net.constrain()
    assert net.derive().branches == target.branches


def test_derivation_keeps_a_floor_of_real_cells_per_branch():
    torch.manual_seed(0)
    net = Supernet(8, **TINY)
    with torch.no_grad():
        net.arch_op[..., CELL_OPS.index("skip")] = 3.0  # every node prefers the identity
        net.arch_op[..., CELL_OPS.index("conv5x5")] = 2.0
    skip_everywhere = net.derive()
    assert all(c.op == "skip" for b in skip_everywhere.branches for c in b.cells)
    net.constrain(min_real_cells=5)
    genotype = net.derive()
    assert [sum(c.op != "skip" for c in b.cells) for b in genotype.branches] >= [5, 5, 5]
    assert {c.op for b in genotype.branches for c in b.cells} == {"skip", "conv5x5"}
    # a cost limit never takes a branch under its floor
    net.constrain(min_real_cells=5, cost_limit=1e-9)
    genotype = net.derive()
    assert all(sum(c.op != "skip" for c in b.cells) >= 5 for b in genotype.branches)


def test_sampled_genotypes_follow_the_prior_and_are_trees():
    """``sample_genotype`` before any search: operators uniform, residual connections at the prior, every
    placement of the 1/16 branch's downsampling equally likely, and each drawn genotype a tree (a branch shares
    every cell before it leaves the finer branch's path)."""
    net = Supernet(6, **TINY, residual_prior=0.8)
    rng = np.random.default_rng(0)
    ops, residual, first_down = [], [], []
    for _ in range(600):
        g = net.sample_genotype(rng)
        owners = g.cell_owners()
        down16 = g.downsample_layers(1)[0]
        assert all(owners[1][i] == 0 for i in range(down16))  # shares the 1/8 branch's cells before it
        ops += [c.op for c in g.branches[0].cells]
        residual += [c.residual for c in g.branches[0].cells]
        first_down.append(down16)
    counts = np.array([ops.count(op) for op in CELL_OPS])
    assert np.abs(counts / counts.sum() - 0.2).max() < 0.03
    assert np.mean(residual) == pytest.approx(0.8, abs=0.03)
    placement = np.bincount(first_down, minlength=6) / len(first_down)
    assert np.abs(placement - 1 / 6).max() < 0.05


def test_fair_search_draws_random_genotypes_of_the_searched_cost():
    from ggmnet.search_space.supernet import genotype_cost
    from ggmnet.studies.fair_search import matched_random_genotypes

    searched = _target(6)
    randoms = matched_random_genotypes(searched, 4, tolerance=0.05, seed=3)
    assert len({g.to_json() for g in randoms}) == 4
    for g in randoms:
        assert genotype_cost(g) == pytest.approx(genotype_cost(searched), rel=0.05)
        assert (g.depth, g.unit_channels, g.stem_channels) == (searched.depth, searched.unit_channels,
                                                                searched.stem_channels)
