"""Region prediction: tiling and Hann blending without seams, node orientation, the CF netCDF and the CLI."""

from __future__ import annotations

import json
import math
import warnings

import netCDF4
import numpy as np
import pytest
import torch
from torch import nn

from ggmnet.datasets.geo import GeoGrid, Region
from ggmnet.datasets.labels import write_label_grid
from ggmnet.datasets.netcdf import write_gmt_grid
from ggmnet.datasets.processing import ProcessingRecipe
from ggmnet.engine.runio import torch_save_atomic
from ggmnet.errors import UserError
from ggmnet.inference.calibration import entropy as entropy_nats
from ggmnet.inference.predict import predict_region, upsampling_factors
from ggmnet.inference.rules import with_outcrop_prior
from ggmnet.inference.scoring import node_spacing_km
from ggmnet.inference.tiling import array_renderer, blend_window, predict_nodes, predict_tiled, tile_origins
from ggmnet.models import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, create_model
from ggmnet.retrain.cli import predict_main as main
from ggmnet.search_space.genotype import default_genotype

# A small scene: 0.05-degree nodes over 79-83 E, 42-46 N; the dataset's region is 80-82 E, 43-45 N and the
# prediction's 80.5-81.5 E, 43.5-44.5 N (21 x 21 nodes).
REGION = Region(80.0, 82.0, 43.0, 45.0)
PREDICT = Region(80.5, 81.5, 43.5, 44.5)
SPACING = 0.05
LON = np.round(np.arange(79.0, 83.0 + 1e-9, SPACING), 10)
LAT = np.round(np.arange(42.0, 46.0 + 1e-9, SPACING), 10)
#: Class probabilities that the stand-in checkpoint predicts everywhere (its classifier is a constant bias).
KNOWN_P = np.array([0.4, 0.3, 0.1, 0.05, 0.05, 0.02, 0.02, 0.02, 0.02, 0.02])
#: -sum p ln p of KNOWN_P, worked by hand: 0.366516 + 0.361192 + 0.230259 + 0.299573 + 0.391202.
KNOWN_ENTROPY = 1.648742


def write_scene(folder):
    """Bouguer (mGal), labels (cover in the south-east) and bedrock grids of the small scene."""
    lon2, lat2 = np.meshgrid(LON, LAT)
    bouguer = (-120.0 + 30.0 * np.exp(-((lon2 - 81.0) ** 2 + (lat2 - 44.0) ** 2) / 0.3)
               + 8.0 * np.sin(3.0 * lon2) * np.cos(2.0 * lat2) + 5.0 * (lat2 - 44.0))
    bedrock = (np.floor(lon2 * 2.0 + lat2 * 1.5) % 10).astype(np.uint8)
    labels = bedrock.copy()
    # Cover in the south-east, with a small outcrop inlier at 81.4-81.5 E, 43.4-43.5 N.
    inlier = (lon2 > 81.4 - 1e-9) & (lon2 < 81.5 + 1e-9) & (lat2 > 43.4 - 1e-9) & (lat2 < 43.5 + 1e-9)
    labels[(lon2 > 80.8) & (lat2 < 44.2) & ~inlier] = 255
    paths = {"bouguer": folder / "bouguer.nc", "labels": folder / "labels.nc", "bedrock": folder / "bedrock.nc"}
    write_gmt_grid(paths["bouguer"], GeoGrid(LON, LAT, bouguer.astype(np.float32)))
    write_label_grid(paths["labels"], GeoGrid(LON, LAT, labels, name="label", units=""))
    write_label_grid(paths["bedrock"], GeoGrid(LON, LAT, bedrock, name="bedrock", units=""), variable="bedrock")
    return paths


