"""Outcrop hidden under the map's own cover pattern (ggmnet.datasets.hiding): what is drawn is the cover of
another place, flipped and shifted, at the tile's scale, and only known outcrop is hidden."""

from __future__ import annotations

import numpy as np
import pytest

from ggmnet.classes import COVER_INDEX
from ggmnet.datasets.hiding import CoverPattern

C = COVER_INDEX


def _label(shape=(6, 7), seed=0):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 10, size=shape).astype(np.uint8)
    label[rng.random(shape) < 0.4] = C
    return label


def test_share_and_a_full_size_draw_is_a_flipped_shifted_copy():
    label = _label()
    pattern = CoverPattern(label)
    cover = label == C
    assert pattern.share == pytest.approx(cover.mean())
    copies = []
    for flipped in (cover, cover[::-1], cover[:, ::-1], cover[::-1, ::-1]):
        copies += [np.roll(flipped, (r, c), axis=(0, 1)) for r in range(6) for c in range(7)]
    for seed in range(20):
        drawn = CoverPattern(label).draw(np.random.default_rng(seed), cover.shape)
        assert any(np.array_equal(drawn, copy) for copy in copies), seed


def test_draw_reads_every_second_node_at_half_scale():
    label = np.zeros((8, 8), np.uint8)
    label[::2] = C  # cover on even rows
    drawn = CoverPattern(label).draw(np.random.default_rng(1), (4, 4), scale=0.5)
    # rows r0, r0 + 2, ...: all cover or all outcrop, whichever parity r0 (or, transposed, c0) has
    assert drawn.all() or not drawn.any()
    label = np.zeros((8, 8), np.uint8)
    label[3, 3] = C
    pattern = CoverPattern(label)
    assert sum(pattern.draw(np.random.default_rng(s), (4, 4), scale=0.5).sum() for s in range(200)) > 0


def test_hide_takes_only_known_outcrop_and_about_the_cover_share():
    label = _label((40, 50), seed=2)
    pattern = CoverPattern(label)
    known = np.random.default_rng(3).random((30, 30)) < 0.5
    shares = []
    for seed in range(300):
        hidden = pattern.hide(known, np.random.default_rng(seed))
        assert not np.any(hidden & ~known) and hidden.any()
        shares.append(hidden.sum() / known.sum())
    assert np.mean(shares) == pytest.approx(pattern.share, abs=0.03)
    assert not CoverPattern(np.zeros((5, 5), np.uint8)).hide(known, np.random.default_rng(0)).any()
    assert not pattern.hide(np.zeros((4, 4), bool), np.random.default_rng(0)).any()
