"""GIS-ready maps of a prediction, beside ``prediction.nc``: layers that QGIS, ArcGIS and GDAL open as they are.

:func:`write_gis_outputs` writes, on the prediction's nodes (each node the centre of a pixel, EPSG:4326, north
up), Cloud-Optimised GeoTIFFs of the class (with colour table, category names and a QGIS style), the
probabilities and the entropy, a GeoPackage of the predicted units as polygons, and with the geological map the
merged map (outcrop kept, cover filled by the prediction) and where each of its classes came from.
``docs/own-data.md`` ("What ``ggm-predict`` writes") lists every file and attribute. Every file is written
under a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import xml.sax.saxutils as xml
from pathlib import Path
from typing import Any

import numpy as np

from ggmnet.classes import COVER_INDEX, ClassList
from ggmnet.datasets.geo import cell_area_km2, node_steps
from ggmnet.engine.runio import atomic_path

#: Values of ``merged_source.tif`` and the ``source`` of ``merged_units``: where each node's class came from.
SOURCE_MAP, SOURCE_PREDICTION = 1, 2
SOURCE_NAMES = {SOURCE_MAP: "geological map", SOURCE_PREDICTION: "prediction"}
SOURCE_COLOURS = {SOURCE_MAP: (150, 150, 150), SOURCE_PREDICTION: (255, 140, 0)}


def node_transform(lon: np.ndarray, lat: np.ndarray) -> Any:
    """The north-up transform whose pixel centres are the nodes ``lon`` (nx,) x ``lat`` (ny,) (ascending,
    regular, degrees)."""
    from rasterio.transform import from_origin

    dlon, dlat = node_steps(lon, lat)
    return from_origin(lon[0] - dlon / 2, lat[-1] + dlat / 2, dlon, dlat)


def _hex(colour: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*colour)


def write_cog(path: str | Path, bands: np.ndarray, lon: np.ndarray, lat: np.ndarray, *, nodata: float | None,
              descriptions: list[str], colormap: dict[int, tuple[int, int, int]] | None = None,
              band_tags: dict[str, str] | None = None, tags: dict[str, str] | None = None,
              overview_resampling: str = "nearest") -> Path:
    """Write ``bands`` ``[B, ny, nx]`` (latitude ascending, like ``lat``) as a Cloud-Optimised GeoTIFF in
    EPSG:4326 whose pixel centres are the nodes, atomically.

    ``colormap`` (``{value: (r, g, b)}``) and ``band_tags`` go to band 1, ``tags`` to the dataset; DEFLATE
    compression, internal overviews resampled by ``overview_resampling``.
    """
    import rasterio

    bands = np.asarray(bands)
    count, height, width = bands.shape
    profile = {"driver": "COG", "width": width, "height": height, "count": count, "dtype": bands.dtype.name,
               "crs": "EPSG:4326", "transform": node_transform(lon, lat), "nodata": nodata, "compress": "deflate",
               "overview_resampling": overview_resampling, "blocksize": 512}
    with atomic_path(path, suffix=".tif") as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(bands[:, ::-1])
        for k, text in enumerate(descriptions, start=1):
            dst.set_band_description(k, text)
        if colormap is not None:
            dst.write_colormap(1, {v: (*c, 255) for v, c in colormap.items()})
        if band_tags:
            dst.update_tags(1, **band_tags)
        if tags:
            dst.update_tags(**tags)
    return Path(path)


def _category_sidecars(path: Path, entries: list[tuple[int, tuple[int, int, int], str, str]]) -> None:
    """A GDAL ``PATH.aux.xml`` with the category names of a paletted raster and a QGIS style ``PATH.qml``
    (paletted renderer: value, colour and label of each entry), so that both show the names. ``entries``:
    ``(value, colour, category name, legend label)``."""
    size = max(v for v, _, _, _ in entries) + 1
    names = {v: name for v, _, name, _ in entries}
    categories = "".join(f"<Category>{xml.escape(names.get(v, ''))}</Category>" for v in range(size))
    aux = (f'<PAMDataset>\n  <PAMRasterBand band="1">\n    <CategoryNames>{categories}</CategoryNames>\n'
           f'  </PAMRasterBand>\n</PAMDataset>\n')
    palette = "\n".join(f'        <paletteEntry value="{v}" color="{_hex(c)}" alpha="255" '
                        f'label={xml.quoteattr(label)}/>' for v, c, _, label in entries)
    qml = ("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
           '<qgis version="3.28" styleCategories="Symbology">\n  <pipe>\n'
           '    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1">\n'
           f'      <rasterTransparency/>\n      <colorPalette>\n{palette}\n      </colorPalette>\n'
           '    </rasterrenderer>\n  </pipe>\n</qgis>\n')
    for side, text in ((path.with_name(path.name + ".aux.xml"), aux), (path.with_suffix(".qml"), qml)):
        with atomic_path(side, suffix=side.suffix) as tmp:
            tmp.write_text(text)


def write_class_cog(path: str | Path, classes: np.ndarray, lon: np.ndarray, lat: np.ndarray,
                    class_list: ClassList, *, title: str) -> Path:
    """The class map ``classes`` (ny, nx) (values 0..K-1, 255 = no data) as a paletted COG with the class
    list's colours and names (band tags ``class_<k>`` = name, dataset tag ``classes`` = the class list as
    JSON), and its ``.aux.xml`` and ``.qml`` (see :func:`_category_sidecars`)."""
    path = Path(path)
    colours = {k: c for k, c in enumerate(class_list.colours)}
    write_cog(path, np.asarray(classes, dtype=np.uint8)[None], lon, lat, nodata=COVER_INDEX,
              descriptions=["class"], colormap=colours,
              band_tags={f"class_{k}": n for k, n in enumerate(class_list.names)},
              tags={"title": title, "classes": json.dumps(class_list.to_dict())})
    _category_sidecars(path, [(k, c, name, f"{code} {name}") for k, (c, code, name) in
                              enumerate(zip(class_list.colours, class_list.codes, class_list.names))])
    return path


def unit_polygons(values: np.ndarray, probability: np.ndarray, lon: np.ndarray, lat: np.ndarray,
                  class_list: ClassList, source: np.ndarray | None = None) -> Any:
    """The units of a class map as polygons: each 4-connected group of nodes of one class (and one ``source``).

    Parameters
    ----------
    values
        ``(ny, nx)`` class indices (255: no data, left out), latitude ascending.
    probability
        ``[K, ny, nx]`` class probabilities; a polygon's ``mean_probability`` is the mean over its nodes of
        the probability of its class.
    lon, lat
        The nodes (ascending degrees); each node is the centre of its pixel.
    class_list
        Names, codes and colours of the classes.
    source
        ``(ny, nx)`` :data:`SOURCE_MAP` or :data:`SOURCE_PREDICTION` per node (a merged map), or None.

    Returns
    -------
    geopandas.GeoDataFrame
        EPSG:4326 polygons with ``class``, ``code``, ``name``, ``colour``, ``mean_probability``, ``area_km2``
        (the nodes' cells on the WGS 84 ellipsoid), ``nodes`` (and ``source``).
    """
    import geopandas
    import shapely
    from rasterio.features import shapes
    from scipy import ndimage

    values = np.asarray(values)
    key = values.astype(np.int64) * 4 + (0 if source is None else np.asarray(source, dtype=np.int64))
    ids = np.zeros(values.shape, dtype=np.int32)
    count = 0
    four = ndimage.generate_binary_structure(2, 1)
    for k in np.unique(key[values != COVER_INDEX]):
        labelled, n = ndimage.label(key == k, structure=four)
        ids[labelled > 0] = labelled[labelled > 0] + count
        count += n
    if count == 0:
        columns = ["class", "code", "name", "colour", "mean_probability", "area_km2", "nodes"]
        return geopandas.GeoDataFrame({c: [] for c in columns + (["source"] if source is not None else [])},
                                      geometry=[], crs="EPSG:4326")
    flat = ids.ravel()
    area = np.broadcast_to(cell_area_km2(lat, *node_steps(lon, lat))[:, None], values.shape).ravel()
    safe = np.where(values == COVER_INDEX, 0, values).astype(np.int64)
    p_own = np.take_along_axis(np.asarray(probability, dtype=np.float64), safe[None], axis=0)[0].ravel()
    nodes = np.bincount(flat, minlength=count + 1)
    areas = np.bincount(flat, weights=area, minlength=count + 1)
    mean_p = np.bincount(flat, weights=p_own, minlength=count + 1) / np.maximum(nodes, 1)
    first = np.full(count + 1, -1, dtype=np.int64)
    order = np.flatnonzero(flat)
    first[flat[order[::-1]]] = order[::-1]  # any node of each id gives its class and source
    polygons = {int(v): shapely.geometry.shape(g) for g, v in
                shapes(ids[::-1], mask=ids[::-1] > 0, transform=node_transform(lon, lat), connectivity=4)}
    rows = sorted(polygons)
    cls = values.ravel()[first[rows]].astype(int)
    frame = geopandas.GeoDataFrame({
        "class": cls,
        "code": [class_list.codes[c] for c in cls],
        "name": [class_list.names[c] for c in cls],
        "colour": [_hex(class_list.colours[c]) for c in cls],
        "mean_probability": mean_p[rows],
        "area_km2": areas[rows],
        "nodes": nodes[rows],
    }, geometry=[polygons[r] for r in rows], crs="EPSG:4326")
    if source is not None:
        frame["source"] = [SOURCE_NAMES[int(s)] for s in np.asarray(source).ravel()[first[rows]]]
    return frame


def write_geopackage(path: str | Path, layers: dict[str, Any]) -> Path:
    """Write GeoDataFrames as the named layers of one GeoPackage, atomically."""
    with atomic_path(path, suffix=".gpkg") as tmp:
        tmp.unlink()  # GDAL creates the GeoPackage itself
        for name, frame in layers.items():
            frame.to_file(tmp, layer=name, driver="GPKG")
    return Path(path)


def write_gis_outputs(out_dir: str | Path, lon: np.ndarray, lat: np.ndarray, probability: np.ndarray,
                      classes: np.ndarray, class_list: ClassList, *, entropy: np.ndarray,
                      labels: np.ndarray | None = None, title: str = "GGMNet prediction") -> dict[str, Path]:
    """Write the GIS layers of a prediction (see the module docstring) into ``out_dir``.

    ``probability`` ``[K, ny, nx]``, ``classes`` ``(ny, nx)`` the mapped class (the argmax, or with the outcrop
    prior) and ``entropy`` ``(ny, nx)`` in nats lie on the nodes ``lon`` (nx,), ``lat`` (ny,) (ascending
    degrees); ``labels`` ``(ny, nx)``, the geological map on the nodes (255 = cover), adds the merged map.
    Returns the paths ``class_tif``, ``probability_tif``, ``entropy_tif``, ``units_gpkg``, and with ``labels``
    ``merged_tif`` and ``merged_source_tif``.
    """
    out = Path(out_dir)
    classes = np.asarray(classes, dtype=np.uint8)
    paths = {
        "class_tif": write_class_cog(out / "prediction_class.tif", classes, lon, lat, class_list, title=title),
        "probability_tif": write_cog(out / "prediction_probability.tif", np.asarray(probability, np.float32),
                                     lon, lat, nodata=None, descriptions=list(class_list.names),
                                     tags={"title": f"{title}: class probabilities", "units": "1"},
                                     overview_resampling="average"),
        "entropy_tif": write_cog(out / "prediction_entropy.tif", np.asarray(entropy, np.float32)[None], lon, lat,
                                 nodata=None, descriptions=["entropy (nats)"],
                                 tags={"title": f"{title}: entropy of the class probabilities, nats "
                                                f"(0 certain, ln {class_list.num_classes} uniform)"},
                                 overview_resampling="average"),
    }
    layers = {"units": unit_polygons(classes, probability, lon, lat, class_list)}
    if labels is not None:
        labels = np.asarray(labels, dtype=np.uint8)
        mapped = labels != COVER_INDEX
        merged = np.where(mapped, labels, classes).astype(np.uint8)
        source = np.where(mapped, SOURCE_MAP, SOURCE_PREDICTION).astype(np.uint8)
        paths["merged_tif"] = write_class_cog(out / "merged_class.tif", merged, lon, lat, class_list,
                                              title=f"{title}: the geological map, its cover filled by the "
                                                    f"prediction")
        paths["merged_source_tif"] = write_cog(
            out / "merged_source.tif", source[None], lon, lat, nodata=0, descriptions=["source"],
            colormap=SOURCE_COLOURS, band_tags={f"source_{v}": n for v, n in SOURCE_NAMES.items()},
            tags={"title": f"{title}: where each class of merged_class.tif came from"})
        _category_sidecars(paths["merged_source_tif"], [(v, SOURCE_COLOURS[v], n, n) for v, n in SOURCE_NAMES.items()])
        layers["merged_units"] = unit_polygons(merged, probability, lon, lat, class_list, source=source)
    paths["units_gpkg"] = write_geopackage(out / "prediction_units.gpkg", layers)
    return paths
