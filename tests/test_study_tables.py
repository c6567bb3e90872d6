"""The studies' tables (the fair test of the search, the Pareto table) from hand-made results, values by hand."""

from __future__ import annotations

import pytest

from ggmnet.studies.fair_search import table as fair_table
from ggmnet.studies.pareto import table as pareto_table


def test_the_fair_test_table_sets_the_search_beside_random_and_null():
    result = {"scene_seed": 2, "rows": [{"genotype": "searched", "fwiou": 0.277}, {"genotype": "searched", "fwiou": 0.28},
                                        {"genotype": "random1", "fwiou": 0.25}],
              "mean_fwiou": {"searched": 0.2785, "random1": 0.251, "random2": 0.270, "null": 0.271},
              "mean_mpa": {"searched": 0.314, "random1": 0.30, "random2": 0.316, "null": 0.31},
              "random_mean": 0.2605, "random_sd": 0.0134, "margin_in_sd": 1.34,
              "kendall": {"tau": -0.18, "p_value": 0.72, "genotypes": ["searched", "random1", "random2", "null"]}}
    lines = fair_table([result]).splitlines()
    assert lines[0].startswith("| scene | searched: FWIoU (seeds) | MPA | random: FWIoU mean +- SD (range), n |")
    assert lines[1] == "|" + "---|" * 8
    # random MPA: mean of 0.30 and 0.316 = 30.8
    assert lines[2] == "| 2 | 27.9 (27.7, 28.0) | 31.4 | 26.1 +- 1.3 (25.1-27.0), 2 | 30.8 | 27.1 | +1.3 | -0.18 (p 0.72; 4) |"


def test_an_unfinished_fair_test_is_tabulated_from_its_finished_runs(tmp_path):
    import json

    from ggmnet.studies.fair_search import finished_rows, summarise

    runs = {"searched-seed0": (0.20, 0.25), "searched-seed1": (0.22, 0.27), "null-seed0": (0.215, 0.26),
            "random1-seed0": (0.18, 0.2), "random1-seed1": (0.20, 0.22), "random2-seed0": (0.19, 0.24),
            "random10-seed0": (0.16, 0.2)}
    for name, (fwiou, mpa) in runs.items():
        (tmp_path / "runs" / name / "eval").mkdir(parents=True)
        (tmp_path / "runs" / name / "eval" / "evaluation_val.json").write_text(
            json.dumps({"outcrop": {"fwiou": fwiou, "mpa": mpa}}))
    (tmp_path / "runs" / "random3-seed0").mkdir()  # still training: no evaluation yet
    rows = finished_rows(tmp_path)
    assert [(r["genotype"], r["seed"]) for r in rows] == [("searched", 0), ("searched", 1), ("null", 0), ("random1", 0),
                                                          ("random1", 1), ("random2", 0), ("random10", 0)]
    result = summarise(1, rows)
    # random means 0.19, 0.19, 0.16: mean 0.18, SD sqrt(((0.01)^2 * 2 + 0.02^2) / 2) = 0.01732
    assert result["random_mean"] == pytest.approx(0.18) and result["random_sd"] == pytest.approx(0.017320508)
    assert result["margin_in_sd"] == pytest.approx((0.21 - 0.18) / 0.017320508)  # searched mean 0.21: +1.73 SD
    assert result["beats_random_by_2sd"] is False and result["beats_null"] is False and result["kendall"] is None
    line = fair_table([result]).splitlines()[2]  # random MPA: (0.21 + 0.24 + 0.20) / 3
    assert line == "| 1 | 21.0 (20.0, 22.0) | 26.0 | 18.0 +- 1.7 (16.0-19.0), 3 | 21.7 | 21.5 | +1.7 | -- |"


