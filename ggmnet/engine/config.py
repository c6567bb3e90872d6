"""Options, each defined once (type, default, unit, help, check) for the dataclass, the YAML file and the flags.

A command's settings are a :class:`Config` dataclass whose fields come from :meth:`Option.field` (an option
several commands share) or :func:`option` (one command's). From it come the flags of :meth:`Config.parser`, the
``--config FILE.yaml`` file (keys as the long flags; unknown keys refused) and :meth:`Config.check`, which passes
every value through its option's ``convert`` (raising ``ValueError("<what was expected>")``), fills in the
:data:`DERIVED` defaults and applies the rules across options; a bad value is one line naming the option.
Precedence: the defaults < the YAML file < the flags. :class:`RunConfig` holds the options both training stages
share (see docs/design.md, "Options").
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import logging
import math
import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ggmnet.errors import UserError
from ggmnet.losses import CLASS_WEIGHT_METHODS

Convert = Callable[[Any], Any]
C = TypeVar("C", bound="Config")

#: What ``--device`` accepts.
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class _Derived(enum.Enum):
    DERIVED = "derived"

    def __repr__(self) -> str:
        return "DERIVED"


#: The default of an option whose value follows from other options (its ``derive``).
DERIVED = _Derived.DERIVED


# --------------------------------------------------------------------------------------------- conversions

def is_int(value: Any) -> bool:
    """True for an ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def _numeric(kind: type, test: Callable[[Any], bool], expected: str, metavar: str) -> Convert:
    def convert(value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = kind(value.strip())
            except ValueError:
                raise ValueError(expected) from None
        numeric = int if kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, numeric) or not math.isfinite(value) or not test(value):
            raise ValueError(expected)
        return kind(value)

    convert.metavar = metavar  # type: ignore[attr-defined]
    return convert


def integer(test: Callable[[int], bool], expected: str) -> Convert:
    """An integer (or its text) for which ``test`` holds; ``expected`` says what is wanted."""
    return _numeric(int, test, expected, "N")


def number(test: Callable[[float], bool], expected: str) -> Convert:
    """A finite number (or its text) for which ``test`` holds, as a float."""
    return _numeric(float, test, expected, "X")


POSITIVE_INT = integer(lambda v: v >= 1, "a positive integer")
NON_NEGATIVE_INT = integer(lambda v: v >= 0, "a non-negative integer")
NUMBER = number(lambda v: True, "a number")
POSITIVE = number(lambda v: v > 0, "a positive number")
NON_NEGATIVE = number(lambda v: v >= 0, "a non-negative number")


def integers(count: int, test: Callable[[int], bool], expected: str) -> Convert:
    """``count`` integers as a tuple, from a sequence or comma-separated text."""
    def convert(value: Any) -> tuple[int, ...]:
        items = str(value).split(",") if isinstance(value, str) else value
        try:
            values = tuple(integer(test, expected)(v) for v in items)
        except TypeError:
            raise ValueError(expected) from None
        if len(values) != count:
            raise ValueError(expected)
        return values

    return convert


def choice(*values: str, expected: str | None = None) -> Convert:
    """One of ``values``."""
    expected = expected or (", ".join(values[:-1]) + f" or {values[-1]}" if len(values) > 1 else values[0])

    def convert(value: Any) -> str:
        if value not in values:
            raise ValueError(expected)
        return value

    convert.choices = values  # type: ignore[attr-defined]
    return convert


def boolean(value: Any) -> bool:
    """``True`` or ``False`` (or the text ``true``/``false``)."""
    if isinstance(value, bool):
        return value
    if str(value).strip().lower() in ("true", "false"):
        return str(value).strip().lower() == "true"
    raise ValueError("true or false")


def text(value: Any) -> str:
    """A name or a path, as a string."""
    if isinstance(value, (str, os.PathLike)):
        return str(value)
    raise ValueError("a name or a path")


def device_name(value: Any) -> str:
    """A ``--device`` value (whether the device exists is checked when it is used)."""
    if not isinstance(value, str) or not DEVICE_PATTERN.match(value.strip().lower()):
        raise ValueError("auto, cpu, cuda or cuda:N")
    return value


