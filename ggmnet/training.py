"""Run plumbing shared by the search and the retraining: devices, checkpoints, RNG state, AMP, loaders, run folders.

Resuming from ``checkpoints/last.pt`` reproduces an uninterrupted run exactly when the checkpoint holds the
model, optimiser and scheduler states plus :func:`capture_rng_state`, the loader comes from :func:`make_loader`
(whose shuffling is a function of the seed and the epoch) and the data load in the main process
(``num_workers=0``) or draws its augmentation per sample from seeded generators.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import pickle
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ggmnet.errors import UserError
from ggmnet.runio import atomic_path, torch_save_atomic

if TYPE_CHECKING:
    from ggmnet.distributed import DistContext

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(arg: str) -> torch.device:
    """The device named by a ``--device`` option: ``auto`` (CUDA when available, else CPU), ``cpu``,
    ``cuda`` or ``cuda:N``.

    Raises
    ------
    UserError
        For another name, for CUDA on a machine without it, or for a GPU index it does not have.
    """
    name = str(arg).strip().lower()
    if not _DEVICE_PATTERN.match(name):
        raise UserError(f"--device {arg}: expected auto, cpu, cuda or cuda:N")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError(f"--device {arg}: CUDA is not available on this machine")
    dev = torch.device(name)
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"--device {arg}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


# --------------------------------------------------------------------------------------------- RNG state

def capture_rng_state() -> dict[str, Any]:
    """The state of Python's, NumPy's and torch's (CPU and every CUDA device) global generators.

    Stored as tensors, ints and lists only, so a checkpoint holding it loads with ``weights_only=True``.
    """
    version, py_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "python": {"version": version, "state": list(py_state), "gauss": gauss},
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back the generator states of :func:`capture_rng_state` (CUDA ones for the devices present)."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npy = state["numpy"]
    keys = np.asarray(torch.as_tensor(npy["keys"]).numpy(), dtype=np.uint32)
    np.random.set_state((npy["name"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))  # noqa: NPY002
    torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8).cpu())
    if "cuda" in state and torch.cuda.is_available():
        saved = state["cuda"]
        for index in range(min(len(saved), torch.cuda.device_count())):
            torch.cuda.set_rng_state(torch.as_tensor(saved[index], dtype=torch.uint8).cpu(), index)


# --------------------------------------------------------------------------------------------- checkpoints

def _link_atomic(source: Path, target: Path) -> None:
    """Make ``target`` the same file as ``source`` (a hard link; a copy where links are unsupported), atomically.

    Checkpoints are only ever replaced by renaming a new file over them, never rewritten in place, so the
    link keeps ``best.pt``'s content when ``last.pt`` is next replaced, without copying gigabytes.
    """
    with atomic_path(target) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)


class CheckpointManager:
    """``run_dir/checkpoints/last.pt`` every epoch and ``best.pt`` when the monitored score improves.

    Both files are written atomically: an interrupted save leaves the previous checkpoint intact. The state
    saved is the caller's dict plus a ``"checkpoint"`` entry (epoch, monitored name and best value), so a
    resumed manager keeps comparing against the best score of the interrupted run.

    Parameters
    ----------
    run_dir
        The run folder.
    monitor
        Name of the score that selects ``best.pt`` (informational, stored in the checkpoint).
    mode
        ``"max"`` (e.g. FWIoU) or ``"min"`` (e.g. a loss).
    is_main
        Only the main rank writes; elsewhere :meth:`save` does nothing and returns False.
    """

    def __init__(self, run_dir: str | Path, *, monitor: str = "val/fwiou", mode: str = "max",
                 is_main: bool = True) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.dir = Path(run_dir) / "checkpoints"
        self.monitor = monitor
        self.mode = mode
        self.is_main = is_main
        self.best_value: float | None = None

    @property
    def last_path(self) -> Path:
        return self.dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.dir / "best.pt"

    @property
    def has_checkpoint(self) -> bool:
        """True when ``last.pt`` exists."""
        return self.last_path.is_file()

    def is_improvement(self, value: float | None) -> bool:
        """Whether ``value`` beats the best so far (None and NaN never do)."""
        if value is None or math.isnan(value):
            return False
        if self.best_value is None:
            return True
        return value > self.best_value if self.mode == "max" else value < self.best_value

    def save(self, state: dict[str, Any], *, epoch: int, metric: float | None = None) -> bool:
        """Write ``last.pt`` (and ``best.pt`` when ``metric`` improves); return True when it was a new best."""
        if not self.is_main:
            return False
        improved = self.is_improvement(metric)
        if improved:
            self.best_value = float(metric)
        payload = dict(state)
        payload["checkpoint"] = {"epoch": int(epoch), "monitor": self.monitor, "mode": self.mode,
                                 "metric": None if metric is None else float(metric),
                                 "best_value": self.best_value}
        torch_save_atomic(payload, self.last_path)
        if improved:
            _link_atomic(self.last_path, self.best_path)
        return improved

    def load(self, path: str | Path, map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
        """Load a checkpoint written by :meth:`save` (``weights_only``: tensors and plain containers only)."""
        path = Path(path)
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise UserError(f"{path}: not a readable ggmnet checkpoint ({first})") from None
        if not isinstance(state, dict) or "checkpoint" not in state:
            raise UserError(f"{path}: not a ggmnet checkpoint (no 'checkpoint' entry)")
        return state

    def load_latest(self, map_location: str | torch.device | None = "cpu") -> dict[str, Any] | None:
        """The state in ``last.pt`` (None when there is none); restores the best value seen so far."""
        if not self.has_checkpoint:
            return None
        state = self.load(self.last_path, map_location)
        self.best_value = state["checkpoint"].get("best_value")
        return state


# --------------------------------------------------------------------------------------------- mixed precision

def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype used on ``device``: bfloat16 on GPUs that support it, else float16; None on CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast_for(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """Autocast to :func:`amp_dtype` on CUDA when ``enabled``; a null context on CPU (CPU AMP is slower here)."""
    dtype = amp_dtype(device)
    if not enabled or dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


def make_grad_scaler(device: torch.device, enabled: bool) -> torch.amp.GradScaler:
    """A gradient scaler, active only for float16 autocast on CUDA (bfloat16 needs none)."""
    active = enabled and amp_dtype(device) == torch.float16
    return torch.amp.GradScaler("cuda" if device.type == "cuda" else "cpu", enabled=active)


# --------------------------------------------------------------------------------------------- data loaders

def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # noqa: NPY002 - libraries that augment use the global generator
    random.seed(seed)


def make_loader(dataset: Dataset, *, batch_size: int, shuffle: bool, ctx: DistContext, num_workers: int = 0,
                seed: int = 0, drop_last: bool = False,
                collate_fn: Callable[[list[Any]], Any] | None = None) -> DataLoader:
    """A DataLoader whose order is a function of ``(seed, epoch)`` and which shards the data across ranks.

    Shuffled or distributed loaders use a :class:`~torch.utils.data.DistributedSampler` (with one replica when
    alone) seeded with ``seed``: call :func:`set_loader_epoch` before each epoch so the order changes and a
    resumed run sees the same order as an uninterrupted one. When distributed, each rank reads
    ``ceil(len / world_size)`` samples (the sampler pads by repeating a few). Worker processes seed NumPy and
    Python from torch's per-worker seed, drawn from a generator seeded with ``seed + rank``; workers persist
    between epochs when ``num_workers > 0``.
    """
    sampler = None
    if shuffle or ctx.is_distributed:
        sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=shuffle,
                                     seed=seed, drop_last=drop_last)
    generator = torch.Generator()
    generator.manual_seed(int(seed) + ctx.rank)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=False, sampler=sampler, num_workers=num_workers,
        drop_last=drop_last, pin_memory=ctx.device.type == "cuda", worker_init_fn=_seed_worker,
        generator=generator, persistent_workers=num_workers > 0, collate_fn=collate_fn,
    )


def set_loader_epoch(loader: DataLoader, epoch: int) -> None:
    """Tell a loader from :func:`make_loader` which epoch starts (reshuffles; a no-op without a sampler)."""
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)


# --------------------------------------------------------------------------------------------- run folders

_RUN_PATTERN = re.compile(r"^(?P<prefix>.+)-(?P<stamp>\d{8}-\d{6})(?:-(?P<n>\d+))?$")


def new_run_dir(root: str | Path, prefix: str) -> Path:
    """Create and return ``root/PREFIX-YYYYmmdd-HHMMSS`` (UTC), with ``-2``, ``-3``... if it already exists."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    n = 1
    while True:
        path = root / (f"{prefix}-{stamp}" if n == 1 else f"{prefix}-{stamp}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1


def latest_run_dir(root: str | Path, prefix: str | None = None) -> Path | None:
    """The newest folder made by :func:`new_run_dir` under ``root`` (of ``prefix`` if given), or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    best: tuple[str, int] | None = None
    found = None
    for path in root.iterdir():
        match = _RUN_PATTERN.match(path.name)
        if not match or not path.is_dir() or (prefix is not None and match["prefix"] != prefix):
            continue
        key = (match["stamp"], int(match["n"] or 1))
        if best is None or key > best:
            best, found = key, path
    return found


def resolve_dataset_dir(data: str | Path | None, ctx: DistContext) -> Path:
    """The prepared dataset of a run: ``--data`` (checked), or the synthetic default built once, by rank 0."""
    from ggmnet.distributed import barrier, broadcast_object

    if data is not None:
        path = Path(data)
        if not (path / "manifest.json").is_file():
            raise UserError(f"--data {path}: not a prepared dataset (no manifest.json; run ggm-data prepare)")
        return path
    from ggmnet.datasets import ensure_synthetic_default

    path = ensure_synthetic_default() if ctx.is_main else None
    barrier()
    return Path(broadcast_object(str(path)))


def open_run_dir(out: str | Path | None, *, resume: bool, runs_root: Path, prefix: str, kind: str,
                 ctx: DistContext) -> tuple[Path, dict[str, Any] | None]:
    """Choose the run folder (rank 0) and, with ``resume``, read its last checkpoint (every rank).

    ``out`` None makes a new ``runs_root/prefix-DATE-TIME`` folder, or with ``resume`` takes the newest run
    there. A folder that already holds a run is refused without ``resume``, so nothing is overwritten.
    Returns the folder and the checkpoint state (None for a new run, or a resume that found no checkpoint).
    """
    from ggmnet.distributed import broadcast_object
    from ggmnet.runio import prepare_out_dir

    path: Path | None = None
    if ctx.is_main:
        if out is not None:
            path = prepare_out_dir(out)
        elif resume:
            path = latest_run_dir(runs_root)
            if path is None:
                raise UserError(f"--resume: no run under {runs_root} to continue (give its folder with --out)")
        else:
            path = new_run_dir(runs_root, prefix)
        last = path / "checkpoints" / "last.pt"
        if last.exists() and not resume:
            raise UserError(f"--out {path}: already holds a {kind} run ({last}); pass --resume to continue "
                            "it or choose another folder")
    run_dir = Path(broadcast_object(str(path)))
    state = CheckpointManager(run_dir).load_latest("cpu") if resume else None
    return run_dir, state


def check_resume_config(saved: dict[str, Any], config: Any, keys: tuple[str, ...], path: Path) -> None:
    """Refuse to resume the checkpoint at ``path`` when a setting in ``keys`` differs from the run's."""
    def plain(value: Any) -> Any:
        return list(value) if isinstance(value, (list, tuple)) else value

    for key in keys:
        if plain(saved.get(key)) != plain(getattr(config, key)):
            raise UserError(f"--resume {path}: the run used --{key.replace('_', '-')} {saved.get(key)}, "
                            f"not {getattr(config, key)}; resume with the same value")
