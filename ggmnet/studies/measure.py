"""Measuring for the benchmarks: resident memory and its peak (Linux), and a median timer of wall and CPU time.

``resident_mib("VmRSS")`` is this process's resident memory now, ``"VmHWM"`` its peak since the start or since
:func:`reset_peak` (which sets the peak to the present size, so that what a measured step adds is
``peak - before``). ``ru_maxrss`` is not used: a child process inherits its parent's.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def resident_mib(field: str = "VmRSS") -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (its peak) of this process in MiB, from ``/proc/self/status``."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_resident_mib() -> float:
    """This process's peak resident memory since it started (or since :func:`reset_peak`), MiB."""
    return resident_mib("VmHWM")


def reset_peak() -> None:
    """Set ``VmHWM`` to the present resident memory."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def peak_added_mib(fn: Callable[[], object]) -> float:
    """The resident memory ``fn()`` adds at its peak, in MiB."""
    reset_peak()
    before = resident_mib("VmRSS")
    fn()
    return peak_resident_mib() - before


@dataclass
class Timing:
    """Median wall and CPU seconds of the timed calls."""

    seconds: float
    cpu_seconds: float


def median_time(fn: Callable[[], object], repeats: int, *, warmup: int = 1,
                sync: Callable[[], object] | None = None) -> Timing:
    """Median over ``repeats`` calls of ``fn`` (after ``warmup`` untimed ones) of wall and CPU time; ``sync``
    (e.g. ``torch.cuda.synchronize``) is called after each so that asynchronous work is counted."""
    for _ in range(warmup):
        fn()
        if sync is not None:
            sync()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        if sync is not None:
            sync()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return Timing(statistics.median(walls), statistics.median(cpus))


def interleaved_medians(cases: dict[str, Callable[[], object]], repeats: int, *, warmup: bool = True
                        ) -> dict[str, float]:
    """Median wall seconds of each case, the cases taken in turn ``repeats`` times (after one untimed round when
    ``warmup``), so that a shared machine's slow spells fall on every case alike: compare their ratios."""
    if warmup:
        for fn in cases.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def bench_parser(doc: str, **numbers: tuple[type, Any, str]) -> argparse.ArgumentParser:
    """A benchmark's parser: the first line of its docstring, and a flag ``--name`` for each numeric setting
    ``name=(type, default, help)`` whose help shows its default. Other flags are added to it as usual."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, (kind, default, text) in numbers.items():
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=default,
                            help=f"{text} (default {default})")
    return parser