def test_the_pareto_table_runs_from_the_fastest_network():
    result = {"networks": {
        "ggmnet-50": {"cost_target": 0.5, "mrfem_gmac": 1.234, "parameters_m": 0.84, "gflops": 61.3, "seconds": 2.5,
                      "fwiou": 0.2, "fwiou_seeds": [0.19, 0.21], "mpa": 0.27},
        "unet": {"parameters_m": 14.33, "gflops": 11.0, "seconds": 1.25, "fwiou": 0.165, "fwiou_seeds": [0.165],
                 "mpa": 0.197},
        "ggmnet-1.5": {"cost_target": 0.015, "mrfem_gmac": 0.43, "parameters_m": 0.22, "gflops": 33.1, "seconds": 3.0,
                       "fwiou": 0.204, "fwiou_seeds": [0.196, 0.212], "mpa": 0.241}}}
    lines = pareto_table(result).splitlines()
    assert len(lines) == 5
    assert lines[2] == "| unet | -- | -- | 14.33 | 11.0 | 1.25 | 16.5 (16.5) | 19.7 |"
    assert lines[3] == "| ggmnet-50 | 50 % | 1.23 | 0.84 | 61.3 | 2.50 | 20.0 (19.0, 21.0) | 27.0 |"
    # a target that is not a whole percent keeps its decimal (0.015 read "2 %")
    assert lines[4] == "| ggmnet-1.5 | 1.5 % | 0.43 | 0.22 | 33.1 | 3.00 | 20.4 (19.6, 21.2) | 24.1 |"


