"""The demo's summary (:mod:`ggmnet.studies.demo_summary`): the lines it prints from hand-made evaluations."""

from __future__ import annotations

import json

from ggmnet.studies.demo_summary import summary


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _scores(pa, mpa=None, fwiou=None):
    return {"pixel_accuracy": pa, "mpa": mpa, "fwiou": fwiou}


def test_the_summary_prints_each_evaluation_beside_its_rules(tmp_path):
    _write(tmp_path / "eval-random" / "evaluation_val.json",
           {"outcrop": _scores(0.6, 0.5, 0.368), "commonest_class": _scores(0.3, 0.1, 0.06)})
    _write(tmp_path / "eval-spatial-block" / "evaluation_val.json",
           {"outcrop": _scores(0.4, 0.3, 0.2), "commonest_class": _scores(0.3, 0.1, 0.05)})
    _write(tmp_path / "eval-spatial-block" / "evaluation_test.json",
           {"under_cover": _scores(0.295), "commonest_class_under_cover": _scores(0.28),
            "nearest_outcrop_baseline": _scores(0.305), "outcrop_prior_under_cover": _scores(0.335)})
    _write(tmp_path / "eval-outcrop" / "evaluation_test.json",
           {"under_cover": _scores(0.31), "outcrop_prior_under_cover": _scores(0.361), "calibration": {"temperature": 1.5, "under_cover": {
               "raw": {"ece": 0.095}, "calibrated": {"ece": 0.105, "entropy_error_auroc": 0.654}}}})
    _write(tmp_path / "eval-outcrop-averaged" / "evaluation_test.json",
           {"members": [{"checkpoint": "a.pt"}, {"checkpoint": "b.pt"}], "tta": True,
            "under_cover": _scores(0.323), "outcrop_prior_under_cover": _scores(0.372), "calibration": {"under_cover": {
               "raw": {"ece": 0.041, "entropy_error_auroc": 0.667}, "calibrated": {"ece": 0.2, "entropy_error_auroc": 0.5}}}})
    _write(tmp_path / "eval-spatial-block" / "cover_depth.json",
           {"rows": [{"bin": "0-1 km", "under_cover": 0.5, "outcrop_prior_under_cover": None,
                      "commonest_class_under_cover": 0.25, "nearest_outcrop_baseline": 0.75}]})
    lines: list[str] = []
    summary(tmp_path, start=0.0, say=lines.append)
    assert lines[0].startswith("paper's random split, val outcrop:   MPA 50.0%  FWIoU 36.8%  pixel acc 60.0%")
    assert "(commonest class: FWIoU 6.0%; its val windows overlap" in lines[0]
    assert lines[1].endswith("(commonest class: FWIoU 5.0%, 4.0x less)")  # 0.2 / 0.05
    assert lines[2] == ("under the cover, test windows:       pixel acc 29.5% from gravity, 33.5% with the outcrop "
                        "prior, 31.0% reading the outcrop, 36.1% reading it with the prior   (commonest class 28.0%, "
                        "nearest outcrop 30.5%)")
    # the margins by which the outcrop reader, read with the prior, passes the two rules: 36.1 - 30.5, 36.1 - 33.5
    assert lines[3] == ("  reading it with the prior passes the nearest outcrop by +5.6 points and gravity with the prior "
                        "by +2.6")
    assert lines[4] == ("  its probabilities under the cover: ECE 9.5%, 10.5% at temperature 1.50 (fitted on hidden "
                        "val outcrop); entropy ranks its errors with AUROC 0.65")
    # two seeds x eight views: the raw probabilities' ECE and AUROC (the fitted temperature does not carry to the cover)
    assert lines[5] == ("  averaged over 2 seeds x 8 views: 32.3% reading the outcrop, 37.2% with the prior (+6.7, "
                        "+3.7); ECE 4.1%, entropy AUROC 0.67")
    assert lines[6] == "  by cover thickness (gravity, with prior; commonest, nearest): 0-1 km 50.0%, n/a (25.0%, 75.0%)"
    assert lines[7] == f"genotype: {tmp_path / 'genotype.json'}"


def test_steps_that_did_not_run_are_left_out(tmp_path):
    lines: list[str] = []
    summary(tmp_path, start=0.0, say=lines.append)
    assert [line.split(":")[0] for line in lines] == ["genotype", "map", "netCDF", "overview", "elapsed"]
