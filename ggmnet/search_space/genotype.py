"""The genotype: the searched architecture of MRFEM as a small, versioned, validated JSON document.

It is the contract between the search stage (which writes it) and retraining (which builds GGMNet from it).
Schema (docs/design.md, "Genotype JSON")::

    {"format": "ggmnet-genotype", "version": 1, "depth": 22, "num_classes": 10, "in_channels": 3,
     "stem_channels": [24, 48, 96], "unit_channels": [12, 24, 48],
     "branches": [{"output_stride": 8, "cells": [{"op": "conv3x3", "expansion": 4, "stride": 8,
                                                  "residual": true, "down": null}, ...]}, ...],
     "provenance": {...}}

An optional ``"classes": {"names": [...], "codes": [...], "colours": [[r, g, b], ...]}`` names the
``num_classes`` outputs (the dataset's class list, :class:`ggmnet.classes.ClassList`); a genotype without it (all
written before class lists were recorded) has Table 1's ten classes, or unnamed ones. The version stays 1: the
key is optional, so every older file reads as before.

A cell at output stride ``stride`` has width ``expansion * unit_channels[STRIDES.index(stride)]``; it
downsamples with ``down`` exactly where its stride is twice the previous cell's (the stem's is 8).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ggmnet.classes import ClassList
from ggmnet.engine.config import is_int
from ggmnet.engine.runio import write_json_atomic
from ggmnet.errors import UserError
from ggmnet.search_space.operations import CELL_OPS, DOWN_OPS, EXPANSIONS, STRIDES, UNIT_CHANNELS

FORMAT = "ggmnet-genotype"
VERSION = 1
#: The stride of the stem's output, where every branch starts.
STEM_STRIDE = STRIDES[0]


class GenotypeError(UserError):
    """A genotype that breaks the schema or the rules of docs/design.md (one line naming branch and layer)."""


@dataclass(frozen=True)
class CellSpec:
    """One cell of a branch.

    Attributes
    ----------
    op
        Cell operator, one of ``CELL_OPS``.
    expansion
        Width expansion, one of ``EXPANSIONS``; width = ``expansion * unit_channels[stride]``.
    stride
        Output stride of the cell relative to the network input: 8, 16 or 32.
    residual
        Whether the cell adds its residual connection.
    down
        Downsampling operator (one of ``DOWN_OPS``) where the cell doubles the stride, else ``None``.
    """

    op: str
    expansion: int
    stride: int
    residual: bool = False
    down: str | None = None

    def channels(self, unit_channels: Sequence[int]) -> int:
        """The cell's output width for the given unit widths (one per stride 8, 16, 32)."""
        return self.expansion * unit_channels[STRIDES.index(self.stride)]


@dataclass(frozen=True)
class BranchSpec:
    """One resolution branch: ``depth`` cells from the stem's 1/8 feature to ``output_stride``."""

    output_stride: int
    cells: tuple[CellSpec, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "cells", tuple(self.cells))