def save_checkpoint(path, *, probabilities=KNOWN_P, channels="pseudocolour", tile_size=32,
                    normalisation=None, manifest_sha256="0" * 64, pixels_per_degree=None):
    """A retrain checkpoint of a small GGMNet whose classifier is zeroed with bias log(probabilities), so
    that it predicts ``probabilities`` at every pixel; ``None`` keeps the random weights, with the classifier's
    scaled up so that the untrained network's classes vary over the map."""
    torch.manual_seed(0)
    model = create_model("ggmnet", genotype=default_genotype(2), deformable=False)
    if probabilities is None:
        with torch.no_grad():
            model.classifier.weight.mul_(50.0)
    else:
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.copy_(torch.log(torch.as_tensor(probabilities, dtype=torch.float32)))
    stats = normalisation or {"residual": {"mean": 0.0, "std": 5.0, "p02": -10.0, "p98": 10.0}}
    torch_save_atomic({
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "epoch": 1,
        "model": model.state_dict(), "model_config": model.model_config(),
        "data": {"manifest_sha256": manifest_sha256, "recipe": ProcessingRecipe(margin_km=50.0).to_dict(),
                 "normalisation": stats, "channels": channels, "geology_prior": False, "tile_size": tile_size,
                 "pixels_per_degree": pixels_per_degree,
                 "region": list(REGION.as_tuple()), "spacing_deg": [SPACING, SPACING]},
        "metrics": {}, "config": {},
    }, path)
    return path


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scene")
    paths = write_scene(folder)
    paths["checkpoint"] = save_checkpoint(folder / "best.pt")
    return paths


# ------------------------------------------------------------------------------------------------ tiling


def test_tile_origins_by_hand():
    # stride round(32 * 0.75) = 24; the last tile is moved back to end at the edge (100 - 32 = 68).
    assert tile_origins(100, 32, 0.25) == [0, 24, 48, 68]
    assert tile_origins(96, 32, 0.5) == [0, 16, 32, 48, 64]
    assert tile_origins(20, 32, 0.25) == [0]
    assert tile_origins(32, 32, 0.25) == [0]


def test_blend_window_is_a_partition_of_unity_at_half_overlap():
    w = blend_window(32)
    assert w.min() > 0.0
    np.testing.assert_allclose(w[:16] + w[16:], 1.0, atol=1e-12)
    np.testing.assert_allclose(w, w[::-1], atol=1e-12)
    assert w[0] == pytest.approx(math.sin(math.pi * 0.5 / 32) ** 2)


def coordinate_image(height, width):
    """Two smooth channels: the row and the column position, scaled to [0, 1]."""
    rows, cols = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    return np.stack([rows, cols]).astype(np.float32)


def pointwise_model(in_channels=2, classes=4, seed=0):
    torch.manual_seed(seed)
    model = nn.Conv2d(in_channels, classes, 1)
    with torch.no_grad():
        model.weight.mul_(5.0)
    return model.eval()


def test_tiles_blend_without_seams():
    image = coordinate_image(100, 77)
    model = pointwise_model()
    with torch.no_grad():
        whole = torch.softmax(model(torch.from_numpy(image)[None]), dim=1)[0].numpy()
    tiled = predict_tiled(model, array_renderer(image), (100, 77), tile_size=32, overlap=0.25)
    assert tiled.shape == (4, 100, 77)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    one_tile = predict_tiled(model, array_renderer(image), (100, 77), tile_size=128, overlap=0.25)
    np.testing.assert_allclose(one_tile, whole, atol=1e-5)
    strided = predict_tiled(model, array_renderer(image), (100, 77), tile_size=32, overlap=0.25, step=(3, 2),
                            batch_size=3)
    np.testing.assert_allclose(strided, whole[:, ::3, ::2], atol=1e-5)


def test_blend_is_the_hann_weighted_mean_of_the_tiles():
    """A model whose output depends on where a pixel sits in its tile (zero-padded 5x5 conv): the blend equals
    the weighted mean worked out tile by tile here."""
    torch.manual_seed(1)
    model = nn.Conv2d(2, 3, 5, padding=2).eval()
    image = coordinate_image(40, 40)
    tile, origins = 24, [0, 16]  # tile_origins(40, 24, 0.25): stride 18, last moved back to 16
    num = np.zeros((3, 40, 40))
    den = np.zeros((40, 40))
    w2d = np.outer(blend_window(tile), blend_window(tile))
    for y0 in origins:
        for x0 in origins:
            crop = torch.from_numpy(image[:, y0:y0 + tile, x0:x0 + tile])[None]
            with torch.no_grad():
                prob = torch.softmax(model(crop), dim=1)[0].numpy()
            num[:, y0:y0 + tile, x0:x0 + tile] += prob * w2d
            den[y0:y0 + tile, x0:x0 + tile] += w2d
    blended = predict_tiled(model, array_renderer(image), (40, 40), tile_size=tile, overlap=0.25)
    np.testing.assert_allclose(blended, num / den, atol=1e-5)
    np.testing.assert_allclose(blended.sum(axis=0), 1.0, atol=1e-5)


