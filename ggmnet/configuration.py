"""Configuration: argparse defaults, overridden by a YAML file (``--config``), overridden by flags.

The resolved configuration is a plain dict that every run saves beside its outputs (``run.json``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ggmnet.errors import UserError


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--config FILE.yaml``: values in the file replace the defaults, flags on the command line win."""
    parser.add_argument(
        "--config", type=Path, default=None, metavar="FILE.yaml",
        help="YAML file of option values (keys as the long flags, with _ for -); flags given on the "
             "command line override it. Default: none.",
    )


def parse_with_config(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` with defaults < YAML file (``--config``) < explicit flags."""
    args = parser.parse_args(argv)
    path = getattr(args, "config", None)
    if path is None:
        return args
    import yaml

    if not Path(path).is_file():
        raise UserError(f"--config {path}: no such file (expected a YAML file of option values)")
    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0] if str(err) else "invalid YAML"
        raise UserError(f"--config {path}: not valid YAML ({first})") from None
    if not isinstance(values, dict):
        raise UserError(f"--config {path}: expected a mapping of option names to values")
    known = {a.dest for a in parser._actions}
    unknown = sorted(set(k.replace("-", "_") for k in values) - known)
    if unknown:
        raise UserError(f"--config {path}: unknown option(s) {', '.join(unknown)}")
    parser.set_defaults(**{k.replace("-", "_"): v for k, v in values.items()})
    return parser.parse_args(argv)


def namespace_to_config(args: argparse.Namespace) -> dict[str, Any]:
    """A JSON-friendly dict of the parsed options (paths as strings)."""
    out: dict[str, Any] = {}
    for key, value in vars(args).items():
        if key.startswith("_") or callable(value):
            continue
        out[key] = str(value) if isinstance(value, Path) else value
    return out


def optional_int(text: str) -> int | None:
    """argparse type: an integer, or None for ``none``/``null`` (as YAML files write it)."""
    if str(text).strip().lower() in ("none", "null", ""):
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or none, got {text!r}") from None
