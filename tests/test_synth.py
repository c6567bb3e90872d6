"""The synthetic benchmark: node layout, determinism, class shares, cover statistics, physics, files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from ggmnet.classes import CLASS_CODES, COVER_INDEX, PAPER_SHARES_PERCENT
from ggmnet.datasets import synth
from ggmnet.datasets.geo import PAPER_REGION, Region
from ggmnet.datasets.labels import read_label_grid
from ggmnet.datasets.netcdf import read_gravity_grid
from ggmnet.datasets.synth import (
    SynthConfig,
    generate_scene,
    node_coordinates,
    write_scene,
)
from ggmnet.datasets.synth_geology import ARCHEAN, JURASSIC
from ggmnet.errors import UserError

#: A reduced-resolution scene of most of the paper's area (6' nodes, 8.3 km model cells): about 1 s.
MEDIUM = SynthConfig(region=Region(66, 90, 41, 54), spacing_arcmin=6.0, margin_km=200.0, seed=0)
#: A tiny scene for the file round trip and the knobs.
TINY = SynthConfig(region=Region(70, 76, 44, 48), spacing_arcmin=6.0, margin_km=100.0, seed=0)


@pytest.fixture(scope="module")
def medium_scene() -> synth.SynthScene:
    return generate_scene(MEDIUM)


def test_default_nodes_hold_451_by_901_inside_the_paper_region():
    lon, lat = node_coordinates(SynthConfig())
    inside_lon = lon[(lon >= 65 - 1e-9) & (lon <= 95 + 1e-9)]
    inside_lat = lat[(lat >= 40 - 1e-9) & (lat <= 55 + 1e-9)]
    assert (inside_lat.size, inside_lon.size) == (451, 901)
    assert inside_lon[0] == 65.0 and inside_lon[-1] == 95.0 and inside_lat[-1] == 55.0
    np.testing.assert_allclose(np.diff(lon), 1 / 30, rtol=1e-12)
    # The margin reaches 500 km: 4.5 degrees of latitude, 500 km of longitude at the box's poleward edge.
    assert lat[0] <= 40 - 500 / 111.2 and lat[-1] >= 55 + 500 / 111.2
    assert (65 - lon[0]) * 111.2 * np.cos(np.radians(lat[-1])) >= 500 - 4


def test_same_seed_is_bit_identical_and_other_seeds_differ():
    a, b = generate_scene(TINY), generate_scene(TINY)
    c = generate_scene(SynthConfig(**{**TINY.to_dict(), "seed": 1}))
    for name in ("bedrock", "labels", "cover_thickness_km", "bouguer_mgal", "regional_mgal", "density_gcc"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert np.mean(a.bedrock != c.bedrock) > 0.3
    assert np.abs(a.bouguer_mgal - c.bouguer_mgal).mean() > 5.0


def test_outcrop_class_shares_follow_table_1(medium_scene):
    """Each class within 1 percentage point or 40 % of its Table 1 share (default 2' scene: within 0.6 pp)."""
    shares = medium_scene.stats["class_shares_percent"]
    assert sum(shares.values()) == pytest.approx(100.0, abs=0.1)
    for code, paper in zip(CLASS_CODES, PAPER_SHARES_PERCENT):
        assert abs(shares[code] - paper) <= max(1.0, 0.4 * paper), (code, shares[code], paper)
    # Shares recomputed from the arrays.
    outcrop = medium_scene.region_mask & (medium_scene.labels != COVER_INDEX)
    counts = np.bincount(medium_scene.labels[outcrop], minlength=10)
    assert 100 * counts[9] / counts.sum() == pytest.approx(shares["Gr"], abs=0.01)


def test_cover_statistics_near_crust1_targets(medium_scene):
    cover = medium_scene.cover_thickness_km[medium_scene.region_mask]
    assert np.median(cover) == pytest.approx(0.2, abs=0.04)
    assert np.quantile(cover, 0.9) == pytest.approx(2.2, rel=0.15)
    assert 6.0 < cover.max() <= 8.0 + 1e-3
    labels = medium_scene.labels[medium_scene.region_mask]
    assert 0.25 < np.mean(labels != COVER_INDEX) < 0.45


def test_labels_hide_thick_cover_but_bedrock_is_everywhere():
    scene = generate_scene(SynthConfig(**{**TINY.to_dict(), "boundary_jitter_px": 0.0}))
    covered = scene.cover_thickness_km * 1000 > TINY.cover_threshold_m
    np.testing.assert_array_equal(scene.labels, np.where(covered, COVER_INDEX, scene.bedrock))
    assert scene.bedrock.max() <= 9 and covered.any() and (~covered).any()
    jittered = generate_scene(TINY)
    moved = np.mean(jittered.labels != scene.labels)
    assert 0.001 < moved < 0.3


def test_basins_are_lighter_than_archean_cores_in_the_residual(medium_scene):
    """The residual (minus a ~50 km Gaussian regional) is lower over Jurassic than over Archean bedrock."""
    bouguer = medium_scene.bouguer_mgal.astype(np.float64)
    residual = bouguer - ndimage.gaussian_filter(bouguer, 5.0, mode="nearest")
    inside = medium_scene.region_mask
    jurassic = residual[inside & (medium_scene.bedrock == JURASSIC)].mean()
    archean = residual[inside & (medium_scene.bedrock == ARCHEAN)].mean()
    assert archean - jurassic > 2.0


def test_zero_contrasts_leave_only_the_moho_field():
    """No cover, no density differences and no noise: the Bouguer anomaly is the regional (Moho) part."""
    quiet = SynthConfig(**{**TINY.to_dict(), "density_contrast": 0.0, "within_class_sd": 0.0, "cover_scale": 0.0,
                           "noise_mgal": 0.0, "correlated_noise_mgal": 0.0})
    scene = generate_scene(quiet)
    assert scene.regional_mgal.std() > 5.0
    np.testing.assert_allclose(scene.bouguer_mgal, scene.regional_mgal, atol=1e-3)
    assert not (scene.labels == COVER_INDEX).any()


def test_doubling_the_cover_follows_the_bouguer_slab_of_the_extra_sediment():
    """Over uniform 2.67 g/cm^3 rock, cover_scale 1 -> 2 changes each node by about the slab of the sediment
    added between depths c and 2c: 2 pi G int_c^2c (2.65 - 0.55 exp(-z / 1.5 km) - 2.67) dz."""
    uniform = {**TINY.to_dict(), "density_contrast": 0.0, "within_class_sd": 0.0}
    base = generate_scene(SynthConfig(**uniform))
    deep = generate_scene(SynthConfig(**{**uniform, "cover_scale": 2.0}))
    difference = (deep.bouguer_mgal - base.bouguer_mgal).astype(np.float64).ravel()
    c = base.cover_thickness_km.astype(np.float64).ravel()
    integral_gcc_km = (2.65 - 2.67) * c - 0.55 * 1.5 * (np.exp(-c / 1.5) - np.exp(-2 * c / 1.5))
    slab_mgal = 2 * np.pi * 6.6743e-11 * integral_gcc_km * 1e6 / 1e-5
    assert slab_mgal.min() < -8.0
    assert np.corrcoef(difference, slab_mgal)[0, 1] > 0.95
    slope, _ = np.polyfit(slab_mgal, difference, 1)
    assert 0.75 < slope < 1.1  # below 1 where lateral smoothing (cells, 4.5 km low-pass) spreads narrow covers


def test_written_files_read_back(tmp_path):
    scene = generate_scene(TINY)
    out = tmp_path / "scene"
    paths = write_scene(scene, out)
    assert set(paths) == {"bouguer", "labels", "bedrock", "synth", "run"}
    gravity = read_gravity_grid(paths["bouguer"])
    labels = read_label_grid(paths["labels"])
    bedrock = read_label_grid(paths["bedrock"], variable="bedrock")
    np.testing.assert_allclose(gravity.lon, scene.lon, atol=1e-9)
    np.testing.assert_allclose(labels.lat, scene.lat, atol=1e-9)
    np.testing.assert_array_equal(gravity.values, scene.bouguer_mgal)
    np.testing.assert_array_equal(labels.values, scene.labels)
    np.testing.assert_array_equal(bedrock.values, scene.bedrock)
    assert gravity.registration == "gridline"
    assert gravity.subset(TINY.region).shape == (41, 61)
    summary = json.loads(paths["synth"].read_text())
    assert SynthConfig.from_dict(summary["config"]) == TINY
    assert summary["class_shares_percent"] == scene.stats["class_shares_percent"]
    assert json.loads(paths["run"].read_text())["seed"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene"]


def test_interrupted_write_leaves_the_folder_as_it_was(tmp_path, monkeypatch):
    scene = generate_scene(TINY)
    out = tmp_path / "scene"
    out.mkdir()
    (out / "labels.nc").write_text("old")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(synth, "write_label_grid", broken)
    with pytest.raises(OSError, match="disk full"):
        write_scene(scene, out)
    assert sorted(p.name for p in out.iterdir()) == ["labels.nc"]
    assert (out / "labels.nc").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene"]


def test_command_line_options_build_the_config():
    from ggmnet.datasets.cli import SynthOptions

    def parse(*argv):
        options = SynthOptions.from_argv(SynthOptions.parser("synth", "test"), ["--out", "x", *argv])
        return SynthConfig.from_dict({k: v for k, v in options.to_dict().items() if k != "out"})

    assert parse() == SynthConfig()
    config = parse("--seed", "7", "--region", "70,80,42,50", "--cover-scale", "0.5", "--boundary-jitter-px", "0")
    assert config.seed == 7 and config.region == Region(70, 80, 42, 50) and config.cover_scale == 0.5
    assert config.boundary_jitter_px == 0.0 and config.region != PAPER_REGION
    with pytest.raises(UserError, match="--region"):
        parse("--region", "80,70,42,50")
    with pytest.raises(UserError, match="--noise-mgal -1"):
        parse("--noise-mgal", "-1")
    with pytest.raises(UserError, match="unknown key"):
        SynthConfig.from_dict({"seed": 1, "colour": "red"})


def test_larger_units_make_longer_runs_of_one_class(medium_scene):
    # --unit-scale 3: the same region holds fewer, larger units, so neighbouring nodes agree more often and
    # the bedrock's connected units are fewer; 1 is the default scene itself.
    from scipy import ndimage

    assert SynthConfig(**{**MEDIUM.to_dict(), "unit_scale": 1.0}) == MEDIUM
    large = generate_scene(SynthConfig(**{**MEDIUM.to_dict(), "unit_scale": 3.0}))

    def agreement(bedrock):
        return float(np.mean(bedrock[:, 1:] == bedrock[:, :-1]))

    def units(bedrock):
        return sum(ndimage.label(bedrock == k)[1] for k in range(10))

    assert agreement(large.bedrock) > agreement(medium_scene.bedrock) + 0.02
    assert units(large.bedrock) < 0.6 * units(medium_scene.bedrock)
    assert 0.2 < float(np.mean(large.labels != 255)) < 0.6  # the cover's share is tuned as before
