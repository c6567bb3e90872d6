"""Table 2 windows, outcrop shares, the random and spatial-block splits and the overlap report."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from ggmnet.datasets.geo import PAPER_REGION, GeoGrid, Region
from ggmnet.datasets.windows import (
    PAPER_SCALES,
    Scale,
    Window,
    make_windows,
    outcrop_fraction,
    overlap_report,
    parse_scales,
    split_random,
    split_spatial_blocks,
)
from ggmnet.errors import UserError


def bounds(w: Window) -> tuple[float, float, float, float]:
    return (w.west, w.east, w.south, w.north)


def test_paper_windows_are_450_55_27_4():
    windows = make_windows(PAPER_REGION, PAPER_SCALES)
    assert len(windows) == 536
    assert Counter(w.scale_deg for w in windows) == {1.0: 450, 5.0: 55, 10.0: 27, 15.0: 4}
    assert [w.id for w in windows] == list(range(536))
    assert bounds(windows[0]) == (65, 66, 40, 41)
    assert bounds(windows[1]) == (66, 67, 40, 41)
    assert bounds(windows[30]) == (65, 66, 41, 42)  # second row of 1-degree windows
    assert bounds(windows[449]) == (94, 95, 54, 55)
    assert bounds(windows[450]) == (65, 70, 40, 45)
    assert bounds(windows[451]) == (67.5, 72.5, 40, 45)
    assert bounds(windows[450 + 11]) == (65, 70, 42.5, 47.5)
    assert bounds(windows[504]) == (90, 95, 50, 55)  # last 5-degree window
    assert bounds(windows[505]) == (65, 75, 40, 50)
    assert bounds(windows[531]) == (85, 95, 45, 55)
    assert [bounds(w) for w in windows[532:]] == [(65, 80, 40, 55), (70, 85, 40, 55), (75, 90, 40, 55),
                                                  (80, 95, 40, 55)]
    assert all(PAPER_REGION.contains(Region(*bounds(w))) for w in windows)


def test_parse_scales():
    assert parse_scales("1:1,5:2.5,10:2.5,15:5") == PAPER_SCALES
    assert parse_scales(" 2:0.5 ") == (Scale(2.0, 0.5),)
    for bad in ("1", "1:0", "a:b", "1:1,", "-1:1"):
        with pytest.raises(UserError, match="--scales"):
            parse_scales(bad)
    assert make_windows(Region(0, 1, 0, 1), [Scale(2, 1)]) == []


def test_outcrop_fraction_counts_the_window_nodes():
    lon = np.arange(0, 4.01, 0.5)  # 9 nodes
    lat = np.arange(0, 2.01, 0.5)  # 5 nodes
    labels = np.full((5, 9), 255, np.uint8)
    labels[:, :3] = 4  # lon 0, 0.5, 1.0 are outcrop
    grid = GeoGrid(lon, lat, labels, name="label", units="")
    # Window 0..1 E: nodes lon 0, 0.5, 1 (all outcrop); window 1..2 E: lon 1 outcrop, 1.5, 2 cover.
    assert outcrop_fraction(Window(0, 1, 0, 1, 0, 1), grid) == 1.0
    assert outcrop_fraction(Window(1, 1, 1, 2, 0, 1), grid) == pytest.approx(1 / 3)
    assert outcrop_fraction(Window(2, 2, 2, 4, 0, 2), grid) == 0.0


def test_random_split_follows_the_paper():
    windows = make_windows(PAPER_REGION, PAPER_SCALES)
    outcrop = np.random.default_rng(3).uniform(0, 0.6, len(windows))
    splits = split_random(windows, outcrop, seed=7)
    test = {i for i, s in enumerate(splits) if s == "test"}
    assert test == {i for i, f in enumerate(outcrop) if f < 0.10}
    rest = len(windows) - len(test)
    assert abs(splits.count("val") - 0.15 * rest) <= 1
    assert splits == split_random(windows, outcrop, seed=7)
    assert splits != split_random(windows, outcrop, seed=8)
    report = overlap_report(windows, splits)
    assert report["val_windows"] == splits.count("val")
    assert report["val_overlapping_train"] > 0.9 * report["val_windows"]  # the paper's split leaks


def test_spatial_block_split_has_no_overlap():
    windows = make_windows(PAPER_REGION, PAPER_SCALES)
    outcrop = np.random.default_rng(4).uniform(0, 0.6, len(windows))
    splits, dropped = split_spatial_blocks(windows, outcrop, seed=1, val_fraction=0.15, block_deg=5)
    assert dropped == splits.count("unused") > 0
    assert {i for i, s in enumerate(splits) if s == "test"} == {i for i, f in enumerate(outcrop) if f < 0.10}
    candidates = sum(f >= 0.10 for f in outcrop)
    assert splits.count("val") >= round(0.15 * candidates)
    train = [w for w, s in zip(windows, splits) if s == "train"]
    val = [w for w, s in zip(windows, splits) if s == "val"]
    for v in val:
        for t in train:
            dx = min(v.east, t.east) - max(v.west, t.west)
            dy = min(v.north, t.north) - max(v.south, t.south)
            assert dx <= 0 or dy <= 0
    report = overlap_report(windows, splits)
    assert report["val_overlapping_train"] == 0 and report["val_area_covered_by_train"] == 0.0
    assert split_spatial_blocks(windows, outcrop, seed=1) == (splits, dropped)


def test_overlap_report_on_three_windows():
    train = Window(0, 2, 0, 2, 0, 2)
    half_covered = Window(1, 2, 1, 3, 0, 2)  # area 4, of which 2 under the train window
    apart = Window(2, 1, 5, 6, 0, 1)  # area 1, not covered
    report = overlap_report([train, half_covered, apart], ["train", "val", "val"])
    assert report == {"val_windows": 2, "val_overlapping_train": 1, "val_area_covered_by_train": 0.4}
    # Two train windows covering the same area are counted once (a union, not a sum).
    report = overlap_report([train, Window(3, 2, 0, 2, 0, 2), half_covered], ["train", "train", "val"])
    assert report["val_area_covered_by_train"] == 0.5
    touching = overlap_report([train, Window(1, 2, 2, 4, 0, 2)], ["train", "val"])
    assert touching["val_overlapping_train"] == 0
