"""The simulated cover of ``--cover-augment``: checked against the prism forward model and by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from ggmnet.datasets.cover_sim import SOURCE_BASE_KM, bury, cover_slab_mgal, hole_thickness, random_thickness
from ggmnet.datasets.forward import layered_gravity
from ggmnet.datasets.processing import upward_continue
from ggmnet.datasets.tiles import TileDataset
from ggmnet.errors import UserError

SPACING_KM = (4.0, 5.0)  # dx, dy


def _residual(gravity: np.ndarray) -> np.ndarray:
    """The dataset recipe's residual: the field minus its 10 km upward continuation."""
    return gravity - upward_continue(gravity, *SPACING_KM, 10.0)


def _bedrock_contrast(shape=(96, 96), seed=0) -> np.ndarray:
    """A smooth bedrock density contrast, kg/m^3 (units tens of km across, +-60 kg/m^3)."""
    field = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), 3.0, mode="wrap")
    return 60.0 * field / field.std()


def _gravity(slices) -> np.ndarray:
    return layered_gravity(slices, (SPACING_KM[1] * 1e3, SPACING_KM[0] * 1e3), pad=48)


@pytest.mark.parametrize("thickness_km", [1.0, 3.0])
def test_bury_matches_the_prism_model_of_the_bedrock_below_a_uniform_cover(thickness_km):
    """Bedrock units from 0 to 8 km, then the same units from h to 8 km under h km of the compacting cover
    (many thin slices), each forward-modelled by prisms (Parker's method) and reduced to the residual: bury()
    of the first residual must give the second."""
    contrast = _bedrock_contrast()
    base_m = SOURCE_BASE_KM * 1e3
    outcrop = _residual(_gravity([(0.0, base_m, contrast)]))
    tops = np.linspace(0.0, thickness_km * 1e3, 41)
    cover = [(z0, z1, np.full_like(contrast, _cover_contrast_kg_m3((z0 + z1) / 2e3)))
             for z0, z1 in zip(tops[:-1], tops[1:])]
    buried_truth = _residual(_gravity([(thickness_km * 1e3, base_m, contrast), *cover]))
    buried = bury(outcrop, np.full(contrast.shape, thickness_km), *SPACING_KM)
    inner = (slice(16, -16), slice(16, -16))  # away from the padding, which the two methods do differently
    error = np.abs(buried[inner] - buried_truth[inner]).max()
    change = np.abs(outcrop[inner] - buried_truth[inner]).max()
    assert change > 1.0  # burial matters: more than a mGal
    assert error < 0.05 * change


def _cover_contrast_kg_m3(depth_km: float) -> float:
    """The cover's density contrast against 2670 kg/m^3 at a depth (synth_geology's compaction curve)."""
    return 1e3 * (2.65 - 0.55 * np.exp(-depth_km / 1.5) - 2.67)


def test_cover_slab_by_hand():
    # 1 km of cover: int_0^1 (2.65 - 0.55 exp(-z/1.5) - 2.67) dz = -0.02 - 0.825 (1 - exp(-2/3))
    # = -0.02 - 0.825 x 0.486583 = -0.421431 g/cm^3 km; 2 pi G x 421.431 kg/m^3 x 1000 m = 1.76731e-4 m/s^2
    assert cover_slab_mgal(np.array([0.0, 1.0])) == pytest.approx([0.0, -17.6731], abs=2e-4)


def test_a_partly_covered_tile_is_unchanged_where_the_cover_is_far_and_low_over_a_basin():
    contrast = _bedrock_contrast()
    outcrop = _residual(_gravity([(0.0, SOURCE_BASE_KM * 1e3, contrast)]))
    thickness = np.zeros(contrast.shape)
    thickness[40:60, 40:60] = 2.0
    buried = bury(outcrop, thickness, *SPACING_KM)
    assert np.array_equal(bury(outcrop, np.zeros_like(thickness), *SPACING_KM), outcrop.astype(np.float32))
    assert np.abs(buried[:10, :10] - outcrop[:10, :10]).max() < 0.05 * np.abs(outcrop).max()
    assert (buried - outcrop)[45:55, 45:55].mean() < -3.0  # a low over the basin
    # The basin fill alone: a slab 80 km x 100 km (half-widths a = 40, b = 50 km) less its 10 km upward
    # continuation, which over the centre keeps (2 / pi) atan(ab / (z sqrt(a^2 + b^2 + z^2))) = 0.800 of it
    # (a rectangular sheet seen from height z), so the residual there is 0.200 of the slab.
    fill = bury(np.zeros(contrast.shape), thickness, *SPACING_KM)[49:51, 49:51].mean()
    assert fill == pytest.approx(0.200 * cover_slab_mgal(np.array(2.0)), rel=0.05)