@dataclass(frozen=True)
class Genotype:
    """The derived MRFEM: three branches (output strides 8, 16, 32) of ``depth`` cells each.

    ``provenance`` is free, JSON-plain metadata (dataset hash, seed, config, metrics, creation time);
    ``classes`` the optional class list of the outputs (:meth:`ggmnet.classes.ClassList.to_dict`).
    """

    depth: int
    num_classes: int
    in_channels: int
    stem_channels: tuple[int, ...]
    unit_channels: tuple[int, ...]
    branches: tuple[BranchSpec, ...]
    provenance: dict[str, Any] = field(default_factory=dict)
    classes: dict[str, Any] | None = None
    version: int = VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "stem_channels", tuple(self.stem_channels))
        object.__setattr__(self, "unit_channels", tuple(self.unit_channels))
        object.__setattr__(self, "branches", tuple(self.branches))
        object.__setattr__(self, "provenance", dict(self.provenance))

    # ------------------------------------------------------------------ derived facts
    @property
    def num_cells(self) -> int:
        """Total number of cells over the three branches."""
        return sum(len(b.cells) for b in self.branches)

    def downsample_layers(self, branch: int) -> list[int]:
        """Layers (0-based) of branch ``branch`` (0, 1, 2) whose cell downsamples."""
        return [i for i, c in enumerate(self.branches[branch].cells) if c.down is not None]

    def branch_channels(self, branch: int) -> list[int]:
        """Output width of every cell of branch ``branch``."""
        return [c.channels(self.unit_channels) for c in self.branches[branch].cells]

    def cell_owners(self) -> list[list[int]]:
        """For each branch and layer, the first branch whose cells up to and including that layer are the same
        as this branch's: the branch that computes the cell in the derived MRFEM, where branches share the
        cells of their common prefix (a searched genotype's branches form a tree and share their first cells).
        """
        return [[next(a for a in range(b + 1) if self.branches[a].cells[: i + 1] == branch.cells[: i + 1])
                 for i in range(len(branch.cells))] for b, branch in enumerate(self.branches)]

    def out_channels(self) -> list[int]:
        """Output width of each branch (its last cell's)."""
        return [self.branch_channels(b)[-1] for b in range(len(self.branches))]

    # ------------------------------------------------------------------ validation
    def validate(self) -> Genotype:
        """Check the rules of docs/design.md; raise :class:`GenotypeError` at the first violation.

        Returns ``self`` so that ``Genotype.from_dict(d).validate()`` chains.
        """
        if self.version != VERSION:
            raise GenotypeError(f"genotype: version {self.version} is not supported (expected {VERSION})")
        for name in ("depth", "num_classes", "in_channels"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise GenotypeError(f"genotype: {name} must be a positive integer, got {value!r}")
        if self.depth < 2:
            raise GenotypeError(f"genotype: depth {self.depth} cannot reach stride 32 (expected depth >= 2)")
        for name in ("stem_channels", "unit_channels"):
            value = getattr(self, name)
            if len(value) != 3 or not all(is_int(v) and v >= 1 for v in value):
                raise GenotypeError(f"genotype: {name} must be 3 positive integers, got {list(value)!r}")
        strides = [b.output_stride for b in self.branches]
        if strides != list(STRIDES):
            raise GenotypeError(f"genotype: branch output strides are {strides} (expected {list(STRIDES)})")
        for b, branch in enumerate(self.branches):
            _validate_branch(b, branch, self.depth)
        if not isinstance(self.provenance, dict):
            raise GenotypeError("genotype: provenance must be a JSON object")
        if self.classes is not None:
            try:
                names = ClassList.from_dict(self.classes, "genotype: classes").names
            except UserError as err:
                raise GenotypeError(str(err)) from None
            if len(names) != self.num_classes:
                raise GenotypeError(f"genotype: classes names {len(names)} classes, num_classes is "
                                    f"{self.num_classes}")
        return self

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """The JSON-plain dictionary of the schema (``format`` and ``version`` first)."""
        return {
            "format": FORMAT,
            "version": self.version,
            "depth": self.depth,
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "stem_channels": list(self.stem_channels),
            "unit_channels": list(self.unit_channels),
            "branches": [
                {"output_stride": b.output_stride, "cells": [dataclasses.asdict(c) for c in b.cells]}
                for b in self.branches
            ],
            "provenance": self.provenance,
            **({"classes": self.classes} if self.classes is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Genotype:
        """Parse and validate a dictionary of the schema; :class:`GenotypeError` on any defect."""
        if not isinstance(data, Mapping):
            raise GenotypeError(f"genotype: expected a JSON object, got {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise GenotypeError(f"genotype: format is {data.get('format')!r} (expected {FORMAT!r})")
        if data.get("version") != VERSION:
            raise GenotypeError(f"genotype: version {data.get('version')!r} is not supported (expected {VERSION})")
        keys = ("depth", "num_classes", "in_channels", "stem_channels", "unit_channels", "branches")
        missing = [k for k in keys if k not in data]
        if missing:
            raise GenotypeError(f"genotype: missing key(s) {', '.join(missing)}")
        for key in ("stem_channels", "unit_channels", "branches"):
            if not isinstance(data[key], list):
                raise GenotypeError(f"genotype: {key} must be a list")
        provenance = data.get("provenance", {})
        if not isinstance(provenance, dict):
            raise GenotypeError("genotype: provenance must be a JSON object")
        branches = []
        for b, raw in enumerate(data["branches"]):
            if not isinstance(raw, Mapping) or not isinstance(raw.get("cells"), list):
                raise GenotypeError(f"genotype: branch {b} must be an object with a list of cells")
            stride = raw.get("output_stride")
            cells = tuple(_cell_from_dict(f"branch {b}/{stride}, layer {i}", c) for i, c in enumerate(raw["cells"]))
            branches.append(BranchSpec(output_stride=stride, cells=cells))
        genotype = cls(
            depth=data["depth"], num_classes=data["num_classes"], in_channels=data["in_channels"],
            stem_channels=tuple(data["stem_channels"]), unit_channels=tuple(data["unit_channels"]),
            branches=tuple(branches), provenance=provenance, classes=data.get("classes"), version=data["version"],
        )
        return genotype.validate()

    def to_json(self, indent: int | None = 2) -> str:
        """The genotype as JSON text (raises ``TypeError`` if ``provenance`` is not JSON-plain)."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> Genotype:
        """Parse and validate JSON text; :class:`GenotypeError` on malformed JSON or any defect."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise GenotypeError(f"genotype: not valid JSON ({err})") from None
        return cls.from_dict(data)

    def save(self, path: str | os.PathLike) -> Path:
        """Validate and write the genotype to ``path`` atomically; returns the path."""
        self.validate()
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Genotype:
        """Read and validate a genotype file; :class:`GenotypeError` naming the file on any problem."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise GenotypeError(f"{p}: no such file (expected a genotype JSON)") from None
        except (OSError, UnicodeDecodeError) as err:
            raise GenotypeError(f"{p}: cannot read the genotype ({err})") from None
        try:
            return cls.from_json(text)
        except GenotypeError as err:
            message = str(err).removeprefix("genotype: ")
            raise GenotypeError(f"{p}: {message}") from None

    # ------------------------------------------------------------------ display
    def summary(self) -> str:
        """A readable table: one row per layer, one column per branch (op, width, stride, marks).

        ``conv3x3 x4=48 /8 +r`` is a 3x3 conv of expansion 4 (48 channels) at stride 8 with its residual;
        ``[conv3x3_s2]`` in front marks the downsampling operator of a cell that doubles the stride.
        """
        columns = [f"branch {b}/{br.output_stride}" for b, br in enumerate(self.branches)]
        rows = []
        for i in range(self.depth):
            row = []
            for br in self.branches:
                c = br.cells[i]
                down = f"[{c.down}] " if c.down else ""
                res = " +r" if c.residual else ""
                row.append(f"{down}{c.op} x{c.expansion}={c.channels(self.unit_channels)} /{c.stride}{res}")
            rows.append(row)
        widths = [max([len(h)] + [len(r[k]) for r in rows]) for k, h in enumerate(columns)]
        head = f"genotype v{self.version}: depth {self.depth}, {self.num_classes} classes, " \
               f"{self.in_channels} input channels, stem {list(self.stem_channels)}, " \
               f"unit widths {list(self.unit_channels)}, {self.num_cells} cells"
        lines = [head, "layer  " + "  ".join(h.ljust(w) for h, w in zip(columns, widths))]
        for i, row in enumerate(rows):
            lines.append(f"{i:>5}  " + "  ".join(r.ljust(w) for r, w in zip(row, widths)))
        return "\n".join(line.rstrip() for line in lines)


def _cell_from_dict(where: str, raw: Any) -> CellSpec:
    if not isinstance(raw, Mapping):
        raise GenotypeError(f"{where}: a cell must be a JSON object")
    missing = [k for k in ("op", "expansion", "stride") if k not in raw]
    if missing:
        raise GenotypeError(f"{where}: missing key(s) {', '.join(missing)}")
    unknown = sorted(set(raw) - {f.name for f in dataclasses.fields(CellSpec)})
    if unknown:
        raise GenotypeError(f"{where}: unknown key(s) {', '.join(unknown)}")
    return CellSpec(op=raw["op"], expansion=raw["expansion"], stride=raw["stride"],
                    residual=raw.get("residual", False), down=raw.get("down"))


def _validate_branch(b: int, branch: BranchSpec, depth: int) -> None:
    name = f"branch {b}/{branch.output_stride}"
    if len(branch.cells) != depth:
        raise GenotypeError(f"{name}: {len(branch.cells)} cells, expected depth {depth}")
    previous = STEM_STRIDE
    for i, c in enumerate(branch.cells):
        where = f"{name}, layer {i}"
        if not isinstance(c, CellSpec):
            raise GenotypeError(f"{where}: expected a CellSpec, got {type(c).__name__}")
        if c.op not in CELL_OPS:
            raise GenotypeError(f"{where}: unknown operator {c.op!r} (expected one of {', '.join(CELL_OPS)})")
        if not is_int(c.expansion) or c.expansion not in EXPANSIONS:
            raise GenotypeError(f"{where}: expansion {c.expansion!r} (expected one of {list(EXPANSIONS)})")
        if not is_int(c.stride) or c.stride not in STRIDES:
            raise GenotypeError(f"{where}: stride {c.stride!r} (expected one of {list(STRIDES)})")
        if not isinstance(c.residual, bool):
            raise GenotypeError(f"{where}: residual must be true or false, got {c.residual!r}")
        if c.stride not in (previous, 2 * previous):
            raise GenotypeError(f"{where}: stride {c.stride} after {previous} (expected {previous} or "
                                f"{2 * previous}: strides never decrease and at most double per layer)")
        doubles = c.stride == 2 * previous
        if doubles and c.down is None:
            raise GenotypeError(f"{where}: stride doubles to {c.stride} but down is missing "
                                f"(expected one of {', '.join(DOWN_OPS)})")
        if not doubles and c.down is not None:
            raise GenotypeError(f"{where}: down {c.down!r} set but the stride stays {c.stride} (expected null)")
        if doubles and c.down not in DOWN_OPS:
            raise GenotypeError(f"{where}: unknown downsampling operator {c.down!r} "
                                f"(expected one of {', '.join(DOWN_OPS)})")
        previous = c.stride
    if previous != branch.output_stride:
        raise GenotypeError(f"{name}: the last cell is at stride {previous}, the branch never reaches "
                            f"its output stride {branch.output_stride}")


def default_genotype(depth: int = 22, *, num_classes: int = 10, in_channels: int = 3,
                     stem_channels: Sequence[int] = (24, 48, 96),
                     unit_channels: Sequence[int] = UNIT_CHANNELS) -> Genotype:
    """A hand-designed genotype, for tests and for retraining without a search.

    Every cell has expansion 4 and its residual; operators alternate ``conv3x3``, ``zoomed_conv3x3``,
    ``conv3x3``, ``zoomed_conv5x5`` (cheap context from the zoomed ones). The 1/16 branch downsamples with
    ``conv3x3_s2`` at layer ``depth // 3``; the 1/32 branch there and with ``maxpool`` at ``2 * depth // 3``.

    Parameters
    ----------
    depth
        Cells per branch (>= 2, so that the 1/32 branch can get there).
    """
    if depth < 2:
        raise ValueError(f"default_genotype: depth {depth} < 2 cannot reach stride 32")
    pattern = ("conv3x3", "zoomed_conv3x3", "conv3x3", "zoomed_conv5x5")
    first, second = depth // 3, max(2 * depth // 3, depth // 3 + 1)
    downs = {8: {}, 16: {first: "conv3x3_s2"}, 32: {first: "conv3x3_s2", second: "maxpool"}}
    branches = []
    for out_stride in STRIDES:
        stride, cells = STEM_STRIDE, []
        for i in range(depth):
            down = downs[out_stride].get(i)
            if down is not None:
                stride *= 2
            cells.append(CellSpec(op=pattern[i % len(pattern)], expansion=4, stride=stride, residual=True,
                                  down=down))
        branches.append(BranchSpec(output_stride=out_stride, cells=tuple(cells)))
    return Genotype(depth=depth, num_classes=num_classes, in_channels=in_channels,
                    stem_channels=tuple(stem_channels), unit_channels=tuple(unit_channels),
                    branches=tuple(branches), provenance={"source": "ggmnet.search_space.default_genotype"})


def random_genotype(depth: int = 22, *, seed: int | None = None, num_classes: int = 10, in_channels: int = 3,
                    stem_channels: Sequence[int] = (24, 48, 96),
                    unit_channels: Sequence[int] = UNIT_CHANNELS) -> Genotype:
    """A genotype drawn uniformly per choice from the search space (a sanity baseline and test input).

    Every cell's operator, expansion and residual are uniform; the 1/16 branch downsamples at a uniform layer,
    the 1/32 branch at two distinct uniform layers; each downsampling operator is uniform.
    """
    if depth < 2:
        raise ValueError(f"random_genotype: depth {depth} < 2 cannot reach stride 32")
    rng = np.random.default_rng(seed)
    branches = []
    for b, out_stride in enumerate(STRIDES):
        downs = set(rng.choice(depth, size=b, replace=False).tolist())
        stride, cells = STEM_STRIDE, []
        for i in range(depth):
            down = str(rng.choice(DOWN_OPS)) if i in downs else None
            stride = stride * 2 if down else stride
            cells.append(CellSpec(op=str(rng.choice(CELL_OPS)), expansion=int(rng.choice(EXPANSIONS)),
                                  stride=stride, residual=bool(rng.integers(2)), down=down))
        branches.append(BranchSpec(output_stride=out_stride, cells=tuple(cells)))
    return Genotype(depth=depth, num_classes=num_classes, in_channels=in_channels,
                    stem_channels=tuple(stem_channels), unit_channels=tuple(unit_channels),
                    branches=tuple(branches),
                    provenance={"source": "ggmnet.search_space.random_genotype", "seed": seed}).validate()
