"""Tiles: rendering against the grid and analytic fields, pseudo-colour, augmentation alignment, the prior."""

from __future__ import annotations

import json

import netCDF4
import numpy as np
import pytest
import torch

from ggmnet.classes import COVER_INDEX
from ggmnet.datasets.tiles import (
    TileDataset,
    augment_d4,
    augment_geometry,
    centred_coordinates,
    colour_lut,
    cover_answers,
    input_channels_from_fields,
)
from ggmnet.errors import UserError

# A 0.1-degree grid over 0..3 E, 0..3 N (31 x 31 nodes).
LON = np.round(np.linspace(0.0, 3.0, 31), 10)
LAT = np.round(np.linspace(0.0, 3.0, 31), 10)


def write_dataset(path, fields, label, windows, bedrock=None, normalisation=None):
    """A prepared dataset written by hand: grids.nc on LON/LAT and a manifest with ``windows``."""
    path.mkdir(parents=True, exist_ok=True)
    with netCDF4.Dataset(path / "grids.nc", "w") as ds:
        ds.createDimension("lat", LAT.size)
        ds.createDimension("lon", LON.size)
        ds.createVariable("lat", "f8", ("lat",))[:] = LAT
        ds.createVariable("lon", "f8", ("lon",))[:] = LON
        for name, values in fields.items():
            ds.createVariable(name, "f4", ("lat", "lon"))[:] = values
        ds.createVariable("label", "u1", ("lat", "lon"))[:] = label
        if bedrock is not None:
            ds.createVariable("bedrock", "u1", ("lat", "lon"))[:] = bedrock
    entries = []
    for i, (west, east, south, north, split) in enumerate(windows):
        rows = (LAT >= south - 1e-9) & (LAT <= north + 1e-9)
        cols = (LON >= west - 1e-9) & (LON <= east + 1e-9)
        block = label[np.ix_(rows, cols)]
        entries.append({"id": i, "scale_deg": east - west, "west": west, "east": east, "south": south,
                        "north": north, "split": split, "outcrop_fraction": float(np.mean(block != 255)),
                        "nodes": int(block.size),
                        "class_counts": np.bincount(block.ravel(), minlength=256)[:10].tolist()})
    stats = normalisation or {n: {"mean": 0.0, "std": 1.0, "p02": -1.0, "p98": 1.0} for n in fields}
    manifest = {"format": "ggmnet-dataset", "version": 1, "normalisation": stats,
                "variables": [*fields, "label", *(["bedrock"] if bedrock is not None else [])],
                "windows": entries}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def test_nodes_on_grid_reproduce_the_grid_exactly(tmp_path):
    rng = np.random.default_rng(0)
    residual = rng.normal(size=(31, 31)).astype(np.float32)
    label = rng.integers(0, 10, size=(31, 31)).astype(np.uint8)
    data = write_dataset(tmp_path, {"residual": residual}, label, [(1.0, 2.0, 1.0, 2.0, "train")])
    ds = TileDataset(data, "train", tile_size=11, channels="physical")
    item = ds[0]
    # Tile row 0 is the north edge (lat 2.0 = node 20), column 0 the west edge (lon 1.0 = node 10).
    np.testing.assert_array_equal(item["image"][0].numpy(), residual[20:9:-1, 10:21])
    np.testing.assert_array_equal(item["mask"].numpy(), label[20:9:-1, 10:21])
    assert item["image"].dtype == torch.float32 and item["mask"].dtype == torch.int64
    assert item["window"] == 0 and ds.in_channels == 1


