"""The residual-anomaly recipe against harmonica and analytic point-mass fields."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pyproj
import pytest

from ggmnet.datasets.geo import PAPER_REGION, GeoGrid, Region
from ggmnet.datasets.processing import (
    ProcessingRecipe,
    fitted_projection,
    horizontal_gradient,
    pad_for_fft,
    separate_regional,
    tilt_angle,
    upward_continue,
    vertical_derivative,
)
from ggmnet.errors import UserError

G = 6.674e-11  # m^3 kg^-1 s^-2
EARTH_RADIUS_KM = 6371.0
MGAL = 1e5  # mGal per m/s^2


def smooth_field(ny: int, nx: int, seed: int = 0) -> np.ndarray:
    """A smooth random planar field (ny, nx) with a mean of 30."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:ny, 0:nx]
    field = np.full((ny, nx), 30.0)
    for _ in range(12):
        k = rng.uniform(0.05, 0.6, 2)
        field += rng.normal(0, 5) * np.cos(k[0] * xx + k[1] * yy + rng.uniform(0, 6.3))
    return field


# --------------------------------------------------------------------------- planar operators


@pytest.mark.filterwarnings("ignore::FutureWarning")  # xrft, inside harmonica
@pytest.mark.parametrize("pad_mode", ["edge", "reflect"])
def test_upward_continuation_matches_harmonica_on_the_same_padded_grid(pad_mode):
    hm = pytest.importorskip("harmonica")
    xr = pytest.importorskip("xarray")
    values = smooth_field(48, 64)
    dx, dy, height = 2.0, 3.0, 10.0
    padded, crop = pad_for_fft(values - values.mean(), pad_mode=pad_mode, pad_fraction=1 / 3)
    grid = xr.DataArray(padded, dims=("northing", "easting"),
                        coords={"northing": np.arange(padded.shape[0]) * dy,
                                "easting": np.arange(padded.shape[1]) * dx})
    reference = hm.upward_continuation(grid, height).values[crop] + values.mean()
    ours = upward_continue(values, dx, dy, height, pad_mode=pad_mode, pad_fraction=1 / 3)
    assert np.abs(ours - reference).max() < 1e-9 * np.abs(values).max()
    vd_reference = -hm.derivative_upward(grid).values[crop]
    vd = vertical_derivative(values, dx, dy, pad_mode=pad_mode, pad_fraction=1 / 3)
    assert np.abs(vd - vd_reference).max() < 1e-9 * np.abs(vd).max()
    # and the continuation really changed the field
    assert np.abs(ours - values).max() > 1.0


def test_mean_passes_unchanged_and_zero_height_is_identity():
    values = smooth_field(40, 50, seed=3)
    assert np.allclose(upward_continue(np.full((30, 40), 7.5), 2.0, 2.0, 10.0), 7.5)
    assert np.allclose(upward_continue(values, 2.0, 2.0, 0.0), values)
    with pytest.raises(ValueError, match="downward"):
        upward_continue(values, 2.0, 2.0, -1.0)