def test_the_outcrop_table_sets_the_outcrop_reader_beside_the_rules(tmp_path, capsys):
    import json

    from ggmnet.studies.outcrop_table import main

    def acc(value):
        return {"pixel_accuracy": value}

    scene = tmp_path / "s3"
    (scene / "raw").mkdir(parents=True)
    (scene / "raw" / "synth.json").write_text(json.dumps({"config": {"seed": 3, "unit_scale": 4.0}}))
    evaluations = {
        ("gravity", "test"): {"under_cover": acc(0.391), "outcrop_prior_under_cover": acc(0.429)},
        ("gravity", "val"): {"outcrop_prior_hidden": acc(0.558)},
        ("outcrop", "test"): {"under_cover": acc(0.555), "outcrop_prior_under_cover": acc(0.60),
                              "nearest_outcrop_baseline": acc(0.55), "commonest_class_under_cover": acc(0.183),
                              "calibration": {"under_cover": {"raw": {"ece": 0.081},
                                                              "calibrated": {"ece": 0.045, "entropy_error_auroc": 0.731}}}},
        ("outcrop", "val"): {"hidden_outcrop": acc(0.619), "outcrop_prior_hidden": acc(0.65),
                             "nearest_outcrop_hidden": acc(0.55)},
    }
    for (kind, split), data in evaluations.items():
        (scene / f"eval-{kind}").mkdir(exist_ok=True)
        (scene / f"eval-{kind}" / f"evaluation_{split}.json").write_text(json.dumps(data))
    assert main([str(scene)]) == 0
    row = capsys.readouterr().out.splitlines()[2]
    # reading + prior 60.0 against nearest 55.0 (+5.0) and gravity + prior 42.9 (+17.1)
    assert row == ("| seed 3, units x4 | 39.1 | 42.9 | 55.5 | 60.0 | 18.3 | 55.0 | +5.0 / +17.1 | 61.9 | 65.0 | 55.8 | "
                   "55.0 | 8.1 -> 4.5 | 0.73 |")
    # a second training seed: means, each seed's value where they differ (the rules read no network: one value)
    evaluations[("outcrop", "test")] = {**evaluations[("outcrop", "test")], "under_cover": acc(0.565),
                                        "outcrop_prior_under_cover": acc(0.58)}
    for (kind, split), data in evaluations.items():
        (scene / f"eval-{kind}-seed1").mkdir(exist_ok=True)
        (scene / f"eval-{kind}-seed1" / f"evaluation_{split}.json").write_text(json.dumps(data))
    assert main([str(scene)]) == 0
    row = capsys.readouterr().out.splitlines()[2]
    assert row.startswith("| seed 3, units x4 | 39.1 | 42.9 | 56.0 (55.5, 56.5) | 59.0 (60.0, 58.0) | 18.3 | 55.0 | "
                          "+4.0 (+5.0, +3.0) / +16.1 (+17.1, +15.1) |")
    # another reader (--reader outcrop-bedrock: eval-outcrop-bedrock) beside the same gravity network; its seed 1
    # is not evaluated, so the row is seed 0's alone (gravity's seed 0 too)
    (scene / "eval-outcrop-bedrock").mkdir()
    for split in ("test", "val"):
        data = {**evaluations[("outcrop", split)], **({"outcrop_prior_under_cover": acc(0.50)} if split == "test" else {})}
        (scene / "eval-outcrop-bedrock" / f"evaluation_{split}.json").write_text(json.dumps(data))
    assert main(["--reader", "outcrop-bedrock", str(scene)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2].startswith("| seed 3, units x4 | 39.1 | 42.9 | 56.5 | 50.0 | 18.3 | 55.0 | -5.0 / +7.1 |")
    assert len(out) == 3  # the averaging table is the ordinary reader's only
    with pytest.raises(SystemExit, match="--reader: expected"):
        main(["--reader"])


def test_the_averaging_table_sets_averaged_readers_beside_one_network(tmp_path, capsys):
    import json

    from ggmnet.studies.outcrop_table import averaging_row

    def evaluation(cover, prior, ece_raw, ece_cal, auroc):
        return {"under_cover": {"pixel_accuracy": cover}, "outcrop_prior_under_cover": {"pixel_accuracy": prior},
                "calibration": {"under_cover": {"raw": {"ece": ece_raw, "entropy_error_auroc": auroc},
                                                "calibrated": {"ece": ece_cal}}}}

    scene = tmp_path / "s1"
    written = {"outcrop": evaluation(0.30, 0.35, 0.10, 0.11, 0.60), "outcrop-seed1": evaluation(0.32, 0.36, 0.04, 0.06, 0.62),
               "gravity-seed1": {}, "outcrop-members": evaluation(0.317, 0.357, 0.057, 0.085, 0.608)}
    for name, data in written.items():
        (scene / f"eval-{name}").mkdir(parents=True)
        (scene / f"eval-{name}" / "evaluation_test.json").write_text(json.dumps(data))
    assert averaging_row(tmp_path / "nothing") is None
    # one network: the seeds' means (31.0, 35.5, ECE 7.0 and 8.5, AUROC 0.61); 8 views and both: not evaluated
    assert averaging_row(scene) == ["seed ?", "31.0 / -- / 31.7 / --", "35.5 / -- / 35.7 / --", "7.0 / -- / 5.7 / --",
                                    "8.5 / -- / 8.5 / --", "0.61 / -- / 0.61 / --"]


def test_the_search_is_set_against_the_null_search_seed_by_seed():
    """A one-sided Welch test over the training seeds: searched 20, 22, 23 % against null 21, 21.5, 19 %."""
    import math

    from scipy.stats import t as student_t

    from ggmnet.studies.fair_search import summarise

    searched, null = [0.20, 0.22, 0.23], [0.21, 0.215, 0.19]
    rows = ([{"genotype": "searched", "seed": s, "fwiou": v, "mpa": 0.3} for s, v in enumerate(searched)]
            + [{"genotype": "null", "seed": s, "fwiou": v, "mpa": 0.3} for s, v in enumerate(null)]
            + [{"genotype": "random1", "seed": 0, "fwiou": 0.2, "mpa": 0.3}])
    result = summarise(1, rows)
    # by hand: means 0.21667 and 0.205; sample variances 2.3333e-4 and 1.75e-4; n = 3 each
    va, vb = 2.3333333e-4 / 3, 1.75e-4 / 3
    t = (0.2166667 - 0.205) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
    assert result["null_p_value"] == pytest.approx(student_t.sf(t, df), rel=1e-4)
    assert 0.1 < result["null_p_value"] < 0.3  # a 1.2-point lead over three seeds each: not significant
    line = fair_table([result]).splitlines()[2]
    assert f"| 20.5 (p {result['null_p_value']:.2f}) |" in line
    # one null seed: no test
    assert summarise(1, rows[:4])["null_p_value"] is None


def test_the_table_counts_seeds_trained_after_the_test(tmp_path):
    """Runs added after fair_search.json was written (more training seeds) enter the table; the supernet's stored
    scores give Kendall's tau against the new means."""
    import json

    from ggmnet.studies.fair_search import rescored

    runs = {"searched-seed0": 0.20, "searched-seed1": 0.22, "searched-seed3": 0.24, "null-seed0": 0.21,
            "random1-seed0": 0.18, "random2-seed0": 0.19}
    for name, fwiou in runs.items():
        (tmp_path / "runs" / name / "eval").mkdir(parents=True)
        (tmp_path / "runs" / name / "eval" / "evaluation_val.json").write_text(
            json.dumps({"outcrop": {"fwiou": fwiou, "mpa": 0.3}}))
    stored = {"scene_seed": 1, "cost": {"searched": 5.0}, "mean_fwiou": {"searched": 0.21},
              "kendall": {"genotypes": ["searched", "random1", "random2"], "supernet_fwiou": [0.09, 0.11, 0.10],
                          "retrained_fwiou": [0.21, 0.18, 0.19], "tau": -1.0, "p_value": 0.33}}
    (tmp_path / "fair_search.json").write_text(json.dumps(stored))
    result = rescored(1, tmp_path)
    assert result["mean_fwiou"]["searched"] == pytest.approx(0.22) and result["train_seeds"] == [0, 1, 3]
    assert result["cost"] == {"searched": 5.0}  # kept from the stored test
    # supernet 0.09, 0.11, 0.10 against retrained 0.22, 0.18, 0.19: every pair discordant
    assert result["kendall"]["retrained_fwiou"] == pytest.approx([0.22, 0.18, 0.19])
    assert result["kendall"]["tau"] == pytest.approx(-1.0)
    (tmp_path / "fair_search.json").unlink()
    assert rescored(1, tmp_path)["kendall"] is None  # an unfinished test: its runs so far, no tau


def test_more_search_seeds_set_the_searches_against_the_null_searches(tmp_path):
    """Two search seeds: searched genotypes at 21 and 23 % (training-seed means), null ones at 20 and 21 %, random
    19, 21 and 20 % (mean 20, SD 1): the searched mean 22 is 2 SD above random; Welch over the search seeds."""
    import json
    import math

    from scipy.stats import t as student_t

    from ggmnet.studies.fair_search import finished_rows, search_seed_table, summarise

    runs = {"searched-seed0": 0.20, "searched-seed1": 0.22, "searched-s1-seed0": 0.23, "null-seed0": 0.20,
            "null-s1-seed0": 0.21, "random1-seed0": 0.19, "random2-seed0": 0.21, "random10-seed0": 0.20}
    for name, fwiou in runs.items():
        (tmp_path / "runs" / name / "eval").mkdir(parents=True)
        (tmp_path / "runs" / name / "eval" / "evaluation_val.json").write_text(
            json.dumps({"outcrop": {"fwiou": fwiou, "mpa": 0.3}}))
    rows = finished_rows(tmp_path)
    # the searches by seed, then the null searches, then the random genotypes by number (10 after 2)
    assert [(r["genotype"], r["seed"]) for r in rows] == [
        ("searched", 0), ("searched", 1), ("searched-s1", 0), ("null", 0), ("null-s1", 0), ("random1", 0),
        ("random2", 0), ("random10", 0)]
    result = summarise(1, rows)
    seeds = result["over_search_seeds"]
    assert seeds["searched"] == pytest.approx([0.21, 0.23]) and seeds["null"] == pytest.approx([0.20, 0.21])
    assert seeds["searched_mean"] == pytest.approx(0.22) and seeds["null_mean"] == pytest.approx(0.205)
    assert result["random_mean"] == pytest.approx(0.20) and result["random_sd"] == pytest.approx(0.01)
    assert seeds["margin_in_sd"] == pytest.approx(2.0)
    # Welch by hand: variances 2e-4 and 5e-5 over n = 2 each
    va, vb = 2e-4 / 2, 5e-5 / 2
    t = 0.015 / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 + vb ** 2)
    assert seeds["null_p_value"] == pytest.approx(student_t.sf(t, df), rel=1e-4)
    line = search_seed_table([result]).splitlines()[2]
    assert line == (f"| 1 | first: 21.0, 1: 23.0 | first: 20.0, 1: 21.0 | 22.0 / 20.5 | +2.0 | "
                    f"{seeds['null_p_value']:.2f} |")
    # one search seed: no such figures, no table
    assert summarise(1, [r for r in rows if "-s1" not in r["genotype"]])["over_search_seeds"] is None
    assert search_seed_table([summarise(1, rows[:2])]) == ""
