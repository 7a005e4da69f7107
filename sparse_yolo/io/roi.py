"""Regions of interest from vector data: only cells inside them are ever examined.

The everyday GIS case: vehicles only near roads, ships only on water. Features are read
with geopandas (any format GDAL/OGR reads: GeoPackage, GeoJSON, Shapefile, ...; a layer and
an SQL ``WHERE`` filter where the format has them), optionally buffered by a distance in
metres (in the local UTM zone, so it is metres whatever the CRS), reprojected to the
raster's CRS with pyproj and rasterised onto the cell grid of each tile with
``rasterio.features`` (a cell counts when the region touches it). Rotated and sheared
affines are handled by the rasterisation, which maps through the tile's own transform.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from affine import Affine
from rasterio.features import rasterize
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from sparse_yolo.errors import SparseYoloError
from sparse_yolo.masks.base import cell_grid

if TYPE_CHECKING:
    from sparse_yolo.config import MaskConfig
    from sparse_yolo.io.raster import ImageSource


@dataclass
class Roi:
    """A region of interest in a raster's pixel frame.

    Attributes:
        geometries: shapely geometries in the raster's CRS.
        transform: the raster's affine (pixel (col, row) -> CRS).
    """

    geometries: list[Any]
    transform: Affine

    def cells(self, window: Window, cell: int) -> np.ndarray:
        """(Hc, Wc) bool over the window's cell grid (:func:`sparse_yolo.masks.cell_grid`):
        True where the region touches the cell."""
        hc, wc = cell_grid(int(window.height), int(window.width), cell)
        grid = window_transform(window, self.transform) @ Affine.scale(cell)
        out = rasterize(
            self.geometries, out_shape=(hc, wc), transform=grid, all_touched=True, dtype="uint8"
        )
        return out.astype(bool)

    def pixels(self, window: Window, cell: int) -> np.ndarray:
        """(h, w) bool: the window's pixels whose cell the region touches."""
        cells = self.cells(window, cell)
        full = np.repeat(np.repeat(cells, cell, axis=0), cell, axis=1)
        return full[: int(window.height), : int(window.width)]


def load_roi(cfg: MaskConfig, source: ImageSource) -> Roi:
    """Read ``cfg.roi`` (layer ``cfg.roi_layer``, filter ``cfg.roi_where``, buffer
    ``cfg.roi_buffer`` metres) and place it on ``source``'s raster.

    Raises:
        SparseYoloError: unreadable or empty vector file, a file or raster without CRS,
            or a region that does not overlap the raster.
    """
    import geopandas as gpd  # noqa: PLC0415 - only when a ROI is given
    from shapely.geometry import Polygon  # noqa: PLC0415
    path = Path(cfg.roi)
    if source.crs is None:
        raise SparseYoloError(
            f"raster has no CRS, so the ROI {path.name} cannot be placed", source.path
        )
    frame = _read(gpd, path, cfg.roi_layer, cfg.roi_where)
    if frame.crs is None:
        raise SparseYoloError("ROI has no CRS", path)
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
    if cfg.roi_buffer:
        metric = frame.estimate_utm_crs()
        frame = frame.to_crs(metric)
        frame = frame.set_geometry(frame.buffer(cfg.roi_buffer)).to_crs(source.crs)
    else:
        frame = frame.to_crs(source.crs)
    t = source.transform
    corners = [
        t @ (0, 0),
        t @ (source.width, 0),
        t @ (source.width, source.height),
        t @ (0, source.height),
    ]
    footprint = Polygon(corners)
    geometries = [g for g in frame.geometry if g.intersects(footprint)]
    if not geometries:
        raise SparseYoloError(
            f"ROI does not overlap the raster {Path(str(source.path)).name}", path
        )
    return Roi(geometries, t)


def _read(gpd: Any, path: Path, layer: str | None, where: str | None) -> Any:
    if not path.exists():
        raise SparseYoloError("no such ROI file", path)
    kwargs = {k: v for k, v in (("layer", layer), ("where", where)) if v}
    try:
        frame = gpd.read_file(path, engine="pyogrio", **kwargs)
    except Exception as exc:  # pyogrio/GDAL raise many types for unreadable files
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SparseYoloError(f"cannot read ROI ({detail})", path) from None
    if not len(frame) or "geometry" not in frame:
        raise SparseYoloError("ROI has no features" + (f" where {where}" if where else ""), path)
    return frame
