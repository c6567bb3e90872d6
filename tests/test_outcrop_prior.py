"""The outcrop prior under the cover: the smoothed outcrop classes against a direct sum, its far field, the
fusion with the network's probabilities by hand, and its place in the window scores and ``ggm-predict``."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ggmnet.classes import COVER_INDEX as C
from ggmnet.datasets.windows import Window, window_slices
from ggmnet.inference.rules import outcrop_prior, with_outcrop_prior
from ggmnet.inference.scoring import node_spacing_km, score_windows
from ggmnet.metrics import ConfusionMatrix


def direct_prior(labels, frequencies, sampling, length_km, pseudo_count):
    """q by summing a Gaussian weight over every outcrop pixel (no filtering): the independent reference."""
    h, w = labels.shape
    sy, sx = length_km / sampling[0], length_km / sampling[1]
    rows, cols = np.mgrid[:h, :w]
    smoothed = np.zeros((frequencies.size, h, w))
    for r, c in zip(*np.nonzero(labels != C)):
        weight = (np.exp(-0.5 * ((rows - r) / sy) ** 2) / (sy * math.sqrt(2 * math.pi))
                  * np.exp(-0.5 * ((cols - c) / sx) ** 2) / (sx * math.sqrt(2 * math.pi)))
        smoothed[labels[r, c]] += weight
    return (smoothed + pseudo_count * frequencies[:, None, None]) / (smoothed.sum(axis=0) + pseudo_count)


def test_prior_is_the_gaussian_weighted_share_of_each_outcrop_class():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 10, size=(15, 25)).astype(np.uint8)
    labels[4:12, 6:20] = C
    labels[rng.random(labels.shape) < 0.2] = C
    frequencies = rng.dirichlet(np.ones(10))
    got = outcrop_prior(labels, frequencies, sampling=(2.0, 3.0), length_km=6.0, pseudo_count=0.05)
    want = direct_prior(labels, frequencies, (2.0, 3.0), 6.0, 0.05)
    # scipy truncates the Gaussian at 4 standard deviations (6e-5 of its weight); the sum here does not.
    np.testing.assert_allclose(got, want, atol=2e-4)
    np.testing.assert_allclose(got.sum(axis=0), 1.0, atol=1e-12)


def test_far_from_any_outcrop_the_prior_is_the_regional_frequencies():
    labels = np.full((40, 200), C, dtype=np.uint8)
    labels[:, :10] = 2
    frequencies = np.array([0.05, 0.05, 0.1, 0.05, 0.05, 0.4, 0.1, 0.1, 0.05, 0.05])
    q = outcrop_prior(labels, frequencies, sampling=(1.0, 1.0), length_km=5.0, pseudo_count=0.01)
    np.testing.assert_allclose(q[:, :, 150], np.broadcast_to(frequencies[:, None], (10, 40)), atol=1e-12)
    assert q[2, 20, 10] > 0.95  # beside the outcrop: its class


def strip(p_first: float, first: int):
    """41 x 60 nodes (1 km), columns 0-19 outcrop of class 4, the rest cover; a network giving ``p_first`` to
    class ``first`` everywhere and the rest evenly to the other nine."""
    labels = np.full((41, 60), C, dtype=np.uint8)
    labels[:, :20] = 4
    p = np.full((10, 41, 60), (1 - p_first) / 9)
    p[first] = p_first
    return labels, p


FREQ = np.array([0.5 / 9] * 6 + [0.5] + [0.5 / 9] * 3)  # class 6 the commonest


def test_fusion_by_hand():
    # Uniform network: beside the class-4 outcrop the cover takes class 4; beyond a few lengths, the commonest.
    labels, p = strip(0.1, 0)
    got = with_outcrop_prior(p, labels, FREQ, sampling=(1.0, 1.0), length_km=5.0, weight=0.5, pseudo_count=0.01)
    assert (got[20, 20:25] == 4).all() and (got[20, 45:] == 6).all()
    # Column 21, row 20: S_4 = Phi(-1.5 / 5) = 0.382, so q_4 = 0.974 and q_7 = 0.01 * 0.0556 / 0.392 = 0.00142.
    # A confident network (p_7 = 0.91, others 0.01): log 0.91 + 0.5 log 0.00142 = -3.37 > log 0.01 + 0.5 log
    # 0.974 = -4.62, so gravity wins; a hesitant one (p_7 = 0.5): -3.97 < log(0.5 / 9) + 0.5 log 0.974 = -2.90.
    labels, p = strip(0.91, 7)
    assert with_outcrop_prior(p, labels, FREQ, sampling=(1.0, 1.0), length_km=5.0, weight=0.5,
                              pseudo_count=0.01)[20, 21] == 7
    labels, p = strip(0.5, 7)
    assert with_outcrop_prior(p, labels, FREQ, sampling=(1.0, 1.0), length_km=5.0, weight=0.5,
                              pseudo_count=0.01)[20, 21] == 4
    # On the outcrop the network's own class stays (outcrop scores are unchanged); weight 0 is the network.
    assert (with_outcrop_prior(p, labels, FREQ, sampling=(1.0, 1.0))[:, :20] == 7).all()
    np.testing.assert_array_equal(with_outcrop_prior(p, labels, FREQ, sampling=(1.0, 1.0), weight=0.0),
                                  np.full(labels.shape, 7))


def test_window_scores_with_the_prior():
    lon = np.round(np.arange(80.0, 82.0 + 1e-9, 1 / 30), 10)
    lat = np.round(np.arange(43.0, 44.0 + 1e-9, 1 / 30), 10)
    label = np.full((lat.size, lon.size), C, dtype=np.uint8)
    label[:, : lon.size // 3] = 4
    bedrock = np.where(label == C, 6, label).astype(np.uint8)
    bedrock[:, lon.size // 3: lon.size // 3 + 5] = 4
    p = np.full((10, lat.size, lon.size), 0.1)
    p[1] += 0.02  # a network leaning slightly to class 1 everywhere
    p /= p.sum(axis=0)
    windows = [Window(0, 2.0, 80.0, 82.0, 43.0, 44.0)]
    scores = score_windows(p.argmax(axis=0), label, lon, lat, windows, commonest=6, bedrock=bedrock,
                           probability=p, frequencies=FREQ)
    rows, cols = window_slices(windows[0], lon, lat)
    fused = with_outcrop_prior(p[:, rows, cols], label[rows, cols], FREQ, sampling=node_spacing_km(lon, lat, rows))
    want = ConfusionMatrix(10)
    want.update(fused, np.where(label[rows, cols] == C, bedrock[rows, cols], C))
    np.testing.assert_array_equal(scores["outcrop_prior_under_cover"].matrix, want.matrix)
    assert scores["under_cover"].compute()["pixel_accuracy"] == 0.0  # class 1 is nowhere under the cover
    # with the prior: class 4 beside the outcrop (right for 5 columns, wrong for some more), the commonest beyond
    assert 0.5 < scores["outcrop_prior_under_cover"].compute()["pixel_accuracy"] < 1.0
    without = score_windows(p.argmax(axis=0), label, lon, lat, windows, commonest=6, bedrock=bedrock)
    assert without["outcrop_prior_under_cover"] is None


@pytest.mark.parametrize("labels", [np.full((5, 5), 3, dtype=np.uint8)])
def test_no_cover_leaves_the_network_alone(labels):
    p = np.random.default_rng(0).dirichlet(np.ones(10), size=(5, 5)).transpose(2, 0, 1)
    np.testing.assert_array_equal(with_outcrop_prior(p, labels, FREQ, sampling=(1.0, 1.0)), p.argmax(axis=0))


def test_settings_script_bad_input_is_a_one_line_error(capsys):
    from ggmnet.studies import outcrop_prior as script

    with pytest.raises(SystemExit) as stop:
        script.main(["--checkpoint", "x.pt", "--data", "d", "--lengths", "10,a"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().endswith(": error: --lengths 10,a: expected comma-separated non-negative "
                                                    "numbers, e.g. 10,20,40")
    with pytest.raises(SystemExit) as stop:
        script.main(["--checkpoint", "missing.pt", "--data", "d"])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and "missing.pt" in err
