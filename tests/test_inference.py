"""Window scores at the grid nodes (ggmnet.inference) against counts made by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ggmnet.datasets.windows import Window
from ggmnet.inference.scoring import node_factors, score_windows
from ggmnet.inference.tiling import predict_nodes

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
    # The nearest outcrop on the ground, read from the outcrop of the scored windows (A and B: the 3s of rows
    # 0-1 and the 0s of rows 3-4 west of column 2 lie outside both, so they are unknown), brute force: a node
    # step east is cos(latitude) x a step north at the window's middle latitude. Equal distances (e.g. (2,2)
    # between the 2 at (2,1) and the 3 at (2,3)) may go either way.
    expected = nearest_matrices(WINDOWS, cover_nodes=[[(0, 1), (0, 2), (1, 1), (1, 2), (2, 2)],
                                                      [(2, 2), (2, 4), (3, 3), (3, 4), (4, 3), (4, 4)]])
    actual = scores["nearest_outcrop_baseline"].matrix
    assert any(np.array_equal(actual, m) for m in expected), actual


def nearest_matrices(windows, cover_nodes):
    """Every confusion matrix the nearest-outcrop rule may give over ``cover_nodes`` (per window), by brute force
    over the outcrop inside any of ``windows``, one per way of breaking ties."""
    import itertools

    inside = np.zeros(LABEL.shape, dtype=bool)
    for w in windows:
        inside[np.ix_((LAT >= w.south) & (LAT <= w.north), (LON >= w.west) & (LON <= w.east))] = True
    known = [(r, c) for r in range(5) for c in range(5) if inside[r, c] and LABEL[r, c] != C]
    choices = []
    for w, nodes in zip(windows, cover_nodes):
        mid = np.radians(0.5 * (w.south + w.north))
        for r, c in nodes:
            d = {(kr, kc): np.hypot(kr - r, (kc - c) * np.cos(mid)) for kr, kc in known}
            best = min(d.values())
            choices.append((BEDROCK[r, c], sorted({int(LABEL[k]) for k, v in d.items() if v - best < 1e-9})))
    out = []
    for picks in itertools.product(*[classes for _, classes in choices]):
        out.append(pairs([t for t, _ in choices], list(picks)))
    return out


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


class _CopyOutcrop(torch.nn.Module):
    """A network that copies its outcrop input: logits 10 x the one-hot channels (3-12 of 15: the nearest known
    outcrop's class), i.e. the nearest-outcrop rule at the pixels of its tiles."""

    in_channels, num_classes = 15, 10

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 10.0 * x[:, 3:13]


def test_hidden_outcrop_is_withheld_from_a_network_that_reads_the_outcrop(tiny_dataset):
    from ggmnet.classes import COVER_INDEX
    from ggmnet.inference.scoring import WindowScorer

    scorer = WindowScorer(tiny_dataset, "val", pixels_per_degree=10, tile_size=32, channels="pseudocolour",
                          geology_prior=True)
    label = scorer.grids["label"]
    assert scorer.headline == "hidden_outcrop"
    assert scorer.hidden.any() and np.all(scorer.known[scorer.hidden] != COVER_INDEX)
    assert np.array_equal(scorer.known != COVER_INDEX, (label != COVER_INDEX) & (scorer.known != COVER_INDEX))
    matrices, nll = scorer.score(_CopyOutcrop().eval())
    # Copying the input is perfect on the visible outcrop; on the hidden outcrop it is the nearest-outcrop
    # rule (at one pixel per node, read within each tile instead of each grown window), so it scores about
    # what the rule scores on the same nodes, and clearly below 1: the hidden labels were not in its input.
    assert matrices["outcrop"].compute()["pixel_accuracy"] == 1.0
    hidden = matrices["hidden_outcrop"].compute()["pixel_accuracy"]
    rule = matrices["nearest_outcrop_hidden"].compute()["pixel_accuracy"]
    assert hidden == pytest.approx(rule, abs=0.1) and hidden < 0.9
    assert matrices["nearest_outcrop_hidden"].matrix.sum() == matrices["hidden_outcrop"].matrix.sum()
    assert matrices["commonest_class_hidden"].compute()["pixel_accuracy"] is not None and nll > 0


def test_prior_channels_carry_the_nearest_outcrop_and_its_distance():
    from ggmnet.datasets.hiding import PRIOR_DISTANCE_MAX, PRIOR_DISTANCE_PX, prior_channels

    labels = np.full((3, 70), C, np.uint8)
    labels[:, 0] = 2
    labels[:, 69] = 5
    out = prior_channels(labels, num_classes=10)
    assert out.shape == (12, 3, 70)
    # columns 1-34 are nearer the 2s, 35-68 the 5s (34 px from each: the transform's tie goes one way)
    np.testing.assert_array_equal(out[:10].argmax(0)[0, :34], 2)
    np.testing.assert_array_equal(out[:10].argmax(0)[0, 36:], 5)
    np.testing.assert_array_equal(out[10][0], [1] + [0] * 68 + [1])
    assert out[11][0, 0] == 0 and out[11][0, 32] == pytest.approx(32 / PRIOR_DISTANCE_PX)
    empty = prior_channels(np.full((2, 2), C, np.uint8))
    assert not empty[:11].any() and np.all(empty[11] == PRIOR_DISTANCE_MAX)
