"""The one checkpoint writer and reader: a dict of tensors and plain values with a ``format`` and ``version``.

``RUN/checkpoints/last.pt`` (every epoch) holds the full state ``--resume`` needs; ``best.pt`` (on a new best
validation FWIoU) only what it takes to use the weights, the file ``nas-export --checkpoint``, ``ggm-evaluate``
and ``ggm-predict`` read (see docs/design.md, "Checkpoints"). Both are written atomically and read with
``weights_only=True``; each stage names its own :class:`CheckpointFormat`, so a file of one stage is refused by
the other with a one-line message.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from ggmnet.engine.runio import torch_save_atomic
from ggmnet.errors import UserError, one_line


@dataclasses.dataclass(frozen=True)
class CheckpointFormat:
    """What a stage's checkpoints say they are: ``format`` and ``version`` entries, and the stage in messages."""

    name: str
    version: int
    stage: str


def write_checkpoint(path: str | os.PathLike, fmt: CheckpointFormat, state: dict[str, Any]) -> Path:
    """Write ``state`` with ``fmt``'s ``format`` and ``version`` entries to ``path`` atomically."""
    return torch_save_atomic({"format": fmt.name, "version": fmt.version, **state}, path)


def read_checkpoint(path: str | os.PathLike, fmt: CheckpointFormat, *, option: str | None = None,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint of ``fmt`` (``weights_only``) and check its format and version.

    Raises
    ------
    UserError
        One line naming ``path`` (after ``option``, e.g. ``--resume``, when given) when it is missing,
        unreadable, of another format or of a version this ggmnet does not read.
    """
    where = f"{option} {path}" if option else str(path)
    if not os.path.isfile(path):
        raise UserError(f"{where}: no such file (expected a ggmnet {fmt.stage} checkpoint, e.g. best.pt)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        raise UserError(f"{where}: not a readable ggmnet checkpoint ({one_line(err)})") from None
    found = state.get("format") if isinstance(state, dict) else None
    if found != fmt.name:
        raise UserError(f"{where}: not a ggmnet {fmt.stage} checkpoint (format {found!r}, expected {fmt.name!r})")
    if state.get("version") != fmt.version:
        raise UserError(f"{where}: checkpoint version {state.get('version')!r} is not supported (expected "
                        f"{fmt.version})")
    return state
