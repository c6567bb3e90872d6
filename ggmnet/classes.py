"""The geological classes of Table 1 of the paper: indices, names, colours and shares."""

from __future__ import annotations

import numpy as np

#: Label value of Cenozoic cover (Q, N, E): the bedrock is unknown there, so losses and metrics ignore it.
COVER_INDEX = 255
IGNORE_INDEX = COVER_INDEX

#: Short and long names of the ten bedrock classes, indexed 0-9 as in Table 1.
CLASS_CODES = ("Ar", "Pt", "Cm", "O", "S", "D", "C", "P", "J", "Gr")
CLASS_NAMES = (
    "Archean",
    "Proterozoic",
    "Cambrian",
    "Ordovician",
    "Silurian",
    "Devonian",
    "Carboniferous",
    "Permian",
    "Jurassic",
    "Granite",
)
NUM_CLASSES = len(CLASS_NAMES)

#: RGB colours of Table 1 (the 1:5M Asia-European geological map's legend).
CLASS_COLOURS = (
    (255, 178, 255),
    (177, 153, 99),
    (4, 249, 7),
    (126, 254, 127),
    (152, 215, 29),
    (166, 76, 76),
    (179, 218, 217),
    (227, 178, 28),
    (255, 247, 102),
    (73, 251, 250),
)
COVER_COLOUR = (218, 76, 250)

#: Share of the outcrop area of each class in the paper's dataset (Table 1), in percent.
PAPER_SHARES_PERCENT = (0.6, 7.2, 10.3, 4.0, 7.0, 20.3, 30.9, 2.1, 2.3, 15.3)


def palette() -> np.ndarray:
    """A (256, 3) uint8 lookup table: class index -> RGB, cover (255) in its colour, other values black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:NUM_CLASSES] = np.asarray(CLASS_COLOURS, dtype=np.uint8)
    lut[COVER_INDEX] = COVER_COLOUR
    return lut


def colourise(labels: np.ndarray) -> np.ndarray:
    """Map an integer label array (..., H, W) to RGB uint8 (..., H, W, 3) in Table 1's palette."""
    return palette()[np.asarray(labels).astype(np.uint8)]
