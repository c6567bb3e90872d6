"""prepare_dataset on a tiny hand-made input: grids.nc contents and attributes, manifest, atomic replacement."""

from __future__ import annotations

import hashlib
import json

import netCDF4
import numpy as np
import pytest

from ggmnet.datasets.geo import GeoGrid, Region
from ggmnet.datasets.labels import write_label_grid
from ggmnet.datasets.netcdf import write_gmt_grid
from ggmnet.datasets.prepare import prepare_dataset
from ggmnet.datasets.processing import ProcessingRecipe
from ggmnet.datasets.tiles import TileDataset
from ggmnet.datasets.windows import Scale
from ggmnet.errors import UserError

REGION = Region(10.0, 12.0, 40.0, 41.5)
RECIPE = ProcessingRecipe(height_km=10.0, margin_km=60.0)
SCALES = (Scale(0.5, 0.5), Scale(1.0, 0.5))


def write_inputs(folder, *, lon_range=(9.0, 13.0), lat_range=(39.0, 42.5)):
    """Bouguer (0.05-degree grid, mGal), labels (cover north of 41.1 N and west of 10.6 E) and bedrock."""
    folder.mkdir(parents=True, exist_ok=True)
    lon = np.round(np.arange(lon_range[0], lon_range[1] + 1e-9, 0.05), 6)
    lat = np.round(np.arange(lat_range[0], lat_range[1] + 1e-9, 0.05), 6)
    lon2, lat2 = np.meshgrid(lon, lat)
    rng = np.random.default_rng(0)
    z = 30 * np.sin(2 * lon2) * np.cos(3 * lat2) + 2 * rng.normal(size=lon2.shape)
    bedrock = (np.floor(lon2 * 4) % 10).astype(np.uint8)
    labels = np.where((lat2 > 41.1) | (lon2 < 10.6), 255, bedrock).astype(np.uint8)
    write_gmt_grid(folder / "bouguer.nc", GeoGrid(lon, lat, z.astype(np.float32)))
    write_label_grid(folder / "labels.nc", GeoGrid(lon, lat, labels, name="label", units=""))
    write_label_grid(folder / "bedrock.nc", GeoGrid(lon, lat, bedrock, name="bedrock", units=""),
                     variable="bedrock")
    return lon, lat, z.astype(np.float32), labels, bedrock


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepare")
    lon, lat, z, labels, bedrock = write_inputs(root / "raw")
    out = prepare_dataset(root / "raw" / "bouguer.nc", root / "raw" / "labels.nc", root / "ds", region=REGION,
                          recipe=RECIPE, bedrock=root / "raw" / "bedrock.nc", scales=SCALES, seed=3)
    cols = (lon >= 10.0 - 1e-9) & (lon <= 12.0 + 1e-9)
    rows = (lat >= 40.0 - 1e-9) & (lat <= 41.5 + 1e-9)
    inner = {"lon": lon[cols], "lat": lat[rows], "bouguer": z[np.ix_(rows, cols)],
             "label": labels[np.ix_(rows, cols)], "bedrock": bedrock[np.ix_(rows, cols)]}
    return root, out, inner


def test_grids_nc_holds_the_region_with_cf_attributes(prepared):
    root, out, inner = prepared
    with netCDF4.Dataset(out / "grids.nc") as ds:
        assert ds.Conventions.startswith("CF")
        assert json.loads(ds.processing_recipe) == RECIPE.to_dict()
        assert ds.dimensions["lat"].size == 31 and ds.dimensions["lon"].size == 41
        for name, units, axis in (("lat", "degrees_north", "Y"), ("lon", "degrees_east", "X")):
            var = ds[name]
            assert (var.units, var.axis, var.standard_name) == (units, axis, name[:3].replace("lat", "latitude")
                                                                .replace("lon", "longitude"))
        np.testing.assert_allclose(ds["lon"][:], inner["lon"])
        np.testing.assert_allclose(ds["lat"][:], inner["lat"])
        assert ds["bouguer"].units == ds["regional"].units == ds["residual"].units == "mGal"
        bouguer, regional, residual = (np.asarray(ds[n][:]) for n in ("bouguer", "regional", "residual"))
        assert ds["label"].dtype == np.uint8 and list(ds["label"].flag_values) == [*range(10), 255]
        assert ds["label"].flag_meanings.split()[-1] == "cenozoic_cover"
        np.testing.assert_array_equal(ds["label"][:], inner["label"])
        np.testing.assert_array_equal(ds["bedrock"][:], inner["bedrock"])
    np.testing.assert_array_equal(bouguer, inner["bouguer"])
    np.testing.assert_allclose(residual, bouguer - regional, atol=1e-4)
    # Independent check of the residual's size: the sinusoid 30 sin(2 lon) cos(3 lat) has wavelengths of
    # 264 km (lon, at 40.75 N) and 233 km (lat), |k| = 0.0360 rad/km, so the residual keeps 1 - exp(-10 |k|)
    # = 0.302 of it; the 2 mGal white noise (4-6 km nodes) passes almost whole.
    lon2, lat2 = np.meshgrid(inner["lon"], inner["lat"])
    signal = 30 * np.sin(2 * lon2) * np.cos(3 * lat2)
    k = 2 * np.pi * np.hypot(1 / 264.0, 1 / 233.0)
    expected = np.hypot((1 - np.exp(-10 * k)) * signal.std(), 2.0)
    assert residual.std() == pytest.approx(expected, rel=0.1)