def point_mass_planar(depth_km: float, mass_kg: float, spacing_km: float, n: int):
    """Field (mGal) and analytic derivatives (mGal/km) of a point mass under the centre of an n x n grid."""
    coords = (np.arange(n) - n // 2) * spacing_km
    xx, yy = np.meshgrid(coords, coords)
    r2 = xx**2 + yy**2
    d = depth_km
    gm = G * mass_kg * MGAL / 1e6  # mGal km^2
    g = gm * d / (r2 + d**2) ** 1.5
    vd = gm * (2 * d**2 - r2) / (r2 + d**2) ** 2.5  # d/dz with z down
    thg = gm * 3 * d * np.sqrt(r2) / (r2 + d**2) ** 2.5
    return g, vd, thg


def test_vertical_derivative_horizontal_gradient_and_tilt_of_a_point_mass():
    spacing, depth, n = 1.0, 6.0, 201
    g, vd_true, thg_true = point_mass_planar(depth, 1e14, spacing, n)
    inner = (slice(50, 151), slice(50, 151))
    vd = vertical_derivative(g, spacing, spacing)
    thg = horizontal_gradient(g, spacing, spacing)
    tilt = tilt_angle(g, spacing, spacing)
    scale = np.abs(vd_true).max()  # 1.35 mGal/km at the peak
    assert np.sqrt(np.mean((vd - vd_true)[inner] ** 2)) < 0.01 * scale
    assert abs(vd[n // 2, n // 2] - vd_true[n // 2, n // 2]) < 0.02 * scale
    assert np.sqrt(np.mean((thg - thg_true)[inner] ** 2)) < 0.01 * np.abs(thg_true).max()
    tilt_true = np.arctan2(vd_true, thg_true)
    assert np.abs(tilt - tilt_true)[inner].max() < 0.05  # radians
    assert tilt[n // 2, n // 2] == pytest.approx(math.pi / 2, abs=1e-6)


# --------------------------------------------------------------------------- recipe and projection


def test_recipe_round_trip_and_validation():
    recipe = ProcessingRecipe(height_km=8.0, pad_mode="reflect", channels=("residual", "tilt"))
    assert ProcessingRecipe.from_dict(recipe.to_dict()) == recipe
    assert recipe.to_dict()["channels"] == ["residual", "tilt"]
    with pytest.raises(UserError, match="unknown recipe field.*colour"):
        ProcessingRecipe.from_dict({"colour": 1})
    with pytest.raises(UserError, match="pad_mode"):
        ProcessingRecipe(pad_mode="zeros")
    with pytest.raises(UserError, match="channels"):
        ProcessingRecipe(channels=("residual", "curvature"))
    with pytest.raises(UserError, match="height_km"):
        ProcessingRecipe(height_km=0)


def test_fitted_projection_of_the_paper_region():
    crs = fitted_projection(PAPER_REGION)
    params = dict(item.lstrip("+").split("=") for item in crs.srs.split() if "=" in item)
    assert (params["proj"], params["lat_1"], params["lat_2"], params["lat_0"], params["lon_0"]) == \
        ("lcc", "42.5", "52.5", "47.5", "80")
    lon, lat = np.meshgrid(np.linspace(65, 95, 7), np.linspace(40, 55, 7))
    factors = pyproj.Proj(crs).get_factors(lon.ravel(), lat.ravel())
    assert np.abs(np.asarray(factors.meridional_scale) - 1).max() < 0.006  # about 0.5 %
    assert np.allclose(factors.meridional_scale, factors.parallel_scale, rtol=1e-9)  # conformal


# --------------------------------------------------------------------------- the recipe on a lon/lat grid


def _xyz(lon: np.ndarray, lat: np.ndarray, radius: np.ndarray | float) -> np.ndarray:
    lo, la = np.radians(lon), np.radians(lat)
    return np.stack([radius * np.cos(la) * np.cos(lo), radius * np.cos(la) * np.sin(lo),
                     radius * np.sin(la)], axis=-1)


def spherical_point_masses(lon: np.ndarray, lat: np.ndarray, height_km: float, sources: np.ndarray,
                           masses: np.ndarray) -> np.ndarray:
    """Radial attraction (mGal, positive down) of point masses at (x, y, z) km, at ``height_km`` above a
    sphere of radius 6371 km, on the lon/lat nodes: exact, no projection involved."""
    lon2, lat2 = np.meshgrid(lon, lat)
    radius = EARTH_RADIUS_KM + height_km
    obs = _xyz(lon2, lat2, radius).reshape(-1, 3)
    source_r2 = np.sum(sources**2, axis=1)[None, :]
    g = np.empty(obs.shape[0])
    for start in range(0, obs.shape[0], 2048):  # blocks that stay in cache
        dot = obs[start:start + 2048] @ sources.T
        dist2 = radius**2 + source_r2 - 2 * dot
        g[start:start + 2048] = ((radius - dot / radius) * masses / (dist2 * np.sqrt(dist2))).sum(axis=1)
    return (G * MGAL / 1e6) * g.reshape(lon2.shape)


@pytest.fixture(scope="module")
def point_mass_scene():
    """200 point masses 3-20 km deep under a 3' grid of E80-83, N44-46 with 500 km of margin."""
    region = Region(80, 83, 44, 46)
    step = 0.05
    lon = np.round(np.arange(72.9, 90.1 + step / 2, step), 9)
    lat = np.round(np.arange(39.5, 50.5 + step / 2, step), 9)
    rng = np.random.default_rng(1)
    n = 200
    depth = rng.uniform(3.0, 20.0, n)
    sources = _xyz(rng.uniform(lon[0], lon[-1], n), rng.uniform(lat[0], lat[-1], n), EARTH_RADIUS_KM - depth)
    masses = rng.choice([-1.0, 1.0], n) * 1.5e15 * (depth / 10.0) ** 2  # peaks of 10-100 mGal
    surface = spherical_point_masses(lon, lat, 0.0, sources, masses)
    grid = GeoGrid(lon, lat, surface)
    inner = grid.subset(region)
    truth = spherical_point_masses(inner.lon, inner.lat, 10.0, sources, masses)
    return grid, region, truth


def test_regional_field_matches_the_analytic_field_10km_up(point_mass_scene):
    grid, region, truth = point_mass_scene
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the grid has the full 500 km margin: no warning
        out = separate_regional(grid, region, ProcessingRecipe())
    assert out["regional"].shape == truth.shape == (41, 61)
    assert np.array_equal(out["lon"], grid.subset(region).lon)
    assert truth.std() > 5.0  # a field worth continuing (11.7 mGal; 17.6 at the surface)
    rms = np.sqrt(np.mean((out["regional"] - truth) ** 2))
    assert rms < 0.2  # measured 0.044 mGal (max 0.16)
    assert np.allclose(out["residual"], out["bouguer"] - out["regional"])
    assert all(km >= 500.0 for km in out["margin_km"].values())


def test_without_margin_the_regional_field_is_worse_and_warns(point_mass_scene):
    grid, region, truth = point_mass_scene
    with pytest.warns(UserWarning, match="less than the recipe's 500 km"):
        out = separate_regional(grid.subset(region), region, ProcessingRecipe())
    assert out["margin_km"] == {"west": 0.0, "east": 0.0, "south": 0.0, "north": 0.0}
    rms = np.sqrt(np.mean((out["regional"] - truth) ** 2))
    assert rms > 0.3  # measured 0.60 mGal, max 5.3 at the edges: 14x worse than with the margin


def test_separate_regional_channels_and_coverage(point_mass_scene):
    grid, region, _ = point_mass_scene
    small = grid.crop(region, 150.0)
    recipe = ProcessingRecipe(margin_km=150.0,
                              channels=("residual", "vertical_derivative", "horizontal_gradient", "tilt"))
    out = separate_regional(small, region, recipe)
    assert np.all(out["horizontal_gradient"] >= 0)
    assert np.all(np.abs(out["tilt"]) <= np.pi / 2)
    assert np.allclose(out["tilt"], np.arctan2(out["vertical_derivative"], out["horizontal_gradient"]))
    # the residual is a high-pass: its vertical derivative peaks over the shallow masses like the field's
    assert np.corrcoef(out["vertical_derivative"].ravel(), out["residual"].ravel())[0, 1] > 0.5
    with pytest.raises(UserError, match="covers .* but the region needs 80,90,44,47"):
        separate_regional(small, Region(80, 90, 44, 47))
