"""The cover-thickness study (:mod:`ggmnet.studies.cover_depth`): under-cover accuracy per cover-thickness bin, checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from ggmnet.datasets.windows import Window


@pytest.fixture(scope="module")
def cover_depth():
    from ggmnet.studies import cover_depth

    return cover_depth


def test_scores_by_thickness_by_hand(cover_depth):
    lon = np.arange(4.0)
    lat = np.arange(2.0)
    # row 0: outcrop of class 1 at x = 0, then cover 0.1, 0.5, 3 km thick; row 1: all cover, 0.2, 1.5, 2.5, 4 km
    label = np.array([[1, 255, 255, 255], [255, 255, 255, 255]], dtype=np.uint8)
    thickness = np.array([[0.0, 0.1, 0.5, 3.0], [0.2, 1.5, 2.5, 4.0]])
    bedrock = np.array([[1, 1, 2, 3], [1, 2, 3, 3]], dtype=np.uint8)
    classes = np.array([[1, 1, 2, 1], [0, 2, 3, 1]])
    window = Window(0, 3.0, 0.0, 3.0, 0.0, 1.0)
    rows = cover_depth.scores_by_thickness(classes, label, bedrock, thickness, lon, lat, [window], commonest=3,
                                           bins_km=[0.0, 1.0, 2.0])
    # bin 0-1 km: (0,1) 0.1 km bedrock 1 pred 1 ok; (0,2) 0.5 km 2 pred 2 ok; (1,0) 0.2 km 1 pred 0 wrong -> 2/3
    #   commonest (3): 0/3; nearest outcrop (the class-1 node at x = 0 everywhere): 1, 1 right, 2 wrong -> 2/3
    # bin 1-2 km: (1,1) 1.5 km bedrock 2 pred 2 -> 1/1; commonest 0/1; nearest 1 -> 0/1
    # bin >= 2 km: (0,3) 3 km 3 pred 1; (1,2) 2.5 km 3 pred 3; (1,3) 4 km 3 pred 1 -> 1/3; commonest 3/3; nearest 0/3
    expected = [(2 / 3, 0.0, 2 / 3), (1.0, 0.0, 0.0), (1 / 3, 1.0, 0.0)]
    for got, (model, commonest, nearest) in zip(rows, expected):
        assert got["under_cover"].compute()["pixel_accuracy"] == pytest.approx(model)
        assert got["commonest_class_under_cover"].compute()["pixel_accuracy"] == pytest.approx(commonest)
        assert got["nearest_outcrop_baseline"].compute()["pixel_accuracy"] == pytest.approx(nearest)
    assert [int(r["under_cover"].matrix.sum()) for r in rows] == [3, 1, 3]


@pytest.mark.parametrize("bins", ["1,0", "0,a"])
def test_bad_bins_are_a_one_line_error(cover_depth, capsys, bins):
    with pytest.raises(SystemExit) as stop:
        cover_depth.main(["--checkpoint", "x.pt", "--data", "d", "--scene", "s", "--bins", bins])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().endswith(f": error: --bins {bins}: expected ascending km from 0, e.g. "
                                                    "0,0.3,1,2")
