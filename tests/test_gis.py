"""ggm-predict's GIS layers: the class COG (EPSG:4326, colour table, class names), the probability and entropy
GeoTIFFs, the GeoPackage of the predicted units and the merged map of the mapped outcrop and the predicted cover,
each read back with rasterio or geopandas and checked against prediction.nc."""

from __future__ import annotations

import json
import warnings

import geopandas
import netCDF4
import numpy as np
import pytest
import rasterio
from rasterio.features import rasterize
from test_predict import KNOWN_P, PREDICT, save_checkpoint, write_scene

from ggmnet.classes import TABLE1, ClassList
from ggmnet.inference.gis import SOURCE_MAP, SOURCE_PREDICTION, node_transform, unit_polygons
from ggmnet.inference.predict import predict_region


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    """A random network's map of the small scene of test_predict, with its geological map."""
    folder = tmp_path_factory.mktemp("gis")
    scene = write_scene(folder)
    checkpoint = save_checkpoint(folder / "random.pt", probabilities=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the small scene has less than the recipe's margin
        paths = predict_region(checkpoint, scene["bouguer"], PREDICT, folder / "out", tile_size=16, overlap=0.5,
                               scale_deg=0.6, device="cpu", labels=scene["labels"], progress=False)
    with netCDF4.Dataset(paths["netcdf"]) as ds:
        nc = {name: np.asarray(ds[name][:]) for name in ("lon", "lat", "class", "probability", "entropy")}
    with netCDF4.Dataset(scene["labels"]) as ds:
        lon, lat, grid = np.asarray(ds["lon"][:]), np.asarray(ds["lat"][:]), np.asarray(ds["label"][:])
    rows = np.flatnonzero(np.isin(np.round(lat, 6), np.round(nc["lat"], 6)))
    cols = np.flatnonzero(np.isin(np.round(lon, 6), np.round(nc["lon"], 6)))
    nc["labels"] = grid[np.ix_(rows, cols)]
    return paths, nc


def north_up(values):
    return np.asarray(values)[..., ::-1, :]


def test_class_cog_opens_with_epsg4326_its_colour_table_and_class_names(predicted):
    paths, nc = predicted
    assert np.unique(nc["class"]).size > 1
    with rasterio.open(paths["class_tif"]) as src:
        assert src.crs.to_epsg() == 4326 and src.count == 1 and src.dtypes[0] == "uint8" and src.nodata == 255
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        np.testing.assert_array_equal(src.read(1), north_up(nc["class"]))
        colours = src.colormap(1)
        for k, colour in enumerate(TABLE1.colours):
            assert colours[k][:3] == colour
        tags = src.tags(1)
        assert [tags[f"class_{k}"] for k in range(10)] == list(TABLE1.names)
        assert ClassList.from_dict(json.loads(src.tags()["classes"])) == TABLE1
        # pixel centres on the prediction's nodes
        x, y = src.xy(0, 0)
        assert x == pytest.approx(nc["lon"][0]) and y == pytest.approx(nc["lat"][-1])
        x, y = src.xy(src.height - 1, src.width - 1)
        assert x == pytest.approx(nc["lon"][-1]) and y == pytest.approx(nc["lat"][0])
    assert "<Category>Archean</Category>" in paths["class_tif"].with_name("prediction_class.tif.aux.xml").read_text()
    qml = paths["class_tif"].with_suffix(".qml").read_text()
    assert 'type="paletted"' in qml and 'label="Ar Archean"' in qml and 'color="#ffb2ff"' in qml


def test_probability_and_entropy_geotiffs_hold_the_netcdf_values(predicted):
    paths, nc = predicted
    with rasterio.open(paths["probability_tif"]) as src:
        assert src.crs.to_epsg() == 4326 and src.count == 10 and src.dtypes[0] == "float32"
        assert list(src.descriptions) == list(TABLE1.names)
        np.testing.assert_allclose(src.read(), north_up(nc["probability"]), atol=1e-7)
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    with rasterio.open(paths["entropy_tif"]) as src:
        assert src.crs.to_epsg() == 4326 and src.count == 1
        np.testing.assert_allclose(src.read(1), north_up(nc["entropy"]), atol=1e-6)


def test_units_rasterise_back_onto_the_class_raster(predicted):
    paths, nc = predicted
    units = geopandas.read_file(paths["units_gpkg"], layer="units")
    assert units.crs.to_epsg() == 4326
    assert list(units.columns[:7]) == ["class", "code", "name", "colour", "mean_probability", "area_km2", "nodes"]
    shape = nc["class"].shape
    transform = node_transform(nc["lon"], nc["lat"])
    back = rasterize(zip(units.geometry, units["class"]), out_shape=shape, transform=transform, fill=255)
    assert np.mean(back == north_up(nc["class"])) >= 0.99
    assert (units["name"] == [TABLE1.names[c] for c in units["class"]]).all()
    # the area of every unit against an equal-area projection of its polygon
    equal_area = units.to_crs("+proj=cea +datum=WGS84").area.to_numpy() / 1e6
    np.testing.assert_allclose(units["area_km2"], equal_area, rtol=1e-6)
    assert units["nodes"].sum() == nc["class"].size
    # each unit's mean probability: the probability of its class averaged over the nodes it covers
    for _, unit in units.sample(min(len(units), 15), random_state=0).iterrows():
        inside = rasterize([(unit.geometry, 1)], out_shape=shape, transform=transform, fill=0).astype(bool)
        expected = north_up(nc["probability"][unit["class"]])[inside].mean()
        assert unit["mean_probability"] == pytest.approx(expected, rel=1e-5)
        assert unit["nodes"] == inside.sum()


def test_merged_map_keeps_the_outcrop_and_fills_the_cover(predicted):
    paths, nc = predicted
    labels, cover = nc["labels"], nc["labels"] == 255
    assert cover.any() and (~cover).any()
    with rasterio.open(paths["merged_tif"]) as merged, rasterio.open(paths["merged_source_tif"]) as source:
        values, origin = merged.read(1)[::-1], source.read(1)[::-1]
        assert merged.crs.to_epsg() == 4326 and merged.colormap(1)[5][:3] == TABLE1.colours[5]
        assert source.tags(1) == {"source_1": "geological map", "source_2": "prediction"}
    np.testing.assert_array_equal(values[~cover], labels[~cover])
    np.testing.assert_array_equal(values[cover], nc["class"][cover])
    assert (origin[~cover] == SOURCE_MAP).all() and (origin[cover] == SOURCE_PREDICTION).all()
    layer = geopandas.read_file(paths["units_gpkg"], layer="merged_units")
    back = rasterize(zip(layer.geometry, layer["class"]), out_shape=labels.shape, fill=255,
                     transform=node_transform(nc["lon"], nc["lat"]))
    assert np.mean(back == values[::-1]) >= 0.99
    assert set(layer["source"]) == {"geological map", "prediction"}


def test_unit_polygons_by_hand():
    """A 3 x 4 map of two classes (row 0 south): four 4-connected units, their nodes, areas and mean
    probabilities worked by hand."""
    values = np.array([[0, 0, 1, 1],
                       [0, 1, 1, 0],
                       [0, 0, 0, 1]], dtype=np.uint8)
    probability = np.zeros((2, 3, 4))
    probability[0] = np.where(values == 0, 0.8, 0.3)
    probability[1] = 1 - probability[0]
    probability[1, 0, 2] = 0.9
    probability[0, 0, 2] = 0.1
    lon, lat = np.array([10.0, 10.5, 11.0, 11.5]), np.array([0.0, 0.5, 1.0])
    units = unit_polygons(values, probability, lon, lat, TABLE1)
    # the 0 at row 1, column 3 and the 1 at row 2, column 3 touch their classes only at corners
    assert sorted(units["nodes"].tolist()) == [1, 1, 4, 6]
    big = units[units["nodes"] == 6].iloc[0]
    assert big["class"] == 0 and big["mean_probability"] == pytest.approx(0.8)
    ones = units[(units["class"] == 1) & (units["nodes"] == 4)].iloc[0]
    assert ones["nodes"] == 4 and ones["mean_probability"] == pytest.approx((0.9 + 0.7 * 3) / 4)
    assert units["area_km2"].sum() == pytest.approx(
        geopandas.GeoSeries(units.geometry.union_all(), crs="EPSG:4326").to_crs("+proj=cea +datum=WGS84").area[0]
        / 1e6, rel=1e-9)


def test_constant_network_units_carry_its_probability(tmp_path):
    scene = write_scene(tmp_path)
    checkpoint = save_checkpoint(tmp_path / "best.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths = predict_region(checkpoint, scene["bouguer"], PREDICT, tmp_path / "out", tile_size=32,
                               scale_deg=1.0, device="cpu", progress=False)
    assert "merged_tif" not in paths  # no geological map, no merged map
    units = geopandas.read_file(paths["units_gpkg"], layer="units")
    assert len(units) == 1 and units["class"][0] == 0
    assert units["mean_probability"][0] == pytest.approx(KNOWN_P[0], abs=1e-5)