def test_upsampling_factors_match_the_training_pixel_size():
    two_minutes = 1.0 / 30.0
    # 5 deg at 2048 px: 5/2047 deg/px; a 2' node step is 13.65 px -> 14.
    assert upsampling_factors((two_minutes, two_minutes), 5.0, 2048) == (14, 14)
    assert upsampling_factors((two_minutes, two_minutes), 5.0, 256) == (2, 2)  # 1.70 -> 2
    assert upsampling_factors((two_minutes, two_minutes), 15.0, 256) == (1, 1)  # coarser: native nodes
    assert upsampling_factors((0.1, 0.05), 1.0, 101) == (5, 10)


def test_nodes_are_predicted_north_up_and_returned_south_to_north():
    """Fields on nodes, upsampled, tiled and put back: a pointwise model gives its value at each node."""
    lon = np.linspace(10.0, 12.0, 21)
    lat = np.linspace(40.0, 41.5, 16)
    field = np.add.outer(3.0 * (lat - 40.5), np.sin(lon)).astype(np.float32)
    model = nn.Conv2d(1, 2, 1).eval()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([1.0, -1.0]).reshape(2, 1, 1, 1))
        model.bias.zero_()
    stats = {"residual": {"mean": 0.0, "std": 1.0, "p02": -1.0, "p98": 1.0}}
    prob = predict_nodes(model, {"residual": field}, lon, lat, normalisation=stats, channels="physical",
                         factors=(3, 2), tile_size=16, overlap=0.25)
    assert prob.shape == (2, 16, 21)
    np.testing.assert_allclose(prob[0], 1.0 / (1.0 + np.exp(-2.0 * field)), atol=1e-5)


def test_entropy_against_hand_values():
    p = np.array([[0.5, 1.0, 0.7, 0.1], [0.5, 0.0, 0.2, 0.1], [0.0, 0.0, 0.1, 0.8]])
    # ln 2; 0; -(0.7 ln 0.7 + 0.2 ln 0.2 + 0.1 ln 0.1); -(2 * 0.1 ln 0.1 + 0.8 ln 0.8).
    np.testing.assert_allclose(entropy_nats(p), [0.693147, 0.0, 0.801819, 0.639031], atol=1e-6)
    assert entropy_nats(np.full((10, 1), 0.1))[0] == pytest.approx(math.log(10))


# ------------------------------------------------------------------------------------------ the whole region