def test_manifest_is_complete_and_consistent(prepared):
    root, out, inner = prepared
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "ggmnet-dataset" and manifest["version"] == 1
    assert manifest["region"] == {"west": 10.0, "east": 12.0, "south": 40.0, "north": 41.5}
    assert manifest["recipe"] == RECIPE.to_dict()
    assert set(manifest["margin_km"]) == {"west", "east", "south", "north"}
    assert min(manifest["margin_km"].values()) >= 60.0
    for key in ("bouguer", "labels", "bedrock"):
        digest = hashlib.sha256((root / "raw" / f"{key}.nc").read_bytes()).hexdigest()
        assert manifest["sources"][key]["sha256"] == digest
    with netCDF4.Dataset(out / "grids.nc") as ds:
        for name in ("bouguer", "regional", "residual"):
            values = np.asarray(ds[name][:], dtype=np.float64)
            stats = manifest["normalisation"][name]
            assert stats["mean"] == pytest.approx(values.mean(), abs=1e-4)
            assert stats["std"] == pytest.approx(values.std(), abs=1e-4)
            assert stats["p02"] == pytest.approx(np.percentile(values, 2), abs=1e-4)
            assert stats["p98"] == pytest.approx(np.percentile(values, 98), abs=1e-4)
    label = inner["label"]
    assert manifest["class_counts"] == [int((label == c).sum()) for c in range(10)]
    windows = manifest["windows"]
    assert len(windows) == 12 + 6  # 4 x 3 of 0.5 degrees; 3 x 2 of 1 degree slid by 0.5
    lon, lat = inner["lon"], inner["lat"]
    for w in windows:
        cols = (lon >= w["west"] - 1e-9) & (lon <= w["east"] + 1e-9)
        rows = (lat >= w["south"] - 1e-9) & (lat <= w["north"] + 1e-9)
        block = label[np.ix_(rows, cols)]
        assert w["nodes"] == block.size
        assert w["outcrop_fraction"] == pytest.approx(np.mean(block != 255), abs=1e-6)
        assert (w["split"] == "test") == (w["outcrop_fraction"] < 0.10)
    split = manifest["split"]
    assert (split["method"], split["seed"], split["val_fraction"], split["test_outcrop_below"]) == \
        ("random", 3, 0.15, 0.10)
    assert split["overlap"]["val_windows"] == sum(w["split"] == "val" for w in windows)
    assert (out / "run.json").is_file()
    sizes = [len(TileDataset(out, s, tile_size=8)) for s in ("train", "val", "test")]
    assert sum(sizes) == len(windows) and min(sizes) > 0


def test_a_failed_run_leaves_the_old_dataset_whole(prepared, tmp_path):
    root, out, _ = prepared
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(UserError, match="--region"):
        prepare_dataset(root / "raw" / "bouguer.nc", root / "raw" / "labels.nc", out,
                        region=Region(100, 101, 40, 41), recipe=RECIPE, scales=SCALES)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    fresh = tmp_path / "never"
    with pytest.raises(UserError, match="labels.nc covers"):
        write_inputs(tmp_path / "small", lon_range=(10.5, 11.5))
        prepare_dataset(root / "raw" / "bouguer.nc", tmp_path / "small" / "labels.nc", fresh, region=REGION,
                        recipe=RECIPE, scales=SCALES)
    assert not fresh.exists()


def test_ensure_synthetic_default_builds_once_and_survives_interruption(tmp_path, monkeypatch):
    import ggmnet.datasets.synth as synth
    from ggmnet.datasets import default_data_dir, ensure_synthetic_default

    monkeypatch.setenv("GGMNET_DATA", str(tmp_path / "cache"))
    assert default_data_dir() == tmp_path / "cache"
    real = synth.SynthConfig
    monkeypatch.setattr(synth, "SynthConfig", lambda seed: real(seed=seed, region=Region(80, 82, 45, 46),
                                                                   margin_km=60.0, spacing_arcmin=4.0))
    out = ensure_synthetic_default()
    assert out == tmp_path / "cache" / "synthetic-v1" / "prepared"
    manifest = json.loads((out / "manifest.json").read_text())
    assert "bedrock" in manifest["variables"] and len(manifest["windows"]) == 2  # two 1-degree windows
    assert manifest["sources"]["bouguer"]["path"] == str(out.parent / "raw" / "bouguer.nc")
    stamp = (out / "grids.nc").stat().st_mtime_ns
    assert ensure_synthetic_default() == out and (out / "grids.nc").stat().st_mtime_ns == stamp
    # An interrupted earlier build leaves only a hidden temporary folder; the next call completes the dataset.
    for path in out.iterdir():
        path.unlink()
    out.rmdir()
    (out.parent / ".prepared.stale").mkdir()
    assert ensure_synthetic_default() == out and (out / "manifest.json").is_file()
    assert ensure_synthetic_default(tmp_path / "other", seed=1).parent.name == "synthetic-v1-seed1"
