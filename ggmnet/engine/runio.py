"""Atomic outputs, run provenance and run folders.

Every file a command writes goes through :func:`atomic_path`: it is written beside its destination under a
temporary name and renamed into place only when complete, so an interrupted run never leaves half a file and
never clobbers a good one. Every run writes ``run.json`` (resolved configuration, seed, package versions, git
commit, command line) beside its outputs with :func:`write_run_metadata`, and names its inputs by
:func:`file_sha256`. Runs without ``--out`` go to :func:`new_run_dir` folders; :func:`latest_run_dir` finds
the newest one again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ggmnet.errors import UserError

#: Packages whose versions are recorded with every run.
TRACKED_PACKAGES = (
    "ggmnet", "torch", "torchvision", "timm", "numpy", "scipy", "pyproj", "netCDF4", "wandb", "matplotlib",
)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path`` (atomic on POSIX).

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".part", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the usual permissions
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int = 2) -> Path:
    """Write ``obj`` as JSON (UTF-8, sorted keys off, trailing newline) to ``path`` atomically."""
    text = json.dumps(obj, indent=indent, default=_json_default) + "\n"
    return write_bytes_atomic(path, text.encode("utf-8"))


def torch_save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically (a checkpoint is either the old one or the new one)."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "__dataclass_fields__"):
        return dataclasses.asdict(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``names`` (None where a package is absent), plus Python's."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(cwd: str | os.PathLike | None = None) -> str | None:
    """The commit of the ggmnet checkout (``+dirty`` when it has uncommitted changes), or None."""
    where = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where, capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "") if sha else None


def write_run_metadata(out_dir: str | os.PathLike, config: dict[str, Any], *, seed: int | None,
                       name: str = "run.json", extra: dict[str, Any] | None = None) -> Path:
    """Save the resolved configuration, seed, package versions and git commit as ``out_dir/name``."""
    meta = {
        "command": sys.argv,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "config": config,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "host": platform.node(),
        **(extra or {}),
    }
    return write_json_atomic(Path(out_dir) / name, meta)


def require_file(path: str | os.PathLike, option: str, what: str) -> Path:
    """Return ``path`` as a Path if it is an existing file, else raise a one-line :class:`UserError`."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{option} {p}: no such file (expected {what})")
    if not p.is_file():
        raise UserError(f"{option} {p}: not a file (expected {what})")
    return p


def prepare_out_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Create the output folder ``path`` (parents too); refuse a path that exists as a file."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(f"{option} {p}: exists and is not a folder")
    p.mkdir(parents=True, exist_ok=True)
    return p


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


_RUN_PATTERN = re.compile(r"^(?P<prefix>.+)-(?P<stamp>\d{8}-\d{6})(?:-(?P<n>\d+))?$")


def new_run_dir(root: str | os.PathLike, prefix: str) -> Path:
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


def latest_run_dir(root: str | os.PathLike, prefix: str | None = None) -> Path | None:
    """The newest folder made by :func:`new_run_dir` under ``root`` (of ``prefix`` if given), or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    runs = {}
    for path in root.iterdir():
        match = _RUN_PATTERN.match(path.name)
        if match and path.is_dir() and prefix in (None, match["prefix"]):
            runs[match["stamp"], int(match["n"] or 1)] = path
    return runs[max(runs)] if runs else None
