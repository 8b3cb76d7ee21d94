r"""Instance masks as training targets: pseudo-mask rasters and detection targets.

Stage 2 of instances from one point per object trains an instance model (Mask
R-CNN) on the pseudo masks that stage 1 made
(:func:`~geosparse.inference.instances.predict_instances`). Two pieces of data:

- :class:`InstanceRaster`: an instance-id raster as a TorchGeo
  :class:`~torchgeo.datasets.RasterDataset` (so ``imagery & masks`` regrids it
  onto the imagery with nearest-neighbour resampling). It reads the instance COG of
  ``geosparse predict --points`` (band 1 instance id, band 2 class, band 3
  uncertainty × 254, nodata :math:`2^{32} - 1`) or any single-band integer
  instance raster (a ground-truth mask, 0 background);
- :func:`instance_targets`: a window's ``(H, W)`` instance map as the targets of
  TorchGeo's instance segmentation task
  (:data:`~geosparse.compat.InstanceSegmentation`, torchvision's Mask R-CNN): ``bbox_xyxy`` ``(N, 4)`` float32 pixel-edge boxes, ``label``
  ``(N,)`` int64 and ``mask`` ``(N, H, W)`` uint8; :func:`collate_instances`
  batches them as TorchGeo's ``collate_fn_detection`` does (lists of per-window
  tensors, since windows hold different numbers of objects).

Boxes are exact pixel edges: an object covering columns :math:`c_0 .. c_1` and rows
:math:`r_0 .. r_1` (inclusive) has the box :math:`(c_0, r_0, c_1 + 1, r_1 + 1)`, so
it always has a positive width and height, and mirroring a window of width
:math:`W` maps it to :math:`(W - c_1 - 1, r_0, W - c_0, r_1 + 1)` exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.crs import CRS
from torch import Tensor
from torchgeo.datasets import RasterDataset
from torchgeo.datasets.utils import GeoSlice

from ..batch import collate_geo
from ..errors import InputError
from .regrid import QuietRegrid

__all__ = [
    'DETECTION_KEYS',
    'InstanceRaster',
    'collate_instances',
    'instance_targets',
    'require_instances',
]

#: The per-window keys of a detection batch, lists of tensors (one per window).
DETECTION_KEYS = ('bbox_xyxy', 'label', 'mask')

#: Nodata of the instance COG that ``geosparse predict`` writes (largest uint32).
_NODATA = 4294967295


class InstanceRaster(QuietRegrid, RasterDataset):
    """An instance-id raster (pseudo masks or ground truth), per window.

    Sample keys: ``instances`` ``(H, W)`` int64 (0 background; nodata pixels and
    pixels off the raster are 0), and, for the 3-band instance COG of ``geosparse
    predict``, ``classes`` ``(H, W)`` int64 (band 2) and ``uncertainty`` ``(H, W)``
    float32 in [0, 1] (band 3 / 254; 1 on nodata). A single-band raster gives
    ``instances`` only. Reprojected with nearest-neighbour resampling (integer
    ids never blend).

    .. versionadded:: 0.1
    """

    is_image = False
    filename_glob = '*'

    def __init__(
        self,
        paths: str | Path | Iterable[str | Path],
        crs: CRS | None = None,
        res: float | tuple[float, float] | None = None,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        """Index the raster(s).

        Args:
            paths: raster files (or folders of them).
            crs: output CRS (default: the first file's).
            res: output resolution (default: the first file's).
            transforms: sample transforms.

        Raises:
            ValueError: if a file is not an integer raster (one line naming it).
        """
        files = [paths] if isinstance(paths, str | Path) else list(paths)
        for path in files:
            if Path(path).is_file():
                with rasterio.open(path) as src:
                    if not np.issubdtype(np.dtype(src.dtypes[0]), np.integer):
                        raise InputError(
                            f'{path}: a {src.dtypes[0]} raster; the pseudo masks must '
                            'be integer instance ids (band 1), such as the COG of '
                            '`geosparse predict --points`.'
                        )
        super().__init__(paths, crs, res, transforms=transforms, cache=True)

    def __getitem__(self, query: GeoSlice) -> dict[str, Any]:
        """The window's ``instances`` (and ``classes``, ``uncertainty``)."""
        sample = super().__getitem__(query)
        data = sample.pop('mask')
        if data.ndim == 2:
            data = data[None]
        data = data.to(torch.int64)
        nodata = data[0] == _NODATA
        instances = data[0].masked_fill(nodata, 0)
        sample['instances'] = instances
        if data.shape[0] >= 3:
            sample['classes'] = data[1].masked_fill(nodata, 0)
            unc = data[2].to(torch.float32) / 254
            sample['uncertainty'] = unc.masked_fill(nodata, 1.0).clamp(0, 1)
        return sample


def require_instances(path: str | Path) -> None:
    """Check that an instance raster holds at least one instance.

    .. versionadded:: 0.1

    Raises:
        ValueError: if band 1 is 0 or nodata everywhere (one line naming the file
            and the fix).
    """
    with rasterio.open(path) as src:
        for _, window in src.block_windows(1):
            band = src.read(1, window=window)
            if ((band != 0) & (band != _NODATA)).any():
                return
    raise InputError(
        f'{path}: holds no instance (band 1 is 0 or nodata everywhere); pass the '
        'instance COG of `geosparse predict --points` (band 1 the ids) or a raster '
        'of object ids >= 1 that covers objects.'
    )


def instance_targets(
    instances: Tensor,
    classes: Tensor | None = None,
    keep: Tensor | None = None,
    min_pixels: int = 1,
) -> dict[str, Tensor]:
    """Detection targets of a window from its instance map.

    Every id > 0 is an object, cut by the window edge or not (its visible part);
    its label is the most frequent nonzero value of ``classes`` under it (1 without
    classes or where they are 0).

    .. versionadded:: 0.1

    Args:
        instances: ``(H, W)`` int instance map, 0 background.
        classes: ``(H, W)`` int class map (0: none).
        keep: ``(H, W)`` bool, pixels that may belong to an object (e.g. stage-1
            uncertainty below a threshold); the others leave their object.
        min_pixels: objects with fewer (visible, kept) pixels are dropped.

    Returns:
        ``bbox_xyxy`` ``(N, 4)`` float32 pixel-edge boxes ``(x0, y0, x1, y1)``,
        ``label`` ``(N,)`` int64, ``mask`` ``(N, H, W)`` uint8 and ``instances``
        ``(H, W)`` int64 (the map without the dropped pixels and objects), the
        objects in increasing id order.
    """
    inst = instances.to(torch.int64)
    if keep is not None:
        inst = inst.masked_fill(~keep, 0)
    ids, counts = torch.unique(inst, return_counts=True)
    ok = (ids > 0) & (counts >= min_pixels)
    drop = ids[(ids > 0) & ~ok]
    if len(drop):
        inst = inst.masked_fill(torch.isin(inst, drop), 0)
    ids = ids[ok]
    h, w = inst.shape
    masks = inst[None] == ids[:, None, None]
    rows = masks.any(2)
    cols = masks.any(1)
    ar_h = torch.arange(h)
    ar_w = torch.arange(w)
    big = torch.iinfo(torch.int64).max
    x0 = torch.where(cols, ar_w, big).amin(1) if len(ids) else ar_w[:0]
    x1 = torch.where(cols, ar_w, -1).amax(1) + 1 if len(ids) else ar_w[:0]
    y0 = torch.where(rows, ar_h, big).amin(1) if len(ids) else ar_h[:0]
    y1 = torch.where(rows, ar_h, -1).amax(1) + 1 if len(ids) else ar_h[:0]
    boxes = torch.stack([x0, y0, x1, y1], 1).to(torch.float32).reshape(-1, 4)
    labels = torch.ones(len(ids), dtype=torch.int64)
    if classes is not None and len(ids):
        cls = classes.to(torch.int64)
        for k in range(len(ids)):
            values = cls[masks[k]]
            values = values[values > 0]
            if len(values):
                labels[k] = torch.mode(values).values
    return {
        'bbox_xyxy': boxes,
        'label': labels,
        'mask': masks.to(torch.uint8),
        'instances': inst,
    }


def collate_instances(
    samples: Sequence[Mapping[str, Any]],
    max_uncertainty: float | None = None,
    min_pixels: int = 1,
) -> dict[str, Any]:
    """Batch windows as TorchGeo's instance segmentation task takes them.

    ``image`` ``(B, C, H, W)`` and ``instances`` ``(B, H, W)`` are stacked (with the
    georeference keys, :func:`~geosparse.batch.collate_geo`); ``bbox_xyxy``,
    ``label`` and ``mask`` are lists of the windows' :func:`instance_targets`, as
    TorchGeo's ``collate_fn_detection`` makes them. ``classes`` and
    ``uncertainty`` are used and dropped.

    .. versionadded:: 0.1

    Args:
        samples: samples with ``image`` and ``instances`` (optionally ``classes``
            and ``uncertainty``).
        max_uncertainty: pixels whose stage-1 ``uncertainty`` exceeds this leave
            their object (None: keep all).
        min_pixels: see :func:`instance_targets`.

    Returns:
        The batch.
    """
    rest: list[dict[str, Any]] = []
    targets: dict[str, list[Tensor]] = {k: [] for k in DETECTION_KEYS}
    for sample in samples:
        s = dict(sample)
        classes = s.pop('classes', None)
        unc = s.pop('uncertainty', None)
        keep = None
        if max_uncertainty is not None and unc is not None:
            keep = unc <= max_uncertainty
        t = instance_targets(s['instances'], classes, keep, min_pixels)
        s['instances'] = t.pop('instances')
        for key in DETECTION_KEYS:
            targets[key].append(t[key])
        rest.append(s)
    batch = collate_geo(rest)
    batch.update(targets)
    return batch
