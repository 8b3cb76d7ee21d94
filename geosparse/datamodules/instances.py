r"""Data module for instances from one point per object: imagery, points, polygons.

Stage-1 training is transductive (the distance is trained on the images whose points
it labels): ``fit`` draws random windows (TorchGeo's
:class:`~torchgeo.samplers.RandomGeoSampler`) over all the imagery, each with its
points. Validation, test and prediction windows tile the imagery
(:class:`~geosparse.samplers.CoverGeoSampler`: TorchGeo's GridGeoSampler, but the
last row and column are shifted back inside the raster instead of overhanging it)
and carry the polygons' instance mask when ``polygons_path`` is given; validation
needs the polygons (without them ``val_dataloader`` returns no loader, which
Lightning takes as "no validation").

Points are read in the imagery's CRS (:func:`~geosparse.datasets.read_instance_points`,
any vector file, GeoParquet or CSV in any CRS); points off the imagery are dropped
with a warning (all off: an error, never a silently empty mask); two object points
on one pixel of the imagery's grid are an error. With polygons, each polygon takes
the id of the point inside it (:func:`~geosparse.datasets.match_points_to_polygons`,
which warns for a polygon without a point and a point without a polygon), so that
the mask's id at a point's pixel is always the point's ``instance``; polygons
without a point keep ids above every point's.

Batches (:func:`~geosparse.datasets.collate_points`): ``image`` ``(B, C, H, W)``
float32 raw values (the task normalises), ``points`` ``(B, N, 2)`` ``(row, col)``
pixel coordinates of the window (pixel centres at +0.5), ``valid`` ``(B, N)``,
``values`` ``(B, N, 3)`` = :data:`~geosparse.datasets.instances.INSTANCE_VALUES`
``(instance, class, background)``, ``instances`` ``(B, H, W)`` int64 (validation, test
and prediction batches, when polygons are given; ``classes`` too with
``class_column``), and the georeference keys (``crs``/``bounds`` with TorchGeo 0.8.1,
``bounds``/``transform`` with 0.10), kept on the way to the device.

Augmentation (``augment=True``): ``train_aug``
(:class:`~geosparse.transforms.RandomFlipWithPoints` with ``keys=('image',
'instances', 'classes')``) flips training batches in ``on_after_batch_transfer``;
``instances`` stays ``(B, H, W)`` (:func:`~geosparse.transforms.flip_batch` flips
the last two dimensions of any key).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import shapely
import torch
from torch.utils.data import DataLoader
from torchgeo.datamodules import GeoDataModule
from torchgeo.samplers import RandomGeoSampler

from ..batch import KeepGeoKeys
from ..datasets.coarse import ImageryDataset
from ..datasets.instances import (
    InstancePolygons,
    match_points_to_polygons,
    points_on_one_pixel,
    read_instance_points,
)
from ..datasets.points import SparsePoints, collate_points
from ..errors import InputError
from ..samplers import CoverGeoSampler
from ..transforms import RandomFlipWithPoints

__all__ = ['PointInstanceDataModule']


class PointInstanceDataModule(KeepGeoKeys, GeoDataModule):
    """Imagery & one point per object (& polygons), see the module doc.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        image_paths: str | Sequence[str],
        points_path: str,
        polygons_path: str | None = None,
        id_column: str | None = None,
        class_column: str | None = None,
        background_column: str | None = None,
        x: str | None = None,
        y: str | None = None,
        points_crs: str | None = None,
        res: float | None = None,
        patch_size: int = 128,
        batch_size: int = 4,
        length: int = 200,
        eval_size: int | None = None,
        augment: bool = True,
        seed: int = 0,
        num_workers: int = 0,
        image_glob: str = '*.tif',
    ) -> None:
        """Describe the data.

        Args:
            image_paths: imagery files or folders.
            points_path: one point per object: vector file, GeoParquet or CSV with
                coordinates, any CRS.
            polygons_path: the objects' polygons (vector file or GeoParquet), for
                validation and testing.
            id_column: instance ids of the points and polygons (default: row
                number + 1).
            class_column: classes of the points and polygons (default: 1).
            background_column: points column whose truthy values mark background.
            x: CSV x / longitude column.
            y: CSV y / latitude column.
            points_crs: CRS of CSV coordinates (default EPSG:4326).
            res: resolution of the samples in CRS units (default: the imagery's).
            patch_size: training window size in pixels.
            batch_size: windows per batch.
            length: training windows per epoch.
            eval_size: validation, test and prediction tile size in pixels
                (default ``patch_size``).
            augment: random horizontal and vertical flips of training batches.
            seed: seed of the training sampler.
            num_workers: data loader workers.
            image_glob: imagery file pattern.
        """
        super().__init__(ImageryDataset, batch_size, patch_size, length, num_workers)
        self.save_hyperparameters()
        self.aug = None  # type: ignore[assignment]  # the tasks normalise inputs
        self.train_aug = (
            RandomFlipWithPoints(keys=('image', 'instances', 'classes'))
            if augment
            else None
        )
        self.collate_fn = collate_points

    # ------------------------------------------------------------ reading
    def read_points(self, image: ImageryDataset) -> SparsePoints:
        """The points in the imagery's CRS, off-imagery ones dropped (warning).

        Raises:
            InputError: if no point lies on the imagery, or two object points lie on
                one pixel of the imagery's grid.
        """
        hp = self.hparams
        path = hp['points_path']
        x, y, _ = image.bounds
        extent = (float(x.start), float(y.start), float(x.stop), float(y.stop))
        points = read_instance_points(
            path,
            hp['id_column'],
            hp['class_column'],
            hp['background_column'],
            crs=image.crs,
            res=image.res,
            x=hp['x'],
            y=hp['y'],
            points_crs=hp['points_crs'],
            extent=extent,
        )
        xy = points.xy()
        inside = shapely.contains_xy(image.index.union_all(), xy[:, 0], xy[:, 1])
        if not inside.any():
            raise InputError(
                f'{path}: none of its {len(xy)} points lies on the imagery '
                f'{hp["image_paths"]} (check points_crs for a CSV, and that they '
                'overlap); a mask without points would be silently empty.'
            )
        if not inside.all():
            warnings.warn(
                f'{path}: {int((~inside).sum())} of {len(xy)} points lie outside the '
                'imagery; they are dropped (check points_crs if that is a surprise).',
                stacklevel=2,
            )
            points = points.select(np.flatnonzero(inside))
        self._check_pixels(points, image)
        return points

    def _check_pixels(self, points: SparsePoints, image: ImageryDataset) -> None:
        """Two object points on one pixel of the imagery's grid are an error."""
        x, y, _ = image.bounds
        rx, ry = (float(r) for r in image.res)
        xy = points.xy()
        values = points.points[['instance', 'background']].to_numpy()
        obj = np.flatnonzero(values[:, 1] == 0)
        cols = np.floor((xy[obj, 0] - float(x.start)) / rx).astype(np.int64)
        rows = np.floor((float(y.stop) - xy[obj, 1]) / ry).astype(np.int64)
        shared = points_on_one_pixel(rows, cols)
        if len(shared):
            k = shared[0]
            a, b = (int(i) for i in values[obj[shared[:2]], 0])
            raise InputError(
                f'{self.hparams["points_path"]}: object points {a} and {b} (instance '
                f'ids) lie on one pixel (row {int(rows[k])}, col {int(cols[k])}) of '
                f'the imagery grid at res {rx:g}; keep one point per object (or give '
                'a finer res).'
            )

    def read_polygons(
        self, image: ImageryDataset, points: SparsePoints
    ) -> InstancePolygons:
        """The polygons in the imagery's CRS, each with its point's instance id."""
        hp = self.hparams
        x, y, _ = image.bounds
        extent = (float(x.start), float(y.start), float(x.stop), float(y.stop))
        polygons = InstancePolygons(
            hp['polygons_path'],
            hp['id_column'],
            hp['class_column'],
            crs=image.crs,
            res=image.res,
            extent=extent,
        )
        matched = match_points_to_polygons(points, polygons)
        ids = polygons.frame['instance'].to_numpy(np.int64).copy()
        point_ids = points.points['instance'].to_numpy(np.int64)
        position = {int(v): i for i, v in enumerate(ids)}
        new = np.zeros(len(ids), dtype=np.int64)
        for poly_id, point_id in zip(matched.tolist(), point_ids.tolist(), strict=True):
            if poly_id > 0:
                new[position[poly_id]] = point_id
        free = new == 0
        top = max(int(point_ids.max(initial=0)), 0)
        new[free] = top + np.arange(1, int(free.sum()) + 1)
        return polygons.relabel(new)

    # ------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        """Read the imagery, points (and polygons); build the samplers."""
        hp = self.hparams
        image = ImageryDataset(hp['image_paths'], glob=hp['image_glob'], res=hp['res'])
        self.image = image
        self.points = self.read_points(image)
        self.polygons = (
            self.read_polygons(image, self.points) if hp['polygons_path'] else None
        )
        size = (
            self.patch_size if isinstance(self.patch_size, int) else self.patch_size[0]
        )
        if stage == 'fit':
            self.train_dataset = image & self.points
            self.train_sampler = RandomGeoSampler(
                self.train_dataset,
                size,
                hp['length'],
                generator=torch.Generator().manual_seed(hp['seed']),
            )
        eval_size = hp['eval_size'] or size
        data = image & self.points
        if self.polygons is not None:
            data = data & self.polygons
        sampler = CoverGeoSampler(data, eval_size)
        self.test_dataset = self.predict_dataset = data
        self.test_sampler = self.predict_sampler = sampler
        self.val_dataset = data if self.polygons is not None else None
        self.val_sampler = sampler if self.polygons is not None else None

    def val_dataloader(self) -> Any:
        """Validation tiles with ``instances``; none (``[]``) without polygons."""
        if getattr(self, 'val_dataset', None) is None:
            return []
        loader: DataLoader[dict[str, Any]] = super().val_dataloader()
        return loader

    def on_after_batch_transfer(
        self, batch: dict[str, Any], dataloader_idx: int
    ) -> dict[str, Any]:
        """Augment training batches (``train_aug``); others pass unchanged."""
        if self.trainer and self.trainer.training and self.train_aug is not None:
            batch = self.train_aug(batch)
        return batch
