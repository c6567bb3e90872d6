"""A legend of 12 classes, end to end through the command lines: prepare from a GeoTIFF of unit codes and a
legend, search, export, retrain, evaluate and predict, each with 12-class outputs named by the legend."""

from __future__ import annotations

import json
import warnings

import geopandas
import netCDF4
import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from tiny_data import retrain_config, search_config

from ggmnet.classes import ClassList
from ggmnet.datasets.cli import main as data_main
from ggmnet.datasets.geo import GeoGrid
from ggmnet.datasets.netcdf import write_gmt_grid
from ggmnet.datasets.prepare import manifest_classes, read_manifest
from ggmnet.retrain.cli import evaluate_main, predict_main
from ggmnet.retrain.train import run_retrain
from ggmnet.search.export import export_genotype
from ggmnet.search.search import run_search
from ggmnet.search_space.genotype import Genotype

NAMES = [f"Formation {chr(65 + k)}" for k in range(12)]
COLOURS = [(20 * k, 255 - 20 * k, (60 * k) % 256) for k in range(12)]


def write_inputs(folder):
    """A Bouguer field of Gaussian anomalies over E79-85, N43-48 (0.1 deg) and a GeoTIFF of unit codes 101-112
    (its 12 quantiles; 7 = cover in the south), with the legend naming each code's formation."""
    lon = np.round(np.arange(79.0, 85.0 + 1e-9, 0.1), 6)
    lat = np.round(np.arange(43.0, 48.0 + 1e-9, 0.1), 6)
    rng = np.random.default_rng(3)
    glon, glat = np.meshgrid(lon, lat)
    field = np.zeros_like(glon)
    for _ in range(40):
        c_lon, c_lat = rng.uniform(79, 85), rng.uniform(43, 48)
        field += rng.normal(0, 20) * np.exp(-((glon - c_lon) ** 2 + (glat - c_lat) ** 2) / (2 * 0.3 ** 2))
    codes = 101 + np.digitize(field, np.quantile(field, np.linspace(0, 1, 13)[1:-1])).astype(np.int16)
    codes[glat < 44.4] = 7
    write_gmt_grid(folder / "bouguer.nc", GeoGrid(lon, lat, field.astype(np.float32)))
    with rasterio.open(folder / "units.tif", "w", driver="GTiff", width=lon.size, height=lat.size, count=1,
                       dtype="int16", crs="EPSG:4326",
                       transform=from_origin(lon[0] - 0.05, lat[-1] + 0.05, 0.1, 0.1)) as dst:
        dst.write(codes[::-1], 1)
    rows = ["unit,class,code,colour", "7,cover,,"]
    rows += [f"{101 + k},{NAMES[k]},F{k},#{r:02x}{g:02x}{b:02x}" for k, (r, g, b) in enumerate(COLOURS)]
    (folder / "legend.csv").write_text("\n".join(rows) + "\n")
    return codes


@pytest.mark.slow
def test_a_twelve_class_legend_trains_evaluates_and_predicts(tmp_path, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    codes = write_inputs(raw)
    data = tmp_path / "prepared"
    assert data_main(["prepare", "--bouguer", str(raw / "bouguer.nc"), "--labels", str(raw / "units.tif"),
                      "--legend", str(raw / "legend.csv"), "--region", "80,84,44,47", "--margin-km", "50",
                      "--scales", "1:0.5", "--out", str(data)]) == 0
    classes = manifest_classes(read_manifest(data))
    assert classes == ClassList(tuple(NAMES), tuple(f"F{k}" for k in range(12)), tuple(COLOURS))
    assert len(read_manifest(data)["class_counts"]) == 12 and min(read_manifest(data)["class_counts"]) > 0
    with netCDF4.Dataset(data / "grids.nc") as ds:
        assert list(ds["label"].flag_values) == [*range(12), 255]
        assert ds["label"].flag_meanings.split()[:2] == ["formation_a", "formation_b"]
        label = np.asarray(ds["label"][:])
    # the codes map to the legend's order: code 101 + k is class k, 7 is cover
    inside = codes[np.ix_(np.arange(10, 41), np.arange(10, 51))]
    np.testing.assert_array_equal(label, np.where(inside == 7, 255, inside - 101))

    assert data_main(["show", str(data), "--out", str(tmp_path / "overview.png")]) == 0  # the legend's colours

    search_run = run_search(search_config(data, tmp_path / "search"))
    genotype, _, _ = export_genotype(tmp_path / "genotype.json", run=search_run)
    assert genotype.num_classes == 12 and genotype.classes["names"] == NAMES
    assert Genotype.load(tmp_path / "genotype.json") == genotype

    summary = run_retrain(retrain_config(data, tmp_path / "genotype.json", tmp_path / "retrain"))
    best = torch.load(summary["best_checkpoint"], weights_only=True)
    assert best["model_config"]["genotype"]["num_classes"] == 12
    assert best["data"]["classes"]["names"] == NAMES
    per_class = json.loads((tmp_path / "retrain" / "tables" / "val_per_class.json").read_text())
    assert [row[1] for row in per_class["rows"]] == NAMES and len(per_class["rows"]) == 12

    assert evaluate_main(["--checkpoint", summary["best_checkpoint"], "--split", "val", "--device", "cpu",
                          "--out", str(tmp_path / "eval")]) == 0
    results = json.loads((tmp_path / "eval" / "evaluation_val.json").read_text())
    assert np.asarray(results["outcrop"]["confusion_matrix"]).shape == (12, 12)
    assert len(results["outcrop"]["iou"]) == 12 and results["classes"]["names"] == NAMES
    assert "Formation L" in (tmp_path / "eval" / "evaluation_val.md").read_text()

    out = tmp_path / "map"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the small scene has less than the recipe's margin
        assert predict_main(["--checkpoint", summary["best_checkpoint"], "--bouguer", str(raw / "bouguer.nc"),
                             "--region", "81,83,45,46.5", "--labels", str(raw / "units.tif"), "--legend",
                             str(raw / "legend.csv"), "--device", "cpu", "--out", str(out)]) == 0
    capsys.readouterr()
    with netCDF4.Dataset(out / "prediction.nc") as ds:
        probability = np.asarray(ds["probability"][:])
        assert probability.shape[0] == 12 and ds["class_index"].class_names.split()[-1] == "formation_l"
        np.testing.assert_allclose(probability.sum(axis=0), 1.0, atol=1e-5)
    with rasterio.open(out / "prediction_class.tif") as src:
        assert src.colormap(1)[11][:3] == COLOURS[11] and src.tags(1)["class_11"] == "Formation L"
    with rasterio.open(out / "prediction_probability.tif") as src:
        assert src.count == 12 and src.descriptions[11] == "Formation L"
    units = geopandas.read_file(out / "prediction_units.gpkg", layer="merged_units")
    assert set(units["name"]) <= set(NAMES) and set(units["class"]) <= set(range(12))
    with rasterio.open(out / "merged_class.tif") as merged:
        values = merged.read(1)
    mapped = codes[::-1][np.ix_(np.arange(15, 31), np.arange(20, 41))]  # 46.5..45 N, 81..83 E, north up
    own = mapped != 7
    np.testing.assert_array_equal(values[own], mapped[own] - 101)
