"""Regions, gravity and label grid readers/writers, label images and label resampling."""

from __future__ import annotations

import json

import netCDF4
import numpy as np
import pytest
from PIL import Image

from ggmnet.classes import CLASS_COLOURS, COVER_COLOUR
from ggmnet.datasets.geo import PAPER_REGION, GeoGrid, Region
from ggmnet.datasets.labels import read_label_grid, read_label_image, read_labels, write_label_grid
from ggmnet.datasets.netcdf import read_gravity_grid, write_gmt_grid
from ggmnet.datasets.resample import resample_labels
from ggmnet.errors import UserError

# --------------------------------------------------------------------------- regions


def test_region_parse_and_predicates():
    region = Region.parse(" 65, 95,40 ,55")
    assert region == PAPER_REGION
    assert str(region) == "65,95,40,55"
    assert region.as_tuple() == (65.0, 95.0, 40.0, 55.0)
    assert Region.from_dict(region.to_dict()) == region
    assert region.contains(Region(70, 80, 45, 50)) and region.contains(region)
    assert not region.contains(Region(60, 80, 45, 50))
    assert region.overlaps(Region(90, 100, 50, 60))
    assert not region.overlaps(Region(95, 100, 40, 55))  # touching edges only
    assert region.contains_points(np.array([65.0, 64.9, 80.0]), np.array([40.0, 45.0, 55.1])).tolist() == \
        [True, False, False]


