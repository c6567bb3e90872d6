"""The geological classes: Table 1 of the paper by default, or a user's class list of any size.

A :class:`ClassList` holds the names, short codes and RGB colours of the bedrock classes in index order
(class ``k`` is label value ``k``); label value 255 is the Cenozoic cover, which the losses and metrics ignore.
:data:`TABLE1` is the paper's ten classes and the default everywhere. A dataset records its class list in
``manifest.json`` (``classes``), and the genotype and the retrain checkpoints carry it on, so that retraining,
evaluation, prediction, the maps and the W&B tables name and colour the classes the user's map has.
"""

from __future__ import annotations

import colorsys
import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ggmnet.errors import UserError

#: Label value of Cenozoic cover (Q, N, E): the bedrock is unknown there, so losses and metrics ignore it.
COVER_INDEX = 255
IGNORE_INDEX = COVER_INDEX

#: Table 1 of the paper, one row per bedrock class in index order (0-9): code, name, RGB colour (the 1:5M
#: Asia-European geological map's legend) and share of the outcrop area in the paper's dataset, in percent.
_TABLE1_ROWS = (
    ("Ar", "Archean", (255, 178, 255), 0.6),
    ("Pt", "Proterozoic", (177, 153, 99), 7.2),
    ("Cm", "Cambrian", (4, 249, 7), 10.3),
    ("O", "Ordovician", (126, 254, 127), 4.0),
    ("S", "Silurian", (152, 215, 29), 7.0),
    ("D", "Devonian", (166, 76, 76), 20.3),
    ("C", "Carboniferous", (179, 218, 217), 30.9),
    ("P", "Permian", (227, 178, 28), 2.1),
    ("J", "Jurassic", (255, 247, 102), 2.3),
    ("Gr", "Granite", (73, 251, 250), 15.3),
)
CLASS_CODES, CLASS_NAMES, CLASS_COLOURS, PAPER_SHARES_PERCENT = (tuple(column) for column in zip(*_TABLE1_ROWS))
NUM_CLASSES = len(CLASS_NAMES)
COVER_COLOUR = (218, 76, 250)

#: The most classes a class list may hold: label values 0..MAX_CLASSES-1 stay clear of the cover's 255.
MAX_CLASSES = 255

#: Names that mean the Cenozoic cover (label 255) in a legend (compared case-insensitively).
COVER_NAMES = ("cover", "cenozoic cover", "cenozoic_cover")

_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")


def parse_colour(text: str, source: str = "colour") -> tuple[int, int, int]:
    """``#rrggbb`` (or ``rrggbb``) as an (r, g, b) tuple of 0-255 ints; a :class:`UserError` naming ``source``."""
    match = _HEX.match(str(text).strip())
    if not match:
        raise UserError(f"{source}: colour {text!r} (expected #rrggbb, e.g. #a64c4c)")
    value = int(match.group(1), 16)
    return (value >> 16) & 255, (value >> 8) & 255, value & 255


def default_colours(count: int) -> tuple[tuple[int, int, int], ...]:
    """``count`` distinct RGB colours for a class list given without colours: hues spread by the golden angle,
    alternating in lightness, so that neighbouring indices differ."""
    colours = []
    for k in range(count):
        hue = (0.61803398875 * k) % 1.0
        light, saturation = (0.55, 0.75) if k % 2 == 0 else (0.7, 0.6)
        r, g, b = colorsys.hls_to_rgb(hue, light, saturation)
        colours.append((round(255 * r), round(255 * g), round(255 * b)))
    return tuple(colours)


def _code_of(name: str) -> str:
    """A short code for a class given by name only: its first word's first two letters (``Devonian`` -> ``De``)."""
    word = re.sub(r"[^0-9A-Za-z]", "", name.split()[0]) if name.split() else ""
    return (word[:2] or name[:2]).capitalize() if word else name[:2]


