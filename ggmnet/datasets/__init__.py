"""The data stage: grids, processing, the synthetic benchmark, windows, the prepared dataset and tiles.

Importing this package is light (no torch, no netCDF); the submodules load what they need.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: Name of the synthetic default dataset's folder under the data directory (bump when its recipe changes).
SYNTHETIC_DEFAULT = "synthetic-v1"


def default_data_dir() -> Path:
    """Where ggmnet keeps data it makes itself: ``$GGMNET_DATA`` if set, else ``~/.cache/ggmnet``."""
    env = os.environ.get("GGMNET_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ggmnet"


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder/.lock`` (so that several processes, e.g. DDP ranks, build once)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build_into(target: Path, build) -> None:
    """Run ``build(path)`` on a fresh temporary sibling of ``target`` and rename it to ``target`` when done."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(tmp / target.name)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp / target.name, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_synthetic_default(root: str | os.PathLike | None = None, *, seed: int = 0, split: str = "random") -> Path:
    """The prepared synthetic benchmark, built on first use; returns its folder.

    ``root/synthetic-v1/raw`` holds the scene of ``synthesize`` with the default :class:`SynthConfig` (seed
    ``seed``), ``root/synthetic-v1/prepared`` the dataset of ``prepare_dataset`` on it (the default recipe
    with the scene's margin, its bedrock, the paper's windows and random split; ``split="spatial-block"``:
    ``prepared-spatial-block``, the same windows split into held-out blocks). A seed other than 0 uses
    ``synthetic-v1-seed<N>``. Whatever is
    missing is built in a temporary folder and renamed into place, under a file lock, so an interrupted build
    leaves nothing half made and concurrent callers build once. ``root`` defaults to
    :func:`default_data_dir`. The first call takes about a minute on two CPU cores.
    """
    from ggmnet.datasets.prepare import prepare_dataset
    from ggmnet.datasets.processing import ProcessingRecipe
    from ggmnet.datasets.synth import SynthConfig, synthesize

    name = SYNTHETIC_DEFAULT if seed == 0 else f"{SYNTHETIC_DEFAULT}-seed{seed}"
    base = (Path(root).expanduser() if root is not None else default_data_dir()) / name
    raw = base / "raw"
    prepared = base / ("prepared" if split == "random" else f"prepared-{split}")
    config = SynthConfig(seed=seed)
    with _locked(base):
        if not (raw / "synth.json").is_file():
            print(f"ggmnet: making the synthetic benchmark in {raw} (once)", file=sys.stderr)
            _build_into(raw, lambda out: synthesize(out, config))
        if not (prepared / "manifest.json").is_file():
            print(f"ggmnet: preparing the synthetic dataset in {prepared} (once)", file=sys.stderr)
            _build_into(prepared, lambda out: prepare_dataset(
                raw / "bouguer.nc", raw / "labels.nc", out, region=config.region, bedrock=raw / "bedrock.nc",
                recipe=ProcessingRecipe(margin_km=config.margin_km), split=split, seed=seed))
    return prepared
