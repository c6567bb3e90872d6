"""Export a genotype from a search checkpoint: rebuild the supernet, derive, validate, write atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ggmnet.engine.checkpoint import read_checkpoint
from ggmnet.engine.runio import latest_run_dir
from ggmnet.errors import UserError, one_line
from ggmnet.search.search import CHECKPOINT, RUNS_ROOT, build_supernet, derive_genotype
from ggmnet.search_space.genotype import Genotype


def resolve_checkpoint(run: str | Path | None = None, checkpoint: str | Path | None = None) -> Path:
    """The checkpoint to export: ``checkpoint`` itself, or the search's choice of ``run`` (or of the newest
    run): ``checkpoints/best.pt``, the search epoch whose derived network scored best, or ``last.pt`` where
    no search epoch has finished (only the warm-up).

    Raises
    ------
    UserError
        When the file (or the run, or any run under ``runs/search``) does not exist.
    """
    if checkpoint is not None and run is not None:
        raise UserError("--run and --checkpoint: give one of them, not both")
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise UserError(f"--checkpoint {path}: no such file (expected a search checkpoint .pt)")
        return path
    if run is None:
        found = latest_run_dir(RUNS_ROOT)
        if found is None:
            raise UserError(f"no search run under {RUNS_ROOT} (give --run DIR or --checkpoint FILE)")
        run = found
    for name in ("best.pt", "last.pt"):
        path = Path(run) / "checkpoints" / name
        if path.is_file():
            return path
    raise UserError(f"--run {run}: no checkpoints/best.pt or last.pt (not a search run, or no epoch has finished)")


def load_search_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a search checkpoint (``weights_only``); a one-line :class:`UserError` naming it on any defect."""
    state = read_checkpoint(path, CHECKPOINT)
    missing = [k for k in ("supernet", "supernet_config", "provenance") if k not in state]
    if missing:
        raise UserError(f"{path}: search checkpoint lacks {', '.join(missing)}")
    return state


def genotype_from_checkpoint(path: str | Path) -> Genotype:
    """The genotype derived from the supernet state in the search checkpoint ``path``, with its provenance.

    The provenance is the one the run recorded for that epoch, so exporting ``best.pt`` gives the run's
    ``genotype_best.json`` exactly, and ``last.pt`` its ``genotype.json``.
    """
    path = Path(path)
    state = load_search_checkpoint(path)
    try:
        supernet = build_supernet(state["supernet_config"])
        supernet.load_state_dict(state["supernet"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise UserError(f"{path}: the supernet state does not load ({one_line(err)})") from None
    return derive_genotype(supernet, state["provenance"], state["supernet_config"].get("classes"))


def export_genotype(out: str | Path, *, run: str | Path | None = None, checkpoint: str | Path | None = None,
                    force: bool = False) -> tuple[Genotype, Path, bool]:
    """Derive the genotype of a search run and write it to ``out`` atomically.

    Parameters
    ----------
    out
        Genotype JSON to write. An existing file is replaced only when it holds the same genotype (then it
        is left untouched) or with ``force``.
    run, checkpoint
        As :func:`resolve_checkpoint` takes them.
    force
        Overwrite an existing, different file.

    Returns
    -------
    tuple
        The genotype, the checkpoint it came from, and whether ``out`` was written (False: unchanged).
    """
    out = Path(out)
    if out.is_dir():
        raise UserError(f"{out}: is a folder (expected the path of the genotype JSON to write)")
    source = resolve_checkpoint(run, checkpoint)
    genotype = genotype_from_checkpoint(source)
    if out.exists():
        try:
            same = json.loads(out.read_text(encoding="utf-8")) == genotype.to_dict()
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            same = False
        if same:
            return genotype, source, False
        if not force:
            raise UserError(f"{out}: exists and holds something else than this genotype; pass --force to "
                            "overwrite it")
    genotype.save(out)
    return genotype, source, True