def test_linear_field_is_reproduced_by_bilinear_rendering(tmp_path):
    lon2, lat2 = np.meshgrid(LON, LAT)
    residual = (3.0 * lon2 - 2.0 * lat2 + 5.0).astype(np.float32)
    label = np.zeros((31, 31), np.uint8)
    stats = {"residual": {"mean": 5.0, "std": 2.0, "p02": 0.0, "p98": 1.0}}
    data = write_dataset(tmp_path, {"residual": residual}, label, [(0.35, 2.85, 0.2, 2.7, "val")],
                         normalisation=stats)
    image = TileDataset(data, "val", tile_size=37, channels="physical")[0]["image"][0].numpy()
    lon_t = np.linspace(0.35, 2.85, 37)
    lat_t = np.linspace(2.7, 0.2, 37)
    expected = ((3.0 * lon_t[None, :] - 2.0 * lat_t[:, None] + 5.0) - 5.0) / 2.0
    np.testing.assert_allclose(image, expected, atol=2e-5)


def test_labels_are_sampled_by_nearest_node(tmp_path):
    label = np.where(LON[None, :] < 1.45, 3, 7).astype(np.uint8).repeat(31, axis=0)
    data = write_dataset(tmp_path, {"residual": np.zeros((31, 31), np.float32)}, label,
                         [(1.0, 2.0, 1.0, 2.0, "test")])
    mask = TileDataset(data, "test", tile_size=40)[0]["mask"].numpy()
    lon_t = np.linspace(1.0, 2.0, 40)
    expected = np.where(lon_t < 1.45, 3, 7)
    assert set(np.unique(mask)) == {3, 7}
    np.testing.assert_array_equal(mask, np.broadcast_to(expected, (40, 40)))


def test_pseudocolour_maps_p02_and_p98_to_the_ends_of_the_table():
    stats = {"residual": {"mean": 0.0, "std": 1.0, "p02": -4.0, "p98": 6.0}}
    residual = np.array([[-4.0, 6.0], [-100.0, 100.0]], dtype=np.float32)
    image = input_channels_from_fields({"residual": residual}, stats, "pseudocolour")
    lut = colour_lut()
    assert image.shape == (3, 2, 2) and image.dtype == np.float32
    np.testing.assert_array_equal(image[:, 0, 0], lut[0])
    np.testing.assert_array_equal(image[:, 0, 1], lut[-1])
    np.testing.assert_array_equal(image[:, 1, 0], lut[0])  # clipped below p02
    np.testing.assert_array_equal(image[:, 1, 1], lut[-1])
    mid = input_channels_from_fields({"residual": np.array([[1.0]])}, stats, "pseudocolour")
    np.testing.assert_array_equal(mid[:, 0, 0], lut[128])  # (1 + 4) / 10 * 255 = 127.5 -> 128


def test_physical_channels_are_standardised_in_order():
    stats = {"residual": {"mean": 1.0, "std": 2.0}, "tilt": {"mean": 0.5, "std": 0.25}}
    fields = {"tilt": np.full((2, 3), 1.0), "residual": np.full((2, 3), 5.0), "bouguer": np.zeros((2, 3))}
    image = input_channels_from_fields(fields, stats, "physical")
    assert image.shape == (2, 2, 3)
    np.testing.assert_allclose(image[0], 2.0)
    np.testing.assert_allclose(image[1], 2.0)


