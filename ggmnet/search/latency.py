"""Latency tables: each operator of the search space timed on the machine that will run the network.

``nas-latency-table table.json --unit-channels 4,8,16 --size 1024`` builds one: every (operator, stride,
input width, output width) that a supernet of those widths can use, built exactly as a derived network builds
it (:func:`~ggmnet.search_space.operations.build_op`, evaluation mode), timed alone on a batch of one map of
``size / stride`` pixels a side (the median of ``repeats`` timings by ``torch.utils.benchmark``), in
milliseconds. ``nas-search --latency-table table.json --cost-target 0.5`` (or ``--cost-target 30ms``) then
searches under that cost: the cost of a network is the sum of its operators' latencies, as FasterSeg's
latency lookup table sums them (which ignores what runs between the operators and any overlap of their
work: a model of the latency, checked against the whole network's measured time by
``benchmarks/bench_latency_table.py``).

File format (JSON): ``{"format": "ggmnet-latency-table", "version": 1, "unit": "ms at 1024 px",
"input_size": 1024, "device": ..., "threads": ..., "entries": [[op, stride, c_in, c_out, ms], ...],
"provenance": {...}}``; ``op`` is a cell or downsampling operator or ``"shortcut"`` (the residual connection's
1x1 conv + BN where the widths differ).
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch.utils import benchmark
from tqdm import tqdm

from ggmnet.engine.runio import write_json_atomic
from ggmnet.errors import UserError
from ggmnet.search_space.operations import DOWN_OPS, ConvNormAct, build_op
from ggmnet.search_space.supernet import SHORTCUT, Supernet

FORMAT = "ggmnet-latency-table"
VERSION = 1
Key = tuple[str, int, int, int]


@dataclasses.dataclass
class LatencyTable:
    """Milliseconds per ``(op, stride, c_in, c_out)`` at ``input_size`` pixels, measured on ``device``."""

    entries: dict[Key, float]
    input_size: int
    device: str
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def unit(self) -> str:
        return f"ms at {self.input_size} px"

    def rows(self) -> list[list[Any]]:
        """The entries as JSON-plain rows ``[op, stride, c_in, c_out, ms]``, sorted."""
        return [[op, s, a, c, ms] for (op, s, a, c), ms in sorted(self.entries.items())]

    def save(self, path: str | os.PathLike) -> None:
        write_json_atomic(path, {"format": FORMAT, "version": VERSION, "unit": self.unit,
                                 "input_size": self.input_size, "device": self.device, "entries": self.rows(),
                                 "provenance": self.provenance})


def load_latency_table(path: str | os.PathLike) -> LatencyTable:
    """Read a table written by :meth:`LatencyTable.save`; a one-line :class:`UserError` naming it otherwise."""
    path = Path(path)
    where = f"--latency-table {path}"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{where}: no such file (expected a table written by nas-latency-table)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{where}: not a JSON latency table ({type(err).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
        raise UserError(f"{where}: not a {FORMAT} version {VERSION} file (written by nas-latency-table)")
    entries = {}
    for row in data.get("entries", []):
        try:
            op, s, a, c, ms = row
            entries[(str(op), int(s), int(a), int(c))] = float(ms)
        except (TypeError, ValueError):
            raise UserError(f"{where}: bad entry {row!r} (expected [op, stride, c_in, c_out, ms])") from None
    return LatencyTable(entries, int(data["input_size"]), str(data.get("device")), dict(data.get("provenance", {})))


def required_keys(supernet: Supernet) -> set[Key]:
    """Every ``(op, stride, c_in, c_out)`` that the supernet's cost (expected, derived or largest) looks up."""
    keys: set[Key] = set()

    def record(op: str, stride: int, c_in: int, c_out: int) -> float:
        keys.add((op, stride, c_in, c_out))
        return 1.0

    for node in supernet.nodes.values():
        node.cost_tensors(record)
    supernet.largest_cost(record)
    return keys


def time_entry(key: Key, size: int, device: torch.device, repeats: int) -> float:
    """Median milliseconds of one entry's operator on ``[1, c_in, h, h]``, ``h`` its input's side."""
    op, stride, c_in, c_out = key
    side = max(1, size // (stride // 2 if op in DOWN_OPS else stride))
    # the module a derived network runs for the entry
    module = ConvNormAct(c_in, c_out, 1, relu=False) if op == SHORTCUT else build_op(op, c_in, c_out)
    module = module.to(device).eval()
    x = torch.randn(1, c_in, side, side, device=device)
    with torch.no_grad():
        module(x)  # warm-up
        timer = benchmark.Timer(stmt="module(x)", globals={"module": module, "x": x})  # synchronises CUDA
        return float(statistics.median(timer.timeit(1).mean for _ in range(repeats)) * 1e3)


def measure_latency_table(keys: Iterable[Key], *, size: int, device: str | torch.device = "cpu",
                          repeats: int = 10, progress: bool = True) -> LatencyTable:
    """Time every entry of ``keys`` (see the module docstring)."""
    device = torch.device(device)
    keys = tqdm(sorted(set(keys)), desc="latency table", unit="op", disable=not progress)
    entries = {key: time_entry(key, size, device, repeats) for key in keys}
    return LatencyTable(entries, size, str(device), {"threads": torch.get_num_threads(), "repeats": repeats,
                                                     "torch": torch.__version__})
