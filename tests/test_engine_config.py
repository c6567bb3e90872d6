"""Options defined once: the same checks for flags, YAML and Python, shared flags, derived defaults, --help."""

from __future__ import annotations

import argparse
import dataclasses
import re

import pytest

from ggmnet.engine.config import RunConfig, flag
from ggmnet.errors import UserError
from ggmnet.retrain.cli import (
    build_evaluate_parser,
    build_predict_parser,
    build_retrain_parser,
    evaluate_main,
)
from ggmnet.retrain.train import RetrainConfig
from ggmnet.search.cli import build_search_parser
from ggmnet.search.search import SearchConfig

STAGES = [(SearchConfig, build_search_parser), (RetrainConfig, build_retrain_parser)]


def helps(parser) -> dict[str, str]:
    """Each flag's help text as ``--help`` prints it, up to its default (one line per flag)."""
    parser.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=10_000, max_help_position=10_000)
    entries = [line.strip() for line in parser.format_help().splitlines() if line.startswith("  --")]
    return {entry.split()[0].rstrip(","): re.split(r"\s{2,}", entry, maxsplit=1)[1].split(" Default: ")[0].removesuffix(" Required.")
            for entry in entries}


@pytest.mark.parametrize(("values", "message"), [
    ({"channels": "rgb"}, "--channels rgb: expected pseudocolour or physical"),
    ({"tile_size": "big"}, "--tile-size big: expected a positive integer"),
    ({"val_tiles": -1}, "--val-tiles -1: expected a positive integer (or none)"),
    ({"amp": "maybe"}, "--amp maybe: expected true or false"),
    ({"device": "gpu"}, "--device gpu: expected auto, cpu, cuda or cuda:N"),
    ({"wandb_mode": "loud"}, "--wandb-mode loud: expected online, offline or disabled (or none)"),
    ({"augment": "rotate"}, "--augment rotate: expected paper, d4 or none"),
    ({"pixels_per_degree": 0}, "--pixels-per-degree 0: expected a positive number (or none)"),
])
@pytest.mark.parametrize(("config_class", "build_parser"), STAGES)
def test_flags_yaml_and_python_values_pass_the_same_checks(values, message, config_class, build_parser, tmp_path):
    (name, value), = values.items()
    extra = {"genotype": "g.json"} if config_class is RetrainConfig else {}
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("".join(f"{k}: {v}\n" for k, v in {**values, **extra}.items()))
    flags = [text for k, v in {**values, **extra}.items() for text in (flag(k), str(v))]
    attempts = [lambda: config_class(**values, **extra).check(),
                lambda: config_class.from_argv(build_parser(), ["--config", str(yaml_file)]),
                lambda: config_class.from_argv(build_parser(), flags)]
    for attempt in attempts[:2] if name == "amp" else attempts:  # --amp/--no-amp is a switch: no value to check
        with pytest.raises(UserError) as err:
            attempt()
        assert str(err.value) == message


