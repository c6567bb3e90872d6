"""The studies' tables (the fair test of the search, the Pareto table) from hand-made results, values by hand."""

from __future__ import annotations

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


def test_the_pareto_table_runs_from_the_fastest_network():
    result = {"networks": {
        "ggmnet-50": {"cost_target": 0.5, "mrfem_gmac": 1.234, "parameters_m": 0.84, "gflops": 61.3, "seconds": 2.5,
                      "fwiou": 0.2, "fwiou_seeds": [0.19, 0.21], "mpa": 0.27},
        "unet": {"parameters_m": 14.33, "gflops": 11.0, "seconds": 1.25, "fwiou": 0.165, "fwiou_seeds": [0.165],
                 "mpa": 0.197}}}
    lines = pareto_table(result).splitlines()
    assert len(lines) == 4
    assert lines[2] == "| unet | -- | -- | 14.33 | 11.0 | 1.25 | 16.5 (16.5) | 19.7 |"
    assert lines[3] == "| ggmnet-50 | 50 % | 1.23 | 0.84 | 61.3 | 2.50 | 20.0 (19.0, 21.0) | 27.0 |"
