"""Calibration of a map's probabilities (ggmnet.inference.calibration) against hand-computed values and a planted
temperature."""

from __future__ import annotations

import numpy as np
import pytest

from ggmnet.inference.calibration import entropy, error_auroc, fit_temperature, reliability, summary, temper


def test_temper_keeps_t1_and_sharpens_or_softens():
    p = np.array([[0.7, 0.2], [0.2, 0.5], [0.1, 0.3]])
    np.testing.assert_allclose(temper(p, 1.0), p)
    # T = 0.5 squares the probabilities before renormalising, T = 2 takes their square roots.
    np.testing.assert_allclose(temper(p, 0.5), p**2 / (p**2).sum(axis=0))
    np.testing.assert_allclose(temper(p, 2.0), np.sqrt(p) / np.sqrt(p).sum(axis=0))


def test_fit_temperature_recovers_a_planted_temperature():
    # Labels drawn from softmax(z / 2) while the "network" says softmax(z): overconfident by T = 2.
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 3.0, size=(5, 40_000))
    true = temper(np.exp(z) / np.exp(z).sum(axis=0), 2.0)
    truth = (rng.random(z.shape[1]) > true.cumsum(axis=0)).sum(axis=0)
    network = np.exp(z) / np.exp(z).sum(axis=0)
    assert fit_temperature(network, truth) == pytest.approx(2.0, rel=0.05)
    assert summary(network, truth, 2.0)["calibrated"]["ece"] < summary(network, truth, 1.0)["raw"]["ece"] / 3
    assert fit_temperature(network, np.zeros(0, dtype=int)) == 1.0


def test_reliability_and_ece_by_hand():
    # Four nodes, two classes: confidences 0.95 (right), 0.95 (wrong), 0.55 (right), 0.65 (wrong); 10 bins.
    p = np.array([[0.95, 0.05, 0.55, 0.35], [0.05, 0.95, 0.45, 0.65]])
    truth = np.array([0, 0, 0, 0])
    rel = reliability(p, truth, bins=10)
    # bin 0.9-1: 2 nodes, confidence 0.95, accuracy 0.5; bin 0.5-0.6: 1 node, 0.55, 1.0; bin 0.6-0.7: 0.65, 0.
    assert rel["ece"] == pytest.approx(0.5 * 0.45 + 0.25 * 0.45 + 0.25 * 0.65)
    assert [b["nodes"] for b in rel["bins"]] == [0, 0, 0, 0, 0, 1, 1, 0, 0, 2]
    assert rel["bins"][9]["accuracy"] == 0.5 and rel["bins"][5]["confidence"] == pytest.approx(0.55)
    assert rel["bins"][0]["accuracy"] is None


def test_error_auroc_by_hand():
    # wrong {0.5, 0.2} against right {0.1, 0.3}: 0.5 > both, 0.2 > 0.1 only -> 3 of 4 pairs.
    assert error_auroc(np.array([0.5, 0.1, 0.3, 0.2]), np.array([True, False, False, True])) == 0.75
    assert error_auroc(np.array([0.2, 0.2]), np.array([True, False])) == 0.5  # a tie counts half
    assert error_auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([False, True, False, True])) == 1.0
    assert error_auroc(np.array([0.1, 0.2]), np.array([False, False])) is None


def test_entropy_of_uniform_and_certain():
    assert entropy(np.full((4, 1), 0.25))[0] == pytest.approx(np.log(4))
    assert entropy(np.array([[1.0], [0.0]]))[0] == pytest.approx(0.0, abs=1e-9)