def test_predict_region_writes_cf_netcdf_on_the_input_nodes(scene, tmp_path):
    out = tmp_path / "junggar"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the small scene has less than the recipe's margin north and south
        # 1 degree at 32 px: 1/31 deg/px, a node step of 1.55 px -> 2; 41 x 41 px in 4 tiles.
        paths = predict_region(scene["checkpoint"], scene["bouguer"], str(PREDICT), out, tile_size=32,
                               scale_deg=1.0, device="cpu", labels=scene["labels"], progress=False)
    assert {"netcdf", "png", "run", "class_tif", "units_gpkg", "merged_tif"} <= set(paths)  # GIS: test_gis.py
    inside_lon = LON[(LON >= PREDICT.west - 1e-9) & (LON <= PREDICT.east + 1e-9)]
    inside_lat = LAT[(LAT >= PREDICT.south - 1e-9) & (LAT <= PREDICT.north + 1e-9)]
    with netCDF4.Dataset(paths["netcdf"]) as ds:
        assert ds.Conventions == "CF-1.8"
        np.testing.assert_allclose(ds["lon"][:], inside_lon, atol=1e-9)
        np.testing.assert_allclose(ds["lat"][:], inside_lat, atol=1e-9)
        assert (ds["lat"].units, ds["lat"].standard_name, ds["lat"].axis) == ("degrees_north", "latitude", "Y")
        assert (ds["lon"].units, ds["lon"].standard_name, ds["lon"].axis) == ("degrees_east", "longitude", "X")
        assert ds["class"].dimensions == ("lat", "lon") and ds["class"].dtype == np.uint8
        assert list(ds["class"].flag_values) == list(range(10))
        assert ds["class"].flag_meanings.split()[0] == "archean"
        prob = np.asarray(ds["probability"][:])
        assert ds["probability"].dimensions == ("class_index", "lat", "lon")
        assert prob.dtype == np.float32 and prob.shape == (10, inside_lat.size, inside_lon.size)
        classes, entropy = np.asarray(ds["class"][:]), np.asarray(ds["entropy"][:])
        assert json.loads(ds.recipe)["margin_km"] == 50.0
        assert ds.checkpoint.endswith("best.pt") and len(ds.checkpoint_sha256) == 64
    # The stand-in predicts KNOWN_P everywhere: class 0, entropy worked by hand.
    np.testing.assert_allclose(prob, np.broadcast_to(KNOWN_P[:, None, None], prob.shape), atol=1e-5)
    np.testing.assert_array_equal(classes, np.argmax(prob, axis=0))
    np.testing.assert_allclose(entropy, KNOWN_ENTROPY, atol=1e-5)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run = json.loads(paths["run"].read_text())
    assert run["config"]["region"] == "80.5,81.5,43.5,44.5" and run["upsampling_factors"] == [2, 2]

    xr = pytest.importorskip("xarray")
    with xr.open_dataset(paths["netcdf"]) as ds:
        np.testing.assert_allclose(ds["lat"].values, inside_lat, atol=1e-9)
        np.testing.assert_allclose(ds["lon"].values, inside_lon, atol=1e-9)
        assert ds["class"].dims == ("lat", "lon")
        np.testing.assert_array_equal(ds["class"].values, classes)