@pytest.mark.parametrize("text, message", [
    ("95,65,40,55", "--region 95,65,40,55: east (65) must be greater than west (95)"),
    ("65,95,55,40", "--region 65,95,55,40: north (40) must be greater than south (55)"),
    ("65,95,40,95", "--region 65,95,40,95: north (95) must lie in [-90, 90]"),
    ("65,95,40", "--region 65,95,40: expected four numbers W,E,S,N"),
    ("65,95,forty,55", "--region 65,95,forty,55: expected four numbers"),
    ("65,95,nan,55", "south (nan) must be a finite number"),
])
def test_region_parse_errors(text, message):
    with pytest.raises(UserError) as info:
        Region.parse(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- GeoGrid geometry


def test_crop_subset_and_covers():
    lon = np.arange(60.0, 100.5, 1.0)
    lat = np.arange(30.0, 60.5, 1.0)
    grid = GeoGrid(lon, lat, np.add.outer(lat, lon))
    inner = grid.subset(Region(65, 70.4, 40, 44.6))
    assert (inner.lon[0], inner.lon[-1], inner.lat[0], inner.lat[-1]) == (65, 70, 40, 45)  # 44.6 -> node 45
    assert np.array_equal(inner.values, np.add.outer(inner.lat, inner.lon))
    # 222.4 km margin: 2 degrees of latitude, 222.4 / (111.2 cos 47 deg) = 2.93 degrees of longitude
    cropped = grid.crop(Region(65, 70, 40, 45), margin_km=222.4)
    assert (cropped.lon[0], cropped.lon[-1], cropped.lat[0], cropped.lat[-1]) == (62, 73, 38, 47)
    clipped = grid.crop(Region(61, 99, 31, 59), margin_km=500)
    assert cropped.spacing_deg() == (1.0, 1.0)
    assert (clipped.lon[0], clipped.lon[-1], clipped.lat[0], clipped.lat[-1]) == (60, 100, 30, 60)
    assert grid.covers(Region(60, 100, 30, 60)) and grid.covers(Region(59.6, 100.4, 30, 60))
    assert not grid.covers(Region(59, 100, 30, 60))


# --------------------------------------------------------------------------- gravity grid reader


def reference_grid() -> GeoGrid:
    """A global 10-degree grid (seam excluded) with distinct values."""
    lon = np.arange(-180.0, 180.0, 10.0)
    lat = np.arange(-90.0, 90.5, 10.0)
    values = (np.arange(lat.size)[:, None] * 100 + np.arange(lon.size)[None, :]).astype(np.float32)
    return GeoGrid(lon, lat, values)


def write_raw(path, lon, lat, z, *, lon_name="x", lat_name="y", transpose=False, node_offset=None,
              fmt="NETCDF4", fill_value=None, lon_units=None):
    with netCDF4.Dataset(path, "w", format=fmt) as ds:
        ds.createDimension(lon_name, lon.size)
        ds.createDimension(lat_name, lat.size)
        x = ds.createVariable(lon_name, "f8", (lon_name,))
        if lon_units:
            x.units = lon_units
        x[:] = lon
        ds.createVariable(lat_name, "f8", (lat_name,))[:] = lat
        dims = (lon_name, lat_name) if transpose else (lat_name, lon_name)
        z_var = ds.createVariable("z", "f4", dims, fill_value=fill_value)
        z_var[:] = z.T if transpose else z
        if node_offset is not None:
            ds.node_offset = node_offset
    return path


def layouts(ref: GeoGrid):
    """(name, writer kwargs, expected registration) for each layout of the same grid."""
    seam_lon = np.append(ref.lon, 180.0)
    seam_z = np.concatenate([ref.values, ref.values[:, :1]], axis=1)
    order360 = np.argsort(np.where(seam_lon < 0, seam_lon + 360, seam_lon)[:-1])
    lon360 = np.append(np.where(ref.lon < 0, ref.lon + 360, ref.lon)[order360], 360.0)
    z360 = ref.values[:, order360]
    z360 = np.concatenate([z360, z360[:, :1]], axis=1)
    return [
        ("gmt_seam", {"lon": seam_lon, "lat": ref.lat, "z": seam_z, "node_offset": 0}, "gridline"),
        ("lonlat_names", {"lon": ref.lon, "lat": ref.lat, "z": ref.values, "lon_name": "lon",
                          "lat_name": "lat"}, "gridline"),
        ("descending", {"lon": ref.lon, "lat": ref.lat[::-1], "z": ref.values[::-1]}, "gridline"),
        ("zero_360", {"lon": lon360, "lat": ref.lat, "z": z360}, "gridline"),
        ("transposed", {"lon": ref.lon, "lat": ref.lat, "z": ref.values, "transpose": True}, "gridline"),
        ("cf_units", {"lon": ref.lon, "lat": ref.lat, "z": ref.values, "lon_name": "easting",
                      "lat_name": "lat", "lon_units": "degrees_east"}, "gridline"),
        ("classic", {"lon": seam_lon, "lat": ref.lat, "z": seam_z, "fmt": "NETCDF3_64BIT_OFFSET"}, "gridline"),
        ("pixel", {"lon": ref.lon, "lat": ref.lat, "z": ref.values, "node_offset": 1}, "pixel"),
    ]


@pytest.mark.parametrize("index", range(8))
def test_reader_layouts_give_identical_grids(tmp_path, index):
    ref = reference_grid()
    name, kwargs, registration = layouts(ref)[index]
    grid = read_gravity_grid(write_raw(tmp_path / f"{name}.nc", **kwargs))
    assert np.array_equal(grid.lon, ref.lon)
    assert np.array_equal(grid.lat, ref.lat)
    assert np.array_equal(grid.values, ref.values)
    assert grid.values.dtype == np.float32
    assert grid.registration == registration
    assert grid.source.endswith(f"{name}.nc")


def test_writer_round_trip_and_wgm2012_layout(tmp_path):
    lon = np.linspace(65, 95, 31)
    lat = np.linspace(40, 55, 16)
    values = np.random.default_rng(0).normal(0, 50, (16, 31)).astype(np.float32)
    path = write_gmt_grid(tmp_path / "bouguer.nc", GeoGrid(lon, lat, values), title="test")
    with netCDF4.Dataset(path) as ds:
        assert ds.node_offset == 0
        assert ds["z"].dimensions == ("y", "x") and ds["z"].dtype == np.float32
        assert ds["x"].dtype == np.float64 and ds["y"].dtype == np.float64
        assert ds["z"].units == "mGal"
        assert np.allclose(ds["z"].actual_range, [values.min(), values.max()])
        assert list(ds["x"].actual_range) == [65, 95]
    grid = read_gravity_grid(path)
    assert np.array_equal(grid.values, values) and np.array_equal(grid.lon, lon)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_nan_nodes_are_refused_or_filled_harmonically(tmp_path):
    lat = np.arange(0.0, 20.0)
    lon = np.arange(0.0, 30.0)
    plane = (2.0 * lat[:, None] + 3.0 * lon[None, :] + 1.0).astype(np.float32)  # harmonic: filled exactly
    holed = plane.copy()
    holed[5:9, 10:14] = np.nan
    holed[15, 3] = np.nan
    path = write_raw(tmp_path / "holes.nc", lon, lat, holed)
    with pytest.raises(UserError, match=r"holes.nc: 17 NaN nodes in z; pass --fill-nan to fill them"):
        read_gravity_grid(path)
    with pytest.warns(UserWarning, match="filled 17 NaN nodes"):
        grid = read_gravity_grid(path, fill_nan=True)
    assert np.allclose(grid.values, plane, atol=1e-3)
    masked = write_raw(tmp_path / "fill.nc", lon, lat, np.where(np.isnan(holed), -9999, holed),
                       fill_value=np.float32(-9999))
    with pytest.raises(UserError, match="17 NaN nodes"):
        read_gravity_grid(masked)


def _write_no_2d(path):
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("x", 4)
        ds.createVariable("x", "f8", ("x",))[:] = np.arange(4)
    return path


def _write_no_coords(path):
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("a", 4)
        ds.createDimension("b", 5)
        ds.createVariable("z", "f4", ("b", "a"))[:] = np.zeros((5, 4))
    return path


def _truncated(path, fmt):
    write_raw(path, np.arange(0.0, 40.0), np.arange(0.0, 30.0), np.ones((30, 40), np.float32), fmt=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("case, make, message", [
    ("missing", lambda p: p, "no such file"),
    ("text", lambda p: p.write_text("lon lat z\n1 2 3\n") and p, "not a netCDF file"),
    ("png", lambda p: Image.new("RGB", (4, 4)).save(p, format="PNG") or p, "not a netCDF file"),
    ("truncated_nc4", lambda p: _truncated(p, "NETCDF4"), "truncated or damaged"),
    ("truncated_classic", lambda p: _truncated(p, "NETCDF3_CLASSIC"), "truncated or damaged"),
    ("no_2d", _write_no_2d, "no 2-D variable"),
    ("no_coords", _write_no_coords, "no recognisable coordinates"),
    ("projected", lambda p: write_raw(p, np.arange(5.0) * 1000.0, np.arange(3.0) * 1000.0,
                                      np.zeros((3, 5), np.float32)), "not longitude/latitude in degrees"),
    ("irregular", lambda p: write_raw(p, np.array([0.0, 1, 2, 4, 5]), np.arange(3.0),
                                      np.zeros((3, 5), np.float32)), "irregular longitude spacing"),
])
def test_reader_errors_name_the_file(tmp_path, case, make, message):
    path = make(tmp_path / f"{case}.nc")
    with pytest.raises(UserError) as info:
        read_gravity_grid(path)
    text = str(info.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text


# --------------------------------------------------------------------------- label grids


def test_label_grid_round_trip_and_bad_values(tmp_path):
    rng = np.random.default_rng(2)
    labels = rng.choice([0, 3, 9, 255], size=(6, 8)).astype(np.uint8)
    grid = GeoGrid(np.linspace(80, 87, 8), np.linspace(40, 45, 6), labels, name="label", units="")
    path = write_label_grid(tmp_path / "labels.nc", grid)
    with netCDF4.Dataset(path) as ds:
        assert ds["label"].dtype == np.uint8
        assert list(ds["label"].flag_values) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 255]
        assert ds["label"].flag_meanings.split()[-2:] == ["granite", "cenozoic_cover"]
    back = read_label_grid(path)
    assert np.array_equal(back.values, labels) and back.values.dtype == np.uint8
    assert np.array_equal(back.lon, grid.lon) and np.array_equal(back.lat, grid.lat)
    bad = labels.astype(np.int16)
    bad[0, :3] = 12
    bad[1, 0] = 200
    with netCDF4.Dataset(tmp_path / "bad.nc", "w") as ds:
        ds.createDimension("lon", 8)
        ds.createDimension("lat", 6)
        ds.createVariable("lon", "f8", ("lon",))[:] = grid.lon
        ds.createVariable("lat", "f8", ("lat",))[:] = grid.lat
        ds.createVariable("classes", "i2", ("lat", "lon"))[:] = bad
    with pytest.raises(UserError, match=r"bad.nc: classes has 2 invalid value\(s\).*: 12 x 3, 200 x 1"):
        read_labels(tmp_path / "bad.nc")


# --------------------------------------------------------------------------- label images


def class_image(classes: np.ndarray, jitter: int = 0, seed: int = 0) -> np.ndarray:
    """RGB (H, W, 3) of ``classes`` (row 0 north) in Table 1's colours, each channel moved by up to jitter."""
    lut = np.zeros((256, 3), dtype=np.int16)
    lut[:10] = CLASS_COLOURS
    lut[255] = COVER_COLOUR
    rgb = lut[classes]
    if jitter:
        rgb = rgb + np.random.default_rng(seed).integers(-jitter, jitter + 1, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)


@pytest.fixture
def classes() -> np.ndarray:
    rng = np.random.default_rng(5)
    values = rng.integers(0, 10, (12, 20)).astype(np.uint8)
    values[:3, :5] = 255
    return values


def test_label_image_round_trip_with_jitter_and_sidecar(tmp_path, classes):
    path = tmp_path / "labels.png"
    Image.fromarray(class_image(classes, jitter=10)).save(path)
    (tmp_path / "labels.json").write_text(json.dumps({"west": 80, "east": 90, "south": 40, "north": 46}))
    grid = read_labels(path)
    assert np.array_equal(grid.values, classes[::-1])  # latitude ascending: image row 0 is the north edge
    assert grid.registration == "pixel"
    assert np.allclose(grid.lon, 80.25 + 0.5 * np.arange(20))  # pixel centres, 0.5 degree pixels
    assert np.allclose(grid.lat, 40.25 + 0.5 * np.arange(12))
    # the PATH.json sidecar wins over NAME.json, an explicit bounds argument over both
    (tmp_path / "labels.png.json").write_text(json.dumps({"west": 0, "east": 20, "south": 0, "north": 12}))
    assert read_label_image(path).lon[0] == 0.5
    assert read_label_image(path, Region(10, 30, 0, 6)).lon[0] == 10.5


def test_palette_png_and_tiff(tmp_path, classes):
    rgb = class_image(classes)
    palette_image = Image.fromarray(rgb).quantize(colors=11, method=Image.Quantize.MEDIANCUT)
    assert palette_image.mode == "P"
    palette_image.save(tmp_path / "p.png")
    Image.fromarray(rgb).save(tmp_path / "t.tif")
    bounds = Region(0, 20, 0, 12)
    assert np.array_equal(read_labels(tmp_path / "p.png", bounds).values, classes[::-1])
    assert np.array_equal(read_labels(tmp_path / "t.tif", bounds).values, classes[::-1])


def test_label_image_errors(tmp_path, classes):
    rgb = class_image(classes)
    rgb[:10, :10] = (16, 32, 48)
    rgb[-1, -2:] = (200, 200, 200)
    Image.fromarray(rgb).save(tmp_path / "odd.png")
    with pytest.raises(UserError, match=r"odd.png: 2 unknown colours \(expected Table 1's palette within 12\): "
                                        r"#102030 x 100 px, #c8c8c8 x 2 px"):
        read_label_image(tmp_path / "odd.png", Region(0, 1, 0, 1))
    Image.fromarray(class_image(classes, jitter=14, seed=1)).save(tmp_path / "blurred.png")
    with pytest.raises(UserError, match="unknown colour"):
        read_label_image(tmp_path / "blurred.png", Region(0, 1, 0, 1))
    Image.fromarray(class_image(classes)).save(tmp_path / "nobounds.png")
    with pytest.raises(UserError, match=r"nobounds.png: no bounds .*--label-bounds"):
        read_label_image(tmp_path / "nobounds.png")
    (tmp_path / "nobounds.json").write_text('{"west": 5, "east": 1, "south": 0, "north": 1}')
    with pytest.raises(UserError, match=r"nobounds.json: east \(1\) must be greater than west \(5\)"):
        read_label_image(tmp_path / "nobounds.png")
    (tmp_path / "junk.dat").write_bytes(b"hello world")
    with pytest.raises(UserError, match="junk.dat: neither netCDF nor PNG/TIFF"):
        read_labels(tmp_path / "junk.dat")


# --------------------------------------------------------------------------- resampling


def test_mode_resampling_hand_computed():
    # 4x4 label pixels of 0.5 degrees (centres 0.25 .. 1.75) onto 2x2 target nodes at 0.5, 1.5 (1 degree cells)
    labels_north_up = np.array([
        [1, 1, 2, 255],
        [1, 3, 255, 255],
        [4, 4, 5, 6],
        [7, 4, 6, 5],
    ], dtype=np.uint8)
    labels = GeoGrid(0.25 + 0.5 * np.arange(4), 0.25 + 0.5 * np.arange(4), labels_north_up[::-1],
                     registration="pixel", name="label", units="")
    target = np.array([0.5, 1.5])
    # north-west cell {1,1,1,3} -> 1; north-east {2,255,255,255} -> cover; south-west {4,4,7,4} -> 4;
    # south-east {5,6,6,5}: a tie, the lower index 5 wins
    expected_north_up = np.array([[1, 255], [4, 5]], dtype=np.uint8)
    assert np.array_equal(resample_labels(labels, target, target)[::-1], expected_north_up)
    # the nearest label pixel of node (0.5, 0.5) is the one centred at (0.75, 0.75) (round half to even -> 0.25)
    nearest = resample_labels(labels, target, target, method="nearest")
    assert nearest.shape == (2, 2) and nearest.dtype == np.uint8
    assert nearest[0, 0] == labels.values[int(np.rint(0.5)), int(np.rint(0.5))]
    # target finer than labels: every node takes the pixel it falls in
    fine = resample_labels(labels, labels.lon, labels.lat)
    assert np.array_equal(fine, labels.values)
    with pytest.raises(UserError, match=r"covers 0,2,0,2 but the gravity region needs 0.5,2.5,0.5,1.5"):
        resample_labels(labels, np.array([0.5, 1.5, 2.5]), target)


def test_spacing_km_against_geodesic_distances():
    from pyproj import Geod

    from ggmnet.datasets.geo import spacing_km

    geod = Geod(ellps="WGS84")
    lon = np.arange(80.0, 82.0 + 1e-9, 1 / 30)  # 2' nodes
    lat = np.arange(44.0, 46.0 + 1e-9, 1 / 30)[::-1]  # either direction
    dy, dx = spacing_km(lon, lat)
    _, _, ns = geod.inv(81.0, 45.0, 81.0, 45.0 + 1 / 30)
    _, _, ew = geod.inv(81.0, 45.0, 81.0 + 1 / 30, 45.0)
    # a sphere of 111.2 km per degree against the ellipsoid at 45 N: within 0.5 %
    assert dy == pytest.approx(ns / 1000, rel=5e-3) and dx == pytest.approx(ew / 1000, rel=5e-3)
    assert spacing_km(lon, lat, at_lat=0.0)[1] == pytest.approx(111.2 / 30)
    assert spacing_km(lon[:1], lat)[1] == 0.0
