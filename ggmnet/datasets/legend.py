"""A map's legend: which class each unit of a geological map belongs to (``--legend FILE.csv``).

The legend is a CSV file with a header and the columns

* ``unit``: a value of the map's unit field (``--label-field``: ``D2``, ``Permian granite``, ...) or a code of a
  label raster (``3``);
* ``class``: the class it belongs to, by name or code; ``cover`` (or ``Cenozoic cover``) for the Cenozoic cover
  (label 255, ignored by the losses and the metrics, filled by the prediction on the merged map);
* optional ``code`` and ``colour`` (``#rrggbb``): the class's short code and colour on maps.

When every class the legend names is one of Table 1's (by name or code), the dataset keeps Table 1's ten classes
and indices, so networks trained on the synthetic benchmark and on the user's map share their outputs.
Otherwise the legend's classes, in the order they first appear, become the dataset's class list (of any
size), with the codes and colours the legend gives (made up where it gives none).

Units a map holds that the legend does not name are listed with their areas in one error, or, with
``--unlisted-units ignore``, mapped to 255 (not learned, not scored).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ggmnet.classes import COVER_INDEX, TABLE1, ClassList, parse_colour
from ggmnet.datasets.labels import check_label_values
from ggmnet.errors import UserError

#: What ``--unlisted-units`` accepts: refuse a map with units the legend does not name, or map them to 255.
UNLISTED_CHOICES = ("error", "ignore")


def unit_key(value: object) -> str:
    """The text a unit value is matched by: stripped text; integral numbers without a decimal part
    (``3``, ``3.0`` and ``"3"`` are the same unit)."""
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return ""
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if value is None:
        return ""
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    if not math.isfinite(number):
        return text
    return str(int(number)) if number.is_integer() else repr(number)


@dataclasses.dataclass(frozen=True)
class Legend:
    """Units of a map -> class indices (255 = cover) of a class list.

    Attributes
    ----------
    units : dict
        ``{unit_key(unit): class index}``.
    classes : ClassList
        The classes the indices refer to.
    source : str
        Where it came from (the CSV file, or ``"the class names"`` for :func:`names_legend`), for messages.
    """

    units: dict[str, int]
    classes: ClassList
    source: str

    def classify(self, units: Sequence[object], *, what: str, unlisted: str = "error",
                 areas_km2: Callable[[list[int]], Sequence[float]] | None = None) -> np.ndarray:
        """The class index (uint8, 255 = cover) of each of ``units`` (distinct unit values).

        Units the legend does not name raise one :class:`UserError` naming ``what`` and listing them by
        decreasing area (``areas_km2(positions)`` gives the areas of the units at those positions), or with
        ``unlisted="ignore"`` become 255.
        """
        if unlisted not in UNLISTED_CHOICES:
            raise UserError(f"--unlisted-units {unlisted}: expected one of {', '.join(UNLISTED_CHOICES)}")
        keys = [unit_key(u) for u in units]
        out = np.array([self.units.get(key, COVER_INDEX) for key in keys], dtype=np.uint8)
        missing = [i for i, key in enumerate(keys) if key not in self.units]
        if missing and unlisted == "error":
            areas = list(areas_km2(missing)) if areas_km2 is not None else [math.nan] * len(missing)
            order = sorted(range(len(missing)), key=lambda j: -(areas[j] if math.isfinite(areas[j]) else -1.0))
            shown = [f"{keys[missing[j]]!r} ({_area_text(areas[j])})" for j in order[:12]]
            more = f", and {len(missing) - 12} more" if len(missing) > 12 else ""
            raise UserError(f"{what}: {len(missing)} unit(s) not in {self.source}: {', '.join(shown)}{more}; "
                            f"add them to the legend (class 'cover' for the Cenozoic cover) or pass "
                            f"--unlisted-units ignore to leave them out (label 255)")
        return out


def _area_text(area: float) -> str:
    if not math.isfinite(area):
        return "area unknown"
    return f"{area:.1f} km2" if area < 1e4 else f"{area:.0f} km2"


def names_legend(classes: ClassList = TABLE1) -> Legend:
    """The legend a map needs none of: units spelled as the classes' names or codes (any case), or ``cover``."""
    units = {}
    for k, (name, code) in enumerate(zip(classes.names, classes.codes)):
        for text in (name, code, name.lower(), code.lower(), name.upper(), code.upper()):
            units.setdefault(text, k)
    for text in ("cover", "Cover", "COVER", "Cenozoic cover", "cenozoic cover", "cenozoic_cover"):
        units[text] = COVER_INDEX
    return Legend(units, classes, "the class names (pass --legend FILE.csv to name the map's units)")


def _column(fieldnames: Sequence[str], *names: str) -> str | None:
    lowered = {f.strip().lower(): f for f in fieldnames if f is not None}
    return next((lowered[name] for name in names if name in lowered), None)