def test_defaults_then_yaml_then_flags(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("epochs: 7\nbatch-size: 3\nunit_channels: [4, 8, 16]\namp: false\n")
    config = SearchConfig.from_argv(build_search_parser(), ["--config", str(yaml_file), "--batch-size", "5"])
    assert (config.epochs, config.batch_size, config.unit_channels, config.amp) == (7, 5, (4, 8, 16), False)
    assert config.depth == 22 and config.seed == 0
    yaml_file.write_text("epoch: 7\n")
    with pytest.raises(UserError, match=r"--config .*c.yaml: unknown option\(s\) epoch$"):
        SearchConfig.from_argv(build_search_parser(), ["--config", str(yaml_file)])


def test_shared_options_are_one_definition_in_every_command():
    """Every RunConfig option is a flag of both stages with the same help; evaluate and predict share theirs."""
    search, retrain = helps(build_search_parser()), helps(build_retrain_parser())
    shared = [flag(f.name) for f in dataclasses.fields(RunConfig)]
    assert {"--data", "--out", "--device", "--resume", "--seed", "--amp", "--wandb-mode", "--tile-size",
            "--crop-size", "--batch-size", "--val-tiles", "--steps-per-epoch"} <= set(shared)
    for name in [*shared, "--epochs", "--num-workers"]:
        assert search[name] == retrain[name], name
    evaluate, predict = helps(build_evaluate_parser()), helps(build_predict_parser())
    for name in ("--data", "--device", "--tile-size", "--batch-size"):
        assert evaluate[name] == search[name], name
    for name in ("--out", "--device", "--tile-size", "--batch-size"):
        assert predict[name] == search[name], name
    for parser in (build_search_parser(), build_retrain_parser()):
        assert "--amp, --no-amp" in parser.format_help() and "--config FILE.yaml" in parser.format_help()


@pytest.mark.parametrize(("config_class", "build_parser"), STAGES)
def test_help_gives_every_option_and_its_default(config_class, build_parser):
    text = re.sub(r"\s+", " ", build_parser().format_help())
    for field in dataclasses.fields(config_class):
        assert flag(field.name) in text, field.name
    assert "--crop-size PX side of the random training crop" in text
    assert "Default: min(1024, --tile-size), none with --pixels-per-degree." in text
    assert "--tile-size PX side of the square tiles the network sees, pixels. Default: 2048." in text


def test_dependent_defaults_follow_the_flags_given_and_explicit_values_are_still_checked():
    config = SearchConfig.from_argv(build_search_parser(), ["--depth", "22", "--epochs", "2", "--tile-size", "64"])
    assert (config.warmup_epochs, config.crop_size) == (1, 64)
    assert config.derived_line() == ("--crop-size 64 (min(1024, --tile-size), none with --pixels-per-degree), "
                                     "--warmup-epochs 1 (40% of --epochs, rounded), --min-real-cells 0 (half of "
                                     "--depth with --cost-target, else 0)")
    targeted = SearchConfig.from_argv(build_search_parser(), ["--depth", "21", "--cost-target", "0.5"])
    assert targeted.min_real_cells == 11 and targeted.cost_target == 0.5
    paper = SearchConfig().check()
    assert (paper.warmup_epochs, paper.crop_size, paper.epochs, paper.tile_size) == (20, 1024, 50, 2048)
    retrain = RetrainConfig(genotype="g.json", tile_size=64, epochs=2).check()
    assert retrain.crop_size == 64 and RetrainConfig(genotype="g.json").check().crop_size == 1024
    with pytest.raises(UserError, match=r"^--warmup-epochs 3: expected an integer in 0..--epochs \(2\)$"):
        SearchConfig(epochs=2, warmup_epochs=3).check()
    with pytest.raises(UserError, match=r"^--crop-size 128: expected a multiple of 32 pixels in 32..--tile-size \(64\)"):
        SearchConfig(tile_size=64, crop_size=128).check()
    with pytest.raises(UserError, match=r"^--crop-size 128: expected an integer in 16..--tile-size \(64\)"):
        RetrainConfig(genotype="g.json", tile_size=64, crop_size=128).check()
    assert SearchConfig(tile_size=64, crop_size=None).check().crop_size is None  # none: whole tiles
    # Fixed-resolution tiles are sampled whole: the crop follows, and a crop given with them is refused.
    assert RetrainConfig(genotype="g.json", tile_size=128, pixels_per_degree=15).check().crop_size is None
    with pytest.raises(UserError, match=r"^--crop-size 64 and --pixels-per-degree 15: .*--crop-size none$"):
        SearchConfig(tile_size=128, crop_size=64, pixels_per_degree=15).check()


def test_a_missing_required_option_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main(["--split", "test"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.endswith("error: --checkpoint is required")


def test_num_workers_default_is_the_cores_available_at_most_four(monkeypatch):
    """On a 2-core machine 4 loader workers only compete with the training step (PyTorch warns): the default
    is the cores this process may use, at most 4 (the search's two loaders: at most 2 each)."""
    import os

    from ggmnet.engine import config as config_module

    cores = len(os.sched_getaffinity(0))
    assert config_module.available_cpus() == cores
    assert RetrainConfig(genotype="g.json").num_workers == min(4, cores)
    assert SearchConfig().num_workers == min(2, cores)
    for count, expected in ((1, 1), (2, 2), (3, 3), (64, 4)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=count: set(range(n)))
        assert config_module.num_workers_field(4).default == expected
    text = build_retrain_parser().format_help()
    assert "at most 4" in " ".join(text.split())


def test_a_recipe_names_its_base_and_changes_only_what_differs(tmp_path):
    (tmp_path / "base.yaml").write_text("epochs: 10\nlr: 0.001\nbatch_size: 8\n")
    (tmp_path / "middle.yaml").write_text("base: base.yaml\nepochs: 80\n")
    (tmp_path / "top.yaml").write_text("base: middle.yaml\nbatch-size: 4\n")
    config = RetrainConfig.from_argv(build_retrain_parser(), ["--config", str(tmp_path / "top.yaml"),
                                                              "--genotype", "g.json", "--lr", "0.01"])
    assert (config.epochs, config.lr, config.batch_size) == (80, 0.01, 4)  # base < middle < top < flags


@pytest.mark.parametrize(("text", "message"), [
    ("base: missing.yaml\n", "missing.yaml: no such file"),
    ("base: loop.yaml\n", "its bases name it again"),
    ("base: 3\n", "base 3: expected the file name of a base recipe"),
])
def test_a_bad_base_recipe_is_one_line_naming_the_file(tmp_path, text, message):
    (tmp_path / "loop.yaml").write_text(text)
    with pytest.raises(UserError, match=re.escape(message)):
        RetrainConfig.from_argv(build_retrain_parser(), ["--config", str(tmp_path / "loop.yaml"), "--genotype", "g"])
