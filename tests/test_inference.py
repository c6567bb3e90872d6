"""Window scores at the grid nodes (ggmnet.inference) against counts made by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ggmnet.datasets.windows import Window
from ggmnet.inference import node_factors, predict_nodes, score_windows

# 5 x 5 nodes every 0.5 degrees over 0..2 E, 0..2 N (latitude ascending: row 0 is 0 N).
LON = LAT = np.array([0.0, 0.5, 1.0, 1.5, 2.0])
C = 255
LABEL = np.array([[1, C, C, 3, 3],
                  [1, C, C, 3, 3],
                  [1, 2, C, 3, C],
                  [0, 0, 0, C, C],
                  [0, 0, 0, C, C]], dtype=np.uint8)
BEDROCK = np.array([[1, 1, 2, 3, 3],
                    [1, 2, 2, 3, 3],
                    [1, 2, 3, 3, 3],
                    [0, 0, 0, 4, 4],
                    [0, 0, 0, 4, 4]], dtype=np.uint8)
PRED = np.array([[1, 1, 1, 3, 3],
                 [2, 2, 2, 3, 3],
                 [1, 2, 2, 3, 0],
                 [0, 0, 0, 4, 4],
                 [0, 0, 0, 0, 4]], dtype=np.uint8)
# Window A: 0..1 E, 0..1 N, nodes rows 0-2 x cols 0-2. Window B: 1..2 E, 1..2 N, rows 2-4 x cols 2-4: they share
# node (2, 2), which is cover, so it is scored under the cover once per window.
WINDOWS = [Window(0, 1.0, 0.0, 1.0, 0.0, 1.0), Window(1, 1.0, 1.0, 2.0, 1.0, 2.0)]


def pairs(truth, pred, k=10):
    m = np.zeros((k, k), dtype=np.int64)
    for t, p in zip(truth, pred):
        m[t, p] += 1
    return m


def test_scores_count_each_windows_nodes_beside_the_rules():
    scores = score_windows(PRED, LABEL, LON, LAT, WINDOWS, commonest=3, bedrock=BEDROCK)
    # outcrop of A: (0,0) 1->1, (1,0) 1->2, (2,0) 1->1, (2,1) 2->2; of B: (2,3) 3->3, (3,2) 0->0, (4,2) 0->0.
    truth = [1, 1, 1, 2, 3, 0, 0]
    np.testing.assert_array_equal(scores["outcrop"].matrix, pairs(truth, [1, 2, 1, 2, 3, 0, 0]))
    np.testing.assert_array_equal(scores["commonest_class"].matrix, pairs(truth, [3] * 7))
    assert scores["outcrop"].compute()["pixel_accuracy"] == 6 / 7
    # cover of A: (0,1) 1->1, (0,2) 2->1, (1,1) 2->2, (1,2) 2->2, (2,2) 3->2; of B: (2,2) 3->2, (2,4) 3->0,
    # (3,3) 4->4, (3,4) 4->4, (4,3) 4->0, (4,4) 4->4.
    cover = [1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 4]
    np.testing.assert_array_equal(scores["under_cover"].matrix, pairs(cover, [1, 1, 2, 2, 2, 2, 0, 4, 4, 0, 4]))
    np.testing.assert_array_equal(scores["commonest_class_under_cover"].matrix, pairs(cover, [3] * 11))
    # Nearest outcrop within each window, on the ground (a node step east is cos(latitude) x a step north, so
    # east wins a tie of steps). A: (0,1), (1,1) and (0,2) take the west column's 1, (1,2) and (2,2) the 2 at
    # (2,1). B: (2,2) and (2,4) the 3 at (2,3) one step east/west, (3,3), (4,3) and (4,4) the 0s of column 2,
    # (3,4) the 3 (a diagonal step, nearer than two steps west).
    np.testing.assert_array_equal(scores["nearest_outcrop_baseline"].matrix,
                                  pairs(cover, [1, 1, 1, 2, 2, 3, 3, 0, 3, 0, 0]))


def test_without_bedrock_the_cover_is_not_scored():
    scores = score_windows(PRED, LABEL, LON, LAT, WINDOWS, commonest=0)
    assert scores["under_cover"] is None and scores["nearest_outcrop_baseline"] is None
    assert scores["commonest_class"].compute()["pixel_accuracy"] == 2 / 7


def test_node_factors_are_pixels_per_node_step():
    lon = np.linspace(65, 95, 901)
    lat = np.linspace(40, 55, 451)
    assert node_factors(lon, lat, 30) == (1.0, 1.0)
    assert node_factors(lon, lat, 60) == (2.0, 2.0)
    assert node_factors(lon, lat, 15) == (0.5, 0.5)


def pointwise_probabilities(model, values):
    """softmax(model(x)) at each node of a (ny, nx) physical field standardised with mean 0, sd 1."""
    with torch.no_grad():
        logits = model(torch.from_numpy(values.astype(np.float32))[None, None])
    return torch.softmax(logits, dim=1)[0].numpy()


@pytest.mark.parametrize("factor", [1.0, 2.0, 0.5])
def test_predict_nodes_reads_the_nodes_at_any_pixel_density(factor):
    # A pointwise (1x1) network on a field that is linear along each axis: with whole factors every node is a
    # pixel, so the map is the network at the nodes; at half a pixel per node the even nodes are pixels and each
    # odd node is the mean of its two neighbours' probabilities (bilinear at the midpoint).
    torch.manual_seed(0)
    model = torch.nn.Conv2d(1, 3, 1).eval()
    lon = np.linspace(0.0, 2.0, 21)
    lat = np.linspace(0.0, 1.0, 11)
    field = np.add.outer(0.3 * np.arange(11.0), 0.2 * np.arange(21.0)) - 3.0
    stats = {"residual": {"mean": 0.0, "std": 1.0, "p02": -1.0, "p98": 1.0}}
    probability = predict_nodes(model, {"residual": field}, lon, lat, normalisation=stats, channels="physical",
                                factors=(factor, factor), tile_size=8, overlap=0.5)
    direct = pointwise_probabilities(model, field)
    if factor >= 1:
        np.testing.assert_allclose(probability, direct, atol=1e-5)
    else:
        np.testing.assert_allclose(probability[:, ::2, ::2], direct[:, ::2, ::2], atol=1e-5)
        np.testing.assert_allclose(probability[:, ::2, 1::2], 0.5 * (direct[:, ::2, :-1:2] + direct[:, ::2, 2::2]),
                                   atol=1e-5)
        np.testing.assert_allclose(probability[:, 1::2, ::2], 0.5 * (direct[:, :-1:2, ::2] + direct[:, 2::2, ::2]),
                                   atol=1e-5)