def test_outcrop_prior_maps_the_cover_and_keeps_the_probabilities(scene, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths = predict_region(scene["checkpoint"], scene["bouguer"], PREDICT, tmp_path / "out", tile_size=32,
                               scale_deg=1.0, device="cpu", labels=scene["labels"], outcrop_prior=True,
                               progress=False)
    with netCDF4.Dataset(paths["netcdf"]) as ds:
        prob = np.asarray(ds["probability"][:], dtype=np.float64)
        classes, lon, lat = np.asarray(ds["class"][:]), np.asarray(ds["lon"][:]), np.asarray(ds["lat"][:])
        assert ds.outcrop_prior.startswith("yes")
    np.testing.assert_allclose(prob, np.broadcast_to(KNOWN_P[:, None, None], prob.shape), atol=1e-5)
    # The map's labels on the prediction's nodes, cut from the scene's grid (the same nodes).
    with netCDF4.Dataset(scene["labels"]) as ds:
        grid = np.asarray(ds["label"][:])
    rows = np.flatnonzero((LAT >= PREDICT.south - 1e-9) & (LAT <= PREDICT.north + 1e-9))
    cols = np.flatnonzero((LON >= PREDICT.west - 1e-9) & (LON <= PREDICT.east + 1e-9))
    labels = grid[np.ix_(rows, cols)]
    cover = labels == 255
    frequencies = np.bincount(labels[~cover], minlength=10) / (~cover).sum()
    want = with_outcrop_prior(prob, labels, frequencies, sampling=node_spacing_km(lon, lat, slice(None)))
    np.testing.assert_array_equal(classes, want)
    assert (classes[~cover] == 0).all()  # the outcrop keeps the network's class
    assert cover.any() and (classes[cover] != 0).any()  # the cover takes the classes exposed around it
    assert json.loads(paths["run"].read_text())["config"]["outcrop_prior"] is True


def test_random_model_class_is_argmax_and_entropy_consistent(scene, tmp_path):
    ckpt = save_checkpoint(tmp_path / "random.pt", probabilities=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # 0.6 degree at 16 px: 0.04 deg/px, factor 1; 21 x 21 px in 4 tiles.
        paths = predict_region(ckpt, scene["bouguer"], PREDICT, tmp_path / "out", tile_size=16, overlap=0.5,
                               scale_deg=0.6, device="cpu", progress=False)
    with netCDF4.Dataset(paths["netcdf"]) as ds:
        prob = np.asarray(ds["probability"][:], dtype=np.float64)
        classes, entropy = np.asarray(ds["class"][:]), np.asarray(ds["entropy"][:])
    np.testing.assert_allclose(prob.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(classes, np.argmax(prob, axis=0))
    np.testing.assert_allclose(entropy, -(prob * np.log(np.clip(prob, 1e-30, None))).sum(axis=0), atol=1e-5)
    assert np.unique(classes).size > 1  # a random network is not constant, so the checks above mean something


# ------------------------------------------------------------------------------------------------- CLI errors


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_cli_errors(scene, tmp_path, capsys):
    base = ["--bouguer", str(scene["bouguer"]), "--out", str(tmp_path / "out")]
    err = run_cli(["--checkpoint", str(tmp_path / "missing.pt"), "--region", "80,82,43,45", *base], capsys)
    assert "missing.pt" in err
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(scene["checkpoint"].read_bytes()[:300])
    err = run_cli(["--checkpoint", str(corrupt), "--region", "80,82,43,45", *base], capsys)
    assert "corrupt.pt" in err
    err = run_cli(["--checkpoint", str(scene["checkpoint"]), "--region", "80,82,43", *base], capsys)
    assert "--region" in err
    err = run_cli(["--checkpoint", str(scene["checkpoint"]), "--region", "82,80,43,45", *base], capsys)
    assert "--region" in err
    err = run_cli(["--checkpoint", str(scene["checkpoint"]), "--region", "84,90,43,45", *base], capsys)
    assert "outside the Bouguer grid" in err
    err = run_cli(["--checkpoint", str(scene["checkpoint"]), "--region", "80,82,43,45", "--overlap", "1",
                   *base], capsys)
    assert "--overlap" in err
    err = run_cli(["--checkpoint", str(scene["checkpoint"]), "--region", "80,82,43,45", "--scale-deg", "0.01",
                   *base], capsys)
    assert "--scale-deg" in err
    prior = torch.load(scene["checkpoint"], weights_only=True)
    prior["data"]["geology_prior"] = True
    torch.save(prior, tmp_path / "prior.pt")
    err = run_cli(["--checkpoint", str(tmp_path / "prior.pt"), "--region", "80,82,43,45", *base], capsys)
    assert "--labels" in err
    err = run_cli(["--checkpoint", str(scene["checkpoint"]), "--region", "80,82,43,45", "--outcrop-prior",
                   *base], capsys)
    assert "--outcrop-prior" in err and "--labels" in err
    assert not (tmp_path / "out").exists()


def test_fixed_resolution_checkpoint_predicts_at_its_training_density(scene, tmp_path):
    # Trained at 10 px per degree on this 0.05-degree grid: half a pixel per node, so the map is predicted on
    # every other node and interpolated; a constant model still gives its probabilities everywhere.
    ckpt = save_checkpoint(tmp_path / "fixed.pt", pixels_per_degree=10.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths = predict_region(ckpt, scene["bouguer"], PREDICT, tmp_path / "out", device="cpu", progress=False)
    run = json.loads(paths["run"].read_text())
    assert run["upsampling_factors"] == [0.5, 0.5]
    with netCDF4.Dataset(paths["netcdf"]) as ds:
        prob = np.asarray(ds["probability"][:], dtype=np.float64)
        assert ds.getncattr("pixels_per_degree") == 10.0
    np.testing.assert_allclose(prob, np.broadcast_to(KNOWN_P[:, None, None], prob.shape), atol=1e-5)


def test_fixed_resolution_checkpoint_too_fine_for_its_tile_is_a_clear_error(scene, tmp_path):
    # 1000 px per degree on this 0.05-degree grid: 50 px per node, more than a 32 px tile spans.
    ckpt = save_checkpoint(tmp_path / "fine.pt", pixels_per_degree=1000.0)
    with pytest.raises(UserError, match="1000 px per degree"):
        predict_region(ckpt, scene["bouguer"], PREDICT, tmp_path / "out", device="cpu", progress=False)
    assert not (tmp_path / "out").exists()
