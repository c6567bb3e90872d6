"""``ggm-data``: synth -> prepare -> show end to end, --config, --help, and one-line errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from tiny_data import error_lines

from ggmnet.classes import CLASS_COLOURS
from ggmnet.datasets.cli import main
from ggmnet.datasets.geo import GeoGrid
from ggmnet.datasets.labels import write_label_grid
from ggmnet.datasets.netcdf import write_gmt_grid


def write_small_inputs(folder, lon_range=(9.0, 13.0)):
    """A Bouguer grid (0.05 degree, mGal) over 9-13 E, 39-42.5 N and labels over ``lon_range``."""
    folder.mkdir(parents=True, exist_ok=True)
    lon = np.round(np.arange(9.0, 13.0 + 1e-9, 0.05), 6)
    lat = np.round(np.arange(39.0, 42.5 + 1e-9, 0.05), 6)
    lon2, lat2 = np.meshgrid(lon, lat)
    write_gmt_grid(folder / "bouguer.nc", GeoGrid(lon, lat, (10 * np.sin(lon2 + lat2)).astype(np.float32)))
    keep = (lon >= lon_range[0] - 1e-9) & (lon <= lon_range[1] + 1e-9)
    labels = (np.floor(lon2 * 4) % 10).astype(np.uint8)[:, keep]
    write_label_grid(folder / "labels.nc", GeoGrid(lon[keep], lat, labels, name="label", units=""))
    return folder


def run_error(capsys, argv):
    """Run ``main(argv)``, expecting exit 2 with one ``error:`` line on stderr and no traceback."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and ": error: " in err[0] and "Traceback" not in err[0], err
    return err[0]


BASE = ["--region", "10,12,40,41.5", "--margin-km", "50", "--scales", "0.5:0.5"]


def test_synth_prepare_show_end_to_end(tmp_path, capsys):
    raw, data, png = tmp_path / "raw", tmp_path / "data", tmp_path / "overview.png"
    assert main(["synth", "--out", str(raw), "--region", "80,81,45,46", "--margin-km", "60",
                 "--spacing-arcmin", "4", "--seed", "2"]) == 0
    config = tmp_path / "prepare.yaml"
    config.write_text("seed: 5\nval_fraction: 0.3\nscales: '0.5:0.5'\nmargin_km: 60\n")
    assert main(["prepare", "--bouguer", str(raw / "bouguer.nc"), "--labels", str(raw / "labels.nc"),
                 "--bedrock", str(raw / "bedrock.nc"), "--out", str(data), "--region", "80,81,45,46",
                 "--config", str(config), "--val-fraction", "0.25"]) == 0
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["split"]["seed"] == 5  # from the YAML file
    assert manifest["split"]["val_fraction"] == 0.25  # the flag beats the file
    assert len(manifest["windows"]) == 4 and "bedrock" in manifest["variables"]
    run = json.loads((data / "run.json").read_text())
    assert run["config"]["seed"] == 5 and run["config"]["scales"] == "0.5:0.5"
    assert main(["show", str(data), "--out", str(png), "--dpi", "40"]) == 0
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 400
    assert json.loads((tmp_path / "overview.png.run.json").read_text())["config"]["data_dir"] == str(data)
    assert not list(tmp_path.glob("**/.*.part"))


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["prepare", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--bouguer", "--labels", "--out", "--region", "--height-km", "--margin-km", "--pad-mode",
                 "--channels", "--bedrock", "--label-bounds", "--scales", "--split", "--val-fraction", "--seed",
                 "--fill-nan", "--config", "--variable", "--label-variable", "--label-field", "--legend",
                 "--unlisted-units"):
        assert flag in text
    for default in ("65,95,40,55", "Default: 10.", "Default: 500.", "1:1,5:2.5,10:2.5,15:5", "Default: 0.15."):
        assert default in text
    for command in (["--help"], ["synth", "--help"], ["show", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(command)
        assert exc.value.code == 0


def test_bad_input_gives_one_line_and_writes_nothing(tmp_path, capsys):
    raw = write_small_inputs(tmp_path / "raw")
    out = tmp_path / "out"
    bouguer, labels = str(raw / "bouguer.nc"), str(raw / "labels.nc")

    def prepare(*args):
        return run_error(capsys, ["prepare", "--out", str(out), *BASE, *args])

    assert "nowhere.nc: no such file" in prepare("--bouguer", str(tmp_path / "nowhere.nc"), "--labels", labels)
    text = tmp_path / "notes.txt"
    text.write_text("x y z\n1 2 3\n")
    assert "notes.txt: not a gravity grid" in prepare("--bouguer", str(text), "--labels", labels)
    half = tmp_path / "half.nc"
    data = (raw / "bouguer.nc").read_bytes()
    half.write_bytes(data[: len(data) // 2])
    assert "half.nc" in prepare("--bouguer", str(half), "--labels", labels)
    assert "does not overlap" in prepare("--bouguer", bouguer, "--labels", labels, "--region", "100,101,40,41")
    assert "east (10) must be greater than west (12)" in prepare("--bouguer", bouguer, "--labels", labels,
                                                                 "--region", "12,10,40,41")
    narrow = write_small_inputs(tmp_path / "narrow", lon_range=(10.5, 11.5))
    assert "labels.nc covers" in prepare("--bouguer", bouguer, "--labels", str(narrow / "labels.nc"))
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[:] = CLASS_COLOURS[3]
    rgb[8:13, 10:14] = (16, 32, 48)  # inside the region: the part of the map that is read
    png = tmp_path / "labels.png"
    Image.fromarray(rgb).save(png)
    message = prepare("--bouguer", bouguer, "--labels", str(png), "--label-bounds", "9,13,39,42.5")
    assert "unknown colour" in message and "#102030 x 20 px" in message
    assert "--scales" in prepare("--bouguer", bouguer, "--labels", labels, "--scales", "5:5")
    assert "--bouguer is required" in prepare("--labels", labels)
    assert not out.exists()


def test_an_in_process_ggm_data_prefixes_only_its_own_lines(tiny_dataset, tmp_path):
    """A study that calls ``main`` in-process (the fair test makes its scenes so) keeps its own log format for the
    lines that follow: ggm-data's ``ggm-data:`` prefix is for ggm-data's lines only."""
    import subprocess
    import sys

    script = (
        "import logging, sys\n"
        "from ggmnet.datasets.cli import main\n"
        "from ggmnet.engine.config import setup_logging\n"
        "main(['show', sys.argv[1], '--out', sys.argv[2]])\n"
        "setup_logging()\n"
        "logging.getLogger('ggmnet.search').info('a later line')\n"
    )
    out = tmp_path / "overview.png"
    done = subprocess.run([sys.executable, "-c", script, str(tiny_dataset), str(out)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert f"ggm-data: wrote {out}" in lines
    assert "a later line" in lines, lines
