"""The search's cost target end to end: the option, the latency table, the target met by a search run and
recorded in the genotype's provenance."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_data import search_config

from ggmnet.errors import UserError
from ggmnet.search.cli import latency_main
from ggmnet.search.latency import load_latency_table, required_keys
from ggmnet.search.search import GMAC_SIZE, SearchConfig, cost_target, run_search
from ggmnet.search.steps import CostControl
from ggmnet.search_space.genotype import Genotype
from ggmnet.search_space.supernet import Supernet, genotype_cost


@pytest.mark.parametrize(("value", "expected"), [("0.5", 0.5), (0.25, 0.25), ("1", 1.0), ("1.5GMAC", "1.5GMAC"),
                                                 (" 30ms", "30ms"), ("2e-1", 0.2)])
def test_cost_target_accepts_a_fraction_gmacs_or_milliseconds(value, expected):
    assert cost_target(value) == expected


@pytest.mark.parametrize("value", ["0", "1.5", "-0.2", "fast", "GMAC", "0ms", "nanms", True])
def test_cost_target_refuses_anything_else(value):
    with pytest.raises(ValueError, match="fraction"):
        cost_target(value)


def test_a_target_in_ms_needs_a_latency_table_and_one_in_gmac_none():
    with pytest.raises(UserError, match="^--cost-target .*needs --latency-table"):
        SearchConfig(cost_target="30ms").check()
    with pytest.raises(UserError, match="^--cost-target .*milliseconds"):
        SearchConfig(cost_target="2GMAC", latency_table="t.json").check()
    assert SearchConfig(cost_target=0.5, depth=22).check().min_real_cells == 11
    assert SearchConfig(depth=22).check().min_real_cells == 0


def test_cost_control_switches_the_term_off_inside_the_target():
    net = Supernet(2, unit_channels=(1, 2, 4), stem_channels=(4, 4, 4), head_channels=4)
    control = CostControl(net.largest_cost() * 0.5, rate=0.5)
    assert float(control.penalty(net).detach()) == 0.0  # weight 0 at the start
    control.update(net.largest_cost())  # twice the target: lambda += 0.5 * 1
    assert control.weight == pytest.approx(0.5) and control.over
    assert float(control.penalty(net).detach()) == pytest.approx(0.5 * float(net.expected_cost().detach()) / control.target)
    control.update(0.25 * net.largest_cost())  # inside: the term is off, lambda integrates down
    assert control.weight == pytest.approx(0.25) and float(control.penalty(net).detach()) == 0.0
    control.update(0.0)
    assert control.weight == 0.0


def test_latency_table_is_measured_for_every_key_and_used_as_the_cost(tmp_path, capsys):
    out = tmp_path / "table.json"
    assert latency_main([str(out), "--depth", "2", "--unit-channels", "1,2,4", "--stem-channels", "4,4,4",
                         "--size", "64", "--repeats", "1", "--threads", "1"]) == 0
    table = load_latency_table(out)
    net = Supernet(2, unit_channels=(1, 2, 4), stem_channels=(4, 4, 4))
    assert set(table.entries) == required_keys(net)
    assert all(ms > 0 for ms in table.entries.values()) and table.unit == "ms at 64 px"
    assert (tmp_path / "table.run.json").is_file() and "wrote" in capsys.readouterr().out
    net.set_cost_table(table.entries)
    genotype = net.derive()
    expected = genotype_cost(genotype, lambda op, s, a, c: table.entries[(op, s, a, c)])
    assert net.genotype_cost(genotype) == pytest.approx(expected)
    # an existing table is not overwritten; a bad file is a one-line error
    with pytest.raises(SystemExit) as exit_info:
        latency_main([str(out), "--depth", "2"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "exists; pass --force" in err and len(err.splitlines()) == 1
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(UserError, match="^--latency-table .*bad.json: not a ggmnet-latency-table"):
        load_latency_table(tmp_path / "bad.json")


@pytest.mark.slow
def test_a_search_with_a_cost_target_exports_a_genotype_within_it(tiny_dataset, tmp_path):
    """A tiny search with a target of 5 % of the largest network: the genotype it writes costs at most that,
    and its provenance says so (target, derived cost, fractions, GMACs, where the branches reach their
    strides, the real cells per branch, the mean chosen probability of each kind)."""
    run = run_search(search_config(tiny_dataset, tmp_path / "run", cost_target=0.05, min_real_cells=1))
    genotype = Genotype.load(run / "genotype.json")
    cost = genotype.provenance["cost"]
    assert genotype_cost(genotype) == pytest.approx(cost["derived"])
    assert cost["target"] == pytest.approx(0.05 * cost["largest"]) and cost["derived"] <= cost["target"] * (1 + 1e-9)
    assert cost["fraction_of_largest"] == pytest.approx(cost["derived"] / cost["largest"])
    assert cost["gmacs_at_1024"] == pytest.approx(cost["derived"] * GMAC_SIZE**2 / 1e9)
    prov = genotype.provenance
    assert prov["branch_output_layers"] == [next(i for i, c in enumerate(b.cells) if c.stride == b.output_stride)
                                            for b in genotype.branches]
    assert prov["real_cells"] == [sum(c.op != "skip" for c in b.cells) for b in genotype.branches]
    assert min(prov["real_cells"]) >= 1
    for kind in ("op", "width", "residual", "source"):
        assert 0 < prov[f"mean_{kind}_probability"] <= 1
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert "cost_control" in state and state["supernet_config"]["cost_limit"] == pytest.approx(cost["target"])
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert "train/cost_weight" in metrics[-1] and "cost/fraction_of_largest" in metrics[-1]