def test_rotation_fills_corners_and_keeps_image_and_mask_aligned():
    size = 64
    classes = np.zeros((size, size), np.uint8)
    classes[: size // 2, size // 2:] = 1
    classes[size // 2:, : size // 2] = 2
    classes[size // 2:, size // 2:] = 3
    image = torch.from_numpy(classes.astype(np.float32))[None].repeat(2, 1, 1)  # the image encodes its label
    masks = [torch.from_numpy(classes)[None]]
    exposed_corners = 0
    for seed in range(6):
        out, (mask,) = augment_geometry(image, masks, np.random.default_rng(seed))
        m = mask[0].numpy().astype(int)
        img = out[0].numpy()
        outside = m == COVER_INDEX
        pad = np.pad(m, 2, constant_values=-1)  # pixels by the tile edge are not interior
        interior = np.ones_like(outside)  # pixels whose 5 x 5 neighbourhood has one mask value
        for dy in range(5):
            for dx in range(5):
                interior &= pad[dy:dy + size, dx:dx + size] == m
        assert np.all(img[interior & outside] == 0.0)  # exposed image pixels are 0 where the mask is 255
        interior &= ~outside
        assert interior.sum() > 0.3 * size * size
        np.testing.assert_allclose(img[interior], m[interior], atol=1e-4)
        corners = [m[0, 0], m[0, -1], m[-1, 0], m[-1, -1]]
        exposed_corners += sum(c == COVER_INDEX for c in corners)
    assert exposed_corners >= 8  # rotations of 0-180 degrees expose most corners


def test_augmentation_is_seeded_by_seed_epoch_and_index(tmp_path):
    rng = np.random.default_rng(1)
    data = write_dataset(tmp_path, {"residual": rng.normal(size=(31, 31)).astype(np.float32)},
                         rng.integers(0, 10, size=(31, 31)).astype(np.uint8),
                         [(0.0, 1.0, 0.0, 1.0, "train"), (1.0, 3.0, 1.0, 3.0, "train")])
    a = TileDataset(data, "train", tile_size=48, crop_size=32, augment=True, seed=5)
    b = TileDataset(data, "train", tile_size=48, crop_size=32, augment=True, seed=5)
    first = a[1]
    assert first["image"].shape == (3, 32, 32) and first["mask"].shape == (32, 32)
    assert torch.equal(first["image"], b[1]["image"]) and torch.equal(first["mask"], b[1]["mask"])
    b.set_epoch(1)
    assert not torch.equal(first["image"], b[1]["image"])
    plain = TileDataset(data, "train", tile_size=48, crop_size=32)[1]
    assert torch.equal(plain["image"], TileDataset(data, "train", tile_size=48, crop_size=32)[1]["image"])


def test_every_epoch_draws_new_augmentation_in_persistent_workers(tmp_path):
    # A persistent worker keeps its own copy of the dataset: the epoch set in the main process must still
    # reach it, so that epoch 1 is augmented differently from epoch 0, and exactly as a fresh loader (a
    # resumed run) set to epoch 1 augments it.
    rng = np.random.default_rng(2)
    data = write_dataset(tmp_path, {"residual": rng.normal(size=(31, 31)).astype(np.float32)},
                         rng.integers(0, 10, size=(31, 31)).astype(np.uint8),
                         [(0.0, 1.0, 0.0, 1.0, "train"), (1.0, 3.0, 1.0, 3.0, "train")])

    def epochs(first, count):
        dataset = TileDataset(data, "train", tile_size=48, crop_size=32, augment=True, seed=5)
        loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=1, persistent_workers=True)
        images = []
        for epoch in range(first, first + count):
            dataset.set_epoch(epoch)
            images.append(next(iter(loader))["image"])
        return images

    epoch0, epoch1 = epochs(0, 2)
    assert not torch.equal(epoch0, epoch1)
    assert torch.equal(epoch1, epochs(1, 1)[0])


def test_geology_prior_hides_outcrop_under_cover_shapes_and_scores_only_them(tmp_path):
    label = np.full((31, 31), COVER_INDEX, np.uint8)
    label[:, :16] = np.arange(16)[None, :] % 10  # outcrop in the west half, cover in the east
    bedrock = np.where(label == COVER_INDEX, 4, label).astype(np.uint8)
    data = write_dataset(tmp_path, {"residual": np.zeros((31, 31), np.float32)}, label,
                         [(0.0, 3.0, 0.0, 3.0, "train")], bedrock=bedrock)
    evaluation = TileDataset(data, "train", tile_size=31, geology_prior=True, return_bedrock=True)
    item = evaluation[0]
    assert evaluation.in_channels == 3 + 12 and item["image"].shape == (15, 31, 31)
    expected = label[::-1]
    np.testing.assert_array_equal(item["mask"].numpy(), expected)  # nothing hidden at evaluation
    known = item["image"][13].numpy()
    np.testing.assert_array_equal(known, expected != COVER_INDEX)
    onehot = item["image"][3:13].numpy()
    assert np.array_equal(onehot.argmax(0)[known == 1], expected[known == 1])
    np.testing.assert_array_equal(item["bedrock"].numpy(), bedrock[::-1])

    train = TileDataset(data, "train", tile_size=31, augment=True, geology_prior=True, seed=3)
    hidden_total = 0
    for epoch in range(4):
        train.set_epoch(epoch)
        item = train[0]
        mask = item["mask"].numpy()
        known = item["image"][13].numpy()
        hidden = mask != COVER_INDEX
        hidden_total += hidden.sum()
        assert not np.any(known[hidden])  # scored pixels are hidden from the prior
        distance = item["image"][14].numpy()
        assert np.all(distance[hidden] > 0) and np.all(distance[known == 1] == 0)
        assert set(np.unique(mask[hidden])) <= set(range(10))
    assert hidden_total > 0


def test_bedrock_targets_score_the_true_bedrock_under_the_splits_cover_only(tmp_path):
    # Outcrop of classes 0-3 in the west, cover in the east whose true bedrock is class 9 (a class no outcrop
    # has), so a scored 9 can only be the bedrock under the real cover.
    label = np.full((31, 31), COVER_INDEX, np.uint8)
    label[:, :16] = np.arange(16)[None, :] % 4
    bedrock = np.where(label == COVER_INDEX, 9, label).astype(np.uint8)
    data = write_dataset(tmp_path / "a", {"residual": np.zeros((31, 31), np.float32)}, label,
                         [(0.0, 3.0, 0.0, 3.0, "train")], bedrock=bedrock)
    plain = TileDataset(data, "train", tile_size=31, bedrock_targets=1.0)[0]
    np.testing.assert_array_equal(plain["mask"].numpy(), bedrock[::-1])  # outcrop and cover both scored
    assert plain["image"].shape == (3, 31, 31)

    # With the outcrop input and hiding: the cover is scored (every cover pixel, turned with the tile) and
    # stays unknown to the input; the hidden outcrop is scored as before; the shown outcrop is not.
    train = TileDataset(data, "train", tile_size=31, augment="d4", geology_prior=True, seed=3, bedrock_targets=1.0)
    for epoch in range(3):
        train.set_epoch(epoch)
        item = train[0]
        mask, known = item["mask"].numpy(), item["image"][13].numpy()
        assert np.count_nonzero(mask == 9) == np.count_nonzero(label == COVER_INDEX)
        assert not known[mask == 9].any() and not known[mask != COVER_INDEX].any()
        assert set(np.unique(mask[(mask != COVER_INDEX) & (mask != 9)])) <= {0, 1, 2, 3}
    without = TileDataset(data, "train", tile_size=31, augment="d4", geology_prior=True, seed=3)
    assert not np.any(without[0]["mask"].numpy() == 9)

    # Fixed-resolution tiles: only the cover inside the split's windows is scored. A 31 px tile at 10 px per
    # degree centred on the train window 1..2 E, 0..1 N (half outcrop, half cover) shows 0..3 E, -1..2 N;
    # rows run north to south.
    data = write_dataset(tmp_path / "b", {"residual": np.zeros((31, 31), np.float32)}, label,
                         [(1.0, 2.0, 0.0, 1.0, "train"), (1.0, 3.0, 1.1, 3.0, "val")], bedrock=bedrock)
    item = TileDataset(data, "train", tile_size=31, pixels_per_degree=10, bedrock_targets=1.0)[0]
    expected = np.full((31, 31), COVER_INDEX, np.int64)
    expected[10:21, 10:21] = bedrock[:11, 10:21][::-1]
    assert np.count_nonzero(expected == 9) == 11 * 5
    np.testing.assert_array_equal(item["mask"].numpy(), expected)

    # A share of the cover: the same nodes for every run (wells), about that share of them, a subset of all.
    wells = cover_answers(label, bedrock, 0.2)
    np.testing.assert_array_equal(wells, cover_answers(label, bedrock, 0.2))
    assert set(np.unique(wells)) == {9, COVER_INDEX} and 0.1 < np.mean(wells == 9) / np.mean(label == COVER_INDEX) < 0.3
    some = TileDataset(data, "train", tile_size=31, pixels_per_degree=10, bedrock_targets=0.2)[0]["mask"].numpy()
    assert 0 < np.count_nonzero(some == 9) < np.count_nonzero(expected == 9)
    assert np.all((some == expected) | ((some == COVER_INDEX) & (expected == 9)))

    # Wells extended by a radius: every answered cover node takes its nearest well's class (checked by brute
    # force), within that many nodes; the wells' own nodes keep their bedrock; the outcrop is never answered.
    rng = np.random.default_rng(1)
    varied = np.where(label == COVER_INDEX, rng.integers(4, 10, size=label.shape), label).astype(np.uint8)
    wells = cover_answers(label, varied, 0.05)
    spread = cover_answers(label, varied, 0.05, radius=2.5)
    well_rc = np.argwhere(wells != COVER_INDEX)
    assert len(well_rc) > 3 and np.all(spread[wells != COVER_INDEX] == wells[wells != COVER_INDEX])
    for r, c in np.argwhere(label == COVER_INDEX):
        d = np.hypot(*(well_rc - (r, c)).T)
        if d.min() <= 2.5:
            assert spread[r, c] in {wells[tuple(well_rc[k])] for k in np.flatnonzero(d == d.min())}
        else:
            assert spread[r, c] == COVER_INDEX
    assert np.all(spread[label != COVER_INDEX] == COVER_INDEX)
    np.testing.assert_array_equal(cover_answers(label, varied, 1.0, radius=2.5), cover_answers(label, varied, 1.0))

    with pytest.raises(UserError, match="no bedrock grid"):
        TileDataset(write_dataset(tmp_path / "c", {"residual": np.zeros((31, 31), np.float32)}, label,
                                  [(0.0, 3.0, 0.0, 3.0, "train")]), "train", bedrock_targets=0.5)


def test_class_counts_and_errors(tmp_path):
    label = np.full((31, 31), COVER_INDEX, np.uint8)
    label[:11, :11] = 2  # 0..1 E, 0..1 N
    data = write_dataset(tmp_path, {"residual": np.zeros((31, 31), np.float32)}, label,
                         [(0.0, 1.0, 0.0, 1.0, "train"), (0.0, 2.0, 0.0, 2.0, "train"),
                          (1.0, 2.0, 1.0, 2.0, "val")])
    ds = TileDataset(data, "train", tile_size=10)
    # Window 0 is all class 2 -> 100 px; window 1 has 121 of its 441 nodes class 2 -> 100 * 121 / 441.
    assert ds.class_counts.tolist() == [0, 0, round(100 + 100 * 121 / 441), 0, 0, 0, 0, 0, 0, 0]
    assert len(TileDataset(data, ["train", "val"], tile_size=10)) == 3
    with pytest.raises(UserError, match="split"):
        TileDataset(data, "bogus")
    with pytest.raises(UserError, match="no windows"):
        TileDataset(data, "test")
    with pytest.raises(UserError, match="bedrock"):
        TileDataset(data, "train", return_bedrock=True)
    with pytest.raises(UserError, match="manifest.json"):
        TileDataset(tmp_path / "nowhere", "train")


def test_fixed_resolution_tiles_show_the_grid_and_only_the_splits_labels(tmp_path):
    # 10 px per degree on a 0.1-degree grid is one pixel per node: an 11 px tile centred on the 1-degree
    # window (0.5 E, 0.5 N) is exactly the window's 11 x 11 nodes, north up. A 31 px tile centred on the second
    # window (2 E, 2 N) reaches 0.5 degrees past the grid's east and north edges: the image repeats the edge
    # values there, the mask is 255 outside the grid and outside the split's windows.
    rng = np.random.default_rng(4)
    field = rng.normal(size=(31, 31)).astype(np.float32)
    label = rng.integers(0, 10, size=(31, 31)).astype(np.uint8)
    data = write_dataset(tmp_path, {"residual": field}, label,
                         [(0.0, 1.0, 0.0, 1.0, "train"), (1.0, 3.0, 1.0, 3.0, "val")])
    train = TileDataset(data, "train", tile_size=11, pixels_per_degree=10, channels="physical")
    item = train[0]
    np.testing.assert_allclose(item["image"][0].numpy(), field[:11, :11][::-1], atol=1e-6)
    np.testing.assert_array_equal(item["mask"].numpy(), label[:11, :11][::-1])

    val = TileDataset(data, "val", tile_size=31, pixels_per_degree=10, channels="physical")
    item = val[0]
    lon_t, lat_t = centred_coordinates(2.0, 2.0, 31, 10)
    np.testing.assert_allclose([lon_t[0], lon_t[-1], lat_t[0], lat_t[-1]], [0.5, 3.5, 3.5, 0.5])
    expected = np.full((31, 31), 255, dtype=np.int64)
    # rows: latitude 3.5 (row 0) .. 0.5 (row 30); the val window covers 1..3 N, 1..3 E: rows 5..25, cols 5..25
    expected[5:26, 5:26] = label[10:31, 10:31][::-1]
    np.testing.assert_array_equal(item["mask"].numpy(), expected)
    assert item["image"][0, 0, 0] == pytest.approx(field[30, 5])  # north-west corner: clipped to the grid's north
    assert train.class_counts.sum() == pytest.approx(100 * np.count_nonzero(label[:11, :11] != 255) / 121, abs=1)



def test_fixed_resolution_augmentation_moves_the_centre_within_the_window(tmp_path):
    rng = np.random.default_rng(5)
    rows_field, cols_field = np.meshgrid(np.arange(31.0), np.arange(31.0), indexing="ij")
    label = rng.integers(0, 10, size=(31, 31)).astype(np.uint8)
    data = write_dataset(tmp_path, {"residual": rows_field.astype(np.float32),
                                    "vertical_derivative": cols_field.astype(np.float32)},
                         label, [(1.0, 2.0, 1.0, 2.0, "train")])
    plain = TileDataset(data, "train", tile_size=5, pixels_per_degree=10, channels="physical")
    moved = TileDataset(data, "train", tile_size=5, pixels_per_degree=10, channels="physical", augment="none")
    assert torch.equal(plain[0]["image"], moved[0]["image"])
    centres = []
    for epoch in range(20):
        augmented = TileDataset(data, "train", tile_size=5, pixels_per_degree=10, channels="physical",
                                augment="d4", seed=epoch)
        image = augmented[0]["image"].numpy()
        # the centre pixel is bilinear between nodes: the two linear fields give its (row, col) node position
        centres.append((image[0, 2, 2], image[1, 2, 2]))
    rows, cols = np.array(centres).T
    assert rows.min() >= 10 - 1e-3 and rows.max() <= 20 + 1e-3 and cols.min() >= 10 and cols.max() <= 20
    assert np.ptp(rows) > 3 and np.ptp(cols) > 3


def test_d4_augmentation_is_a_pixel_permutation_applied_alike():
    image = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(2, 4, 4)
    mask = (image[0] % 7).to(torch.uint8)[None]
    seen = set()
    for seed in range(40):
        out, (out_mask,) = augment_d4(image, [mask], np.random.default_rng(seed))
        assert torch.equal(torch.sort(out.flatten()).values, torch.sort(image.flatten()).values)
        assert torch.equal(out_mask[0], (out[0] % 7).to(torch.uint8))
        seen.add(tuple(out[0].flatten().tolist()))
    assert len(seen) == 8
