"""Overview picture of a prepared dataset: anomalies (mGal), labels in its classes' colours, the windows."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ggmnet.classes import COVER_COLOUR, COVER_INDEX, TABLE1
from ggmnet.datasets.geo import node_cells
from ggmnet.datasets.prepare import load_grids, manifest_classes, read_manifest
from ggmnet.engine.runio import atomic_path

#: Outline style of each window scale, by order of size: (colour, line width, line style).
SCALE_STYLES = (("#404040", 0.4, "-"), ("#0050ff", 1.0, "-"), ("#e00000", 1.3, "--"), ("#000000", 1.8, "-."),
                ("#ff8c00", 1.5, ":"), ("#8000c0", 1.5, "-"))


def show_dataset(data_dir: str | os.PathLike, out: str | os.PathLike, *, dpi: int = 120) -> Path:
    """Draw ``data_dir``'s Bouguer, regional and residual anomalies and its labels with the window outlines of
    each scale into the PNG ``out`` (written atomically). Returns ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle

    manifest = read_manifest(data_dir)
    grids = load_grids(data_dir, ["bouguer", "regional", "residual", "label"])
    lon, lat = grids["lon"], grids["lat"]
    west, south, east, north, _, _ = node_cells(lon, lat)
    extent = (west, east, south, north)
    aspect = 1.0 / math.cos(math.radians(0.5 * (lat[0] + lat[-1])))

    fig, axes = plt.subplots(2, 2, figsize=(15, 9.5), layout="constrained")
    panels = (("bouguer", "Bouguer gravity anomaly", "RdBu_r"),
              ("regional", f"regional anomaly (upward continued {manifest['recipe']['height_km']:g} km)", "RdBu_r"),
              ("residual", "residual anomaly (Bouguer - regional)", "jet"))
    for ax, (name, title, cmap) in zip(axes.flat, panels):
        values = grids[name]
        lo, hi = np.percentile(values, [1, 99])
        if cmap == "RdBu_r":
            lo, hi = -max(abs(lo), abs(hi)), max(abs(lo), abs(hi))
        im = ax.imshow(values, origin="lower", extent=extent, cmap=cmap, vmin=lo, vmax=hi,
                       interpolation="nearest", aspect=aspect)
        fig.colorbar(im, ax=ax, shrink=0.85, label="mGal")
        ax.set_title(title)

    ax = axes.flat[3]
    classes = manifest_classes(manifest)
    ax.imshow(classes.colourise(grids["label"]), origin="lower", extent=extent, interpolation="nearest", aspect=aspect)
    sizes = sorted({float(w["scale_deg"]) for w in manifest["windows"]})
    styles = {s: SCALE_STYLES[i % len(SCALE_STYLES)] for i, s in enumerate(sizes)}
    for w in manifest["windows"]:
        colour, width, style = styles[float(w["scale_deg"])]
        ax.add_patch(Rectangle((w["west"], w["south"]), w["east"] - w["west"], w["north"] - w["south"],
                               fill=False, edgecolor=colour, linewidth=width, linestyle=style))
    counts = manifest["split"].get("counts", {})
    ax.set_title(f"labels{' (Table 1)' if classes == TABLE1 else ''} and windows: "
                 + ", ".join(f"{k} {v}" for k, v in counts.items()))
    lut = classes.palette() / 255.0
    present = set(np.unique(grids["label"]).tolist())
    handles = [Patch(facecolor=lut[i], edgecolor="0.3", label=f"{code} {name}")
               for i, (code, name) in enumerate(zip(classes.codes, classes.names)) if i in present]
    if COVER_INDEX in present:
        handles.append(Patch(facecolor=np.asarray(COVER_COLOUR) / 255.0, edgecolor="0.3",
                             label="Cenozoic cover (255)"))
    n_windows = {s: sum(float(w["scale_deg"]) == s for w in manifest["windows"]) for s in sizes}
    handles += [Line2D([], [], color=c, linewidth=max(lw, 1.0), linestyle=ls,
                       label=f"{s:g}\N{DEGREE SIGN} windows ({n_windows[s]})")
                for s, (c, lw, ls) in styles.items()]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, frameon=False)
    for ax in axes.flat:
        ax.set_xlabel("longitude (\N{DEGREE SIGN}E)")
        ax.set_ylabel("latitude (\N{DEGREE SIGN}N)")
        ax.set_xlim(west, east)
        ax.set_ylim(south, north)
    region = manifest["region"]
    fig.suptitle(f"{Path(data_dir).resolve().name}: E{region['west']:g}-{region['east']:g}, "
                 f"N{region['south']:g}-{region['north']:g}, {lat.size} x {lon.size} nodes")
    out = Path(out)
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return out
