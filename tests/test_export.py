"""nas-export: the genotype of a search run, written atomically, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_data import DEPTH

from ggmnet.search.cli import export_main
from ggmnet.search.export import genotype_from_checkpoint
from ggmnet.search_space.genotype import Genotype, default_genotype


def run_export(argv, capsys):
    """``nas-export argv`` -> (exit code, stdout, stderr)."""
    try:
        code = export_main(argv)
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def peaked_search(tiny_dataset, tmp_path_factory) -> Path:
    """A tiny search whose validation score peaks at epoch 2 of 3, so that its choice is not its last epoch."""
    from tiny_data import search_config

    from ggmnet.search.search import ArchitectureSearch, run_search

    def validate(self):
        if not self.searching:
            return {"search_fwiou": None}
        fwiou = {2: 0.5, 3: 0.2}[self.global_step // self.steps_per_epoch]
        return {"fwiou": fwiou, "mpa": fwiou, "search_fwiou": fwiou}

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ArchitectureSearch, "validate", validate)
        return run_search(search_config(tiny_dataset, tmp_path_factory.mktemp("peaked") / "run"))


def test_export_writes_the_searchs_choice_and_prints_its_summary(peaked_search, tmp_path, capsys):
    """``--run`` exports the search's choice, ``best.pt`` (the epoch of best validation FWIoU), not the last
    epoch; ``--checkpoint last.pt`` exports the last (the first fails on the old code, which exported last.pt)."""
    finished_search = peaked_search
    best_epoch = torch.load(finished_search / "checkpoints" / "best.pt", weights_only=True)["epoch"]
    assert best_epoch == 2
    assert Genotype.load(finished_search / "genotype.json") != Genotype.load(finished_search / "genotype_best.json")
    out = tmp_path / "genotype.json"
    code, stdout, _ = run_export([str(out), "--run", str(finished_search)], capsys)
    assert code == 0
    exported = Genotype.load(out)
    assert exported == Genotype.load(finished_search / "genotype_best.json")
    assert exported.provenance["epoch"] == best_epoch
    assert exported.summary().splitlines()[0] in stdout and f"wrote {out}" in stdout
    assert json.loads((tmp_path / "genotype.run.json").read_text())["config"]["run"] == str(finished_search)

    # the same genotype again: nothing to do
    code, stdout, _ = run_export([str(out), "--checkpoint", str(finished_search / "checkpoints" / "best.pt")],
                                 capsys)
    assert code == 0 and f"unchanged {out}" in stdout

    last = tmp_path / "last.json"
    code, _, _ = run_export([str(last), "--checkpoint", str(finished_search / "checkpoints" / "last.pt")], capsys)
    assert code == 0 and Genotype.load(last) == Genotype.load(finished_search / "genotype.json")
    assert Genotype.load(last).provenance["epoch"] == 3


def test_export_refuses_to_overwrite_a_different_genotype_without_force(finished_search, tmp_path,
                                                                       capsys):
    out = tmp_path / "genotype.json"
    other = default_genotype(DEPTH)
    other.save(out)
    code, _, err = run_export([str(out), "--run", str(finished_search)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--force" in err
    assert Genotype.load(out) == other
    code, _, _ = run_export([str(out), "--run", str(finished_search), "--force"], capsys)
    assert code == 0 and Genotype.load(out) == Genotype.load(finished_search / "genotype_best.json")


def test_export_from_best_checkpoint_matches_the_best_genotype(finished_search):
    genotype = genotype_from_checkpoint(finished_search / "checkpoints" / "best.pt")
    assert genotype == Genotype.load(finished_search / "genotype_best.json")


def _truncated(path, tmp_path):
    data = path.read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(data[: len(data) // 2])
    return bad


@pytest.mark.parametrize(("case", "expected"), [
    ("missing run", "no checkpoints/best.pt or last.pt"),
    ("missing checkpoint", "no such file"),
    ("truncated checkpoint", "not a readable ggmnet checkpoint"),
    ("garbage checkpoint", "not a readable ggmnet checkpoint"),
    ("retrain checkpoint", "not a ggmnet search checkpoint"),
    ("wrong supernet state", "the supernet state does not load"),
])
def test_export_errors_are_one_line_and_exit_2(case, expected, finished_search, tmp_path, capsys):
    last = finished_search / "checkpoints" / "last.pt"
    if case == "missing run":
        argv = ["--run", str(tmp_path / "nothing")]
    elif case == "missing checkpoint":
        argv = ["--checkpoint", str(tmp_path / "nothing.pt")]
    elif case == "truncated checkpoint":
        argv = ["--checkpoint", str(_truncated(last, tmp_path))]
    elif case == "garbage checkpoint":
        (tmp_path / "garbage.pt").write_text("not a checkpoint\n")
        argv = ["--checkpoint", str(tmp_path / "garbage.pt")]
    else:
        state = torch.load(last, map_location="cpu", weights_only=True)
        if case == "retrain checkpoint":
            state["format"] = "ggmnet-checkpoint"
        else:
            state["supernet_config"]["depth"] = 5
        torch.save(state, tmp_path / "other.pt")
        argv = ["--checkpoint", str(tmp_path / "other.pt")]
    out = tmp_path / "genotype.json"
    code, _, err = run_export([str(out), *argv], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and expected in err and "Traceback" not in err
    assert not out.exists()


def test_export_defaults_to_the_newest_run_under_runs_search(finished_search, tmp_path, monkeypatch,
                                                             capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_export(["genotype.json"], capsys)
    assert code == 2 and "no search run under runs/search" in err and len(err.strip().splitlines()) == 1
    runs = tmp_path / "runs" / "search"
    runs.mkdir(parents=True)
    (runs / "depth2-20260101-000000").mkdir()  # older and empty: not chosen
    (runs / "depth2-20260102-000000").symlink_to(finished_search, target_is_directory=True)
    code, stdout, _ = run_export(["genotype.json"], capsys)
    assert code == 0 and "depth2-20260102-000000" in stdout
    assert Genotype.load(tmp_path / "genotype.json") == Genotype.load(finished_search / "genotype_best.json")
