"""The search loop: schedules, the data split, the architecture step, outputs, resume, and the nas-search CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tiny_data import DEPTH, search_config

from ggmnet.engine.rng import seed_everything
from ggmnet.engine.runio import file_sha256
from ggmnet.errors import UserError
from ggmnet.search.cli import search_main
from ggmnet.search.search import (
    ArchitectureSearch,
    SearchConfig,
    batchnorm_tiles,
    build_supernet,
    recalibrate_batchnorm,
    run_search,
    split_halves,
    temperature,
    weight_lr,
)
from ggmnet.search_space.genotype import Genotype

REPO = Path(__file__).resolve().parents[1]


def arch_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The architecture parameters stored in a search checkpoint."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    net = build_supernet(state["supernet_config"])
    names = {n for n, p in net.named_parameters() if any(p is q for q in net.arch_parameters())}
    return {n: state["supernet"][n] for n in sorted(names)}


def initial_arch_state(depth: int, in_channels: int, seed: int = 0) -> dict[str, torch.Tensor]:
    seed_everything(seed)
    net = build_supernet({"depth": depth, "num_classes": 10, "in_channels": in_channels})
    arch = {id(p) for p in net.arch_parameters()}
    return {n: p.detach().clone() for n, p in net.named_parameters() if id(p) in arch}


# ------------------------------------------------------------------------------------------- pure pieces

def test_temperature_is_flat_in_warmup_then_geometric_to_tau_end():
    cfg = SearchConfig(epochs=5, warmup_epochs=1, tau_start=4.0, tau_end=0.25)
    taus = [temperature(e, cfg) for e in range(5)]
    # (0.25 / 4) ** (j / 4) = 0.5 ** j for j = 1..4
    assert taus == pytest.approx([4.0, 2.0, 1.0, 0.5, 0.25])


def test_weight_lr_is_cosine_over_all_epochs():
    cfg = SearchConfig(epochs=4, lr_weights=0.02)
    assert [weight_lr(e, cfg) for e in range(4)] == pytest.approx(
        [0.02, 0.01 * (1 + math.cos(math.pi / 4)), 0.01, 0.01 * (1 - math.cos(math.pi / 4))])


def test_split_halves_are_disjoint_complete_and_seeded():
    a, b = split_halves(11, seed=5)
    assert len(a) == 6 and len(b) == 5
    assert sorted([*a, *b]) == list(range(11))
    a2, b2 = split_halves(11, seed=5)
    assert a.tolist() == a2.tolist() and b.tolist() == b2.tolist()
    assert split_halves(11, seed=6)[0].tolist() != a.tolist()


@pytest.mark.parametrize(("change", "option"), [
    ({"depth": 1}, "--depth"), ({"depth": 65}, "--depth"), ({"tile_size": 48}, "--tile-size"),
    ({"crop_size": 4096}, "--crop-size"), ({"warmup_epochs": 60}, "--warmup-epochs"),
    ({"tau_end": 9.0}, "--tau-end"), ({"lr_arch": 0.0}, "--lr-arch"), ({"top_k_fraction": 1.5}, "--top-k-fraction"),
    ({"channels": "rgb"}, "--channels"), ({"steps_per_epoch": 0}, "--steps-per-epoch"),
])
def test_config_check_names_the_bad_option(change, option):
    with pytest.raises(UserError, match=f"^{option} "):
        SearchConfig(**change).check()


# ------------------------------------------------------------------------------------------- the loop

def test_architecture_step_updates_only_the_architecture(tiny_dataset, tmp_path):
    search = ArchitectureSearch(search_config(tiny_dataset, tmp_path / "run"))
    search.supernet.set_tau(1.0)
    weights, arch = search.supernet.weight_parameters(), search.supernet.arch_parameters()
    before_w = [p.detach().clone() for p in weights]
    before_a = [p.detach().clone() for p in arch]
    batch = next(iter(search.loader_b))
    loss = search.arch_step(batch)["arch_loss"]
    assert math.isfinite(loss) and loss > 0
    # the weights neither moved nor keep a gradient for the next weight step (FasterSeg's leak)
    assert all(p.grad is None for p in weights)
    assert all(torch.equal(p, q) for p, q in zip(weights, before_w))
    assert any(not torch.equal(p, q) for p, q in zip(arch, before_a))
    assert not any(p.requires_grad for p in arch)


def test_search_moves_the_architecture_and_writes_its_outputs(finished_search, tiny_dataset):
    run = finished_search
    in_channels = json.loads((run / "genotype.json").read_text())["in_channels"]
    start = initial_arch_state(DEPTH, in_channels)
    end = arch_state(run / "checkpoints" / "last.pt")
    assert start.keys() == end.keys()
    assert any(not torch.equal(start[k], end[k]) for k in start)

    genotype = Genotype.load(run / "genotype.json")
    assert genotype.depth == DEPTH and [b.output_stride for b in genotype.branches] == [8, 16, 32]
    prov = genotype.provenance
    assert prov["dataset_manifest_sha256"] == file_sha256(tiny_dataset / "manifest.json")
    assert prov["epoch"] == 3 and prov["seed"] == 0 and prov["config"]["depth"] == DEPTH
    assert 0.0 <= prov["metrics"]["fwiou"] <= 1.0 and 0.0 <= prov["metrics"]["mpa"] <= 1.0
    assert Genotype.load(run / "genotype_best.json").depth == DEPTH

    meta = json.loads((run / "run.json").read_text())
    assert meta["config"]["depth"] == DEPTH and meta["seed"] == 0
    assert (run / "checkpoints" / "best.pt").is_file()
    state = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 3 and state["step"] == 3
    assert state["tau"] == pytest.approx(temperature(2, search_config(tiny_dataset, run)))

    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "val/fwiou" in r]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [r["epoch"] for r in logged] == [2, 3]  # no validation in the warm-up: nothing has been decided
    assert "train/arch_loss" not in rows[0] and "train/arch_loss" in rows[2]
    kinds = build_supernet({"depth": DEPTH, "num_classes": 10, "in_channels": in_channels}).arch_probabilities()
    assert kinds and all((run / "images" / f"arch_{kind}_3.png").is_file() for kind in kinds)
    artifacts = [json.loads(line) for line in (run / "artifacts.jsonl").read_text().splitlines()]
    assert [a["type"] for a in artifacts] == ["genotype"] * 3

    # What the search decided: each chosen option's probability, as the final architecture logits give it.
    net = build_supernet(state["supernet_config"])
    net.load_state_dict(state["supernet"])
    probs = net.arch_probabilities()
    for spec, recorded in zip(genotype.branches, prov["choices"]):
        assert recorded["output_stride"] == spec.output_stride and len(recorded["cells"]) == DEPTH
        for i, (cell, entry) in enumerate(zip(spec.cells, recorded["cells"])):
            k = (8, 16, 32).index(cell.stride)
            assert entry["op_probability"] == pytest.approx(
                probs["op"][i, k, ("skip", "conv3x3", "conv5x5", "zoomed_conv3x3", "zoomed_conv5x5").index(cell.op)],
                abs=1e-6)
            assert ("down_probability" in entry) == (cell.down is not None)
    ops = [c["op_probability"] for b in prov["choices"] for c in b["cells"]]
    assert prov["mean_op_probability"] == pytest.approx(sum(ops) / len(ops), abs=1e-6)
    assert 0.0 < prov["entropy"]["op"] <= math.log(5) + 1e-6
    assert all(0.0 < r["arch/entropy_op"] <= math.log(5) + 1e-6 for r in logged)


def test_warmup_keeps_the_architecture_and_resume_matches_an_uninterrupted_run(finished_search, tiny_dataset,
                                                                              tmp_path, monkeypatch):
    out = tmp_path / "interrupted"
    save = ArchitectureSearch.save_checkpoint

    def save_then_interrupt(self, epoch, *args, **kwargs):
        save(self, epoch, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(ArchitectureSearch, "save_checkpoint", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_search(search_config(tiny_dataset, out))
    monkeypatch.setattr(ArchitectureSearch, "save_checkpoint", save)
    last = out / "checkpoints" / "last.pt"
    assert torch.load(last, weights_only=True)["epoch"] == 1
    # the warm-up epoch trained the weights only
    start = initial_arch_state(DEPTH, json.loads((out / "genotype.json").read_text())["in_channels"])
    assert all(torch.equal(start[k], v) for k, v in arch_state(last).items())

    with pytest.raises(UserError, match="--resume"):
        run_search(search_config(tiny_dataset, out))
    with pytest.raises(UserError, match="--depth"):
        run_search(search_config(tiny_dataset, out, depth=5, resume=True))
    run_search(search_config(tiny_dataset, out, resume=True))

    resumed = torch.load(last, map_location="cpu", weights_only=True)
    straight = torch.load(finished_search / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert resumed["epoch"] == straight["epoch"] == 3 and resumed["step"] == straight["step"]
    for name, value in arch_state(finished_search / "checkpoints" / "last.pt").items():
        assert torch.equal(arch_state(last)[name], value), name
    for name, value in straight["supernet"].items():
        assert torch.equal(resumed["supernet"][name], value), name
    assert (out / "run.resume-1.json").is_file()


# ------------------------------------------------------------------------------------------- CLI

def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        search_main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--depth", "--data", "--out", "--epochs", "--warmup-epochs", "--steps-per-epoch", "--tile-size",
                 "--crop-size", "--batch-size", "--device", "--resume", "--seed", "--cost-weight", "--channels",
                 "--wandb-mode", "--config", "search_cpu.yaml"):
        assert flag in text
    assert "Default: 22" in text


@pytest.mark.parametrize(("argv", "expected"), [
    (["--tile-size", "100"], "--tile-size 100: expected a multiple of 32"),
    (["--depth", "70"], "--depth 70: expected an integer in 2..64"),
    (["--data", "/nonexistent/dataset"], "--data /nonexistent/dataset: not a prepared dataset"),
])
def test_cli_errors_are_one_line_and_exit_2(argv, expected, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        search_main([*argv, "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err and "Traceback" not in err


@pytest.mark.parametrize("name", ["search_cpu.yaml", "search_paper.yaml"])
def test_experiment_configs_are_valid_recipes(name):
    values = yaml.safe_load((REPO / "experiments" / name).read_text())
    config = SearchConfig(**{k.replace("-", "_"): v for k, v in values.items()}).check()
    assert config.depth == 22 and config.arch_estimator == "pairs"
    if name == "search_paper.yaml":  # the paper's loss and tiles
        assert (config.top_k_fraction, config.class_weighting, config.instance_weighting) == (0.15, "median_frequency",
                                                                                              True)
        assert config.pixels_per_degree is None and config.augment == "paper" and not config.fixed_largest
    else:  # the measured CPU departures (experiments/search_cpu.yaml's comments)
        assert config.pixels_per_degree == 15 and config.crop_size is None
        assert (config.top_k_fraction, config.class_weighting, config.instance_weighting) == (1.0, "uniform", False)
        # all four choices searched (issue 17): widths and residual connections too, the sandwich rule
        assert not config.fixed_largest and config.sandwich == 2 and config.residual_prior == 0.9


def test_cli_runs_a_search_from_a_yaml_config_and_warns_about_depth(tiny_dataset, tmp_path, capsys, caplog):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({"epochs": 1, "warmup_epochs": 0, "steps_per_epoch": 1, "tile_size": 32,
                                   "crop_size": 32, "batch_size": 2, "val_tiles": 1, "num_workers": 0,
                                   "wandb_mode": "disabled"}))
    code = search_main(["--depth", "3", "--config", str(cfg), "--data", str(tiny_dataset),
                        "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert code == 0
    assert "--depth 3 is outside the paper's searched range 16..24" in caplog.text
    assert "genotype" in capsys.readouterr().out
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["config"]["epochs"] == 1 and meta["config"]["depth"] == 3
    assert Genotype.load(tmp_path / "run" / "genotype.json").depth == 3


def test_unit_channels_set_the_supernet_and_genotype_widths(tiny_dataset, tmp_path):
    """--unit-channels reaches the supernet and the exported genotype; resuming with others is refused."""
    out = tmp_path / "units"
    run_dir = run_search(search_config(tiny_dataset, out, unit_channels=(2, 4, 8), epochs=1, warmup_epochs=1))
    genotype = Genotype.load(run_dir / "genotype.json")
    assert genotype.unit_channels == (2, 4, 8)
    widths = [cell.expansion * (2, 4, 8)[{8: 0, 16: 1, 32: 2}[cell.stride]]
              for branch in genotype.branches for cell in branch.cells]
    assert max(widths) <= 8 * 8
    with pytest.raises(UserError, match="--unit-channels"):
        run_search(search_config(tiny_dataset, out, unit_channels=(4, 8, 16), epochs=2, warmup_epochs=1,
                               resume=True))
    with pytest.raises(UserError, match="--unit-channels"):
        search_config(tiny_dataset, out, unit_channels=(4, 8)).check()


def test_batchnorm_recalibration_gives_the_statistics_of_the_derived_architecture():
    # One batch: every BatchNorm the derived architecture reaches holds that batch's mean and (unbiased)
    # variance of its input, whatever it held before; the stem's first BatchNorm is checked by hand.
    torch.manual_seed(0)
    net = build_supernet({"depth": 2, "num_classes": 10, "in_channels": 3, "unit_channels": [2, 2, 2]})
    stem_bn = net.stem.stages[0].bn.bns[str(net.stem.stages[0].conv.out_channels)]
    stem_bn.running_mean.fill_(5.0)
    batch = torch.randn(4, 3, 32, 32)
    recalibrate_batchnorm(net, [batch], lambda x: net(x, mode="argmax"))
    conv = net.stem.stages[0].conv
    z = torch.nn.functional.conv2d(batch, conv.weight, None, conv.stride, conv.padding)
    torch.testing.assert_close(stem_bn.running_mean, z.mean(dim=(0, 2, 3)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stem_bn.running_var, z.var(dim=(0, 2, 3), unbiased=True), atol=1e-4, rtol=1e-4)
    assert stem_bn.momentum == 0.1 and net.training
    with torch.no_grad():
        net.eval()
        first = net(batch, mode="argmax")
        recalibrate_batchnorm(net, [batch], lambda x: net(x, mode="argmax"))
        net.eval()
        second = net(batch, mode="argmax")
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(first, second))


def test_fixed_resolution_search_validates_on_the_region_map(tiny_dataset, tmp_path):
    records = []
    config = search_config(tiny_dataset, tmp_path / "fixed", pixels_per_degree=10.0, crop_size=None,
                           augment="d4", bn_batches=1)
    search = ArchitectureSearch(config, on_epoch_end=lambda epoch, record: records.append(record))
    search.run()
    assert config.crop_size is None and len(records) == 3
    # the warm-up epoch is not validated (its architecture has not been judged); the search epochs are
    assert "val/fwiou" not in records[0]
    for record in records[1:]:
        assert 0.0 <= record["val/fwiou"] <= 1.0 and record["val/loss"] > 0
        assert 0.0 < record["val/commonest_pixel_accuracy"] < 1.0
        assert 0.0 < record["arch/mean_op_probability"] < 1.0


def test_batchnorm_tiles_are_a_seeded_choice_in_batches():
    """Tiles i (each image filled with i) in numpy's seeded permutation, batched; the last batch may be short."""
    dataset = [{"image": torch.full((1, 2, 2), float(i))} for i in range(10)]
    batches = batchnorm_tiles(dataset, seed=3, tiles=5, batch_size=2)
    order = np.random.default_rng(3).permutation(10)[:5]
    assert [b.shape[0] for b in batches] == [2, 2, 1]
    assert torch.cat(batches)[:, 0, 0, 0].tolist() == [float(i) for i in order]