def read_legend(path: str | os.PathLike, base: ClassList | None = None) -> Legend:
    """Read a legend CSV (see the module docstring) into a :class:`Legend`.

    Parameters
    ----------
    path
        The CSV file (UTF-8, comma, semicolon or tab separated, a header row naming ``unit`` and ``class``).
    base
        A class list the legend's classes must come from (a checkpoint's, when predicting); default: Table 1
        when it names only Table 1's classes, else its own classes in order of first appearance.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--legend {path}: no such file (expected a CSV with columns unit and class)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"--legend {path}: cannot be read as UTF-8 text ({err})") from None
    try:
        dialect = csv.Sniffer().sniff(text.splitlines()[0] if text.strip() else ",", delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.DictReader(text.splitlines(), dialect=dialect)
    fields = reader.fieldnames or []
    unit_col, class_col = _column(fields, "unit"), _column(fields, "class")
    if unit_col is None or class_col is None:
        raise UserError(f"--legend {path}: expected a header with columns unit and class (it has "
                        f"{', '.join(f for f in fields if f) or 'none'})")
    code_col, colour_col = _column(fields, "code"), _column(fields, "colour", "color")
    rows: list[tuple[int, str, str, str, str]] = []
    for line, row in enumerate(reader, start=2):
        unit, name = unit_key(row.get(unit_col)), (row.get(class_col) or "").strip()
        if not unit and not name:
            continue
        if not unit or not name:
            raise UserError(f"--legend {path}: line {line} needs both a unit and a class")
        rows.append((line, unit, name, (row.get(code_col) or "").strip() if code_col else "",
                     (row.get(colour_col) or "").strip() if colour_col else ""))
    if not rows:
        raise UserError(f"--legend {path}: no units (expected rows of unit,class)")
    classes = _legend_classes(path, rows, base)
    units: dict[str, int] = {}
    for line, unit, name, _, _ in rows:
        index = classes.index(name)
        if index is None:
            raise UserError(f"--legend {path}: line {line}: class {name!r} is not one of "
                            f"{', '.join(classes.names)} (or cover)")
        if unit in units and units[unit] != index:
            raise UserError(f"--legend {path}: line {line}: unit {unit!r} is given two classes")
        units[unit] = index
    return Legend(units, classes, str(path))


def _legend_classes(path: Path, rows: list[tuple[int, str, str, str, str]], base: ClassList | None) -> ClassList:
    """The class list of a legend's rows (see :func:`read_legend`)."""
    if base is not None:
        return base
    names = [name for _, _, name, _, _ in rows if TABLE1.index(name) != COVER_INDEX]
    if all(TABLE1.index(name) is not None for name in names):
        return TABLE1
    order: list[str] = []
    codes: dict[str, str] = {}
    colours: dict[str, tuple[int, int, int]] = {}
    for line, _, name, code, colour in rows:
        if name.lower() in ("cover", "cenozoic cover", "cenozoic_cover"):
            continue
        key = next((n for n in order if n.lower() == name.lower()), None)
        if key is None:
            order.append(name)
            key = name
        if code and key not in codes:
            codes[key] = code
        if colour and key not in colours:
            colours[key] = parse_colour(colour, f"--legend {path}: line {line}")
    try:
        return ClassList.make(order, [codes.get(n) for n in order], [colours.get(n) for n in order])
    except UserError as err:
        raise UserError(f"--legend {path}: {str(err).removeprefix('class list: ')}") from None


def codes_to_classes(values: np.ndarray, *, legend: Legend | None, classes: ClassList, source: str, name: str,
                     unlisted: str = "error", areas_km2: Callable[[np.ndarray], float] | None = None) -> np.ndarray:
    """Class indices (uint8, 255 = cover) of the codes of a label grid or raster.

    Without ``legend`` the codes must be class indices of ``classes`` (0..K-1) or 255 (a :class:`UserError`
    naming ``source`` and the variable ``name`` otherwise); with one, each code is a unit of the legend (units it
    does not name: see :meth:`Legend.classify`). ``areas_km2(mask)`` gives the area of the ``values`` where
    ``mask`` is set, for the error's listing.
    """
    values = np.asarray(values)
    if legend is None:
        return check_label_values(values, source, name, classes)
    finite = np.isfinite(values) if np.issubdtype(values.dtype, np.floating) else np.ones(values.shape, bool)
    unique, inverse = np.unique(np.where(finite, values, 0), return_inverse=True)
    inverse = inverse.reshape(values.shape)

    def areas(positions: list[int]) -> list[float]:
        if areas_km2 is None:
            return [math.nan] * len(positions)
        return [float(areas_km2((inverse == p) & finite)) for p in positions]

    lookup = legend.classify(unique.tolist(), what=f"{source} ({name})", unlisted=unlisted, areas_km2=areas)
    out = lookup[inverse]
    out[~finite] = COVER_INDEX
    return out