@dataclasses.dataclass(frozen=True)
class ClassList:
    """The bedrock classes of a map: names, short codes and RGB colours in index order.

    Attributes
    ----------
    names : tuple of str
        Class ``k``'s name (unique, case-insensitively, and not a name of the cover).
    codes : tuple of str
        Short labels for tables and legends (``Ar``, ``D``, ...).
    colours : tuple of (r, g, b)
        0-255 RGB of each class on maps; the cover is drawn in :data:`COVER_COLOUR`.
    """

    names: tuple[str, ...]
    codes: tuple[str, ...]
    colours: tuple[tuple[int, int, int], ...]

    def __post_init__(self) -> None:
        names = tuple(str(n).strip() for n in self.names)
        codes = tuple(str(c).strip() for c in self.codes)
        colours = tuple(tuple(int(v) for v in c) for c in self.colours)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "codes", codes)
        object.__setattr__(self, "colours", colours)
        if not 1 <= len(names) <= MAX_CLASSES:
            raise UserError(f"class list: {len(names)} classes (expected 1 to {MAX_CLASSES})")
        if len(codes) != len(names) or len(colours) != len(names):
            raise UserError(f"class list: {len(names)} names, {len(codes)} codes and {len(colours)} colours "
                            f"(expected one of each per class)")
        if any(not n for n in names) or any(not c for c in codes):
            raise UserError("class list: empty class name or code")
        lowered = [n.lower() for n in names]
        repeated = sorted({n for n in names if lowered.count(n.lower()) > 1})
        if repeated:
            raise UserError(f"class list: class name(s) {', '.join(repeated)} given more than once")
        cover = [n for n in names if n.lower() in COVER_NAMES]
        if cover:
            raise UserError(f"class list: {cover[0]!r} names the Cenozoic cover (label 255), not a class")
        if any(len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in colours):
            raise UserError("class list: colours must be three integers 0-255 each")

    # ------------------------------------------------------------------ facts
    @property
    def num_classes(self) -> int:
        """K, the number of classes (label values 0..K-1)."""
        return len(self.names)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def valid_labels(self) -> tuple[int, ...]:
        """The values a label grid of this class list may hold: 0..K-1 and 255 (cover)."""
        return (*range(self.num_classes), COVER_INDEX)

    def index(self, name: str) -> int | None:
        """The index of a class given by name or code (case-insensitive), :data:`COVER_INDEX` for a name of
        the cover, None when the list has no such class."""
        key = str(name).strip().lower()
        if key in COVER_NAMES:
            return COVER_INDEX
        for k, (n, c) in enumerate(zip(self.names, self.codes)):
            if key in (n.lower(), c.lower()):
                return k
        return None

    def meanings(self) -> tuple[str, ...]:
        """Each class's name as a CF flag meaning: lower case, spaces as ``_``."""
        return tuple(re.sub(r"\s+", "_", n.lower()) for n in self.names)

    def flag_meanings(self) -> str:
        """CF ``flag_meanings`` of ``valid_labels``: :meth:`meanings`, then the cover."""
        return " ".join(self.meanings()) + " cenozoic_cover"

    def label_names(self) -> dict[int, str]:
        """``{index: name}`` for every class, and ``{255: "cover"}`` (W&B's mask ``class_labels``)."""
        return {k: n for k, n in enumerate(self.names)} | {COVER_INDEX: "cover"}

    # ------------------------------------------------------------------ colours
    def palette(self) -> np.ndarray:
        """A (256, 3) uint8 lookup table: class index -> RGB, cover (255) in its colour, other values black."""
        lut = np.zeros((256, 3), dtype=np.uint8)
        lut[:self.num_classes] = np.asarray(self.colours, dtype=np.uint8)
        lut[COVER_INDEX] = COVER_COLOUR
        return lut

    def colourise(self, labels: np.ndarray) -> np.ndarray:
        """Map an integer label array (..., H, W) to RGB uint8 (..., H, W, 3) in this list's colours."""
        return self.palette()[np.asarray(labels).astype(np.uint8)]

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """``{"names": [...], "codes": [...], "colours": [[r, g, b], ...]}`` (JSON-plain)."""
        return {"names": list(self.names), "codes": list(self.codes), "colours": [list(c) for c in self.colours]}

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any], source: str = "class list") -> ClassList:
        """Inverse of :meth:`to_dict`; ``codes`` and ``colours`` may be left out (made up); a one-line
        :class:`UserError` naming ``source`` on any defect."""
        if not isinstance(mapping, Mapping) or not isinstance(mapping.get("names"), (list, tuple)):
            raise UserError(f"{source}: expected a class list {{\"names\": [...], \"codes\": [...], \"colours\": "
                            f"[...]}}")
        names = [str(n) for n in mapping["names"]]
        codes = mapping.get("codes") or [_code_of(n) for n in names]
        colours = mapping.get("colours") or default_colours(len(names))
        try:
            return cls(tuple(names), tuple(codes), tuple(tuple(c) for c in colours))
        except (TypeError, ValueError):
            raise UserError(f"{source}: colours must be lists of three integers 0-255") from None
        except UserError as err:
            raise UserError(f"{source}: {str(err).removeprefix('class list: ')}") from None

    @classmethod
    def make(cls, names: Sequence[str], codes: Sequence[str | None] | None = None,
             colours: Sequence[tuple[int, int, int] | None] | None = None) -> ClassList:
        """A class list from names, with codes and colours where given (None: made up)."""
        made = default_colours(len(names))
        codes = list(codes) if codes is not None else [None] * len(names)
        colours = list(colours) if colours is not None else [None] * len(names)
        return cls(tuple(names), tuple(c or _code_of(n) for n, c in zip(names, codes)),
                   tuple(c or m for c, m in zip(colours, made)))

    @classmethod
    def generic(cls, num_classes: int) -> ClassList:
        """``class 0`` .. ``class K-1``: the names of a network that carries no class list."""
        return cls.make([f"class {k}" for k in range(num_classes)], [str(k) for k in range(num_classes)])


#: Table 1 of the paper: the default class list.
TABLE1 = ClassList(CLASS_NAMES, CLASS_CODES, CLASS_COLOURS)


def class_list(entry: Mapping[str, Any] | None, num_classes: int | None = None, *,
               source: str = "class list") -> ClassList:
    """The class list recorded in a manifest, genotype or checkpoint (``entry``, its ``classes`` value).

    Without one (files written before class lists were recorded) it is Table 1 when ``num_classes`` is None or
    10, else :meth:`ClassList.generic`. With ``num_classes`` given, the recorded list must have that many.
    """
    if entry is None:
        if num_classes is None or num_classes == NUM_CLASSES:
            return TABLE1
        return ClassList.generic(int(num_classes))
    classes = ClassList.from_dict(entry, source)
    if num_classes is not None and classes.num_classes != num_classes:
        raise UserError(f"{source}: {classes.num_classes} class names for {num_classes} classes")
    return classes


def palette(classes: ClassList | None = None) -> np.ndarray:
    """A (256, 3) uint8 lookup table of ``classes`` (default Table 1): index -> RGB, cover in its colour."""
    return (classes or TABLE1).palette()


def colourise(labels: np.ndarray, classes: ClassList | None = None) -> np.ndarray:
    """Map an integer label array (..., H, W) to RGB uint8 (..., H, W, 3) in ``classes``' colours (default
    Table 1's)."""
    return palette(classes)[np.asarray(labels).astype(np.uint8)]
