"""A geologist's own files: GeoTIFF and projected rasters, vector maps with a legend, ICGEM grids, --variable.

Every route is checked against the netCDF route on the same synthetic scene (labels on >= 99 % of the nodes,
gravity within 1e-4 mGal), and the projected-raster reprojection against an analytic field with the error
bound of interpolation on its pixel grid.
"""

from __future__ import annotations

import math

import geopandas
import netCDF4
import numpy as np
import pyproj
import pytest
import rasterio
import shapely
from rasterio.features import rasterize, shapes
from rasterio.transform import from_origin
from tiny_data import error_lines

from ggmnet.classes import CLASS_CODES, CLASS_NAMES, TABLE1
from ggmnet.datasets.cli import main
from ggmnet.datasets.geo import Region, cell_area_km2
from ggmnet.datasets.netcdf import write_gmt_grid
from ggmnet.datasets.prepare import load_grids, manifest_classes, read_manifest
from ggmnet.datasets.rasters import nice_spacing_deg
from ggmnet.datasets.readers import read_gravity, read_label_nodes
from ggmnet.datasets.synth import SynthConfig, generate_scene, write_scene
from ggmnet.errors import UserError

#: The scene: 6' nodes over E70-76, N44-48 with 100 km around it; prepared with a 50 km margin.
SCENE = SynthConfig(region=Region(70, 76, 44, 48), spacing_arcmin=6.0, margin_km=100.0, seed=0)
PREPARE = ["--region", "70,76,44,48", "--margin-km", "50", "--scales", "1:0.5"]
#: A Lambert conformal conic fitted to the scene (metres).
LAMBERT = "+proj=lcc +lat_1=44.5 +lat_2=47.5 +lat_0=46 +lon_0=73 +datum=WGS84 +units=m +no_defs"


def write_geotiff(path, lon, lat, values, *, nodata=None, dtype=None):
    """A north-up EPSG:4326 GeoTIFF whose pixel centres are the nodes ``lon`` x ``lat`` (ascending)."""
    dlon, dlat = lon[1] - lon[0], lat[1] - lat[0]
    values = np.asarray(values)
    with rasterio.open(path, "w", driver="GTiff", width=lon.size, height=lat.size, count=1,
                       dtype=dtype or values.dtype, crs="EPSG:4326", nodata=nodata,
                       transform=from_origin(lon[0] - dlon / 2, lat[-1] + dlat / 2, dlon, dlat)) as dst:
        dst.write(values[::-1], 1)
    return path


def polygons_of(labels, lon, lat):
    """The label grid's cells as polygons (4-connected regions of one value), with the value."""
    dlon, dlat = lon[1] - lon[0], lat[1] - lat[0]
    transform = from_origin(lon[0] - dlon / 2, lat[-1] + dlat / 2, dlon, dlat)
    return [(shapely.geometry.shape(g), int(v)) for g, v in shapes(labels[::-1].copy(), transform=transform)]


def unit_of(value, i):
    """Two units per class (``D1``, ``D2``), two of cover (``Q``, ``N``), alternating over the polygons."""
    return ("Q", "N")[i % 2] if value == 255 else f"{CLASS_CODES[value]}{1 + i % 2}"


def run(argv, capsys=None):
    assert main(argv) == 0