def optional(convert: Convert) -> Convert:
    """``convert``, or None for ``None``, ``none`` or ``null``."""
    def optional_convert(value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
            return None
        try:
            return convert(value)
        except ValueError as err:
            raise ValueError(f"{err} (or none)") from None

    optional_convert.choices = getattr(convert, "choices", None)  # type: ignore[attr-defined]
    optional_convert.metavar = getattr(convert, "metavar", None)  # type: ignore[attr-defined]
    return optional_convert


# --------------------------------------------------------------------------------------------- options

@dataclasses.dataclass(frozen=True)
class Option:
    """An option as it is wherever it is used.

    Parameters
    ----------
    help
        What it sets, with units; ``--help`` adds the default.
    convert
        Conversion and check of one value (see the module docstring).
    metavar
        Placeholder in ``--help`` (default: the choices, ``N`` for an integer, ``X`` for a number, or the
        flag's name).
    derive
        ``derive(config) -> value`` for a :data:`DERIVED` default, from the other options (already checked).
    derived
        How the derived default follows, in words (``--help`` and the printed line).
    positional
        An argument without a flag (a required one).
    """

    help: str
    convert: Convert = text
    metavar: str | None = None
    derive: Callable[[Any], Any] | None = None
    derived: str | None = None
    positional: bool = False

    def field(self, default: Any = dataclasses.MISSING, *, shown: str | None = None) -> Any:
        """A dataclass field of this option with ``default`` (none given: required, keyword-only); ``shown``
        words the default in ``--help`` (default: the value itself)."""
        return dataclasses.field(default=default, kw_only=default is dataclasses.MISSING,
                                 metadata={"option": self, "shown": shown})


def option(default: Any, help: str, convert: Convert = text, *, shown: str | None = None, **kwargs: Any) -> Any:
    """A dataclass field with an option of its own (one that one command uses)."""
    return Option(help, convert, **kwargs).field(default, shown=shown)


def flag(name: str) -> str:
    """The long flag of a field: ``tile_size`` -> ``--tile-size``."""
    return "--" + name.replace("_", "-")


def _options(cls: type) -> list[tuple[dataclasses.Field, Option]]:
    return [(f, f.metadata["option"]) for f in dataclasses.fields(cls) if "option" in f.metadata]


def _default_text(field: dataclasses.Field, opt: Option) -> str:
    value = field.default
    if field.metadata.get("shown"):
        return field.metadata["shown"]
    if value is DERIVED:
        return str(opt.derived)
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "none"
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def read_config_file(path: str | os.PathLike, names: Sequence[str], *, option: str = "--config",
                     _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The option values of a YAML recipe (keys with ``-`` or ``_``); unknown names are refused.

    A recipe may name a base recipe (``base: retrain_cpu.yaml``, relative to its own folder) and change only what
    differs: the base's values (read the same way, so bases chain) are overridden by the recipe's own.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{option} {path}: no such file (expected a YAML file of option values)")
    if path.resolve() in _seen:
        raise UserError(f"{option} {path}: its bases name it again (a recipe's base chain must end)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0] if str(err) else "invalid YAML"
        raise UserError(f"{option} {path}: not valid YAML ({first})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{option} {path}: expected a mapping of option names to values")
    values = {str(k).replace("-", "_"): v for k, v in raw.items()}
    base = values.pop("base", None)
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise UserError(f"{option} {path}: unknown option(s) {', '.join(unknown)}")
    if base is None:
        return values
    if not isinstance(base, str):
        raise UserError(f"{option} {path}: base {base!r}: expected the file name of a base recipe")
    inherited = read_config_file(path.parent / base, names, option=option, _seen=(*_seen, path.resolve()))
    return {**inherited, **values}


class Config:
    """Base of the commands' settings dataclasses (fields made with :meth:`Option.field`)."""

    def check(self: C) -> C:
        """Convert and check every value (one whose default is None also takes ``none``), fill in the derived
        defaults, apply :meth:`check_together`.

        Raises a one-line :class:`UserError` naming the option of the first bad value; returns self.
        """
        pending = []
        for field, opt in _options(type(self)):
            value = getattr(self, field.name)
            if value is DERIVED:
                pending.append((field.name, opt))
                continue
            convert = optional(opt.convert) if field.default is None else opt.convert
            try:
                setattr(self, field.name, convert(value))
            except ValueError as err:
                raise UserError(f"{flag(field.name)} {value}: expected {err}") from None
        for name, opt in pending:
            setattr(self, name, opt.derive(self))
            self.derived[name] = str(opt.derived)
        self.check_together()
        return self

    def check_together(self) -> None:
        """The command's rules across options (raise :meth:`error`); none here."""

    def error(self, name: str, expected: str) -> UserError:
        """The one-line error of option ``name``'s value: ``--name VALUE: expected EXPECTED``."""
        return UserError(f"{flag(name)} {getattr(self, name)}: expected {expected}")

    @property
    def derived(self) -> dict[str, str]:
        """The options whose default was derived, and how (filled by :meth:`check`)."""
        return self.__dict__.setdefault("_derived", {})

    def derived_line(self) -> str:
        """``--warmup-epochs 1 (HOW), ...`` for the derived options; empty when none was derived."""
        return ", ".join(f"{flag(name)} {getattr(self, name)} ({how})" for name, how in self.derived.items())

    def adopt_derived(self, saved: Mapping[str, Any]) -> None:
        """Take a saved run's values of the options derived here: a resumed run keeps its derived defaults."""
        for name in self.derived:
            if name in saved:
                setattr(self, name, saved[name])
                self.derived[name] = "as in the run resumed"
        self.check()

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-plain dict (as saved in ``run.json`` and in checkpoints)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        return {name: list(v) if isinstance(v, tuple) else v for name, v in values.items()}

    @classmethod
    def parser(cls, prog: str, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
        """The command's argument parser: a flag per option, and ``--config``."""
        p = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                    formatter_class=argparse.RawDescriptionHelpFormatter,
                                    argument_default=argparse.SUPPRESS)
        for field, opt in _options(cls):
            required = field.default is dataclasses.MISSING
            text_help = (f"{opt.help}." + ("" if required else f" Default: {_default_text(field, opt)}.")
                         + (" Required." if required and not opt.positional else "")).replace("%", "%%")
            if isinstance(field.default, bool) or opt.convert is boolean:
                p.add_argument(flag(field.name), action=argparse.BooleanOptionalAction, help=text_help)
                continue
            choices = getattr(opt.convert, "choices", None)
            metavar = opt.metavar or ("{" + ",".join(choices) + "}" if choices else None) \
                or getattr(opt.convert, "metavar", None)
            p.add_argument(*([field.name] if opt.positional else [flag(field.name)]), metavar=metavar,
                           help=text_help)
        p.add_argument("--config", metavar="FILE.yaml",
                       help="YAML file of option values (keys as the long flags, with _ for -); flags given on the "
                            "command line override it. Default: none.")
        return p

    @classmethod
    def from_argv(cls: type[C], parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> C:
        """The checked settings of a command line: defaults < ``--config`` file < flags."""
        given = vars(parser.parse_args(argv))
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        path = given.pop("config", None)
        values = {**(read_config_file(path, [f.name for f in fields]) if path is not None else {}), **given}
        for field in fields:
            if field.default is dataclasses.MISSING and field.name not in values:
                raise UserError(f"{flag(field.name)} is required")
        return cls(**values).check()


def launched_rank() -> int:
    """This process's rank as torchrun's environment gives it (0 without torchrun)."""
    return int(os.environ.get("RANK", "0") or 0)


def setup_logging() -> None:
    """The log of a console script: plain lines on stderr, informative ones from rank 0 only, and Python
    warnings as ``warning: MESSAGE``."""
    logging.basicConfig(level=logging.INFO if launched_rank() == 0 else logging.WARNING, format="%(message)s")
    warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"


def run_command(config_class: type[C], parser: argparse.ArgumentParser, argv: Sequence[str] | None,
                run: Callable[[C], Any], summary: Callable[[Any], str]) -> int:
    """A training stage's console script: parse the settings, set up the log, ``run`` them, print
    ``summary(result)`` on rank 0; exit status 0."""
    config = config_class.from_argv(parser, argv)
    setup_logging()
    result = run(config)
    if launched_rank() == 0:
        print(summary(result))
    return 0


# --------------------------------------------------------------------------------------------- shared options

DATA = Option("prepared dataset folder (ggm-data prepare output)", text, metavar="DIR")
OUT = Option("folder the outputs are written to (created)", text, metavar="DIR")
DEVICE = Option("auto (CUDA when available), cpu, cuda or cuda:N", device_name, metavar="NAME")
TILE_SIZE = Option("side of the square tiles the network sees, pixels", POSITIVE_INT, metavar="PX")
BATCH_SIZE = Option("tiles per forward pass and per process", POSITIVE_INT, metavar="N")
EPOCHS = Option("total epochs", POSITIVE_INT, metavar="N")
NUM_WORKERS = Option("data-loading worker processes per process", NON_NEGATIVE_INT, metavar="N")


def available_cpus() -> int:
    """The CPU cores this process may run on (its affinity mask where the system has one), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS and Windows have no affinity mask
        return max(1, os.cpu_count() or 1)


def num_workers_field(at_most: int) -> Any:
    """The ``--num-workers`` field of a stage: the cores this process may use, at most ``at_most`` (more
    loader workers than cores only compete with the training step, and PyTorch warns about them)."""
    here = min(at_most, available_cpus())
    return NUM_WORKERS.field(here, shown=f"the CPU cores this process may use, at most {at_most} (here {here})")


#: Largest training crop a derived ``--crop-size`` takes (the paper's 1024 px crops of 2048 px tiles).
CROP_SIZE_MAX = 1024


@dataclasses.dataclass
class RunConfig(Config):
    """The settings both training stages share (``nas-search`` and ``retrain``); see their ``--help``.

    A stage's settings derive from this class, add :data:`EPOCHS` and :data:`NUM_WORKERS` with defaults of
    their own, and their own options.
    """

    data: str | None = DATA.field(None, shown="the synthetic default dataset, built on first use under "
                                              "$GGMNET_DATA or ~/.cache/ggmnet")
    out: str | None = OUT.field(None, shown="a new runs/STAGE/NAME-DATE-TIME (with --resume: the newest run there)")
    resume: bool = option(False, "continue the run in --out (or the newest under runs/STAGE) from its "
                                 "checkpoints/last.pt", boolean)
    steps_per_epoch: int | None = option(
        None, "optimiser steps per epoch (in the search a weight step, plus an architecture step after the "
              "warm-up)", POSITIVE_INT, metavar="N",
        shown="none = one pass over this process's share of the training windows")
    tile_size: int = TILE_SIZE.field(2048)
    pixels_per_degree: float | None = option(
        None, "fixed-resolution tiles: every window is seen at this ground resolution (30 = one pixel per 2' "
              "node, 15 = one per two), training tiles of --tile-size px are centred anywhere in the training "
              "windows, and validation maps the whole region and scores each window at its grid nodes",
        POSITIVE, metavar="PX", shown="none = the paper's: each window rendered whole at --tile-size, whatever "
                                      "its size in degrees")
    crop_size: int | None = option(
        DERIVED, "side of the random training crop, pixels (none: whole tiles); validation scores whole tiles",
        optional(POSITIVE_INT), metavar="PX",
        derive=lambda c: None if c.pixels_per_degree is not None else min(CROP_SIZE_MAX, c.tile_size),
        derived=f"min({CROP_SIZE_MAX}, --tile-size), none with --pixels-per-degree")
    augment: str = option("paper", "training augmentation: paper (section 5.1.1: random crop, flips, rotation "
                                   "0-180 degrees, translation, contrast, brightness, noise), d4 (random crop "
                                   "or centre, then one of the eight flips and right-angle rotations: the values "
                                   "and pixel grid are kept exactly) or none", choice("paper", "d4", "none"))
    batch_size: int = BATCH_SIZE.field(4)
    val_tiles: int | None = option(None, "validation tiles scored every epoch (a fixed seeded choice)",
                                   POSITIVE_INT, metavar="N", shown="none = all")
    channels: str = option("pseudocolour", "network input: the paper's pseudo-colour image of the residual "
                                           "anomaly, or the normalised physical channels",
                           choice("pseudocolour", "physical"))
    geology_prior: bool = option(False, "also read the outcrop geology beside the gravity: per class, the nearest "
                                        "known outcrop's class, plus known/unknown and the distance to known "
                                        "outcrop; trained by filling outcrop hidden under the cover of another part "
                                        "of the map, validated on hidden outcrop", boolean)
    top_k_fraction: float = option(0.15, "K/N of the bootstrapped cross-entropy (Eq. 19): the share of the "
                                         "labelled pixels, the hardest, that the loss keeps (1 = all)",
                                   number(lambda v: 0 < v <= 1, "a fraction in (0, 1]"))
    class_weighting: str = option("median_frequency", "class weights of Eq. 19 from the training windows' class "
                                                      "counts: median_frequency (median(f)/f_c, at most 10), "
                                                      "sqrt_median_frequency (its square root), "
                                                      "inverse_frequency, or uniform",
                                  choice(*CLASS_WEIGHT_METHODS))
    instance_weighting: bool = option(True, "weigh each pixel of Eq. 19 by the size of its instance (connected "
                                            "outcrop of one class; small ones weigh more)", boolean)
    seed: int = option(0, "seed of the data split and order, the initial weights, the sampling and the "
                          "augmentation", NON_NEGATIVE_INT)
    device: str = DEVICE.field("auto")
    amp: bool = option(True, "mixed precision on CUDA (bfloat16 where supported, else float16 with loss "
                             "scaling); never used on CPU", boolean)
    wandb_mode: str | None = option(None, "Weights & Biases mode", choice("online", "offline", "disabled"),
                                    shown="online with credentials, else offline (local copies of everything "
                                          "logged are always written to the run folder)")

    def check_together(self) -> None:
        if self.pixels_per_degree is not None and self.crop_size is not None:
            raise UserError(f"--crop-size {self.crop_size} and --pixels-per-degree {self.pixels_per_degree:g}: "
                            "fixed-resolution tiles are sampled at --tile-size; set --crop-size none")