def test_random_thickness_covers_part_of_the_tile_one_to_six_km_deep():
    rng = np.random.default_rng(3)
    maps = [random_thickness((128, 128), rng) for _ in range(20)]
    shares = np.array([(m > 0).mean() for m in maps])
    peaks = np.array([m.max() for m in maps])
    assert (shares > 0.1).all() and (shares < 0.9).all() and 0.3 < shares.mean() < 0.7
    assert (peaks >= 1.0 - 1e-9).all() and (peaks <= 6.0 + 1e-9).all()


def test_training_tiles_are_buried_with_the_probability_given_and_keep_their_labels(tiny_dataset):
    common = {"tile_size": 32, "augment": "d4", "pixels_per_degree": 8.0, "seed": 1}
    plain = TileDataset(tiny_dataset, "train", **common)
    always = TileDataset(tiny_dataset, "train", cover_augment=1.0, **common)
    again = TileDataset(tiny_dataset, "train", cover_augment=1.0, **common)
    val = TileDataset(tiny_dataset, "val", tile_size=32, pixels_per_degree=8.0, cover_augment=1.0)
    changed = 0
    for i in range(len(always)):
        a, b = always[i], again[i]
        assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["mask"], b["mask"])  # seeded
        changed += not np.array_equal(a["image"], plain[i]["image"])
    assert changed == len(always)
    first = plain.render(0)
    buried = plain.render(0, cover_km=np.full(first["label"].shape, 2.0))
    assert np.array_equal(buried["label"], first["label"]) and not np.array_equal(buried["image"], first["image"])
    assert val.cover_augment == 0.0  # never without augmentation
    from ggmnet.retrain.train import RetrainConfig  # the options are checked where the command line is read

    with pytest.raises(UserError, match="--cover-augment 0.5: buries the residual anomaly only"):
        RetrainConfig(genotype="g.json", channels="physical", cover_augment=0.5).check()
    with pytest.raises(UserError, match=r"--cover-augment 2: expected a probability in \[0, 1\]"):
        RetrainConfig(genotype="g.json", cover_augment=2).check()


def test_a_hole_is_buried_thinly_at_its_edge_and_one_to_six_km_deep_inside():
    hole = np.zeros((80, 80), bool)
    hole[10:70, 10:70] = True  # 30 px from the edge to the centre: past every ramp (3-12 px)
    for seed in range(5):
        depth = hole_thickness(hole, np.random.default_rng(seed))
        assert np.all(depth[~hole] == 0) and np.all(depth[hole] > 0)
        peak = depth.max()
        assert 1.0 <= peak <= 6.0 and depth[40, 40] == peak  # the centre at the full depth
        assert depth[10, 40] <= peak / 3 + 1e-12  # an edge pixel (1 px in): at most a third of it
        assert np.all(np.diff(depth[10:41, 40]) >= 0)  # thickening inwards


def test_hidden_outcrop_is_buried_where_it_is_hidden(tmp_path):
    """On a flat residual, burial is all the image shows: it must lie on the hidden (scored) pixels."""
    from test_tiles import write_dataset

    label = np.full((31, 31), 255, np.uint8)
    label[:, :20] = np.arange(20)[None, :] % 10
    data = write_dataset(tmp_path, {"residual": np.zeros((31, 31), np.float32)}, label,
                         [(0.0, 3.0, 0.0, 3.0, "train")])
    manifest = json.loads((data / "manifest.json").read_text())
    (data / "manifest.json").write_text(json.dumps({**manifest, "recipe": {"height_km": 10.0}, "normalisation": {
        "residual": {"mean": 0.0, "std": 20.0, "p02": -40.0, "p98": 40.0}}}))  # a scene's range: tens of mGal
    common = {"tile_size": 31, "augment": "d4", "geology_prior": True, "seed": 2}
    plain, buried = TileDataset(data, "train", **common), TileDataset(data, "train", bury_hidden=1.0, **common)
    flat = plain[0]["image"][:3, 0, 0]
    inside, outside = [], []
    for epoch in range(6):
        buried.set_epoch(epoch)
        item = buried[0]
        hidden = (item["mask"] != 255).numpy()
        assert not item["image"][13].numpy()[hidden].any()  # hidden from the outcrop input
        change = (item["image"][:3] - flat[:, None, None]).abs().sum(0).numpy()
        if hidden.any():
            inside.append(change[hidden].mean())
            outside.append(change[~hidden & (item["image"][13].numpy() == 1)].mean())
        assert np.array_equal(item["image"], buried[0]["image"])  # seeded
    assert inside and np.mean(inside) > 3 * np.mean(outside)
    assert TileDataset(data, "train", tile_size=31, geology_prior=True, bury_hidden=1.0).bury_hidden == 0.0
    from ggmnet.retrain.train import RetrainConfig

    with pytest.raises(UserError, match="--bury-hidden 0.5: buries the hidden outcrop of --geology-prior"):
        RetrainConfig(genotype="g.json", bury_hidden=0.5).check()