def run_error(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """The synthetic scene's files, its own files in other formats, and the netCDF route's dataset."""
    folder = tmp_path_factory.mktemp("own-data")
    scene = generate_scene(SCENE)
    paths = write_scene(scene, folder / "raw")
    lon, lat = scene.lon, scene.lat
    paths["bouguer_tif"] = write_geotiff(folder / "bouguer.tif", lon, lat, scene.bouguer_mgal.astype(np.float32))
    paths["labels_tif"] = write_geotiff(folder / "labels.tif", lon, lat, scene.labels.astype(np.uint8), nodata=None)
    records = polygons_of(scene.labels, lon, lat)
    frame = geopandas.GeoDataFrame({"UNIT": [unit_of(v, i) for i, (_, v) in enumerate(records)]},
                                   geometry=[g for g, _ in records], crs="EPSG:4326")
    paths["gpkg"] = folder / "geology.gpkg"
    frame.to_file(paths["gpkg"], layer="geology", driver="GPKG")
    paths["gpkg_utm"] = folder / "geology_utm.gpkg"
    frame.set_geometry(frame.geometry.segmentize(0.02)).to_crs("EPSG:32643").to_file(paths["gpkg_utm"],
                                                                                        driver="GPKG")
    rows = ["unit,class"] + [f"{code}{k},{name}" for code, name in zip(CLASS_CODES, CLASS_NAMES) for k in (1, 2)]
    paths["legend"] = folder / "legend.csv"
    paths["legend"].write_text("\n".join([*rows, "Q,cover", "N,cover"]) + "\n")
    reference = folder / "nc"
    run(["prepare", "--bouguer", str(paths["bouguer"]), "--labels", str(paths["labels"]), "--out", str(reference),
         *PREPARE])
    paths["reference"] = reference
    paths["scene"] = scene
    paths["folder"] = folder
    return paths


def agreement(dataset, reference):
    """(share of nodes whose label agrees, largest |Bouguer difference| in mGal, largest |residual difference|)."""
    a, b = load_grids(dataset), load_grids(reference)
    np.testing.assert_allclose(a["lon"], b["lon"], atol=1e-9)
    np.testing.assert_allclose(a["lat"], b["lat"], atol=1e-9)
    return (float(np.mean(a["label"] == b["label"])), float(np.abs(a["bouguer"] - b["bouguer"]).max()),
            float(np.abs(a["residual"] - b["residual"]).max()))


# ------------------------------------------------------------------------------------------------ Done when


def test_geotiff_gravity_and_labels_agree_with_the_netcdf_route(scene, tmp_path):
    out = tmp_path / "tif"
    run(["prepare", "--bouguer", str(scene["bouguer_tif"]), "--labels", str(scene["labels_tif"]),
         "--out", str(out), *PREPARE])
    labels, gravity, residual = agreement(out, scene["reference"])
    assert labels >= 0.99 and gravity <= 1e-4 and residual <= 1e-4
    assert labels == 1.0  # the same codes on the same nodes
    assert manifest_classes(read_manifest(out)) == TABLE1
    sources = read_manifest(out)["sources"]
    assert sources["bouguer"]["path"].endswith("bouguer.tif") and sources["labels"]["path"].endswith("labels.tif")


def test_geopackage_with_a_legend_agrees_with_the_netcdf_route(scene, tmp_path):
    out = tmp_path / "gpkg"
    run(["prepare", "--bouguer", str(scene["bouguer"]), "--labels", str(scene["gpkg"]), "--label-field", "UNIT",
         "--legend", str(scene["legend"]), "--out", str(out), *PREPARE])
    labels, gravity, residual = agreement(out, scene["reference"])
    assert labels >= 0.99 and gravity <= 1e-4 and residual <= 1e-4
    manifest = read_manifest(out)
    assert manifest_classes(manifest) == TABLE1 and manifest["sources"]["legend"]["path"].endswith("legend.csv")


def test_geopackage_in_utm_agrees_with_the_netcdf_route(scene, tmp_path):
    out = tmp_path / "utm"
    run(["prepare", "--bouguer", str(scene["bouguer"]), "--labels", str(scene["gpkg_utm"]), "--label-field",
         "UNIT", "--legend", str(scene["legend"]), "--out", str(out), *PREPARE])
    labels, _, _ = agreement(out, scene["reference"])
    assert labels >= 0.99


def test_label_raster_in_a_lambert_projection_agrees_by_majority(scene, tmp_path):
    """The scene's labels sampled on a 2 km Lambert grid (each pixel the node cell it falls in), then taken
    back onto the nodes by majority: >= 99 % of the nodes agree."""
    s = scene["scene"]
    lon, lat = s.lon, s.lat
    to_lambert = pyproj.Transformer.from_crs("EPSG:4326", LAMBERT, always_xy=True)
    x, y = to_lambert.transform(*np.meshgrid(np.linspace(69.5, 76.5, 60), np.linspace(43.5, 48.5, 60)))
    size = 2000.0
    west, north = math.floor(x.min() / size) * size, math.ceil(y.max() / size) * size
    cols, rows = int(math.ceil((x.max() - west) / size)), int(math.ceil((north - y.min()) / size))
    xc = west + (np.arange(cols) + 0.5) * size
    yc = north - (np.arange(rows) + 0.5) * size
    plon, plat = pyproj.Transformer.from_crs(LAMBERT, "EPSG:4326", always_xy=True).transform(*np.meshgrid(xc, yc))
    i = np.clip(np.rint((plat - lat[0]) / (lat[1] - lat[0])).astype(int), 0, lat.size - 1)
    j = np.clip(np.rint((plon - lon[0]) / (lon[1] - lon[0])).astype(int), 0, lon.size - 1)
    path = tmp_path / "labels_lambert.tif"
    with rasterio.open(path, "w", driver="GTiff", width=cols, height=rows, count=1, dtype="uint8", crs=LAMBERT,
                       transform=from_origin(west, north, size, size)) as dst:
        dst.write(s.labels[i, j], 1)
    out = tmp_path / "lambert"
    run(["prepare", "--bouguer", str(scene["bouguer"]), "--labels", str(path), "--out", str(out), *PREPARE])
    labels, _, _ = agreement(out, scene["reference"])
    assert labels >= 0.99


def test_projected_gravity_raster_is_reprojected_within_the_interpolation_error():
    """An analytic field sampled on a 5 km Lambert grid, reprojected onto lon/lat nodes, against the field at the
    nodes. The tolerance is bilinear interpolation's bound on a 5 km grid, h^2/8 (|f_xx| + |f_yy|); taking
    the nearest pixel instead would miss by up to h/sqrt(2) |grad f|, several times more."""
    import tempfile
    from pathlib import Path

    k_lon, k_lat, amplitude = 2 * math.pi / 2.5, 2 * math.pi / 2.0, 30.0  # rad per degree, mGal

    def field(lon, lat):
        return amplitude * np.sin(k_lon * lon) * np.cos(k_lat * lat) + 5.0 * lat

    size = 5000.0
    to_lambert = pyproj.Transformer.from_crs("EPSG:4326", LAMBERT, always_xy=True)
    x, y = to_lambert.transform(*np.meshgrid(np.linspace(69, 77, 80), np.linspace(43, 49, 80)))
    west, north = math.floor(x.min() / size) * size, math.ceil(y.max() / size) * size
    cols, rows = int(math.ceil((x.max() - west) / size)), int(math.ceil((north - y.min()) / size))
    xc, yc = np.meshgrid(west + (np.arange(cols) + 0.5) * size, north - (np.arange(rows) + 0.5) * size)
    plon, plat = pyproj.Transformer.from_crs(LAMBERT, "EPSG:4326", always_xy=True).transform(xc, yc)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bouguer_lambert.tif"
        with rasterio.open(path, "w", driver="GTiff", width=cols, height=rows, count=1, dtype="float64",
                           crs=LAMBERT, transform=from_origin(west, north, size, size)) as dst:
            dst.write(field(plon, plat), 1)
        grid = read_gravity(path)
    step = nice_spacing_deg(size / 111200.0)
    assert step == pytest.approx(2.5 / 60)  # 5 km = 0.045 deg -> the round spacing 2.5'
    np.testing.assert_allclose(grid.lon / step, np.round(grid.lon / step), atol=1e-6)
    np.testing.assert_allclose(grid.lat / step, np.round(grid.lat / step), atol=1e-6)
    assert grid.covers(Region(70, 76, 44, 48)) and np.isfinite(grid.values).all()
    glon, glat = np.meshgrid(grid.lon, grid.lat)
    error = np.abs(grid.values - field(glon, glat))
    # derivatives in mGal per km (a degree of longitude is shortest at the northern edge)
    km_lon, km_lat = 111.2 * math.cos(math.radians(49)), 111.2
    f_xx, f_yy = amplitude * (k_lon / km_lon) ** 2, amplitude * (k_lat / km_lat) ** 2
    bound = (size / 1000) ** 2 / 8 * (f_xx + f_yy)
    nearest = (size / 1000) / math.sqrt(2) * math.hypot(amplitude * k_lon / km_lon, amplitude * k_lat / km_lat)
    assert error.max() <= bound < nearest / 3
    assert error.max() > 0  # it was interpolated, not copied


# ------------------------------------------------------------------------------------------------ legends


def test_units_missing_from_the_legend_are_listed_with_their_areas(scene, tmp_path, capsys):
    legend = tmp_path / "partial.csv"
    legend.write_text("\n".join(line for line in scene["legend"].read_text().splitlines()
                                if not line.startswith(("D2,", "C1,"))) + "\n")
    base = ["prepare", "--bouguer", str(scene["bouguer"]), "--labels", str(scene["gpkg"]), "--label-field", "UNIT",
            "--legend", str(legend), *PREPARE]
    err = run_error([*base, "--out", str(tmp_path / "out")], capsys)
    assert "2 unit(s) not in" in err and "'D2'" in err and "'C1'" in err and "--unlisted-units ignore" in err
    # the areas inside the region's node cells, against the cells of the unit counted on the label grid
    frame = geopandas.read_file(scene["gpkg"])
    lon, lat = scene["scene"].lon, scene["scene"].lat
    rows = (lat >= 44 - 1e-9) & (lat <= 48 + 1e-9)
    cols = (lon >= 70 - 1e-9) & (lon <= 76 + 1e-9)
    dlon, dlat = lon[1] - lon[0], lat[1] - lat[0]
    for unit in ("D2", "C1"):
        cells = rasterize(frame[frame.UNIT == unit].geometry, out_shape=(lat.size, lon.size), fill=0,
                          transform=from_origin(lon[0] - dlon / 2, lat[-1] + dlat / 2, dlon, dlat))[::-1]
        area = float((cells[np.ix_(rows, cols)] * cell_area_km2(lat[rows], dlon, dlat)[:, None]).sum())
        shown = float(err.split(f"'{unit}' (")[1].split(" km2")[0])
        assert area > 100 and shown == pytest.approx(area, rel=1e-3), unit
    assert not (tmp_path / "out").exists()
    out = tmp_path / "ignored"
    run([*base, "--unlisted-units", "ignore", "--out", str(out)])
    ours, ref = load_grids(out)["label"], load_grids(scene["reference"])["label"]
    assert (ours[ref == CLASS_CODES.index("D")] == 255).any()  # D2 is ignored, D1 kept
    assert (ours[ref == CLASS_CODES.index("D")] == CLASS_CODES.index("D")).any()


def test_vector_map_errors_are_one_line(scene, tmp_path, capsys):
    base = ["prepare", "--bouguer", str(scene["bouguer"]), "--labels", str(scene["gpkg"]), "--out",
            str(tmp_path / "out"), *PREPARE]
    assert "--label-field: required" in run_error(base, capsys)
    assert "--label-field NAME: " in run_error([*base, "--label-field", "NAME"], capsys)
    err = run_error([*base, "--label-field", "UNIT"], capsys)  # units are not class names without a legend
    assert "not in the class names" in err and "--legend" in err
    bad = tmp_path / "bad.csv"
    bad.write_text("unit,kind\nD1,Devonian\n")
    assert "columns unit and class" in run_error([*base, "--label-field", "UNIT", "--legend", str(bad)], capsys)
    assert "--label-bounds" in run_error([*base, "--label-field", "UNIT", "--legend", str(scene["legend"]),
                                          "--label-bounds", "70,76,44,48"], capsys)
    assert "--label-field UNIT: applies to vector maps" in run_error(
        ["prepare", "--bouguer", str(scene["bouguer"]), "--labels", str(scene["labels_tif"]), "--label-field",
         "UNIT", "--out", str(tmp_path / "out"), *PREPARE], capsys)
    assert not (tmp_path / "out").exists()


def test_a_legend_of_new_classes_makes_the_class_list(scene, tmp_path):
    """Units mapped to 12 classes that are not Table 1's: the class list is the legend's, in order of first
    appearance, with its colours; codes on the nodes follow it."""
    legend = tmp_path / "twelve.csv"
    names = [f"Unit {chr(65 + k)}" for k in range(12)]
    rows = ["unit,class,code,colour"]
    for v in range(10):
        for k in (1, 2):
            target = v if k == 1 else (10 if v < 5 else 11)  # the second unit of each class: class 10 or 11
            rows.append(f"{CLASS_CODES[v]}{k},{names[target]},U{target},#{(20 * target):02x}8040")
    legend.write_text("\n".join([*rows, "Q,cover", "N,Cenozoic cover"]) + "\n")
    lon, lat = load_grids(scene["reference"])["lon"], load_grids(scene["reference"])["lat"]
    values, classes = read_label_nodes(scene["gpkg"], lon, lat, field="UNIT", legend=legend)
    assert classes.num_classes == 12
    assert list(classes.names[:3]) == ["Unit A", "Unit K", "Unit B"]  # order of first appearance
    assert classes.colours[classes.names.index("Unit K")] == (200, 128, 64)
    # each node's class is one its Table 1 class maps to: its own letter, or K (classes 0-4) or L (5-9)
    reference = load_grids(scene["reference"])["label"]
    named = np.array([*classes.names, *[""] * (256 - 12)])[values]
    outcrop = reference != 255
    own = named == np.array([f"Unit {chr(65 + v)}" if v < 10 else "" for v in range(256)])[reference]
    second = np.where(reference < 5, named == "Unit K", named == "Unit L")
    assert np.mean((own | second)[outcrop]) >= 0.99 and second[outcrop].any() and own[outcrop].any()
    assert set(np.unique(values[~outcrop]).tolist()) <= {255, *range(12)}


def test_label_raster_codes_need_the_legend_or_table_1(scene, tmp_path):
    lon, lat = scene["scene"].lon, scene["scene"].lat
    codes = np.where(scene["scene"].labels == 255, 99, scene["scene"].labels.astype(np.int16) + 100)
    path = write_geotiff(tmp_path / "codes.tif", lon, lat, codes.astype(np.int16))
    nodes_lon, nodes_lat = lon[(lon >= 70 - 1e-9) & (lon <= 76 + 1e-9)], lat[(lat >= 44 - 1e-9) & (lat <= 48 + 1e-9)]
    with pytest.raises(UserError, match=r"codes.tif: band of codes has \d+ invalid value"):
        read_label_nodes(path, nodes_lon, nodes_lat)
    legend = tmp_path / "codes.csv"
    legend.write_text("unit;class\n" + "".join(f"{100 + k};{CLASS_CODES[k]}\n" for k in range(10)) + "99;cover\n")
    values, classes = read_label_nodes(path, nodes_lon, nodes_lat, legend=legend)
    reference, _ = read_label_nodes(scene["labels"], nodes_lon, nodes_lat)
    assert classes == TABLE1 and np.array_equal(values, reference)


def test_colour_mapped_geotiff_is_read_as_colours(scene, tmp_path):
    """A single-band GeoTIFF whose colour table is Table 1's under other indices: read through its colours."""
    lon, lat = scene["scene"].lon, scene["scene"].lat
    labels = scene["scene"].labels
    shuffled = np.where(labels == 255, 0, labels.astype(np.uint8) + 1)  # index 0 = cover, k + 1 = class k
    path = tmp_path / "coloured.tif"
    dlon, dlat = lon[1] - lon[0], lat[1] - lat[0]
    with rasterio.open(path, "w", driver="GTiff", width=lon.size, height=lat.size, count=1, dtype="uint8",
                       crs="EPSG:4326", transform=from_origin(lon[0] - dlon / 2, lat[-1] + dlat / 2, dlon, dlat),
                       photometric="palette") as dst:
        dst.write(shuffled[::-1], 1)
        dst.write_colormap(1, {0: (218, 76, 250, 255), **{k + 1: (*TABLE1.colours[k], 255) for k in range(10)}})
    nodes_lon, nodes_lat = lon[5:-5], lat[5:-5]
    values, _ = read_label_nodes(path, nodes_lon, nodes_lat)
    reference, _ = read_label_nodes(scene["labels"], nodes_lon, nodes_lat)
    assert np.array_equal(values, reference)


# ------------------------------------------------------------------------------------------------ --variable, ICGEM


def test_variable_names_the_grid_of_a_file_with_several(scene, tmp_path, capsys):
    s = scene["scene"]
    path = tmp_path / "two.nc"
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("lon", s.lon.size)
        ds.createDimension("lat", s.lat.size)
        ds.createVariable("lon", "f8", ("lon",))[:] = s.lon
        ds.createVariable("lat", "f8", ("lat",))[:] = s.lat
        ds.createVariable("height", "f4", ("lat", "lon"))[:] = np.zeros(s.labels.shape, np.float32)
        ds.createVariable("gravity", "f4", ("lat", "lon"))[:] = s.bouguer_mgal
    base = ["prepare", "--bouguer", str(path), "--labels", str(scene["labels"]), *PREPARE]
    err = run_error([*base, "--out", str(tmp_path / "out")], capsys)
    assert "several 2-D variables (height, gravity)" in err and "--variable" in err
    run([*base, "--variable", "gravity", "--out", str(tmp_path / "out")])
    _, gravity, _ = agreement(tmp_path / "out", scene["reference"])
    assert gravity <= 1e-4


def write_gdf(path, lon, lat, gravity):
    """An ICGEM .gdf of two columns, h_over_geoid (m) and gravity_anomaly_bg (mGal), north row first."""
    head = {"product_type": "gravity_field", "modelname": "synthetic", "unit": "mgal", "refsysname": "WGS84",
            "long_lat_unit": "degree", "latlimit_north": f"{lat[-1]:.6f}", "latlimit_south": f"{lat[0]:.6f}",
            "longlimit_west": f"{lon[0]:.6f}", "longlimit_east": f"{lon[-1]:.6f}",
            "gridstep": f"{lon[1] - lon[0]:.6f}", "latitude_parallels": str(lat.size),
            "longitude_parallels": str(lon.size), "number_of_gridpoints": str(lat.size * lon.size),
            "gapvalue": "9999999.0000"}
    lines = [f"{k:>22} {v}" for k, v in head.items()] + ["", "longitude latitude h_over_geoid gravity_anomaly_bg",
                                                        "[deg.] [deg.] [meters] [mgal]", "end_of_head ====="]
    for i in range(lat.size - 1, -1, -1):
        for j in range(lon.size):
            lines.append(f"{lon[j]:.6f} {lat[i]:.6f} {10.0:.3f} {gravity[i, j]:.6f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_icgem_gdf_through_harmonica(scene, tmp_path, capsys):
    s = scene["scene"]
    path = write_gdf(tmp_path / "scene.gdf", s.lon, s.lat, s.bouguer_mgal)
    base = ["prepare", "--bouguer", str(path), "--labels", str(scene["labels"]), *PREPARE]
    err = run_error([*base, "--out", str(tmp_path / "out")], capsys)
    assert "2 grids (h_over_geoid, gravity_anomaly_bg)" in err and "--variable" in err
    assert "in meters (expected a gravity anomaly in mGal)" in run_error(
        [*base, "--variable", "h_over_geoid", "--out", str(tmp_path / "out")], capsys)
    run([*base, "--variable", "gravity_anomaly_bg", "--out", str(tmp_path / "out")])
    labels, gravity, _ = agreement(tmp_path / "out", scene["reference"])
    assert labels == 1.0 and gravity <= 1e-4


def test_cell_areas_against_an_equal_area_projection():
    lat = np.array([-60.0, 0.0, 44.05, 80.0])
    cells = [shapely.box(10.0, y - 0.05, 10.1, y + 0.05) for y in lat]
    area = geopandas.GeoSeries(cells, crs="EPSG:4326").to_crs("+proj=cea +datum=WGS84").area.to_numpy() / 1e6
    np.testing.assert_allclose(cell_area_km2(lat, 0.1, 0.1), area, rtol=1e-9)


def test_write_gmt_grid_is_still_read_by_read_gravity(tmp_path):
    from ggmnet.datasets.geo import GeoGrid

    lon, lat = np.linspace(70, 71, 11), np.linspace(44, 45, 6)
    values = np.arange(66, dtype=np.float32).reshape(6, 11)
    grid = read_gravity(write_gmt_grid(tmp_path / "g.nc", GeoGrid(lon, lat, values)))
    np.testing.assert_array_equal(grid.values, values)


def test_multiband_geotiff_band_by_description_or_number(tmp_path):
    lon, lat = np.linspace(70, 71, 11), np.linspace(44, 45, 6)
    values = np.arange(66, dtype=np.float32).reshape(6, 11)
    path = tmp_path / "two.tif"
    with rasterio.open(path, "w", driver="GTiff", width=11, height=6, count=2, dtype="float32", crs="EPSG:4326",
                       transform=from_origin(69.95, 45.1, 0.1, 0.2)) as dst:
        dst.write(np.stack([np.zeros_like(values), values])[:, ::-1])
        dst.set_band_description(1, "height")
        dst.set_band_description(2, "bouguer")
    with pytest.raises(UserError, match=r"two.tif: 2 bands \(1 \(height\), 2 \(bouguer\)\); name the one to use with "
                                        r"--variable"):
        read_gravity(path)
    for variable in ("bouguer", "2"):
        grid = read_gravity(path, variable=variable)
        np.testing.assert_array_equal(grid.values, values)
        np.testing.assert_allclose(grid.lon, lon, atol=1e-9)
        np.testing.assert_allclose(grid.lat, lat, atol=1e-9)
        assert grid.registration == "pixel"
    with pytest.raises(UserError, match="--variable gravity: .* has no such band"):
        read_gravity(path, variable="gravity")


def test_a_prediction_legend_must_name_the_checkpoint_classes(tmp_path):
    from ggmnet.datasets.legend import read_legend

    legend = tmp_path / "legend.csv"
    legend.write_text("unit,class\nA,Devonian\nB,Formation X\n")
    with pytest.raises(UserError, match="line 3: class 'Formation X' is not one of Archean, .*Granite"):
        read_legend(legend, base=TABLE1)
    assert read_legend(legend).classes.names == ("Devonian", "Formation X")  # preparing: a class list of its own
